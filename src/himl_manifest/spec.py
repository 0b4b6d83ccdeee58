"""Experiments, run specs and their identity: canonical JSON, spec hash, run names.

A validated manifest becomes an :class:`Experiment` (schema defaults applied), which expands
into one :class:`RunSpec` per seed. A run's identity is the sha256 of the canonical JSON of its
run-affecting fields (cosmetic fields left out, the conda file's content put in), prefixed with
the hash version; its name is ``<experiment>-s<seed>-<first 8 hex of the hash>``.

Standard library and the neutral model only: defaults are applied before, in
:mod:`himl_manifest.manifest.build`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from himl_manifest.errors import ConfigError
from himl_manifest.model import checkpoint_source, without_cosmetic

#: Version prefix of every spec hash. Bump it when the hashed view changes meaning.
HASH_VERSION = "v1"
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


def identity_view(spec: Mapping[str, Any], seed: int, conda_sha256: str | None) -> dict[str, Any]:
    """The run-affecting fields of one seed's run: what the spec hash covers."""
    view = without_cosmetic({k: v for k, v in spec.items() if k != "seeds"})
    view.setdefault("tracking", {})
    view["seed"] = seed
    view["environment"] = {**view.get("environment", {}), "conda_sha256": conda_sha256}
    return view


def spec_hash(view: Mapping[str, Any]) -> str:
    return f"{HASH_VERSION}:{hashlib.sha256(canonical_json(view).encode()).hexdigest()}"


def run_name(experiment: str, seed: int, hash_: str) -> str:
    """Deterministic run name: lower-case ``[a-z0-9-]``, the idempotency key in every backend."""
    digest = hash_.split(":", 1)[-1]
    return f"{experiment}-s{seed}-{digest[:8]}"


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

    def source_experiment(self) -> str | None:
        source = checkpoint_source(self.spec)
        return source.experiment if source is not None else None


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs, and its identity. Serialized (versioned) for `himl run`."""

    experiment: str
    seed: int
    spec: dict[str, Any]  # the normalized manifest of this seed: "seed" instead of "seeds"
    spec_hash: str
    run_name: str
    manifest_path: str = ""
    conda_sha256: str | None = None
    #: Set by a resume action: the earlier run whose checkpoint this run continues from.
    resume_from: str | None = None
    #: Provenance and other facts stamped on by apply (not part of the identity).
    provenance: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        spec = {k: v for k, v in self.spec.items() if k != "seed"}
        return identity_view(spec, self.seed, self.conda_sha256)

    def to_json(self) -> str:
        payload = {
            "format": RUNSPEC_FORMAT,
            "experiment": self.experiment,
            "seed": self.seed,
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


def seed_spec(spec: Mapping[str, Any], seed: int) -> dict[str, Any]:
    out = {k: plain_copy(v) for k, v in spec.items() if k != "seeds"}
    out["seed"] = seed
    return out


def expand(experiments: Iterable[Experiment]) -> list[RunSpec]:
    """One RunSpec per (experiment, seed), upstream experiments first.

    A checkpoint source naming another experiment is resolved to that experiment's run (for the
    chosen seed), and the run's name becomes part of the dependent's identity: when the upstream
    run changes, so does every run that starts from its checkpoint.
    """
    by_name = {e.name: e for e in experiments}
    runs: dict[tuple[str, int], RunSpec] = {}
    ordered: list[RunSpec] = []
    visiting: set[str] = set()
    done: set[str] = set()
    conda_digests: dict[tuple[Path, Any, Any], str | None] = {}

    def visit(exp: Experiment) -> None:
        if exp.name in done:
            return
        if exp.name in visiting:
            raise ConfigError(f"checkpoint sources of {exp.name!r} form a cycle")
        visiting.add(exp.name)
        spec = plain_copy(exp.spec)
        upstream_name = exp.source_experiment()
        if upstream_name is not None:
            if upstream_name not in by_name:
                raise ConfigError(f"{exp.name}: no experiment named {upstream_name!r}")
            upstream = by_name[upstream_name]
            visit(upstream)
            source = spec["checkpoint"]["source"]
            seed = source.setdefault("seed", upstream.seeds[0])
            source["run"] = runs[(upstream_name, seed)].run_name
        conda_key = (exp.root, spec.get("code_root"), spec.get("environment", {}).get("conda_file"))
        if conda_key not in conda_digests:  # experiments of one repository share a conda file
            conda_digests[conda_key] = file_sha256(find_conda_file(exp.root, spec))
        conda = conda_digests[conda_key]
        for seed in exp.seeds:
            view = identity_view(spec, seed, conda)
            hash_ = spec_hash(view)
            run = RunSpec(
                experiment=exp.name,
                seed=seed,
                spec=seed_spec(spec, seed),
                spec_hash=hash_,
                run_name=run_name(exp.name, seed, hash_),
                manifest_path=exp.manifest_path,
                conda_sha256=conda,
            )
            runs[(exp.name, seed)] = run
            ordered.append(run)
        visiting.discard(exp.name)
        done.add(exp.name)

    for exp in sorted(by_name.values(), key=lambda e: e.name):
        visit(exp)
    return ordered
