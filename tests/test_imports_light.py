"""`himl validate` never loads torch, Lightning, MLflow or the Azure SDK, and never imports the
user's code (a container module with a side effect is not executed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HEAVY = ("torch", "lightning", "pytorch_lightning", "mlflow", "azure", "scipy", "matplotlib")

SCRIPT = textwrap.dedent(
    """
    import sys
    from himl_manifest.cli.main import cli, run_cli
    code = run_cli(cli, ["validate", "experiments", "--format", "json"])
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
    print("EXIT", code)
    print("HEAVY", heavy)
    print("USER", "my_containers" in sys.modules)
    """
)


def test_validate_imports_nothing_heavy_and_no_user_code(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "experiments").mkdir()
    marker = tmp_path / "side-effect"
    (tmp_path / "my_containers.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\nclass Mine: pass\n"
    )
    (tmp_path / "experiments" / "mine.yaml").write_text(
        "apiVersion: himl/v1\nkind: Experiment\nname: mine\ncontainer: my_containers.Mine\n"
        "trainer: {max_epochs: 2, precision: bf16-mixed}\n"
    )
    (tmp_path / "experiments" / "bad.yaml").write_text(
        "apiVersion: himl/v1\nkind: Experiment\nname: bad\ncontainer: my_containers.Mine\n"
        "trainer: {precision: 12}\n"  # an invalid file too: the error path imports jsonschema
    )
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(heavy=set(HEAVY))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    lines = result.stdout.splitlines()
    assert "EXIT 1" in lines
    assert "HEAVY []" in lines
    assert "USER False" in lines
    assert not marker.exists()


def test_help_imports_neither_yaml_nor_jsonschema() -> None:
    code = (
        "import sys\nfrom himl_manifest.cli.main import cli, run_cli\n"
        "run_cli(cli, ['--help'])\n"
        "print(sorted(m for m in ('yaml', 'jsonschema', 'torch', 'scipy', 'matplotlib') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "[]"


def test_report_and_compare_help_load_neither_scipy_nor_matplotlib() -> None:
    """The report extra is imported when a report is made, not to show its options."""
    code = (
        "import sys\nfrom himl_manifest.cli.main import cli, run_cli\n"
        "run_cli(cli, ['report', '--help'])\nrun_cli(cli, ['compare', '--help'])\n"
        "print(sorted(m for m in ('scipy', 'matplotlib', 'mlflow', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "--fail-if-worse" in out and "--plot" in out
    assert out.splitlines()[-1] == "[]"
