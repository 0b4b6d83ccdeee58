"""What a managed run carries, in any store: tag names, facts, user tags, the spec, provenance,
MLflow's source tags and the checkpoint listing.

Each backend maps these onto its transport (MLflow tags locally; Azure ML properties, tags
and the job definition) and the runner writes them from inside the job: one vocabulary, so a
run looks the same whoever wrote it last.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from himl_manifest.errors import ConfigError
from himl_manifest.model import Lifecycle, Provenance, RunStatus
from himl_manifest.records.layout import path_in_run
from himl_manifest.spec import RunSpec, canonical_json

TAG_PREFIX = "himl."
TAG_MANAGED = "himl.managed"
TAG_RUN_NAME = "himl.run_name"
TAG_EXPERIMENT = "himl.experiment"
TAG_SEED = "himl.seed"
#: The cross-validation fold of a fold's run (absent on runs without folds).
TAG_FOLD = "himl.fold"
TAG_SPEC_HASH = "himl.spec_hash"
#: The RunSpec JSON; split over ``himl.spec.0``, ``.1``, ... with ``himl.spec.parts`` if long.
TAG_SPEC = "himl.spec"
TAG_SPEC_PARTS = "himl.spec.parts"
TAG_ATTEMPT = "himl.attempt"
TAG_STATE = "himl.state"
TAG_RESUME_FROM = "himl.resume_from"
TAG_MANIFEST = "himl.manifest_path"
TAG_OUTPUT_DIR = "himl.output_dir"
TAG_PID = "himl.pid"
TAG_HOST = "himl.host"
#: When the run's process started, in seconds since the epoch (the local executor sets it with
#: the pid): the record's creation to this is queue time, this to the run's end run time.
TAG_STARTED_AT = "himl.started_at"
TAG_ERROR = "himl.error_tail"
#: The apply that created a record (its liveness lock lives in the store's state folder).
TAG_APPLY_ID = "himl.apply_id"
TAG_CONTAINER = "himl.container"
TAG_MODE = "himl.mode"
#: Prefix of provenance facts: himl.provenance.commit, .branch, ...
TAG_PROVENANCE = "himl.provenance."
#: The cosmetic view of the spec after an in-place update where properties are add-only (Azure
#: ML): JSON, split over ``.N`` parts with ``.parts`` when long.
TAG_COSMETIC = "himl.cosmetic"
TAG_COSMETIC_PARTS = "himl.cosmetic.parts"
#: The checkpoint files of a run folder, comma-separated (``checkpoints/last.ckpt,...``), set by
#: the runner each time it writes one and when the run ends: how any machine planning against
#: the store knows whether (and which) checkpoints a run has, without seeing its folder.
TAG_CHECKPOINTS = "himl.checkpoints"
#: The checkpoint files the runner also logged as MLflow artifacts of the run (same relative
#: paths, comma-separated), when the store is not a file on the training machine: another
#: machine downloads them to resume or start from.
TAG_CHECKPOINT_ARTIFACTS = "himl.checkpoints.artifacts"
#: Cosmetic manifest tags land under this prefix.
TAG_USER_PREFIX = "himl.tag."
#: MLflow's own tags: the display name and the description.
TAG_DISPLAY_NAME = "mlflow.runName"
TAG_NOTE = "mlflow.note.content"
#: MLflow's own tags: the run a resumed run continued (the UI nests it there), and the source
#: (the UI shows the commit, linked to the repository).
TAG_PARENT_RUN = "mlflow.parentRunId"
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_GIT_BRANCH = "mlflow.source.git.branch"
TAG_GIT_REPO_URL = "mlflow.source.git.repoURL"
#: Tag-name prefixes that belong to the tool and the stores it writes to: a manifest may not use
#: them (``himl validate`` refuses them at the key) and no run ever carries a user tag under
#: one (:func:`plain_tags`), so nothing a user writes can overwrite a run's own state.
RESERVED_TAG_PREFIXES = (TAG_PREFIX, "mlflow.", "azureml.")

#: Longest tag value written by anyone (MLflow allows 8000, Azure ML less: stay under both).
MAX_TAG_VALUE = 5000
#: Longest parameter value written (MLflow's limit is 6000).
MAX_PARAM_VALUE = 6000


def cap(value: object, limit: int = MAX_TAG_VALUE) -> str:
    """``value`` as a tag value: text, its first ``limit`` characters (an error tail keeps its
    end instead: :func:`cap_tail`)."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= limit else text[:limit]


def cap_tail(text: str, limit: int = MAX_TAG_VALUE) -> str:
    """The last ``limit`` characters of ``text`` (an error tail keeps its end)."""
    return text[-limit:]


def identity_facts(run: RunSpec, attempt: int) -> dict[str, str]:
    """The immutable facts every store records on a new managed run (MLflow tags, Azure ML
    properties): what makes it ours, its identity and attempt, its manifest, and provenance
    (with the conda file digest it is submitted with; ``""``: no conda file)."""
    facts = {
        TAG_MANAGED: "true",
        TAG_RUN_NAME: run.run_name,
        TAG_EXPERIMENT: run.experiment,
        TAG_SEED: str(run.seed),
        TAG_SPEC_HASH: run.spec_hash,
        TAG_ATTEMPT: str(attempt),
        TAG_MANIFEST: run.manifest_path,
        **provenance_tags({**run.provenance, "conda_sha256": run.conda_sha256 or ""}),
    }
    if run.fold is not None:
        facts[TAG_FOLD] = str(run.fold)
    return facts


def stored_fold(facts: Mapping[str, str]) -> int | None:
    """The fold a run's facts record (:data:`TAG_FOLD`); None without one."""
    value = facts.get(TAG_FOLD)
    return int(value) if value is not None and value.isdigit() else None


def stored_provenance(facts: Mapping[str, str], spec_text: str) -> dict[str, str] | None:
    """The provenance facts of a stored run (``himl.provenance.*``), with the conda file digest
    it was submitted with, so the planner can tell a conda change apart from the other
    run-affecting changes (``""``: no conda file). Records written before that digest was a
    tag of its own decode it from the stored spec; None when that spec is damaged."""
    provenance = {
        key[len(TAG_PROVENANCE) :]: value
        for key, value in facts.items()
        if key.startswith(TAG_PROVENANCE)
    }
    if "conda_sha256" not in provenance:
        try:
            provenance["conda_sha256"] = RunSpec.from_json(spec_text).conda_sha256 or ""
        except ConfigError:
            return None
    return provenance


def seconds(value: str | None) -> float | None:
    """A stored time in seconds since the epoch (``himl.started_at``); None when not one."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


def stored_state(tags: Mapping[str, str], deleted: bool = False) -> Lifecycle:
    """A stored run's lifecycle state (``himl.state``; a run deleted in the store is archived)."""
    if deleted:
        return Lifecycle.ARCHIVED
    try:
        return Lifecycle(tags.get(TAG_STATE, Lifecycle.ACTIVE.value))
    except ValueError:
        return Lifecycle.ACTIVE


def provenance_tags(provenance: Mapping[str, Any]) -> dict[str, str]:
    return {
        f"{TAG_PROVENANCE}{key}": cap(value)
        for key, value in provenance.items()
        if value is not None
    }


def reserved_tag(key: object) -> bool:
    """Whether ``key`` is under a reserved prefix (:data:`RESERVED_TAG_PREFIXES`; any case)."""
    return str(key).lower().startswith(RESERVED_TAG_PREFIXES)


def plain_tags(tags: Mapping[Any, Any] | None) -> dict[str, str]:
    """The one rule for which user tags a run carries: a manifest's ``tags`` (``team: imaging``
    -> tag ``team``), a container's ``get_additional_tags()``, as a new run gets them and an
    in-place update changes them. A key under a reserved prefix (``himl.``, ``mlflow.``,
    ``azureml.``: validate refuses it in a manifest, but a run spec can be written by hand or by
    an older version) is never written: it would overwrite the run's own state."""
    return {str(key): cap(value) for key, value in (tags or {}).items() if not reserved_tag(key)}


def spec_tags(run: RunSpec) -> dict[str, str]:
    """The RunSpec JSON as one tag (:data:`TAG_SPEC`), or as numbered parts with
    :data:`TAG_SPEC_PARTS` when it is too long for one: how every store carries the spec."""
    text = canonical_json(json.loads(run.to_json()))
    if len(text) <= MAX_TAG_VALUE:
        return {TAG_SPEC: text}
    parts = [text[i : i + MAX_TAG_VALUE] for i in range(0, len(text), MAX_TAG_VALUE)]
    tags = {f"{TAG_SPEC}.{i}": part for i, part in enumerate(parts)}
    tags[TAG_SPEC_PARTS] = str(len(parts))
    return tags


def spec_text(tags: Mapping[str, str]) -> str:
    """The stored RunSpec JSON of :func:`spec_tags` ("" when there is none)."""
    if TAG_SPEC_PARTS in tags:
        count = stored_int(tags[TAG_SPEC_PARTS]) or 0
        return "".join(tags.get(f"{TAG_SPEC}.{i}", "") for i in range(count))
    return tags.get(TAG_SPEC, "")


def spec_from_tags(tags: Mapping[str, str]) -> RunSpec | None:
    """The RunSpec :func:`spec_tags` stored (None when there is none or it is damaged)."""
    text = spec_text(tags)
    if not text:
        return None
    try:
        return RunSpec.from_json(text)
    except ConfigError:
        return None


def stored_int(value: object) -> int | None:
    """A stored whole number (a seed, an attempt, a count); None when not one."""
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None


# --- MLflow's source tags --------------------------------------------------------------------

_SCHEME = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://", re.IGNORECASE)
#: Schemes whose user name is an account name (``ssh://git@host/...``), never a token.
_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})


def strip_credentials(url: str) -> str:
    """A remote URL with no secret left in it.

    - URLs with a scheme (``https://``, ``git+https://``, ``ssh://``, ...): the whole userinfo
      (everything before the *last* ``@`` of the authority, so ``user:tok1@tok2@host`` loses
      both tokens), the query (``?private_token=...``, ``?access_token=...``: a git remote
      needs none) and the fragment are dropped. An ``ssh://`` user without a password is an
      account name and is kept (``ssh://git@host/r.git``).
    - scp-like remotes (``git@github.com:o/r.git``) and local paths are kept as they are; a
      password in an scp-like userinfo (``user:pw@host:path``) is dropped with its user.
    """
    match = _SCHEME.match(url)
    if match is None:
        return _strip_scp_like(url)
    scheme = match.group("scheme")
    rest = url[match.end() :]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if at:
        keep_user = scheme.lower() in _SSH_SCHEMES and ":" not in userinfo and userinfo
        authority = f"{userinfo}@{host}" if keep_user else host
    path = re.split(r"[?#]", tail, maxsplit=1)[0]
    return f"{scheme}://{authority}{path}"


def _strip_scp_like(url: str) -> str:
    head, slash, tail = url.partition("/")
    userinfo, at, host = head.rpartition("@")
    if at and ":" in userinfo:
        return host + slash + tail
    return url


def source_tags(
    *,
    source: str,
    commit: str | None = None,
    branch: str | None = None,
    remote_url: str | None = None,
) -> dict[str, str]:
    """MLflow's own source tags of a run (its UI shows the commit natively): ``source`` (the
    manifest, or the command of a one-off run), and what git says, when it says it; the
    remote URL without credentials."""
    tags = {TAG_SOURCE_NAME: cap(source), TAG_SOURCE_TYPE: "LOCAL"}
    if commit:
        tags[TAG_GIT_COMMIT] = cap(commit)
    if branch:
        tags[TAG_GIT_BRANCH] = cap(branch)
    if remote_url:
        tags[TAG_GIT_REPO_URL] = cap(strip_credentials(remote_url))
    return tags


def run_source_tags(run: RunSpec) -> dict[str, str]:
    """The source tags of a managed run, from the git provenance apply stamped on it."""
    facts = Provenance.of(run.provenance)
    return source_tags(
        source=run.manifest_path or run.run_name,
        commit=facts.head_commit,
        branch=facts.branch,
        remote_url=facts.remote_url,
    )


# --- checkpoints recorded in the store -------------------------------------------------------


def listing_files(listing: str | None) -> set[str] | None:
    """The files of a ``himl.checkpoints``-style listing (None: nothing was recorded)."""
    return None if listing is None else {f for f in listing.split(",") if f}


def recorded_checkpoints(tags: Mapping[str, str], status: RunStatus) -> set[str]:
    """The checkpoint files the store records for a run (``himl.checkpoints``), relative to
    its run folder. A run recorded by a version that did not write the tag while it trained
    (None from :func:`listing_files`) is taken to have ``checkpoints/last.ckpt`` when it
    completed, and none otherwise: the same rule for every store, and never a look at a disk."""
    files = listing_files(tags.get(TAG_CHECKPOINTS))
    if files is not None:
        return files
    return {str(path_in_run(""))} if status == RunStatus.COMPLETED else set()


def has_default_checkpoint(tags: Mapping[str, str], status: RunStatus) -> bool:
    """Whether the store records ``checkpoints/last.ckpt`` for a run (what a resume needs)."""
    return str(path_in_run("")) in recorded_checkpoints(tags, status)
