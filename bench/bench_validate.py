"""Benchmark `himl validate` on N generated manifests against check-jsonschema and a naive
PyYAML + jsonschema loop, each a fresh subprocess, several repetitions, medians side by side;
plus `himl --help` start-up, and one file with many problems (every problem needs a source
position: this row shows that locating them stays linear). Prints a Markdown table and the
machine.

    python bench/bench_validate.py [--files 1000] [--repeat 5] [--problems 10000]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from gen_manifests import generate

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA = REPO_ROOT / "schema" / "experiment.v1.schema.json"
BIN = Path(sys.executable).parent

NAIVE = """
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
bad = 0
for path in sys.argv[2:]:
    with open(path) as f:
        data = yaml.safe_load(f)
    bad += any(True for _ in jsonschema.Draft202012Validator(schema).iter_errors(data))
sys.exit(1 if bad else 0)
"""


def _time(command: list[str], cwd: Path, repeat: int) -> tuple[float, int]:
    samples = []
    code = 0
    for _ in range(repeat):
        start = time.perf_counter()
        code = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL).returncode
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), code


def _many_problems(root: Path, problems: int) -> Path:
    """One manifest with ``problems`` unknown keys (one diagnostic each), under ``root``."""
    (root / ".git").mkdir()
    folder = root / "experiments"
    folder.mkdir()
    lines = ["apiVersion: himl/v1", "kind: Experiment", "name: many", "container: HelloWorld"]
    lines += [f"unknown_key_{i}: {i}" for i in range(problems)]
    path = folder / "many.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--problems", type=int, default=10_000, help="Problems in the one-bad-file row (0: none)."
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = [str(p.relative_to(root)) for p in generate(args.files, root)]
        himl = str(BIN / "himl")
        cases = [
            ("himl validate experiments/", [himl, "validate", "experiments"]),
            (
                "check-jsonschema --schemafile",
                [str(BIN / "check-jsonschema"), "--schemafile", str(SCHEMA), *files],
            ),
            ("naive PyYAML + jsonschema loop", [sys.executable, "-c", NAIVE, str(SCHEMA), *files]),
            ("himl --help (start-up)", [himl, "--help"]),
        ]
        rows = []
        for label, command in cases:
            if not shutil.which(command[0]) and not Path(command[0]).exists():
                rows.append((label, None, None))
                continue
            median, code = _time(command, root, args.repeat)
            rows.append((label, median, code))
    if args.problems:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            path = _many_problems(root, args.problems)
            size = path.stat().st_size // 1024
            label = f"himl validate: one {size} KB file with {args.problems:,} problems"
            median, code = _time([str(BIN / "himl"), "validate", "experiments"], root, args.repeat)
            rows.append((label, median, code))
    himl_median = rows[0][1] or 0.0
    print(
        f"Validating {args.files} generated manifests; median of {args.repeat} runs, "
        "each a fresh process.\n"
    )
    print("| command | median wall (s) | exit | vs himl |")
    print("|---|---:|---:|---:|")
    for label, median, code in rows:
        if median is None:
            print(f"| {label} | not installed | | |")
            continue
        compared = "help" not in label and "problems" not in label
        ratio = f"{median / himl_median:.1f}x" if compared and himl_median else ""
        print(f"| {label} | {median:.3f} | {code} | {ratio} |")
    print(
        f"\nMachine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
