"""`himl audit` on a real git repository and a real MLflow store (records written by hand, as
apply writes them): the reproduce commands it prints, a commit unknown in a shallow clone,
typed JSON, and `--write-spec`."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from himl_manifest.cli.main import cli, run_cli
from himl_manifest.model import RunRecord, RunStatus
from himl_manifest.operations.runs import (
    manifests_folder,
    plan_command,
    run_command,
    typed_provenance,
    upstream_checkpoint,
)
from himl_manifest.provenance import SHALLOW_UNKNOWN
from himl_manifest.spec import RunSpec

MANIFEST = "apiVersion: himl/v1\nkind: Experiment\nname: ft\ncontainer: HelloWorld\n"


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def _spec(name: str, experiment: str, spec: dict[str, Any]) -> RunSpec:
    return RunSpec(
        experiment=experiment,
        seed=0,
        spec={"name": experiment, "container": "HelloWorld", "seed": 0, **spec},
        spec_hash="v1:" + "1" * 64,
        run_name=name,
        manifest_path=f"experiments/{experiment}.yaml",
    )


def _tags(run: RunSpec, provenance: dict[str, str], output_dir: Path) -> dict[str, str]:
    return {
        "himl.managed": "true",
        "himl.run_name": run.run_name,
        "himl.experiment": run.experiment,
        "himl.seed": "0",
        "himl.spec_hash": run.spec_hash,
        "himl.attempt": "1",
        "himl.state": "active",
        "himl.manifest_path": run.manifest_path,
        "himl.output_dir": str(output_dir),
        "himl.spec": json.dumps(json.loads(run.to_json()), separators=(",", ":")),
        **{f"himl.provenance.{k}": v for k, v in provenance.items()},
    }


@pytest.fixture
def project(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A repository ``lab`` with experiments/ft.yaml committed, and a store holding ``base``
    and ``ft`` (fine-tuned from base), applied from a shallow clone that did not hold ft's
    manifest's last change."""
    from mlflow.tracking import MlflowClient

    repo = tmp_path / "lab"
    (repo / "experiments").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "r@example.org")
    _git(repo, "config", "user.name", "R")
    (repo / "experiments" / "ft.yaml").write_text(MANIFEST)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "ft")
    head = _git(repo, "rev-parse", "HEAD")
    shutil.copy(empty_store, repo / "mlflow.db")
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.create_experiment("lab", tags={"himl.managed": "true"})
    facts = {
        "head_commit": head,
        "manifest_commit_unknown": SHALLOW_UNKNOWN,
        "dirty": "false",
        "worktree_dirty": "false",
        "tracked": "true",
        "allow_dirty": "false",
        "shallow": "true",
        "applied_by": "octocat",
        "applied_by_source": "GITHUB_ACTOR",
        "ci_run_url": "https://github.com/lab/exp/actions/runs/42",
    }
    base_dir = repo / "outputs" / "base run"
    source = {"checkpoint": {"source": {"experiment": "base", "run": "base-s0-aaaa1111"}}}
    for run, folder in (
        (_spec("base-s0-aaaa1111", "base", {}), base_dir),
        (_spec("ft-s0-bbbb2222", "ft", source), repo / "outputs" / "ft"),
    ):
        made = client.create_run(experiment, tags=_tags(run, facts, folder))
        client.set_terminated(made.info.run_id, "FINISHED")
    monkeypatch.chdir(repo)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return {"repo": repo, "head": head, "base_dir": base_dir}


def _audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_cli(cli, ["audit", "--backend", "local", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_text_names_each_reproduce_command_and_the_unknown_commit(
    project: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _audit(capsys, "ft-s0-bbbb2222")
    assert code == 0, err
    head, repo = project["head"], project["repo"]
    worktree = shlex.quote(str(repo.parent / f"lab-{head[:12]}"))
    rows = {line.split("  ")[0]: line for line in out.splitlines()}
    assert f"unknown ({SHALLOW_UNKNOWN})" in rows["manifest commit"]
    assert "octocat (GITHUB_ACTOR) at" in rows["applied by"]
    assert rows["ci run"].endswith("https://github.com/lab/exp/actions/runs/42")
    assert rows["reproduce (plan)"].endswith(
        f"(test -d {worktree} || git worktree add --detach {worktree} {head[:12]}) && "
        f"cd {worktree} && himl plan experiments --target ft --backend local "
        "--tracking-uri sqlite:///mlflow.db"
    )
    assert "--write-spec FILE" in out  # how to get the `run` kind
    assert f"warning: manifest commit unknown: {SHALLOW_UNKNOWN}" in out


def test_write_spec_adds_the_exact_run_command(
    project: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec_file = tmp_path / "ft spec.json"
    code, out, err = _audit(
        capsys, "ft-s0-bbbb2222", "--format", "json", "--write-spec", str(spec_file)
    )
    assert code == 0, err
    answer = json.loads(out)
    assert answer["format"] == "himl-audit/v2"
    assert [item["kind"] for item in answer["reproduce"]] == ["plan", "run"]
    command = answer["reproduce"][1]["command"]
    checkpoint = project["base_dir"] / "checkpoints" / "last.ckpt"
    assert command.endswith(
        f"himl run {shlex.quote(str(spec_file))} --tracking-uri sqlite:///mlflow.db "
        f"--input checkpoint={shlex.quote(str(checkpoint))}"
    )
    written = RunSpec.from_json(spec_file.read_text())
    assert written.run_name == "ft-s0-bbbb2222" and written.spec["checkpoint"]["source"]["run"]
    facts = answer["provenance"]
    assert facts["shallow"] is True and facts["dirty"] is False and facts["tracked"] is True
    assert "manifest_commit" not in facts


def test_commit_answer_warns_about_unknown_manifest_commits(
    project: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _audit(capsys, "--commit", project["head"][:10])
    assert code == 0, err
    assert "2 run(s) came from commit" in out and "HEAD at apply" in out
    assert "warning: 2 run(s) were applied from a shallow clone" in err
    code, out, err = _audit(capsys, "--commit", project["head"][:10], "--format", "json")
    document = json.loads(out)
    assert document["warnings"] and document["runs"][0]["provenance"]["shallow"] is True


def test_write_spec_needs_a_run(
    project: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _audit(capsys, "--commit", "abc", "--write-spec", "x.json")
    assert code == 64 and "--write-spec needs a RUN" in err


def test_an_unwritable_spec_file_is_a_clear_error(
    project: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "no such folder" / "spec.json"
    code, _, err = _audit(capsys, "ft-s0-bbbb2222", "--write-spec", str(target))
    assert code == 1
    assert f"--write-spec {target}: cannot write the run spec" in err


# --- the pieces, on records made in memory ------------------------------------------------------


def _record(**fields: Any) -> RunRecord:
    values: dict[str, Any] = {
        "run_name": "ft-s0-bbbb2222",
        "run_id": "id-ft",
        "experiment": "ft",
        "seed": 0,
        "spec_hash": "v1:x",
        "status": RunStatus.COMPLETED,
        "spec_source": {},
        "manifest_path": "experiments/sub/ft.yaml",
        "provenance": {"head_commit": "c" * 40},
    }
    values.update(fields)
    return RunRecord(**values)


def test_typed_provenance() -> None:
    stored = {"dirty": "true", "tracked": "false", "shallow": "maybe", "branch": "true"}
    assert typed_provenance(stored) == {
        "dirty": True,
        "tracked": False,
        "shallow": "maybe",  # not a boolean: left as it was
        "branch": "true",  # a branch may be called "true"
    }


@pytest.mark.parametrize(
    ("path", "folder"),
    [
        ("experiments/ft.yaml", "experiments"),
        ("experiments/sub/ft.yaml", "experiments"),
        ("ft.yaml", "ft.yaml"),
    ],
)
def test_the_whole_manifests_folder_is_planned(path: str, folder: str) -> None:
    assert manifests_folder(path) == folder


def test_no_commit_no_command(tmp_path: Path) -> None:
    record = _record(provenance={})
    assert plan_command(record, tmp_path) is None
    assert run_command(record, tmp_path, tmp_path / "s.json", [record]) is None


def test_a_fine_tune_whose_upstream_is_not_here_says_what_to_add(tmp_path: Path) -> None:
    spec = {"checkpoint": {"source": {"experiment": "base", "run": "base-s0-aaaa1111"}}}
    record = _record(spec_source=spec)
    assert upstream_checkpoint(record, [record]) is None
    item = run_command(record, tmp_path, tmp_path / "s.json", [record])
    assert item is not None and "--input checkpoint" not in item.command
    assert "add --input checkpoint=FILE" in item.note


def test_a_resumed_run_starts_from_its_predecessor(tmp_path: Path) -> None:
    before = _record(run_name="ft-s0-old", run_id="id-old", output_dir=str(tmp_path / "old"))
    record = _record(resume_from="ft-s0-old")
    found = upstream_checkpoint(record, [before, record])
    assert found == str(tmp_path / "old" / "checkpoints" / "last.ckpt")
