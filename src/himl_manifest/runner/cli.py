"""`himl-runner`: run one LightningContainer, found by name, with flags for its fields.

Parsing takes two passes: first ``--model`` is found, the container class looked up and
instantiated (with ``--model_variant``); then a parser is built from the runner's own flags and
every public field of that container, typed from the field's annotation or value. So
``himl-runner --model=HelloWorld --help`` lists HelloWorld's own fields with their current
defaults, and an unknown flag is rejected by name.

Errors map to exit codes through :func:`himl_manifest.entry.run_command`, as in `himl` (usage
errors: 64).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from himl_manifest.diagnostics import did_you_mean
from himl_manifest.entry import run_command
from himl_manifest.errors import UsageError
from himl_manifest.runner.fields import Field, coerce, container_fields, is_bool
from himl_manifest.runner.fields import type_label as label
from himl_manifest.runner.seeds import RESULT_FILE_ENV
from himl_manifest.runner.settings import (
    EVALUATION,
    TRAIN,
    RunSettings,
    runner_choices,
    runner_default,
)

_FIELD = "field:"
MODES = ("train", "eval_full")
_AZURE_ONLY = (
    "conda_env",
    "docker_shm_size",
    "wait_for_completion",
    "max_run_duration",
    "workspace_config_path",
    "identity_based_auth",
    "mount_in_azureml",
)
# name, type, default, help, choices (the choices and default of a runner setting such as
# log_level come from the manifest schema's `runner` section: see runner_choices)
_RUNNER_FLAGS: list[tuple[str, Any, Any, str, tuple[str, ...] | None]] = [
    ("model", str, None, "Container class: Name, package.Name or package.module.Name.", None),
    ("model_variant", str, None, "Variant passed to the container's set_model_variant.", None),
    ("mode", str, "train", "eval_full: test a checkpoint on the evaluation data.", MODES),
    ("num_nodes", int, 1, "Number of machines.", None),
    ("tracking_uri", str, None, "Run store (default: mlflow.db in the project; none: off).", None),
    ("output_dir", Path, None, "Run folder (default: outputs/<timestamp>_<model>).", None),
    (
        "jobs",
        int,
        None,
        "Seeds (--different_seeds) or folds (--crossval_count) run at once (default: CPUs).",
        None,
    ),
    ("log_level", str, None, "Runner log level.", None),
    ("debug_ddp", str, None, "torch.distributed debug level.", None),
    (
        "cluster",
        str,
        "",
        "Azure ML cluster to submit the run to (one job per seed and fold).",
        None,
    ),
    ("conda_env", str, None, "Conda environment file (Azure ML).", None),
    ("docker_shm_size", str, None, "Shared memory of the job (Azure ML).", None),
    ("wait_for_completion", bool, False, "Wait for the job to finish (Azure ML).", None),
    ("max_run_duration", str, None, "Cancel the job after this long (Azure ML).", None),
    ("workspace_config_path", str, None, "Workspace config.json (Azure ML).", None),
    ("identity_based_auth", bool, False, "Job identity for datastores (Azure ML).", None),
    ("mount_in_azureml", bool, False, "Mount datasets instead of downloading (Azure ML).", None),
]
#: Runner flags that are settings of the manifest's `runner` section.
_SCHEMA_SETTINGS = ("log_level", "debug_ddp")


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise click.exceptions.Exit(status)


def _converter(tp: Any, name: str, check: Any = None, context: str = "") -> Any:
    """Text -> a value of ``tp`` (then ``check(value)``: a trainer option's words). ``context``
    (``BlobsClassifier.hidden_size``) ends the message of a bad value:
    ``argument --hidden_size: 'big' is not an int (BlobsClassifier.hidden_size)``."""

    def convert(text: str) -> Any:
        try:
            value = coerce(text, tp)
            return check(value) if check is not None else value
        except (TypeError, ValueError) as exc:
            where = f" ({context})" if context else ""
            raise argparse.ArgumentTypeError(f"{exc}{where}") from exc

    convert.__name__ = name
    return convert


def _choice(choices: tuple[str, ...]) -> Any:
    def convert(text: str) -> str:
        for choice in choices:
            if text.lower() == choice.lower():
                return choice
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")

    convert.__name__ = "choice"
    return convert


def _metavar(tp: Any) -> str:
    text = label(tp)
    if "{" in text:
        return text
    if text.startswith("list["):
        return "A,B,..."
    return "VALUE" if "|" in text else text.upper()


def _add(group: Any, name: str, dest: str, help_text: str, **kwargs: Any) -> None:
    """``--name`` (shown in --help) and ``--na-me`` (a hidden alias)."""
    group.add_argument(f"--{name}", dest=dest, help=help_text.replace("%", "%%"), **kwargs)
    dashed = name.replace("_", "-")
    if dashed != name:
        group.add_argument(f"--{dashed}", dest=dest, help=argparse.SUPPRESS, **kwargs)


def _add_flag(
    group: Any,
    name: str,
    tp: Any,
    dest: str,
    help_text: str,
    check: Any = None,
    context: str = "",
    **extra: Any,
) -> None:
    if is_bool(tp):
        bool_type = _converter(bool, "bool", context=context)
        _add(
            group,
            name,
            dest,
            help_text,
            nargs="?",
            const=True,
            type=bool_type,
            metavar="BOOL",
            **extra,
        )
        # --no-flag-name, --no_flag_name and hi-ml's --no-flag_name
        no = [f"--no-{name.replace('_', '-')}", f"--no_{name}", f"--no-{name}"]
        group.add_argument(
            *dict.fromkeys(no),
            dest=dest,
            action="store_const",
            const=False,
            help=argparse.SUPPRESS,
            default=extra.get("default"),
        )
        return
    convert = _converter(tp, label(tp), check, context)
    _add(group, name, dest, help_text, type=convert, metavar=_metavar(tp), **extra)


def _trainer_check(name: str) -> Any:
    """The check of a trainer option's words (``--profiler=foo`` is refused while parsing)."""
    from himl_manifest.runner.container import check_trainer_value, trainer_options

    if name not in trainer_options():
        return None
    return functools.partial(check_trainer_value, name)


def _group_title(field: Field, container: object) -> str:
    from himl_manifest.runner.container import LightningContainer, trainer_options

    if field.owner is not LightningContainer:
        return f"{type(container).__name__} fields"
    if field.name in trainer_options():
        return "trainer fields"
    return "workflow, data and tracking fields"


def build_parser(container: object | None) -> _Parser:
    """The parser of the runner's flags plus, with a container, one flag per field."""
    parser = _Parser(
        prog="himl-runner",
        usage="himl-runner --model=NAME [flags]",
        description="Train, resume or evaluate a LightningContainer found by name.",
        epilog=None if container else "Add --model=NAME to --help to see that model's fields.",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    runner = parser.add_argument_group("runner options")
    for name, tp, default, help_text, choices in _RUNNER_FLAGS:
        if name in _SCHEMA_SETTINGS:
            choices, default = runner_choices(name), runner_default(name)
        if choices:
            _add(
                runner,
                name,
                name,
                f"{help_text} [default: {default}]",
                default=default,
                type=_choice(choices),
                metavar="{" + ",".join(choices) + "}",
            )
        else:
            _add_flag(runner, name, tp, name, f"{help_text} [default: {default}]", default=default)
    if container is None:
        return parser
    groups: dict[str, Any] = {}
    runner_names = {n for n, *_ in _RUNNER_FLAGS}
    fields = container_fields(container)
    ordered = sorted(
        fields.values(),
        key=lambda f: _group_title(f, container) != f"{type(container).__name__} fields",
    )
    for field in ordered:
        if field.name in runner_names:
            continue
        title = _group_title(field, container)
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        current = getattr(container, field.name, None)
        text = f"{field.help} [{label(field.type)}, default: {current!r}]".strip()
        _add_flag(
            group,
            field.name,
            field.type,
            _FIELD + field.name,
            text,
            check=_trainer_check(field.name),
            context=f"{type(container).__name__}.{field.name}",
            default=argparse.SUPPRESS,
        )
    return parser


def _model_in(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """The values of ``--model`` and ``--model_variant`` (last wins), before full parsing."""
    found: dict[str, str | None] = {"model": None, "model_variant": None}
    names = {
        "--model": "model",
        "--model_variant": "model_variant",
        "--model-variant": "model_variant",
    }
    for index, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in names:
            if eq:
                found[names[flag]] = value
            elif index + 1 < len(argv):
                found[names[flag]] = argv[index + 1]
    return found["model"], found["model_variant"]


def _template(model: str, variant: str | None) -> object:
    from himl_manifest.errors import LookupFailed
    from himl_manifest.runner.container import instantiate
    from himl_manifest.runner.lookup import NotFound, find_container

    try:
        found = find_container(model)
    except NotFound as exc:  # suggest the project's class as the flag to type
        raise LookupFailed(exc.suggest(lambda qualified: f"--model={qualified}")) from exc
    return instantiate(found, variant)


def _reject_unknown(parser: _Parser, unknown: list[str]) -> None:
    known = [o for action in parser._actions for o in action.option_strings]
    problems = []
    for arg in unknown:
        flag = arg.partition("=")[0]
        if not flag.startswith("-"):
            problems.append(f"unexpected argument {arg!r}")
            continue
        hint = did_you_mean(flag, known)
        problems.append(f"unknown flag {flag}" + (f" ({hint})" if hint else ""))
    raise UsageError("; ".join(problems))


def parse_args(argv: Sequence[str]) -> RunSettings | None:
    """Settings from the command line; None when help was shown."""
    model, variant = _model_in(argv)
    wants_help = any(a in ("-h", "--help") for a in argv)
    if not model and not wants_help:
        raise UsageError("--model is required, e.g. himl-runner --model=HelloWorld")
    container = _template(model, variant) if model else None
    parser = build_parser(container)
    if wants_help:
        parser.print_help()
        return None
    namespace, unknown = parser.parse_known_args(list(argv))
    if unknown:
        _reject_unknown(parser, unknown)
    return _settings(vars(namespace), list(argv))


def _settings(values: dict[str, Any], argv: list[str]) -> RunSettings:
    overrides = {k[len(_FIELD) :]: v for k, v in values.items() if k.startswith(_FIELD)}
    mode = values["mode"]
    if not values["cluster"]:
        given = [n for n in _AZURE_ONLY if values[n] not in (None, False)]
        if given:
            print(
                f"note: {', '.join('--' + n for n in given)} only apply with --cluster",
                file=sys.stderr,
            )
    return RunSettings(
        model=values["model"],
        overrides=overrides,
        model_variant=values["model_variant"],
        mode=EVALUATION if mode == "eval_full" else TRAIN,
        cluster=values["cluster"] or "",
        num_nodes=values["num_nodes"],
        log_level=values["log_level"],
        debug_ddp=values["debug_ddp"],
        tracking_uri=values["tracking_uri"],
        output_dir=values["output_dir"],
        jobs=values["jobs"],
        source={"format": "himl-runner/flags", "argv": argv},
        argv=argv,
        origin="flags",
        azure={name: values[name] for name in _AZURE_ONLY},
    )


def _report(results: list[Any]) -> int:
    failed = 0
    for result in results:
        prefix = f"{result.label}: " if len(results) > 1 else ""
        if not result.ok:
            failed += 1
            click.echo(f"{prefix}FAILED: {result.error}")
            continue
        metrics = ", ".join(f"{k}={v:.6g}" for k, v in sorted(result.metrics.items()))
        if result.output_dir is not None:
            click.echo(f"{prefix}run folder: {result.output_dir}")
            if result.run_id:
                click.echo(f"{prefix}run id: {result.run_id}")
        elif result.run_id:
            click.echo(f"{prefix}Azure ML job: {result.run_id}")
        if metrics:
            click.echo(f"{prefix}metrics: {metrics}")
    result_file = os.environ.get(RESULT_FILE_ENV)
    if result_file and len(results) == 1:
        from dataclasses import asdict

        Path(result_file).write_text(json.dumps(asdict(results[0]), default=str), "utf-8")
    return 1 if failed else 0


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def runner_command(args: tuple[str, ...]) -> int:
    """Train, resume or evaluate a LightningContainer (see --help)."""
    from himl_manifest.extras import require_train

    require_train()
    settings = parse_args(args)
    if settings is None:
        return 0
    from himl_manifest.runner.execute import execute
    from himl_manifest.runner.outputs import is_rank_zero

    results = execute(settings)
    return _report(results) if is_rank_zero() else 0


def main(argv: Sequence[str] | None = None) -> None:
    from himl_manifest.runner.outputs import enter_launch_cwd

    enter_launch_cwd()
    sys.exit(
        run_command(
            runner_command,
            list(argv) if argv is not None else sys.argv[1:],
            prog_name="himl-runner",
        )
    )


if __name__ == "__main__":
    main()
