"""``from himl_manifest.lightning_container import LightningContainer``: the module name the
reference documentation's examples import from (``health_ml.lightning_container``)."""

from __future__ import annotations

from himl_manifest.runner.container import LightningContainer

__all__ = ["LightningContainer"]
