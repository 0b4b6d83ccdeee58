"""The conda file of an Azure ML job, made self-contained.

Azure ML builds a job's image from the conda file alone: it never sees the repository, so a
pip ``-r requirements.txt`` line in the conda file (or in a requirements file it includes) would
name a file that is not there. The reading lives one layer down, in :mod:`himl_manifest.conda`,
because a run's identity reads conda files the same way (the spec layer may not import a
backend); this module is the Azure ML backend's name for it:

- :func:`resolve_conda_file`: the conda file with its pip includes inlined, and its problems
  (for ``preflight``);
- :func:`conda_environment`: the dictionary ``Environment(conda_file=...)`` takes, every
  problem raised as one :class:`~himl_manifest.errors.ConfigError` (for the job builder).
"""

from __future__ import annotations

from himl_manifest.conda import (
    CODE,
    ResolvedConda,
    conda_environment,
    display_path,
    resolve_conda_file,
)

__all__ = ["CODE", "ResolvedConda", "conda_environment", "display_path", "resolve_conda_file"]
