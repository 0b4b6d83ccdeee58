"""himl-manifest: declarative, git-versioned PyTorch Lightning experiments.

`LightningContainer` is importable from here, lazily: importing `himl_manifest` alone must not
load torch or Lightning (``himl validate`` and ``himl plan`` never need them).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

__all__ = ["LightningContainer", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "LightningContainer":
        from himl_manifest.runner.container import LightningContainer

        return LightningContainer
    raise AttributeError(f"module 'himl_manifest' has no attribute {name!r}")
