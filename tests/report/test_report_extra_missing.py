"""Without the `report` extra, the statistics and figures name the extra that installs them
(a real subprocess in which scipy and matplotlib cannot be imported), instead of a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("scipy", "matplotlib"):
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, Block())
    from himl_manifest.extras import MissingExtra
    """
)


def _run(body: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_statistics_name_the_report_extra() -> None:
    out = _run(
        """
        from himl_manifest.report.stats import t_quantile
        try:
            t_quantile(0.95, 4.0)
        except MissingExtra as exc:
            print(exc)
        """
    )
    assert "pip install 'himl-manifest[report]'" in out


def test_figures_name_the_report_extra() -> None:
    out = _run(
        """
        from himl_manifest.report.plots import _matplotlib
        try:
            _matplotlib()
        except MissingExtra as exc:
            print(exc)
        """
    )
    assert "--plot needs matplotlib: pip install 'himl-manifest[report]'" in out
