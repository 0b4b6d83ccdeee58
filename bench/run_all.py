"""Run every benchmark in bench/ one after the other and print their Markdown tables.

Usage: ``make bench`` (or ``.venv/bin/python bench/run_all.py``). Results go in
docs/benchmarks.md by hand, with the date and machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["bench_validate.py", "bench_plan.py", "bench_runner.py"]


def main() -> int:
    failed = 0
    for name in BENCHMARKS:
        script = HERE / name
        if not script.exists():
            continue
        print(f"\n## {name}\n", flush=True)
        failed += subprocess.call([sys.executable, str(script)]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
