"""Benchmark the pre-commit hook's environment: a fresh virtual environment and
``pip install --no-cache-dir .`` of this repository (what pre-commit's ``language: python``
does), timed, sized (the environment's size minus an empty environment's) and counted
(packages beyond an empty environment's). Prints a Markdown table, the largest packages, and
the pip configuration in effect (a local index or mirror makes "cold" faster than PyPI).

    python bench/bench_light_install.py [--train] [--keep DIR]

``--train`` adds a row for ``.[train]`` (torch and Lightning: large and slow). It needs the
package registry (or the mirror pip is configured with).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The modules the light install must not bring.
HEAVY = ("torch", "lightning", "pytorch_lightning")


def folder_size(folder: Path, *, bytecode_only: bool = False) -> int:
    """Bytes of the files under ``folder`` (as ``du -b`` counts them, links not followed);
    ``bytecode_only``: of the ``__pycache__`` folders alone (what pip compiles at install)."""
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        if bytecode_only and Path(dirpath).name != "__pycache__":
            continue
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def packages(venv: Path) -> dict[str, int]:
    """Each installed distribution of ``venv``: name -> bytes of its files."""
    script = (
        "import importlib.metadata as m, json, os\n"
        "out = {}\n"
        "for d in m.distributions():\n"
        "    size = 0\n"
        "    for f in d.files or []:\n"
        "        p = d.locate_file(f)\n"
        "        if os.path.isfile(p) and not os.path.islink(p): size += os.path.getsize(p)\n"
        "    out[d.metadata['Name'].lower()] = size\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script], check=True, capture_output=True, text=True
    )
    found: dict[str, int] = json.loads(result.stdout)
    return found


@dataclass
class Row:
    """One install measured."""

    target: str
    seconds: float
    mb: float
    pyc_mb: float
    count: int
    heavy: str
    validate: int
    largest: list[tuple[str, int]]


def install(root: Path, target: str, label: str, empty: tuple[int, int], base: set[str]) -> Row:
    venv = root / label
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    start = time.perf_counter()
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--no-cache-dir", "-q", target],
        check=True,
        cwd=REPO_ROOT,
    )
    seconds = time.perf_counter() - start
    installed = packages(venv)
    heavy = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.util as u, sys; "
            f"print(','.join(m for m in {HEAVY!r} if u.find_spec(m)))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    validate = subprocess.run(
        [str(venv / "bin" / "himl"), "validate", "--whole-folder", "experiments/hello-world.yaml"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    return Row(
        target=target,
        seconds=seconds,
        mb=(folder_size(venv) - empty[0]) / 1e6,
        pyc_mb=(folder_size(venv, bytecode_only=True) - empty[1]) / 1e6,
        count=len(set(installed) - base),
        heavy=heavy or "none",
        validate=validate.returncode,
        largest=sorted(
            ((n, s) for n, s in installed.items() if n not in base), key=lambda x: -x[1]
        )[:8],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="also install .[train]")
    parser.add_argument("--keep", type=Path, help="build the environments here, and keep them")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="himl-light-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        empty_venv = root / "empty"
        subprocess.run([sys.executable, "-m", "venv", str(empty_venv)], check=True)
        empty = (folder_size(empty_venv), folder_size(empty_venv, bytecode_only=True))
        base = set(packages(empty_venv))
        targets = [(".", "light")] + ([(".[train]", "train")] if args.train else [])
        rows = [install(root, target, label, empty, base) for target, label in targets]
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"Python {platform.python_version()}, {platform.platform()}, {os.cpu_count()} CPUs")
    config = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout.strip()
    print("pip configuration: " + ("; ".join(config.splitlines()) or "none"))
    print()
    print(
        "| install | wall (s) | size (MB, minus an empty venv) | of which bytecode (MB) "
        "| packages | torch / Lightning |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| `pip install --no-cache-dir {row.target}` | {row.seconds:.1f} | {row.mb:.0f} "
            f"| {row.pyc_mb:.0f} | {row.count} | {row.heavy} |"
        )
    for row in rows:
        largest = ", ".join(f"{n} {size / 1e6:.1f}" for n, size in row.largest)
        print(f"\nlargest in {row.target} (MB): {largest}")
        print(f"himl validate --whole-folder in {row.target}: exit {row.validate}")
    return 0 if all(row.validate == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
