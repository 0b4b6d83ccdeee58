"""The `himl` command line: click commands that parse, call one core function, and print."""
