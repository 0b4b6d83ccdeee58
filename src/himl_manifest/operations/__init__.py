"""Operations: one module per user operation (validate, plan, apply, runs, audit), the one
place the CLI calls, where I/O (files, git, the run store) meets the pure core."""
