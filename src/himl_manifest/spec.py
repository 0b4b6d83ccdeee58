"""Experiments, run specs and their identity: canonical JSON, spec hash, run names.

A validated manifest becomes an :class:`Experiment` (schema defaults applied), which expands
into one :class:`RunSpec` per seed, or per (seed, fold) with cross-validation (``crossval``).
A run's identity is the sha256 of the canonical JSON of its run-affecting fields, prefixed with
the hash version; its name is ``<experiment>-s<seed>-<first 8 hex of the hash>``, and
``<experiment>-s<seed>-f<fold>-<hash8>`` for a fold's run. A fold's run spec holds
``crossval_count`` and ``crossval_index`` at its top, beside ``seed``; both are identity, the
list of folds to run (``crossval.indices``) is not. Left out: cosmetic fields, policy, and for
local runs the ``environment`` section (conda is used on clusters only). Put in: the identity
of the code that defines the run (``code.identity``, :mod:`himl_manifest.code_identity`) and,
for cluster runs, the digest of the conda file's meaning (``environment.conda_sha256``,
:mod:`himl_manifest.conda`).

Hash versions: ``v1`` covered neither code nor conda meaning (it hashed the conda file's bytes,
for every run); ``v2`` is the current one. :attr:`RunSpec.legacy_hash` is what a run's hash
was under ``v1``, so the planner can tell a run recorded under ``v1`` that still matches its
manifest from one that changed.

Standard library, the neutral model, and the code and conda readers: defaults are applied
before, in :mod:`himl_manifest.manifest.build`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from himl_manifest.code_identity import CodeIdentities, CodePathError, CodeTarget
from himl_manifest.conda import conda_digest
from himl_manifest.errors import ConfigError
from himl_manifest.model import checkpoint_source, without_cosmetic

#: Version prefix of every spec hash. Bump it when the hashed view changes meaning.
HASH_VERSION = "v2"
#: The version before: no code, the conda file's bytes for every run (see the module doc).
LEGACY_HASH_VERSION = "v1"
#: Where compute.target says a run executes here (no conda environment is built).
LOCAL_TARGET = "local"
#: The format written into run-spec files handed to `himl run`.
RUNSPEC_FORMAT = "himl-runspec/v1"
DEFAULT_CONDA_FILE = "environment.yml"


#: One encoder, made once (``json.dumps`` with options builds a new one on every call).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """Key-sorted, whitespace-free JSON: equal data gives equal text."""
    return _CANONICAL.encode(value)


def plain_copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars): several times faster than
    :func:`copy.deepcopy`, which matters when expanding thousands of manifests."""
    if type(value) is dict:
        return {k: plain_copy(v) for k, v in value.items()}
    if type(value) is list:
        return [plain_copy(v) for v in value]
    return value


def find_conda_file(root: Path, spec: Mapping[str, Any]) -> Path | None:
    """The conda file of an experiment: explicit, else environment.yml upward from the code root."""
    explicit = spec.get("environment", {}).get("conda_file")
    if explicit:
        return root / str(explicit)
    folder = (root / str(spec.get("code_root", "."))).resolve()
    root = root.resolve()
    while True:
        candidate = folder / DEFAULT_CONDA_FILE
        if candidate.is_file():
            return candidate
        if folder == root or folder.parent == folder or not folder.is_relative_to(root):
            return None
        folder = folder.parent


def file_sha256(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def uses_conda(spec: Mapping[str, Any]) -> bool:
    """Whether a run's conda file is used: on a cluster (``compute.target`` other than local)."""
    return str((spec.get("compute") or {}).get("target", LOCAL_TARGET)) != LOCAL_TARGET


#: Experiment-level sections a run's spec replaces by its own values (``seed``, and a fold's
#: ``crossval_count`` / ``crossval_index``): never part of one run's identity.
EXPANDED = ("seeds", "crossval")
#: The top-level fields of a fold's run spec (the container fields of the same names).
CROSSVAL_COUNT, CROSSVAL_INDEX = "crossval_count", "crossval_index"


def fold_list(spec: Mapping[str, Any]) -> list[int | None]:
    """The folds an experiment-level spec runs: ``crossval.indices`` (default every fold of
    ``crossval.folds``), or ``[None]`` without cross-validation."""
    crossval = spec.get("crossval")
    if not isinstance(crossval, Mapping) or not crossval.get("folds"):
        return [None]
    indices = crossval.get("indices")
    chosen = range(int(crossval["folds"])) if indices is None else sorted(map(int, indices))
    return list[int | None](chosen)


def fold_count(spec: Mapping[str, Any]) -> int:
    """The number of folds of an experiment-level spec (0: no cross-validation)."""
    crossval = spec.get("crossval")
    return int(crossval.get("folds") or 0) if isinstance(crossval, Mapping) else 0


def identity_view(spec: Mapping[str, Any], seed: int, conda_sha256: str | None) -> dict[str, Any]:
    """The run-affecting fields of one seed's run: what the spec hash covers.

    ``spec`` is an experiment-level spec with the run's own ``crossval_count`` /
    ``crossval_index`` (a fold's run), or a run's spec without its ``seed``: the ``seeds`` and
    ``crossval`` sections are left out, so a run without folds hashes as it always did. A local
    run's ``environment`` is left out (no conda environment is built for it); a cluster
    run's holds the digest of its conda file's meaning. ``code`` is ``{"track": false}`` when
    code is not tracked, else the section with the ``identity`` that :func:`expand` put in."""
    view = without_cosmetic({k: v for k, v in spec.items() if k not in EXPANDED})
    view.setdefault("tracking", {})
    view["seed"] = seed
    if uses_conda(spec):
        view["environment"] = {**view.get("environment", {}), "conda_sha256": conda_sha256}
    else:
        view.pop("environment", None)
    code = view.get("code")
    if isinstance(code, Mapping) and code.get("track") is False:
        view["code"] = {"track": False}
    return view


def legacy_view(spec: Mapping[str, Any], seed: int, conda_bytes: str | None) -> dict[str, Any]:
    """What a ``v1`` spec hash covered: no code, the conda file's bytes digest for every run."""
    view = without_cosmetic({k: v for k, v in spec.items() if k not in ("seeds", "code")})
    view.setdefault("tracking", {})
    view["seed"] = seed
    view["environment"] = {**view.get("environment", {}), "conda_sha256": conda_bytes}
    return view


def spec_hash(view: Mapping[str, Any], version: str = HASH_VERSION) -> str:
    return f"{version}:{hashlib.sha256(canonical_json(view).encode()).hexdigest()}"


def hash_version(hash_: str) -> str:
    """The version prefix of a spec hash (``v2`` of ``v2:3fa2...``)."""
    return hash_.split(":", 1)[0] if ":" in hash_ else ""


def run_name(experiment: str, seed: int, hash_: str, fold: int | None = None) -> str:
    """Deterministic run name: lower-case ``[a-z0-9-]``, the idempotency key in every backend.
    ``<experiment>-s<seed>-<hash8>``, or ``<experiment>-s<seed>-f<fold>-<hash8>`` for a fold."""
    digest = hash_.split(":", 1)[-1]
    folded = "" if fold is None else f"-f{fold}"
    return f"{experiment}-s{seed}{folded}-{digest[:8]}"


@dataclass(frozen=True)
class Experiment:
    """A validated manifest document with defaults applied."""

    name: str
    spec: dict[str, Any]
    manifest_path: str  # relative to the repository root, POSIX separators
    root: Path

    @property
    def seeds(self) -> list[int]:
        return list(self.spec["seeds"])

    @property
    def folds(self) -> list[int | None]:
        """The cross-validation folds it runs (``[None]``: no cross-validation)."""
        return fold_list(self.spec)

    def source_experiment(self) -> str | None:
        source = checkpoint_source(self.spec)
        return source.experiment if source is not None else None


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs, and its identity. Serialized (versioned) for `himl run`."""

    experiment: str
    seed: int
    #: The normalized manifest of this run: "seed" instead of "seeds", and for a fold's run
    #: "crossval_count" / "crossval_index" instead of the "crossval" section.
    spec: dict[str, Any]
    spec_hash: str
    run_name: str
    manifest_path: str = ""
    conda_sha256: str | None = None
    #: Set by a resume action: the earlier run whose checkpoint this run continues from.
    resume_from: str | None = None
    #: Provenance and other facts stamped on by apply (not part of the identity).
    provenance: dict[str, Any] = field(default_factory=dict)
    #: sha256 of the conda file's bytes, what the previous hash version (``v1``) held of it
    #: ("" when there is none; None: unknown, as in a run spec read back from JSON). Only for
    #: :attr:`legacy_hash`; not serialized.
    conda_bytes_sha256: str | None = field(default=None, compare=False, repr=False)

    @property
    def fold(self) -> int | None:
        """The cross-validation fold this run trains (``crossval_index``); None without folds."""
        index = self.spec.get(CROSSVAL_INDEX)
        return index if isinstance(index, int) and not isinstance(index, bool) else None

    def identity(self) -> dict[str, Any]:
        spec = {k: v for k, v in self.spec.items() if k != "seed"}
        return identity_view(spec, self.seed, self.conda_sha256)

    @cached_property
    def legacy_hash(self) -> str | None:
        """What this run's spec hash was under the previous hash version (``v1``): a run
        recorded under it with this hash still matches its manifest. Computed on demand (the
        planner asks only about records of that version); None when it can't be known."""
        if self.conda_bytes_sha256 is None or self.fold is not None:
            return None  # unknown, or a fold's run (there were none under v1)
        spec = {k: v for k, v in self.spec.items() if k != "seed"}
        view = legacy_view(spec, self.seed, self.conda_bytes_sha256 or None)
        return spec_hash(view, LEGACY_HASH_VERSION)

    def to_json(self) -> str:
        payload = {
            "format": RUNSPEC_FORMAT,
            "experiment": self.experiment,
            "seed": self.seed,
            "fold": self.fold,
            "spec_hash": self.spec_hash,
            "run_name": self.run_name,
            "manifest_path": self.manifest_path,
            "conda_sha256": self.conda_sha256,
            "resume_from": self.resume_from,
            "spec": self.spec,
            "provenance": self.provenance,
        }
        return json.dumps(payload, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"run spec is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != RUNSPEC_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else None
            raise ConfigError(f"unsupported run spec format {found!r}: expected {RUNSPEC_FORMAT!r}")
        try:
            return cls(
                experiment=payload["experiment"],
                seed=int(payload["seed"]),
                spec=payload["spec"],
                spec_hash=payload["spec_hash"],
                run_name=payload["run_name"],
                manifest_path=payload.get("manifest_path", ""),
                conda_sha256=payload.get("conda_sha256"),
                resume_from=payload.get("resume_from"),
                provenance=payload.get("provenance", {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"run spec is missing or has a bad field: {exc}") from exc


def fold_fields(spec: Mapping[str, Any], fold: int | None) -> dict[str, int]:
    """The top-level fields a fold's run spec gains (none without folds)."""
    if fold is None:
        return {}
    return {CROSSVAL_COUNT: fold_count(spec), CROSSVAL_INDEX: fold}


def seed_spec(spec: Mapping[str, Any], seed: int, fold: int | None = None) -> dict[str, Any]:
    """The spec of one run: ``seed`` for ``seeds``; with a fold, ``crossval_count`` and
    ``crossval_index`` for the ``crossval`` section."""
    out = {k: plain_copy(v) for k, v in spec.items() if k not in EXPANDED}
    out["seed"] = seed
    out.update(fold_fields(spec, fold))
    return out


def expand(
    experiments: Iterable[Experiment],
    *,
    warnings: list[str] | None = None,
    code: CodeIdentities | None = None,
) -> list[RunSpec]:
    """One RunSpec per (experiment, seed, fold), upstream experiments first; seeds in manifest
    order, each seed's folds in order.

    A checkpoint source naming another experiment is resolved to that experiment's run (for the
    chosen seed, and fold: :func:`upstream_fold`), and the run's name becomes part of the
    dependent's identity: when the upstream run changes, so does every run that starts from
    its checkpoint.

    The code each experiment names is resolved first, all at once (one git call per
    repository), into ``code.identity`` of its specs; what the user should know about it
    (uncommitted changes, code not committed) is appended to ``warnings``. A ``code.paths``
    entry that is not in the repository is a ConfigError naming the manifest and the field.
    """
    experiments = list(experiments)
    by_name = {e.name: e for e in experiments}
    code = code or CodeIdentities()
    code_of = _code_identities(by_name.values(), code)
    if warnings is not None:
        warnings.extend(w for w in code.warnings if w not in warnings)
    runs: dict[tuple[str, int, int | None], RunSpec] = {}
    ordered: list[RunSpec] = []
    visiting: set[str] = set()
    done: set[str] = set()
    conda_digests: dict[tuple[Path, Any, Any, bool], str | None] = {}

    def conda_of(exp: Experiment, spec: dict[str, Any], meaning: bool) -> str | None:
        key = (exp.root, spec.get("code_root"), spec.get("environment", {}).get("conda_file"))
        if (*key, meaning) not in conda_digests:  # experiments of a repository share one file
            path = find_conda_file(exp.root, spec)
            conda_digests[(*key, meaning)] = conda_digest(path) if meaning else file_sha256(path)
        return conda_digests[(*key, meaning)]

    def visit(exp: Experiment) -> None:
        if exp.name in done:
            return
        if exp.name in visiting:
            raise ConfigError(f"checkpoint sources of {exp.name!r} form a cycle")
        visiting.add(exp.name)
        spec = plain_copy(exp.spec)
        upstream_name = exp.source_experiment()
        upstream: Experiment | None = None
        if upstream_name is not None:
            if upstream_name not in by_name:
                raise ConfigError(f"{exp.name}: no experiment named {upstream_name!r}")
            upstream = by_name[upstream_name]
            visit(upstream)
            spec["checkpoint"]["source"].setdefault("seed", upstream.seeds[0])
        identity = code_of[exp.name]
        if identity is not None:
            spec["code"] = {**(spec.get("code") or {}), "identity": identity}
        conda = conda_of(exp, spec, meaning=True) if uses_conda(spec) else None
        conda_bytes = conda_of(exp, spec, meaning=False)
        folds = exp.folds
        for seed, fold in ((seed, fold) for seed in exp.seeds for fold in folds):
            if upstream is not None:  # the spec is copied into each run (hashed, then copied)
                source = spec["checkpoint"]["source"]
                chosen = upstream_fold(exp, upstream, fold)
                source["run"] = runs[(upstream.name, source["seed"], chosen)].run_name
            hashed = spec if fold is None else {**spec, **fold_fields(spec, fold)}
            hash_ = spec_hash(identity_view(hashed, seed, conda))
            run = RunSpec(
                experiment=exp.name,
                seed=seed,
                spec=seed_spec(spec, seed, fold),
                spec_hash=hash_,
                run_name=run_name(exp.name, seed, hash_, fold),
                manifest_path=exp.manifest_path,
                conda_sha256=conda,
                conda_bytes_sha256=conda_bytes or "",
            )
            runs[(exp.name, seed, fold)] = run
            ordered.append(run)
        visiting.discard(exp.name)
        done.add(exp.name)

    for exp in sorted(by_name.values(), key=lambda e: e.name):
        visit(exp)
    return ordered


def upstream_fold(exp: Experiment, upstream: Experiment, fold: int | None) -> int | None:
    """The fold of ``upstream`` whose checkpoint the runs of ``exp``'s ``fold`` start from.

    ``checkpoint.source.fold`` names one for every run; else, when both experiments have folds,
    the same fold (they must split alike: the same ``crossval.folds``, and ``upstream`` must run
    that fold); an upstream without folds gives its one run to every fold. An upstream with
    folds read by an experiment without them must name its fold. Anything else: ConfigError."""
    named = exp.spec["checkpoint"]["source"].get("fold")
    where = f"{exp.manifest_path or exp.name}: checkpoint.source"
    if upstream.folds == [None]:
        if named is not None:
            raise ConfigError(
                f"{where}.fold: experiment {upstream.name!r} has no cross-validation folds"
            )
        return None
    if named is None:
        if fold is None or fold_count(exp.spec) != fold_count(upstream.spec):
            raise ConfigError(
                f"{where}: experiment {upstream.name!r} has {fold_count(upstream.spec)} "
                "cross-validation folds: name the one to start from (checkpoint.source.fold), "
                "or give this experiment the same crossval.folds to start each fold from its own"
            )
        named = fold
    if named not in upstream.folds:
        listed = ", ".join(str(f) for f in upstream.folds)
        raise ConfigError(
            f"{where}: experiment {upstream.name!r} runs no fold {named} (its folds: {listed})"
        )
    return int(named)


def _code_identities(
    experiments: Iterable[Experiment], code: CodeIdentities
) -> dict[str, dict[str, str | None] | None]:
    """Per experiment: its code's identities by key (None: code not tracked). Git is asked once
    per repository, for the paths of all the experiments together."""
    targets: dict[str, tuple[Path, list[CodeTarget]] | None] = {}
    by_root: dict[Path, list[CodeTarget]] = {}
    for exp in experiments:
        if (exp.spec.get("code") or {}).get("track", True) is False:
            targets[exp.name] = None
            continue
        try:
            found = code.targets(exp.root, exp.spec)
        except CodePathError as exc:
            where = exp.manifest_path or exp.name
            raise ConfigError(f"{where}: {exc}") from exc
        targets[exp.name] = (exp.root, found)
        by_root.setdefault(exp.root, []).extend(found)
    for root, found in by_root.items():
        code.resolve(root, found)
    return {
        name: None
        if entry is None
        else {target.key: code.identity(entry[0], target) for target in entry[1]}
        for name, entry in targets.items()
    }
