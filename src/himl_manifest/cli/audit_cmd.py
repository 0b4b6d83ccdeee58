"""`himl audit`: which commit and manifest produced a run, and which runs a commit produced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from himl_manifest.cli.options import backend_options, format_option
from himl_manifest.errors import HimlError, UsageError

if TYPE_CHECKING:
    from himl_manifest.model import Provenance, RunRecord
    from himl_manifest.operations.runs import AuditAnswer


@click.command()
@click.argument("run", required=False)
@click.option("--commit", help="List the runs this commit produced (a sha or a prefix).")
@format_option("json", help="text for people, json for tools (himl-audit/v2).")
@click.option(
    "--write-spec",
    "spec_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write RUN's recorded run spec to this file, and show the `himl run` command that "
    "executes exactly it.",
)
@backend_options
def audit(
    run: str | None,
    commit: str | None,
    output_format: str,
    spec_file: Path | None,
    backend_name: str,
    tracking_uri: str | None,
) -> int:
    """Show the commit, manifest, author and reproduce commands of RUN (a run name or id)."""
    from himl_manifest.backends.registry import open_backend
    from himl_manifest.operations.runs import audit_run, runs_of_commit
    from himl_manifest.paths import project_root

    if (run is None) == (commit is None):
        raise UsageError("give either a RUN or --commit SHA")
    if spec_file is not None and run is None:
        raise UsageError("--write-spec needs a RUN")
    records = open_backend(backend_name, tracking_uri=tracking_uri).list_runs()
    if run is not None:
        answer = audit_run(records, run, project_root(), spec_file=spec_file)
        if answer is None:
            raise HimlError(f"no managed run named {run!r} (see `himl runs --all`)")
        text = json.dumps(answer.to_dict(), indent=2) if output_format == "json" else _text(answer)
        click.echo(text)
        return 0
    assert commit is not None
    full = _full_commit(commit)
    found = runs_of_commit(records, full or commit)
    warnings = _commit_warnings(records)
    if output_format == "json":
        click.echo(json.dumps(_commit_document(commit, full, found, warnings), indent=2))
    else:
        click.echo(_commit_text(commit, found))
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
    return 0


def _commit_warnings(records: list[RunRecord]) -> list[str]:
    from himl_manifest.operations.runs import unknown_manifest_commits

    unknown = unknown_manifest_commits(records)
    if not unknown:
        return []
    return [
        f"{len(unknown)} run(s) were applied from a shallow clone that did not hold their "
        "manifest's last change: their manifest commit is unknown, so they match by HEAD at "
        f"apply only ({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''})"
    ]


def _full_commit(prefix: str) -> str | None:
    from himl_manifest.paths import project_root
    from himl_manifest.provenance import GitProvenance

    return GitProvenance(project_root()).resolve_commit(prefix)


def _manifest_commit(facts: Provenance) -> str:
    if facts.manifest_commit:
        return facts.manifest_commit
    if facts.manifest_commit_unknown:
        return f"unknown ({facts.manifest_commit_unknown})"
    return "-"


def _yes_no(flag: bool | None) -> str:
    return "?" if flag is None else str(flag).lower()


def _text(answer: AuditAnswer) -> str:
    record = answer.record
    facts = record.source
    who = facts.applied_by or "-"
    if facts.applied_by_source:
        who += f" ({facts.applied_by_source})"
    rows = [
        ("run", f"{record.run_name}  (attempt {record.attempt}, {record.status}, {record.state})"),
        ("run id", record.run_id),
        ("experiment", f"{record.experiment}, seed {record.seed}"),
        ("manifest", record.manifest_path or "-"),
        ("manifest commit", _manifest_commit(facts)),
        ("manifest blob", facts.manifest_blob or "-"),
        ("HEAD at apply", facts.head_commit or "-"),
        ("branch", facts.branch or "-"),
        ("remote", facts.remote_url or "-"),
        ("dirty", f"manifest {_yes_no(facts.dirty)}, tree {_yes_no(facts.worktree_dirty)}"),
        ("applied by", f"{who} at {facts.applied_at or '-'}"),
        *((("ci run", facts.ci_run_url),) if facts.ci_run_url else ()),
        *((("command", facts.command),) if facts.command else ()),
        ("versions", f"himl {facts.tool_version}, schema {facts.schema_version}"),
        ("spec hash", record.spec_hash),
        ("resumed from", record.resume_from or "-"),
        ("output", record.output_dir or "-"),
        *((("studio", record.url),) if record.url else ()),
    ]
    rows.extend((f"reproduce ({item.kind})", item.command) for item in answer.reproduce)
    if not answer.reproduce:
        rows.append(("reproduce", "-"))
    width = max(len(key) for key, _ in rows)
    lines = [f"{key.ljust(width)}  {value}" for key, value in rows]
    lines.extend(f"{''.ljust(width)}  ({item.kind}: {item.note})" for item in answer.reproduce)
    if not any(item.kind == "run" for item in answer.reproduce):
        lines.append(
            f"{''.ljust(width)}  (the exact recorded spec: himl audit {record.run_name} "
            "--write-spec FILE)"
        )
    if len(answer.attempts) > 1:
        lines.append(
            "attempts".ljust(width)
            + "  "
            + ", ".join(f"{a['attempt']} {a['status']}" for a in answer.attempts)
        )
    lines.extend(f"warning: {warning}" for warning in answer.warnings)
    if answer.manifest_content is not None:
        commit = (facts.commit or "")[:12]
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
    commit: str, full: str | None, found: list[tuple[RunRecord, str]], warnings: list[str]
) -> dict[str, object]:
    from himl_manifest.operations.runs import AUDIT_FORMAT, record_identity

    return {
        "format": AUDIT_FORMAT,
        "commit": commit,
        "resolved_commit": full,
        "runs": [{**record_identity(record), "matched": how} for record, how in found],
        "warnings": warnings,
    }
