"""`himl validate --check-imports`: does each manifest's container class exist and import, and
does each ``params`` value fit its field's type?

This imports user code and makes one instance of each container (``__init__``, then
``set_model_variant``): it is opt-in; plain `himl validate` never does. A value is checked by the
runner's own conversion rule (:func:`himl_manifest.runner.fields.field_value`), the one that
flags and run specs go through, so what passes here is what the run accepts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from himl_manifest.diagnostics import Diagnostic
from himl_manifest.errors import LookupFailed
from himl_manifest.manifest.loader import Document


def check_container_imports(documents: Iterable[Document]) -> list[Diagnostic]:
    """A diagnostic at ``container`` per document whose container cannot be found, and one at
    each ``params`` value that its field does not take (or whose name the container lacks)."""
    from himl_manifest.extras import require_train

    require_train()  # a container is a LightningContainer: none imports without the extra
    from himl_manifest.runner.lookup import NotFound, find_container

    outcomes: dict[str, type | tuple[str, str]] = {}
    templates: dict[tuple[str, str | None], object | Diagnostic] = {}
    diagnostics = []
    for document in documents:
        data = document.data
        name = data.get("container") if isinstance(data, dict) else None
        if not isinstance(name, str):
            continue
        if name not in outcomes:
            try:
                outcomes[name] = find_container(name)
            except NotFound as exc:
                outcomes[name] = (exc.base_message, _suggestion(exc.elsewhere))
            except LookupFailed as exc:
                outcomes[name] = (str(exc), "")
            except (Exception, SystemExit) as exc:  # user code may raise or exit anything
                outcomes[name] = (f"importing {name!r} failed: {type(exc).__name__}: {exc}", "")
        outcome = outcomes[name]
        if isinstance(outcome, tuple):
            diagnostics.append(_at(document, ["container"], *outcome))
        elif data.get("params"):
            diagnostics += _check_params(document, outcome, templates)
    return diagnostics


def _suggestion(elsewhere: list[str]) -> str:
    if not elsewhere:
        return ""
    choices = " or ".join(f"container: {c}" for c in elsewhere)
    return f"did you mean {choices}? a bare name is searched in himl_manifest.configs only"


def _at(
    document: Document, path: list[str | int], message: str, hint: str = "", *, key: bool = False
) -> Diagnostic:
    line, column = document.file.position(document.index, path, key=key)
    where = ".".join(str(p) for p in path)
    code = "params" if path[0] == "params" else "import"
    return Diagnostic(document.file.display, line, column, where, message, hint, code=code)


def _check_params(
    document: Document, cls: type, templates: dict[tuple[str, str | None], object | Diagnostic]
) -> list[Diagnostic]:
    """Each ``params`` value converted as the run will convert it, against an instance of
    ``cls`` (one per container and model variant)."""
    from himl_manifest.runner.fields import container_fields, field_value, unknown_field

    data: dict[str, Any] = document.data
    variant = data.get("model_variant")
    key = (data["container"], variant)
    if key not in templates:
        templates[key] = _template(document, cls, variant)
    template = templates[key]
    if isinstance(template, Diagnostic):
        return [template]
    fields = container_fields(template)
    found = []
    for name, value in data["params"].items():
        field = fields.get(name)
        if field is None:  # the static reading could not tell (a dynamic class)
            message = unknown_field(name, fields, cls.__name__)
            found.append(_at(document, ["params", name], message, key=True))
            continue
        try:
            field_value(field, value, cls.__name__)
        except ValueError as exc:
            found.append(_at(document, ["params", name], str(exc)))
    return found


def _template(document: Document, cls: type, variant: str | None) -> object | Diagnostic:
    """An instance of ``cls`` switched to ``variant``, or the diagnostic of why there is none."""
    from himl_manifest.errors import HimlError
    from himl_manifest.runner.container import instantiate

    try:
        return instantiate(cls, variant)
    except HimlError as exc:
        where: list[str | int] = ["model_variant"] if variant else ["container"]
        return _at(document, where, str(exc))
    except (Exception, SystemExit) as exc:
        return _at(document, ["container"], f"{cls.__name__}(): {type(exc).__name__}: {exc}")
