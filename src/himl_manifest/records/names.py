"""What runs are called: display names, one-off run names, the experiment a run is filed under."""

from __future__ import annotations

import re

from himl_manifest.spec import RunSpec

_UNSAFE_EXPERIMENT = re.compile(r"[^A-Za-z0-9_.\- ]+")


def display_name(run_name: str, display: str | None = None) -> str:
    """What a run is called in the store's UI, one rule for runs made by apply, `himl run` and
    `himl-runner`: the chosen display name (``tracking.display_name``, ``--tag``), else its
    run name (which carries the seed; a one-off run's is :func:`one_off_run_name`). The runner
    never renames a run apply created."""
    return display or run_name


def one_off_run_name(experiment: str, seed: int) -> str:
    """The run name of a one-off ``himl-runner`` run (no manifest, so no spec hash):
    ``<experiment>-s<seed>``, a managed run name's shape without its hash."""
    return f"{experiment}-s{seed}"


def experiment_name(name: str | None, fallback: str) -> str:
    """The store experiment a run is filed under: ``name`` (the manifest's
    ``tracking.experiment``, ``--experiment``), else ``fallback`` (a manifest's experiment name;
    a one-off run's container class), with characters stores refuse (``/`` among them) made
    safe."""
    safe = _UNSAFE_EXPERIMENT.sub("_", str(name or fallback)).strip()
    return safe or "default"


def run_experiment(run: RunSpec) -> str:
    """The store experiment of a managed run: its ``tracking.experiment``, else the manifest's
    experiment name (never the container class: experiments sharing a container stay apart).

    Computed here, not as a default of the spec: a normalized spec holds the container's class
    name in ``tracking.experiment`` when the manifest sets none (earlier versions filed runs
    there, and that value is part of every spec hash), so that value is read as "unset": no
    spec hash changes. (A manifest that names its container's class as its experiment cannot
    be told apart from one that names none: its runs are filed under the manifest's name.)

    A run with no manifest (``himl-runner``'s imperative form, the reference's behaviour) keeps
    the experiment it names: the container's class unless ``--experiment`` says otherwise."""
    chosen = run.spec.get("tracking", {}).get("experiment")
    imperative = not run.manifest_path
    if not imperative and chosen == str(run.spec.get("container", "")).rsplit(".", 1)[-1]:
        chosen = None
    return experiment_name(chosen, run.experiment)
