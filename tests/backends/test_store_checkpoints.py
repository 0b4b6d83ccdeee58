"""What the local store records about checkpoints, source and names (a real SQLite store).

- ``has_checkpoint`` comes from the store (``himl.checkpoints``), never from a disk: a run whose
  folder is elsewhere still has its checkpoint; a run folder holding a file the store does not
  list does not; a record of an older version without the tag counts as having
  ``checkpoints/last.ckpt`` when it completed (the Azure ML store's rule too).
- resolving a checkpoint says "recorded in the store, but not on this machine" apart from
  "no ... recorded in the store".
- new runs carry MLflow's source tags (from the provenance apply stamps) and their manifest's
  tags as plain tags; an in-place update sets and removes the plain tags too; a resumed run
  is linked to the run it continued (``mlflow.parentRunId``).
- the experiment a run is filed under is its manifest's name unless ``tracking.experiment``
  says otherwise, computed without changing any spec hash.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from backend_helpers import MakeRuns, run_all

from himl_manifest.backends import local_sql
from himl_manifest.backends.local import LocalBackend
from himl_manifest.backends.local_records import to_record
from himl_manifest.errors import CheckpointError
from himl_manifest.model import Lifecycle, RunStatus
from himl_manifest.records import (
    TAG_CHECKPOINTS,
    TAG_GIT_BRANCH,
    TAG_GIT_COMMIT,
    TAG_GIT_REPO_URL,
    TAG_HOST,
    TAG_PARENT_RUN,
    TAG_SOURCE_NAME,
    run_experiment,
)

PROVENANCE = {
    "head_commit": "5b0d1f0c2a7e4d0f9f3c1a2b3c4d5e6f7a8b9c0d",
    "branch": "main",
    "remote_url": "https://github.com/lab/experiments.git",
}


def _tags(backend: LocalBackend, run_id: str) -> dict[str, str]:
    found = backend.store.get(run_id)
    assert found is not None
    return dict(found.data.tags)


def _record(backend: LocalBackend, run_name: str) -> Any:
    [record] = [r for r in backend.list_runs() if r.run_name == run_name]
    return record


def _completed(backend: LocalBackend, make_runs: MakeRuns, name: str = "hello") -> Any:
    (run,) = make_runs(name)
    run_all(backend, [run])
    return _record(backend, run.run_name)


def test_has_checkpoint_is_what_the_store_records_not_the_disk(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    record = _completed(backend, make_runs)
    folder = Path(record.output_dir)
    assert (folder / "checkpoints" / "last.ckpt").is_file()  # the fake runner wrote one
    # An older version's record (no tag): a completed run counts as having last.ckpt.
    assert TAG_CHECKPOINTS not in _tags(backend, record.run_id)
    assert record.has_checkpoint

    # The store lists no last.ckpt: no checkpoint, though the file is on this disk.
    backend.store.set_tags(record.run_id, {TAG_CHECKPOINTS: "checkpoints/best_val_loss.ckpt"})
    assert not _record(backend, record.run_name).has_checkpoint

    # The store lists it, the folder is gone (another machine's): it has one. Light reads agree.
    backend.store.set_tags(record.run_id, {TAG_CHECKPOINTS: "checkpoints/last.ckpt"})
    (folder / "checkpoints" / "last.ckpt").unlink()
    assert _record(backend, record.run_name).has_checkpoint
    backend.set_state(record.run_name, Lifecycle.SUPERSEDED)
    [light] = local_sql.read_managed_runs(Path(backend.store.db or ""), full=False) or []
    history = to_record(light)
    assert light.light and history is not None and history.has_checkpoint


def test_an_old_record_without_the_tag_that_did_not_complete_has_none(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    (run,) = make_runs(params={"behaviour": "fail"})
    run_all(backend, [run])
    record = _record(backend, run.run_name)
    assert record.status == RunStatus.FAILED
    assert (Path(record.output_dir) / "checkpoints" / "last.ckpt").is_file()
    assert not record.has_checkpoint  # no tag, not completed: none recorded


def test_resolving_says_recorded_elsewhere_apart_from_not_recorded(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    record = _completed(backend, make_runs)
    folder = Path(record.output_dir)
    assert backend.resolve_checkpoint(record.run_name) == str(folder / "checkpoints/last.ckpt")

    # Recorded by the runner on another machine; nothing here, nothing logged as an artifact.
    (folder / "checkpoints" / "last.ckpt").unlink()
    backend.store.set_tags(
        record.run_id, {TAG_CHECKPOINTS: "checkpoints/last.ckpt", TAG_HOST: "gpu-box-7"}
    )
    with pytest.raises(CheckpointError) as recorded:
        backend.resolve_checkpoint(record.run_name)
    message = str(recorded.value)
    assert "recorded in the store, but not on this machine and not logged as an artifact" in (
        message
    )
    assert "gpu-box-7" in message and "no checkpoint" not in message

    with pytest.raises(
        CheckpointError, match=r"no checkpoints/best_val_loss\.ckpt recorded in the"
    ):
        backend.resolve_checkpoint(f"{record.run_name}:best_val_loss.ckpt")


def test_new_runs_carry_source_tags_plain_tags_and_the_run_they_continue(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    (run,) = make_runs(tags={"team": "imaging"})
    # validate refuses a reserved tag in a manifest; a run spec written otherwise keeps it out
    tags = {"team": "imaging", "mlflow.user": "not-a-plain-tag"}
    run = dataclasses.replace(
        run,
        spec={**run.spec, "tags": tags},
        provenance={**PROVENANCE, "remote_url": "https://bot:t0ken@github.com/lab/e.git"},
    )
    run_all(backend, [run])
    first = _record(backend, run.run_name)
    tags = _tags(backend, first.run_id)
    assert tags[TAG_GIT_COMMIT] == PROVENANCE["head_commit"]
    assert tags[TAG_GIT_BRANCH] == "main"
    assert tags[TAG_GIT_REPO_URL] == "https://github.com/lab/e.git"  # no credentials
    assert tags[TAG_SOURCE_NAME] == "experiments/hello.yaml"
    assert tags["team"] == tags["himl.tag.team"] == "imaging"
    assert "mlflow.user" not in tags and tags["himl.tag.mlflow.user"] == "not-a-plain-tag"
    assert TAG_PARENT_RUN not in tags

    (longer,) = make_runs(trainer={"max_epochs": 2})
    resumed = dataclasses.replace(longer, resume_from=run.run_name)
    run_all(backend, [resumed])
    record = _record(backend, resumed.run_name)
    assert record.resume_from == run.run_name
    assert _tags(backend, record.run_id)[TAG_PARENT_RUN] == first.run_id


def test_an_in_place_update_sets_and_removes_plain_tags(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    (run,) = make_runs(tags={"team": "imaging", "purpose": "baseline"})
    run_all(backend, [run])
    (updated,) = make_runs(tags={"team": "radiology", "owner": "ana"})
    assert updated.spec_hash == run.spec_hash  # tags are cosmetic
    backend.update_metadata(run.run_name, updated)
    tags = _tags(backend, _record(backend, run.run_name).run_id)
    assert (tags["team"], tags["owner"]) == ("radiology", "ana")
    assert (tags["himl.tag.team"], tags["himl.tag.owner"]) == ("radiology", "ana")
    assert "purpose" not in tags and "himl.tag.purpose" not in tags


def test_runs_are_filed_under_the_manifests_name_with_no_hash_changed(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    (first,) = make_runs("first")
    (second,) = make_runs("second")
    (named,) = make_runs("third", tracking={"experiment": "shared-board"})
    # The normalized spec (what the hash covers) still holds the old default...
    assert first.spec["tracking"]["experiment"] == "HelloWorld"
    # ...which reads as unset: each experiment gets its own MLflow experiment.
    assert [run_experiment(r) for r in (first, second, named)] == [
        "first",
        "second",
        "shared-board",
    ]
    run_all(backend, [first, second, named])
    client = backend.store.client
    for run, expected in ((first, "first"), (second, "second"), (named, "shared-board")):
        found = client.get_run(_record(backend, run.run_name).run_id)
        assert client.get_experiment(found.info.experiment_id).name == expected
