"""The `robusthyper` command line: thin typer commands over library functions, one module per command.

Only typer and the standard library are imported at module level (here and in every command module); torch,
ART and pandas are imported inside the commands, so `robusthyper --help` answers at once. A `UserError` ends
in one line on stderr and exit 2 (`common.user_errors`).
"""

from __future__ import annotations

from typing import Annotated

import typer

import robusthyper
from robusthyper.cli import attack as _attack
from robusthyper.cli import attacks as _attacks
from robusthyper.cli import data as _data
from robusthyper.cli import gate as _gate
from robusthyper.cli import models as _models
from robusthyper.cli import report as _report
from robusthyper.cli import sweep as _sweep
from robusthyper.cli import train as _train
from robusthyper.cli.common import resolve_device, user_errors


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"robusthyper {robusthyper.__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Options of `robusthyper` itself, before any command (the help text is the app's)."""


def create_app() -> typer.Typer:
    """The typer app. Built in a function because typer fixes a command's help when it is registered: the
    attack command's help lists the attack families registered at this call (`robusthyper.attacks.FAMILIES`)."""
    app = typer.Typer(
        help="Honest adversarial-robustness and uncertainty evaluation of Bayesian neural networks.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    app.add_typer(_data.data_app, name="data")
    for command in (_train.train, _models.models, _attack.attack, _attacks.attacks, _report.report, _gate.gate,
                    _sweep.sweep):
        app.command(help=_attack.help_text() if command is _attack.attack else None)(command)
    return app


app = create_app()


def main() -> None:
    create_app()()


__all__ = ["app", "create_app", "main", "resolve_device", "user_errors"]
