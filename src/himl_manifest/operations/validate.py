"""`himl validate`: every diagnostic of every manifest, and (opt-in) whether containers import."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from himl_manifest.manifest.validate import ValidationResult, validate_paths

DEFAULT_PATHS = (Path("experiments"),)


def validate(paths: Sequence[Path], *, check_imports: bool = False) -> ValidationResult:
    """Validate ``paths`` (default: experiments/). ``check_imports`` also imports each container
    class (it runs user code), once the manifests are valid."""
    result = validate_paths(paths or DEFAULT_PATHS)
    if check_imports and result.ok:
        from himl_manifest.operations.check_imports import check_container_imports

        result.diagnostics.extend(check_container_imports(result.documents))
    return result
