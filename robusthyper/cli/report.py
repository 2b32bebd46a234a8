"""`robusthyper report`: (re)build a run folder's HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robusthyper.cli.common import QuietOpt, setup_logging, user_errors


@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run folder, e.g. reports/<run-id>.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Path of the page, or a folder for <folder>/index.html (default: in the "
            "run folder). Figures go to figures/ beside it.",
            show_default=False,
        ),
    ] = None,
    title: Annotated[
        str | None, typer.Option("--title", help="Page title (default: the run id).", show_default=False)
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Write a run's self-contained HTML report (plots of accuracy and uncertainty vs eps) and print its path."""
    from robusthyper.report import build

    setup_logging(quiet, "matplotlib")
    typer.echo(str(build(run_dir, out, title=title)))
