"""Optional parts of the install (extras), and the one check that training can run here.

``pip install himl-manifest`` gives validate, plan, apply, runs, audit, logs and the Azure
submission client, without torch or Lightning; training (``himl-runner``, ``himl run``, the
local executor's jobs, ``himl validate --check-imports``) needs the ``train`` extra. Each of
those entry points calls :func:`require_train` before it needs torch, so a light install says
what to install instead of failing with a ``ModuleNotFoundError`` traceback.

The check looks the modules up (``importlib.util.find_spec``) without importing them: a light
``himl apply`` must not pay for importing torch.
"""

from __future__ import annotations

import importlib.util
import sys

from himl_manifest.errors import HimlError

#: The modules training imports, each from the distribution the ``train`` extra installs.
TRAIN_MODULES = ("torch", "pytorch_lightning")
TRAIN_INSTALL = "pip install 'himl-manifest[train]'"


class MissingExtra(HimlError):
    """An optional part of himl-manifest that this command needs is not installed."""


def missing_modules(modules: tuple[str, ...] = TRAIN_MODULES) -> list[str]:
    """Those of ``modules`` this interpreter cannot import (found without importing them)."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a finder that refuses it; a broken half-import
            found = False
        if not found:
            missing.append(module)
    return missing


def require_train() -> None:
    """Raise :class:`MissingExtra` (exit code 1, one line) unless torch and Lightning are here."""
    missing = missing_modules()
    if missing:
        raise MissingExtra(
            f"training needs the train extra: {TRAIN_INSTALL} "
            f"(not installed for {sys.executable or 'this Python'}: {', '.join(missing)})"
        )
