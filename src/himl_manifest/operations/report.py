"""`himl report` and `himl compare` as core functions: a run store and manifests in, a
:class:`~himl_manifest.report.model.Report` or a comparison out. No printing.

Which runs count for an experiment (its **current runs**):

- an experiment the manifests ask for: exactly the runs they ask for now, one per (seed,
  fold), each as its newest attempt stands (completed, running, failed) or missing when the
  store has no record of it (not applied yet, or edited since: apply first). Superseded runs,
  and runs of other settings, never count;
- an experiment only the store knows (its manifest was deleted, or no manifests were read):
  its latest active runs, one per (seed, fold) (the newest), marked as chosen from the store.

The store is read twice whatever the number of experiments: one ``list_runs`` and one
``metric_histories`` of every completed current run.

``NAME@REV`` in a comparison plans the manifests as they are at git revision ``REV`` (a
temporary ``git worktree``, removed afterwards) and reads those runs by name from the same
store: `himl compare hello@main hello` compares this branch's working tree with main.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from himl_manifest.backends.base import RunStore
from himl_manifest.diagnostics import did_you_mean
from himl_manifest.errors import ConfigError, ManifestError, UsageError
from himl_manifest.model import Lifecycle, RunRecord
from himl_manifest.records.select import latest_attempts, newest
from himl_manifest.report.compare import Comparison, Gate, compare
from himl_manifest.report.metrics import Directions
from himl_manifest.report.model import (
    ExperimentReport,
    Report,
    Unit,
    Wanted,
    experiment_report,
    fold_of,
    unit_of,
)
from himl_manifest.spec import RunSpec

FROM_MANIFESTS = "manifests"
FROM_STORE = "store"
STORE_NOTE = (
    "no manifest asks for this experiment: its latest active runs in the store are reported "
    "(missing seeds cannot be told)"
)


@dataclass(frozen=True)
class Selection:
    """The runs that make up one experiment, and where they were chosen from."""

    name: str
    source: str
    wanted: list[Wanted]
    notes: list[str] = field(default_factory=list)


def from_manifests(
    name: str, desired: Sequence[RunSpec], records: Sequence[RunRecord], source: str
) -> Selection:
    """The runs the manifests ask for, each as its newest attempt stands. A run recorded under
    the previous identity version whose hash of that version is the desired run's
    (``RunSpec.legacy_hash``: nothing run-affecting changed since) is that run, as the planner
    keeps it."""
    by_name = by_run_name(records)
    by_hash: dict[str, list[RunRecord]] = {}
    for record in records:
        if record.state == Lifecycle.ACTIVE:
            by_hash.setdefault(record.spec_hash, []).append(record)
    wanted = []
    for run in desired:
        if run.experiment != name:
            continue
        found = by_name.get(run.run_name, [])
        legacy = run.legacy_hash
        if not found and legacy:
            same = [r for r in by_hash.get(legacy, []) if r.experiment == name]
            chosen = newest(same)
            found = [r for r in same if chosen is not None and r.run_name == chosen.run_name]
        unit = Unit(run.seed, fold_of(run.spec))
        current = newest(found)
        wanted.append(Wanted(unit, current.run_name if current else run.run_name, current))
    return Selection(name, source, wanted)


def from_store(name: str, records: Sequence[RunRecord]) -> Selection:
    """The latest active runs of an experiment no manifest asks for, one per unit."""
    latest = latest_attempts(
        r for r in records if r.experiment == name and r.state == Lifecycle.ACTIVE
    )
    per_unit: dict[Unit, RunRecord] = {}
    for record in latest.values():
        unit = unit_of(record)
        known = per_unit.get(unit)
        if known is None or (record.start_time or 0.0) > (known.start_time or 0.0):
            per_unit[unit] = record
    wanted = [Wanted(unit, r.run_name, r) for unit, r in per_unit.items()]
    return Selection(name, FROM_STORE, wanted, [STORE_NOTE])


def by_run_name(records: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    grouped: dict[str, list[RunRecord]] = {}
    for record in records:
        grouped.setdefault(record.run_name, []).append(record)
    return grouped


def select(
    desired: Sequence[RunSpec] | None,
    records: Sequence[RunRecord],
    names: Collection[str] = (),
    *,
    source: str = FROM_MANIFESTS,
) -> list[Selection]:
    """The current runs of each experiment (``names``, or every one the manifests or the store
    know); UsageError naming an unknown experiment."""
    asked = sorted({run.experiment for run in desired or ()})
    stored = sorted({r.experiment for r in records if r.state == Lifecycle.ACTIVE})
    known = sorted(set(asked) | set(stored))
    for name in names:
        if name not in known:
            hint = did_you_mean(name, known)
            raise UsageError(
                f"no experiment {name!r} in the manifests or the run store"
                + (f" ({hint})" if hint else "")
            )
    chosen = list(dict.fromkeys(names)) if names else known
    return [
        from_manifests(name, desired or (), records, source)
        if name in asked
        else from_store(name, records)
        for name in chosen
    ]


def completed_ids(selections: Sequence[Selection]) -> list[str]:
    return [
        item.record.run_id
        for selection in selections
        for item in selection.wanted
        if item.record is not None and item.record.status == "completed"
    ]


def build(
    selections: Sequence[Selection], store: RunStore, directions: Directions
) -> list[ExperimentReport]:
    """One ``metric_histories`` read for every completed run, then the reports."""
    histories = store.metric_histories(completed_ids(selections))
    return [
        experiment_report(s.name, s.source, s.wanted, histories, directions, notes=s.notes)
        for s in selections
    ]


def listed_records(store: RunStore, desired: Sequence[RunSpec] | None) -> list[RunRecord]:
    """Every active record, and every attempt of the runs the manifests ask for."""
    return store.list_runs(full=False, history_of={run.run_name for run in desired or ()})


def make_report(
    store: RunStore,
    desired: Sequence[RunSpec] | None,
    names: Collection[str] = (),
    directions: Directions | None = None,
) -> Report:
    """The report of ``names`` (default: every experiment) over ``store``; ``desired``: the
    run specs the manifests ask for now (None: no manifests were read)."""
    directions = directions or Directions()
    selections = select(desired, listed_records(store, desired), names)
    warnings = []
    if desired is None:
        warnings.append(
            "no manifests read: every experiment's latest active runs are reported, and missing "
            "seeds cannot be told"
        )
    return Report(build(selections, store, directions), warnings)


# --- comparisons -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One side of a comparison: an experiment, at a git revision or in the working tree."""

    experiment: str
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> Side:
        name, sep, revision = text.partition("@")
        if not name or (sep and not revision):
            raise UsageError(f"{text!r}: expected EXPERIMENT or EXPERIMENT@REVISION (hello@main)")
        return cls(name, revision or None)

    @property
    def label(self) -> str:
        return self.experiment + (f"@{self.revision}" if self.revision else "")


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigError(f"git {' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return done.stdout.strip()


def desired_at(
    revision: str, paths: Sequence[str | PathLike[str]], root: Path | None = None
) -> list[RunSpec]:
    """The run specs the manifests under ``paths`` asked for at git ``revision``: planned in a
    temporary worktree of that commit (removed afterwards), so the manifests, conda files and
    code are the commit's own."""
    from himl_manifest.operations.plan import desired_runs

    start = (root or Path.cwd()).resolve()
    try:
        top = Path(git(start, "rev-parse", "--show-toplevel")).resolve()
    except ConfigError as exc:
        raise UsageError(f"@{revision} needs a git repository: {exc}") from None
    try:
        commit = git(top, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    except ConfigError:
        raise UsageError(f"@{revision}: no such commit, branch or tag in {top}") from None
    folder = Path(tempfile.mkdtemp(prefix="himl-compare-"))
    tree = folder / "tree"
    try:
        git(top, "worktree", "add", "--detach", "--quiet", str(tree), commit)
        inside = []
        for path in paths:
            absolute = (start / path).resolve()
            if not absolute.is_relative_to(top):
                raise UsageError(f"@{revision}: {path} is outside the repository {top}")
            inside.append(tree / absolute.relative_to(top))
        present = [p for p in inside if p.exists()]
        if not present:
            shown = ", ".join(str(Path(p)) for p in paths)
            raise UsageError(f"@{revision} ({commit[:12]}): no {shown} at that commit")
        try:
            return desired_runs(present)
        except ManifestError as exc:
            raise ManifestError(f"the manifests at {revision} ({commit[:12]}):\n{exc}") from None
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(tree)],
            cwd=top,
            capture_output=True,
            check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)


def make_comparison(
    store: RunStore,
    a: Side,
    b: Side,
    *,
    desired: Sequence[RunSpec] | None,
    paths: Sequence[str | PathLike[str]] = ("experiments",),
    directions: Directions | None = None,
    alpha: float = 0.05,
    paired: bool = True,
    gates: Sequence[Gate] = (),
    root: Path | None = None,
) -> Comparison:
    """B against A over one store. ``desired``: the working tree's run specs (None: no
    manifests); a side with a revision is planned from the manifests at that commit."""
    directions = directions or Directions()
    plans: dict[str | None, Sequence[RunSpec] | None] = {None: desired}
    for side in (a, b):
        if side.revision is not None and side.revision not in plans:
            plans[side.revision] = desired_at(side.revision, paths, root)
    every = [run for specs in plans.values() for run in specs or ()]
    records = listed_records(store, every)
    selections = []
    for side in (a, b):
        specs = plans[side.revision]
        if side.revision is not None and not any(
            r.experiment == side.experiment for r in specs or ()
        ):
            where = f"the manifests at {side.revision}"
            raise UsageError(f"{side.label}: no experiment {side.experiment!r} in {where}")
        source = FROM_MANIFESTS if side.revision is None else f"manifests at {side.revision}"
        (selection,) = select(specs, records, [side.experiment], source=source)
        selections.append(selection)
    side_a, side_b = build(selections, store, directions)
    return compare(
        side_a, side_b, label_a=a.label, label_b=b.label, alpha=alpha, paired=paired, gates=gates
    )
