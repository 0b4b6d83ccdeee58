"""What `himl runs` and `himl audit` show: run rows, sync states, audit answers. No printing.

Sync state of a run record (``himl runs``), from the manifests' desired run names:

- ``in sync``: the manifests ask for exactly this run;
- ``out of sync``: the manifests ask for this experiment and seed, with other settings (the
  next apply replaces or resumes it);
- ``orphan``: the manifests no longer ask for this experiment or seed;
- ``superseded`` / ``archived``: its lifecycle state, whatever the manifests say;
- ``unknown``: no manifests were read.

Times of a run (``himl runs``): ``queued_s`` from its record's creation to its process's start,
``run_s`` from that start to its end, ``duration_s`` the two together (what older records,
which did not record their start, show alone).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from himl_manifest.model import Lifecycle, RunRecord, RunStatus
from himl_manifest.records.select import chosen_attempt, latest_attempts, named
from himl_manifest.spec import RunSpec

IN_SYNC = "in sync"
OUT_OF_SYNC = "out of sync"
ORPHAN = "orphan"
UNKNOWN = "unknown"
#: Versions of the JSON documents of `himl runs` and `himl audit` (v2: provenance facts typed,
#: ``reproduce`` a list of commands of a kind, ``warnings`` on ``--commit`` answers).
RUNS_FORMAT = "himl-runs/v1"
AUDIT_FORMAT = "himl-audit/v2"
#: MLflow search filter of the live managed runs (for the MLflow UI's search box).
LIVE_RUNS_FILTER = "tags.himl.state = 'active'"
#: Provenance facts that are booleans (stored as "true"/"false" tags).
BOOLEAN_FACTS = frozenset({"dirty", "worktree_dirty", "tracked", "allow_dirty", "shallow"})


@dataclass(frozen=True)
class RunRow:
    """One run attempt as `himl runs` shows it."""

    run_name: str
    run_id: str
    experiment: str
    seed: int
    attempt: int
    status: str
    state: str
    sync: str
    start_time: float | None
    duration_s: float | None
    metrics: dict[str, float]
    output_dir: str | None
    error_tail: str
    manifest_path: str
    commit: str | None
    #: Where a person can see the run (Azure ML: its studio page); None when there is none.
    url: str | None = None
    #: Seconds from its record's creation to its process's start (None: not recorded).
    queued_s: float | None = None
    #: Seconds from its process's start to its end (None: not recorded, or not ended).
    run_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _span(start: float | None, end: float | None) -> float | None:
    return max(0.0, end - start) if start is not None and end is not None else None


def sync_state(record: RunRecord, desired: Sequence[RunSpec] | None) -> str:
    if record.state in (Lifecycle.SUPERSEDED, Lifecycle.ARCHIVED):
        return record.state
    if desired is None:
        return UNKNOWN
    if any(run.run_name == record.run_name for run in desired):
        return IN_SYNC
    key = (record.experiment, record.seed, record.fold)
    if any((run.experiment, run.seed, run.fold) == key for run in desired):
        return OUT_OF_SYNC
    return ORPHAN


def run_rows(
    records: Sequence[RunRecord], desired: Sequence[RunSpec] | None, *, show_all: bool = False
) -> list[RunRow]:
    """Rows for `himl runs`: the latest attempt of each live run, or every attempt (``all``)."""
    chosen = list(records) if show_all else list(latest_attempts(records).values())
    rows = []
    for record in chosen:
        if not show_all and record.state != Lifecycle.ACTIVE:
            continue
        rows.append(
            RunRow(
                run_name=record.run_name,
                run_id=record.run_id,
                experiment=record.experiment,
                seed=record.seed,
                attempt=record.attempt,
                status=record.status,
                state=record.state,
                sync=sync_state(record, desired),
                start_time=record.start_time,
                duration_s=_span(record.start_time, record.end_time),
                metrics=dict(record.metrics),
                output_dir=record.output_dir,
                error_tail=record.error_tail,
                manifest_path=record.manifest_path,
                commit=record.source.head_commit,
                url=record.url,
                queued_s=_span(record.start_time, record.run_start_time),
                run_s=_span(record.run_start_time, record.end_time),
            )
        )
    rows.sort(key=lambda r: (r.experiment, r.seed, r.start_time or 0.0, r.attempt))
    return rows


def key_metrics(metrics: dict[str, float], limit: int = 3) -> dict[str, float]:
    """The metrics worth a column: validation and test ones first, then losses."""

    def rank(name: str) -> tuple[int, str]:
        if name.startswith(("val", "test")):
            return (0, name)
        return (1 if "loss" in name else 2, name)

    names = sorted((n for n in metrics if rank(n)[0] < 2 and "epoch" not in n), key=rank)
    return {name: metrics[name] for name in names[:limit]}


def failed_tail(row: RunRow, lines: int = 5) -> list[str]:
    if row.status not in (RunStatus.FAILED, "cancelled") or not row.error_tail.strip():
        return []
    return row.error_tail.strip().splitlines()[-lines:]


# --- audit ------------------------------------------------------------------------------------


def typed_provenance(facts: Mapping[str, str]) -> dict[str, Any]:
    """Stored provenance facts (all text in a store) with their types back: the boolean facts
    as booleans (a value that is neither ``true`` nor ``false`` stays text), the others text."""
    typed: dict[str, Any] = {}
    for key, value in facts.items():
        if key in BOOLEAN_FACTS and str(value).lower() in ("true", "false"):
            typed[key] = str(value).lower() == "true"
        else:
            typed[key] = value
    return typed


def record_identity(record: RunRecord) -> dict[str, Any]:
    """The fields every audit document shows of a run: who it is, how it stands, its provenance."""
    return {
        "run_name": record.run_name,
        "run_id": record.run_id,
        "experiment": record.experiment,
        "seed": record.seed,
        "attempt": record.attempt,
        "status": record.status,
        "state": record.state,
        "manifest_path": record.manifest_path,
        "provenance": typed_provenance(record.provenance),
    }


#: Kinds of reproduce command: ``plan`` (the manifests of the commit against a fresh store, in a
#: fresh worktree: the run and everything it starts from) and ``run`` (the exact recorded spec).
REPRODUCE_PLAN = "plan"
REPRODUCE_RUN = "run"


@dataclass(frozen=True)
class Reproduce:
    """A shell command that produces a run again, what kind it is, and what to know about it."""

    kind: str
    command: str
    note: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class AuditAnswer:
    """Which commit and manifest produced a run, and how to produce it again."""

    record: RunRecord
    attempts: list[dict[str, Any]]
    manifest_content: str | None
    reproduce: list[Reproduce]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        record = self.record
        return {
            "format": AUDIT_FORMAT,
            **record_identity(record),
            "spec_hash": record.spec_hash,
            "output_dir": record.output_dir,
            "url": record.url,
            "resume_from": record.resume_from,
            "manifest_content": self.manifest_content,
            "reproduce": [item.to_dict() for item in self.reproduce],
            "attempts": self.attempts,
            "warnings": self.warnings,
        }


def find_records(records: Sequence[RunRecord], reference: str) -> list[RunRecord]:
    """Every attempt of the run named (or with the id) ``reference``, oldest first."""
    by_id = [r for r in records if r.run_id == reference]
    name = by_id[0].run_name if by_id else reference
    found = [r for r in records if r.run_name == name]
    return sorted(found, key=lambda r: r.attempt)


def reproduce_commit(record: RunRecord) -> str | None:
    """The commit to check out to produce ``record`` again: HEAD when it was applied (its code
    and every manifest as they were), else the commit that last changed its manifest."""
    return record.source.head_commit or record.source.manifest_commit


def manifests_folder(manifest_path: str) -> str:
    """What to plan so that cross-file references resolve: the top folder of the manifest
    (``experiments/sub/ft.yaml`` -> ``experiments``), or the manifest itself at the root."""
    parts = PurePosixPath(manifest_path).parts
    return parts[0] if len(parts) > 1 else manifest_path


def worktree_folder(root: Path, commit: str) -> Path:
    """Where a reproduce command checks ``commit`` out: beside the repository, so no live run,
    run folder or store of this checkout is touched, and its default store is a fresh one
    (the commands reuse that worktree when it is there already)."""
    return root.parent / f"{root.name}-{commit[:12]}"


def _checkout(root: Path, commit: str) -> tuple[str, Path]:
    folder = worktree_folder(root, commit)
    quoted = shlex.quote(str(folder))
    add = f"git worktree add --detach {quoted} {commit[:12]}"
    command = f"(test -d {quoted} || {add}) && cd {quoted}"
    return command, folder


#: A store in the worktree's root (a relative SQLite URI is taken relative to the project root):
#: fresh, and never the one ``$MLFLOW_TRACKING_URI`` may name.
FRESH_STORE = "sqlite:///mlflow.db"


def plan_command(record: RunRecord, root: Path) -> Reproduce | None:
    """The ``plan`` kind: check the commit out in a new worktree and plan the whole manifests
    folder for this experiment against a fresh store there."""
    commit = reproduce_commit(record)
    if not commit or not record.manifest_path:
        return None
    checkout, _ = _checkout(root, commit)
    folder = shlex.quote(manifests_folder(record.manifest_path))
    target = shlex.quote(record.experiment)
    command = (
        f"{checkout} && himl plan {folder} --target {target} --backend local "
        f"--tracking-uri {FRESH_STORE}"
    )
    return Reproduce(
        REPRODUCE_PLAN,
        command,
        "plans the experiment and every run it starts from as the commit defines them, against "
        "an empty local store; it never reads or changes the live runs (a workspace's either); "
        "`himl apply` with the same arguments trains the local ones",
    )


def upstream_checkpoint(record: RunRecord, records: Sequence[RunRecord]) -> str | None:
    """The local checkpoint file ``record`` started or resumed from (its upstream run's, as
    the store names it), when that run is in ``records`` with a local run folder."""
    from himl_manifest.model import checkpoint_source
    from himl_manifest.records import parse_run_reference

    source = checkpoint_source(record.spec)
    reference = record.resume_from or (source.run_reference() if source is not None else None)
    if not reference:
        return None
    try:
        name, inside = parse_run_reference(reference)
    except Exception:
        return None
    chosen = chosen_attempt([r for r in named(records, name) if r.output_dir])
    if chosen is None or not chosen.output_dir or "://" in chosen.output_dir:
        return None
    return str(Path(chosen.output_dir) / inside)


def needs_checkpoint(record: RunRecord) -> bool:
    """Whether the run started from another run's checkpoint (which a fresh store lacks)."""
    from himl_manifest.model import checkpoint_source

    source = checkpoint_source(record.spec)
    return bool(record.resume_from) or (source is not None and source.run_name is not None)


def run_command(
    record: RunRecord, root: Path, spec_file: Path, records: Sequence[RunRecord]
) -> Reproduce | None:
    """The ``run`` kind: the exact recorded spec (written to ``spec_file``), executed by
    `himl run` in a new worktree of the commit, recording into a fresh store there."""
    commit = reproduce_commit(record)
    if not commit:
        return None
    checkout, _ = _checkout(root, commit)
    command = f"{checkout} && himl run {shlex.quote(str(spec_file))} --tracking-uri {FRESH_STORE}"
    note = "executes the recorded spec of this one run (its seed), as apply started it"
    if needs_checkpoint(record):
        checkpoint = upstream_checkpoint(record, records)
        if checkpoint is not None:
            command += f" --input checkpoint={shlex.quote(checkpoint)}"
            note += "; from the checkpoint its upstream run wrote in this checkout"
        else:
            note += (
                "; it starts from another run's checkpoint, which the fresh store lacks: add "
                "--input checkpoint=FILE"
            )
    return Reproduce(REPRODUCE_RUN, command, note)


def recorded_spec_json(record: RunRecord) -> str:
    """The run spec the store recorded for ``record`` (``himl-runspec/v1``), as `himl run`
    reads it."""
    if isinstance(record.spec_source, str) and record.spec_source.strip():
        return RunSpec.from_json(record.spec_source).to_json()
    return RunSpec(
        experiment=record.experiment,
        seed=record.seed,
        spec=record.spec,
        spec_hash=record.spec_hash,
        run_name=record.run_name,
        manifest_path=record.manifest_path,
        conda_sha256=record.conda_sha256,
        resume_from=record.resume_from,
        provenance=dict(record.provenance),
    ).to_json()


def audit_run(
    records: Sequence[RunRecord],
    reference: str,
    root: Path,
    *,
    spec_file: Path | None = None,
) -> AuditAnswer | None:
    """The audit answer for one run (its newest attempt), or None when no such run exists.

    ``spec_file``: also write the run's recorded spec there, and give the `himl run` command
    that executes it."""
    from himl_manifest.provenance import GitProvenance

    found = find_records(records, reference)
    if not found:
        return None
    record = found[-1]
    commit = record.source.commit
    git = GitProvenance(root)
    content = git.show(commit, record.manifest_path) if commit else None
    warnings = _audit_warnings(record, commit, content)
    reproduce = [item for item in (plan_command(record, git.repo_root),) if item is not None]
    if spec_file is not None:
        _write_spec(spec_file, recorded_spec_json(record))
        item = run_command(record, git.repo_root, spec_file.resolve(), records)
        if item is not None:
            reproduce.append(item)
    attempts = [
        {
            "attempt": r.attempt,
            "run_id": r.run_id,
            "status": r.status,
            "applied_at": r.source.applied_at,
            "applied_by": r.source.applied_by,
            "head_commit": r.source.head_commit,
        }
        for r in found
    ]
    return AuditAnswer(record, attempts, content, reproduce, warnings)


def _audit_warnings(record: RunRecord, commit: str | None, content: str | None) -> list[str]:
    facts = record.source
    warnings = []
    if facts.dirty:
        warnings.append(
            "the manifest had uncommitted changes when it was applied (--allow-dirty): "
            "the commit does not hold exactly what ran"
        )
    elif facts.worktree_dirty:
        warnings.append(
            "the work tree had uncommitted changes when it was applied: code outside the "
            "manifest may differ from the commit"
        )
    if facts.manifest_commit_unknown:
        warnings.append(f"manifest commit unknown: {facts.manifest_commit_unknown}")
    if commit and content is None:
        warnings.append(f"commit {commit[:12]} is not in this repository (fetch it first)")
    if not reproduce_commit(record):
        warnings.append("no commit was recorded (applied outside git): it cannot be reproduced")
    return warnings


def _write_spec(path: Path, text: str) -> None:
    from himl_manifest.errors import ConfigError

    try:
        path.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--write-spec {path}: cannot write the run spec: {exc}") from exc


def runs_of_commit(records: Sequence[RunRecord], commit: str) -> list[tuple[RunRecord, str]]:
    """Runs whose manifest commit or HEAD-at-apply is ``commit`` (a full sha or a prefix)."""
    commit = commit.lower()
    out = []
    for record in records:
        manifest = record.source.manifest_commit or ""
        head = record.source.head_commit or ""
        if manifest.startswith(commit):
            out.append((record, "manifest commit"))
        elif head.startswith(commit):
            out.append((record, "HEAD at apply"))
    out.sort(key=lambda item: (item[0].experiment, item[0].seed, item[0].attempt))
    return out


def unknown_manifest_commits(records: Sequence[RunRecord]) -> list[str]:
    """Run names whose manifest commit was not recorded because it was unknown (a shallow
    clone): `audit --commit` can match them by HEAD at apply only."""
    names = {r.run_name for r in records if r.source.manifest_commit_unknown}
    return sorted(names)
