"""Pre-flight against the workspace: what the runs of a batch need there, checked before
anything is uploaded or submitted.

:func:`workspace_problems` asks the workspace, once per distinct resource, and returns every
problem at once as :class:`~himl_manifest.diagnostics.Diagnostic` values (``himl validate``'s
format; the operations layer finds their lines in the manifests):

- each ``compute.target`` is a compute of the workspace (did-you-mean among its computes); on
  an AmlCompute cluster, ``compute.num_nodes`` fits its maximum node count, the processes per
  node (``trainer.devices``) fit the GPUs of its VM size, a GPU accelerator has GPUs to run
  on, and ``compute.instance_type`` (a Kubernetes compute's) is not contradicted by the
  cluster's fixed VM size;
- each ``azure: <name>[:<version>]`` data asset exists (the latest of an unversioned one is
  resolved here, and used by the submission), each ``datastore:`` exists;
- each checkpoint that comes from another run (``checkpoint.source.run``, an experiment's run,
  a resumed run) exists in the workspace, unless that run is submitted in the same batch.

A resource that is missing is a diagnostic; a workspace that cannot be asked at all (no
access, unreachable) is a :class:`~himl_manifest.errors.StoreError`, before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from himl_manifest.backends.azureml.jobs import checkpoint_reference, data_asset, processes_per_node
from himl_manifest.backends.azureml.submit import WorkspaceBackend
from himl_manifest.backends.azureml.workspace import azure_errors, not_found
from himl_manifest.diagnostics import Diagnostic, did_you_mean
from himl_manifest.errors import CheckpointError, ConfigError, StoreError
from himl_manifest.model import checkpoint_source, split_run_reference
from himl_manifest.spec import RunSpec

CODE = "preflight"
_GPU_ACCELERATORS = ("gpu", "cuda")


def workspace_problems(
    backend: WorkspaceBackend, runs: Sequence[RunSpec], expected: Collection[str] = ()
) -> list[Diagnostic]:
    """Every problem the workspace shows for ``runs`` (see the module doc); ``expected``: runs
    that will exist (their checkpoints are not looked for)."""
    asker = _Asker(backend)
    found: list[Diagnostic] = []
    for run in runs:
        found += _compute_problems(asker, run)
        found += _data_problems(asker, run)
    found += _upstream_problems(backend, runs, expected)
    return found


class _Asker:
    """Each resource of the workspace asked once; None: it does not exist."""

    def __init__(self, backend: WorkspaceBackend) -> None:
        self.backend = backend
        self.client = backend.client
        self._answers: dict[tuple[str, str], Any] = {}

    def get(self, kind: str, name: str, fetch: Callable[[], Any]) -> Any:
        key = (kind, name)
        if key not in self._answers:
            self.backend._count(f"check-{kind}")
            with azure_errors(f"checking {kind} {name!r} in the workspace", self.backend.workspace):
                try:
                    self._answers[key] = fetch()
                except Exception as exc:
                    if not not_found(exc):
                        raise
                    self._answers[key] = None
        return self._answers[key]

    def compute(self, name: str) -> Any:
        return self.get("compute", name, lambda: self.client.compute.get(name))

    def hint(self, kind: str, name: str, fetch: Callable[[], Any]) -> Any:
        """Like :meth:`get`, for what only makes a message better or a check finer (the
        computes to suggest, the versions an asset has, the GPUs of a VM size): None when it
        cannot be asked."""
        try:
            return self.get(kind, name, fetch)
        except StoreError:
            self._answers[(kind, name)] = None
            return None

    def computes(self) -> list[str]:
        listed = self.hint("computes", "", lambda: list(self.client.compute.list()))
        return sorted(str(c.name) for c in listed or [])

    def gpus(self, size: str, location: str | None) -> int | None:
        sizes = self.hint(
            "vm sizes",
            str(location),
            lambda: list(self.client.compute.list_sizes(location=location)),
        )
        for item in sizes or []:
            if str(item.name).lower() == size.lower():
                return int(item.gpus or 0)
        return None

    def data(self, name: str, version: str | None) -> Any:
        if version is None:
            return self.get("data asset", name, lambda: self.client.data.get(name, label="latest"))
        return self.get(
            "data asset", f"{name}:{version}", lambda: self.client.data.get(name, version=version)
        )

    def data_versions(self, name: str) -> list[str]:
        listed = self.hint("data versions", name, lambda: list(self.client.data.list(name=name)))
        return sorted(str(d.version) for d in listed or [])

    def datastore(self, name: str) -> Any:
        return self.get("datastore", name, lambda: self.client.datastores.get(name))


def _compute_problems(asker: _Asker, run: RunSpec) -> list[Diagnostic]:
    compute = run.spec.get("compute", {})
    target = str(compute.get("target", "local"))
    found = asker.compute(target)
    if found is None:
        known = asker.computes()
        return [
            _diagnostic(
                run,
                "compute.target",
                f"no compute named {target!r} in {asker.backend._where()}"
                + (f" ({did_you_mean(target, known)})" if did_you_mean(target, known) else ""),
                f"its computes: {', '.join(known)}" if known else "create a compute cluster first",
            )
        ]
    if str(getattr(found, "type", "")).lower() != "amlcompute":
        return []
    problems = []
    nodes = int(compute.get("num_nodes", 1))
    most = getattr(found, "max_instances", None)
    if isinstance(most, int) and nodes > most:
        problems.append(
            _diagnostic(
                run,
                "compute.num_nodes",
                f"{nodes} nodes, but cluster {target!r} scales to at most {most}",
                "lower compute.num_nodes, or raise the cluster's maximum node count",
            )
        )
    size = str(getattr(found, "size", "") or "")
    instance_type = compute.get("instance_type")
    if instance_type and size and str(instance_type).lower() != size.lower():
        problems.append(
            _diagnostic(
                run,
                "compute.instance_type",
                f"{instance_type} but cluster {target!r} has the fixed VM size {size}",
                "leave instance_type out for an AmlCompute cluster (it is for Kubernetes compute)",
            )
        )
    gpus = asker.gpus(size, getattr(found, "location", None)) if size else None
    if gpus is not None:
        problems += _gpu_problems(run, target, size, gpus)
    return problems


def _gpu_problems(run: RunSpec, target: str, size: str, gpus: int) -> list[Diagnostic]:
    trainer = run.spec.get("trainer", {})
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    processes = processes_per_node(run.spec)
    if gpus == 0 and accelerator in _GPU_ACCELERATORS:
        return [
            _diagnostic(
                run,
                "trainer.accelerator",
                f"{accelerator}, but cluster {target!r} ({size}) has no GPU",
                "choose a GPU cluster, or set trainer.accelerator to cpu",
            )
        ]
    if gpus > 0 and processes > gpus:
        return [
            _diagnostic(
                run,
                "trainer.devices",
                f"{processes} processes per node, but {size} of cluster {target!r} has "
                f"{gpus} GPU{'s' if gpus != 1 else ''}",
                f"set trainer.devices to at most {gpus}",
            )
        ]
    return []


def _data_problems(asker: _Asker, run: RunSpec) -> list[Diagnostic]:
    problems = []
    for index, dataset in enumerate(run.spec.get("datasets") or []):
        if "azure" in dataset:
            name, version = data_asset(dataset)
            found = asker.data(name, version)
            if found is None:
                problems.append(_missing_data(asker, run, index, name, version))
            elif version is None:  # the submission uses the version resolved here
                asker.backend.submission.remember_latest(name, str(found.version))
        elif "datastore" in dataset:
            store = str(dataset["datastore"])
            if asker.datastore(store) is None:
                problems.append(
                    _diagnostic(
                        run,
                        f"datasets[{index}].datastore",
                        f"no datastore named {store!r} in {asker.backend._where()}",
                        "register it in the workspace (Data > Datastores), or fix the name",
                    )
                )
    return problems


def _missing_data(
    asker: _Asker, run: RunSpec, index: int, name: str, version: str | None
) -> Diagnostic:
    versions = asker.data_versions(name)
    if version is not None and versions:
        message = f"data asset {name!r} has no version {version!r}"
        hint = f"its versions: {', '.join(versions)}"
    else:
        message = f"no data asset named {name!r} in {asker.backend._where()}"
        hint = "register it with `az ml data create`, or fix the name"
    return _diagnostic(run, f"datasets[{index}].azure", message, hint)


def _upstream_problems(
    backend: WorkspaceBackend, runs: Sequence[RunSpec], expected: Collection[str]
) -> list[Diagnostic]:
    batch = {run.run_name for run in runs} | set(expected)
    problems = []
    for run in runs:
        try:
            reference = checkpoint_reference(run)
        except ConfigError:
            continue  # reported by the offline pre-flight
        if reference is None or split_run_reference(reference)[0] in batch:
            continue
        try:
            backend.resolve_checkpoint(reference)
        except CheckpointError as exc:
            source = checkpoint_source(run.spec)
            path = "checkpoint.source" if source is not None and not run.resume_from else ""
            problems.append(
                _diagnostic(
                    run,
                    path,
                    f"{exc}: the job would start without its checkpoint",
                    "check the run reference, or wait until that run has completed",
                )
            )
    return problems


def _diagnostic(run: RunSpec, path: str, message: str, hint: str = "") -> Diagnostic:
    return Diagnostic(run.manifest_path or "<run spec>", 0, 0, path, message, hint, CODE)
