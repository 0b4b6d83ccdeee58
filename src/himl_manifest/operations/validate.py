"""`himl validate`: every diagnostic of every manifest, and (opt-in) whether containers import.

Cross-file rules (unique names, checkpoint references between experiments, cycles) always see
the whole folder a given file belongs to (:func:`~himl_manifest.manifest.validate.
manifest_context`), so validating one changed file checks its references against its sibling
manifests. Without ``whole_folder`` only the problems of the paths given are reported (and
those of references that reach them); with it, every problem of those folders (what the
pre-commit hook runs: a change to one file can break another).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from himl_manifest.manifest.validate import ValidationResult, manifest_context, validate_paths

DEFAULT_PATHS = (Path("experiments"),)


def validate(
    paths: Sequence[Path], *, check_imports: bool = False, whole_folder: bool = False
) -> ValidationResult:
    """Validate ``paths`` (default: experiments/). ``whole_folder``: validate every manifest of
    the folders the files given belong to. ``check_imports`` also imports each container class
    (it runs user code), once the manifests are valid."""
    given = list(paths or DEFAULT_PATHS)
    context = _folders_of(given)
    if whole_folder:
        result = validate_paths([*context, *given])
    else:
        result = validate_paths(given, context=context)
    if check_imports and result.ok:
        from himl_manifest.operations.check_imports import check_container_imports

        result.diagnostics.extend(check_container_imports(result.documents))
    return result


def _folders_of(paths: Sequence[Path]) -> list[Path]:
    """The manifest folder (or sibling files) of each file given, each once, in order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            continue
        for item in manifest_context(path):
            if item not in found:
                found.append(item)
    return found
