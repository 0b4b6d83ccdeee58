"""`himl audit`: which commit and manifest produced a run, and which runs a commit produced."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from himl_manifest.cli.options import backend_options
from himl_manifest.errors import HimlError, UsageError

if TYPE_CHECKING:
    from himl_manifest.model import RunRecord
    from himl_manifest.operations.runs import AuditAnswer


@click.command()
@click.argument("run", required=False)
@click.option("--commit", help="List the runs this commit produced (a sha or a prefix).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people, json for tools (himl-audit/v1).",
)
@backend_options
def audit(
    run: str | None,
    commit: str | None,
    output_format: str,
    backend_name: str,
    tracking_uri: str | None,
) -> int:
    """Show the commit, manifest, author and reproduce command of RUN (a run name or id)."""
    from himl_manifest.backends.registry import open_backend
    from himl_manifest.operations.runs import audit_run, runs_of_commit
    from himl_manifest.paths import project_root

    if (run is None) == (commit is None):
        raise UsageError("give either a RUN or --commit SHA")
    records = open_backend(backend_name, tracking_uri=tracking_uri).list_runs()
    if run is not None:
        answer = audit_run(records, run, project_root())
        if answer is None:
            raise HimlError(f"no managed run named {run!r} (see `himl runs --all`)")
        text = json.dumps(answer.to_dict(), indent=2) if output_format == "json" else _text(answer)
        click.echo(text)
        return 0
    assert commit is not None
    full = _full_commit(commit)
    found = runs_of_commit(records, full or commit)
    if output_format == "json":
        click.echo(json.dumps(_commit_document(commit, full, found), indent=2))
    else:
        click.echo(_commit_text(commit, found))
    return 0


def _full_commit(prefix: str) -> str | None:
    from himl_manifest.operations.provenance import GitProvenance
    from himl_manifest.paths import project_root

    return GitProvenance(project_root()).resolve_commit(prefix)


def _text(answer: AuditAnswer) -> str:
    record = answer.record
    facts = record.provenance
    rows = [
        ("run", f"{record.run_name}  (attempt {record.attempt}, {record.status}, {record.state})"),
        ("run id", record.run_id),
        ("experiment", f"{record.experiment}, seed {record.seed}"),
        ("manifest", record.manifest_path or "-"),
        ("manifest commit", facts.get("manifest_commit") or "-"),
        ("manifest blob", facts.get("manifest_blob") or "-"),
        ("HEAD at apply", facts.get("head_commit") or "-"),
        ("branch", facts.get("branch") or "-"),
        ("remote", facts.get("remote_url") or "-"),
        ("dirty", f"manifest {facts.get('dirty', '?')}, tree {facts.get('worktree_dirty', '?')}"),
        ("applied by", f"{facts.get('applied_by', '-')} at {facts.get('applied_at', '-')}"),
        ("versions", f"himl {facts.get('tool_version')}, schema {facts.get('schema_version')}"),
        ("spec hash", record.spec_hash),
        ("resumed from", record.resume_from or "-"),
        ("output", record.output_dir or "-"),
        *((("studio", record.url),) if record.url else ()),
        ("reproduce", answer.reproduce or "-"),
    ]
    width = max(len(key) for key, _ in rows)
    lines = [f"{key.ljust(width)}  {value}" for key, value in rows]
    if len(answer.attempts) > 1:
        lines.append(
            "attempts".ljust(width)
            + "  "
            + ", ".join(f"{a['attempt']} {a['status']}" for a in answer.attempts)
        )
    lines.extend(f"warning: {warning}" for warning in answer.warnings)
    if answer.manifest_content is not None:
        commit = (facts.get("manifest_commit") or facts.get("head_commit") or "")[:12]
        lines.append("")
        lines.append(f"--- {record.manifest_path} @ {commit}")
        lines.append(answer.manifest_content.rstrip("\n"))
    return "\n".join(lines)


def _commit_text(commit: str, found: list[tuple[RunRecord, str]]) -> str:
    if not found:
        return f"No managed runs came from commit {commit}."
    lines = [f"{len(found)} run(s) came from commit {commit}:"]
    width = max(len(record.run_name) for record, _ in found)
    for record, how in found:
        lines.append(
            f"  {record.run_name.ljust(width)}  attempt {record.attempt}  {record.status:<9}  "
            f"{record.state:<10}  {how}  {record.manifest_path}"
        )
    return "\n".join(lines)


def _commit_document(
    commit: str, full: str | None, found: list[tuple[RunRecord, str]]
) -> dict[str, object]:
    from himl_manifest.operations.runs import AUDIT_FORMAT, record_identity

    return {
        "format": AUDIT_FORMAT,
        "commit": commit,
        "resolved_commit": full,
        "runs": [{**record_identity(record), "matched": how} for record, how in found],
    }
