"""`robusthyper attacks`: the registered attack families as the README's markdown table, or that table written
into a README between its markers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robusthyper.cli.common import user_errors
from robusthyper.errors import UserError


@user_errors
def attacks(
    write: Annotated[
        Path | None,
        typer.Option("--write", help="Replace the attack table between its markers in this file (README.md).",
                     show_default=False),
    ] = None,
) -> None:
    """List every registered attack family (name, what it does, defaults, norms, traits) as a markdown table."""
    from robusthyper.attacks.registry import markdown_table, with_table

    if write is None:
        typer.echo(markdown_table(), nl=False)
        return
    try:
        text = write.read_text(encoding="utf-8")
        write.write_text(with_table(text), encoding="utf-8")
    except (OSError, ValueError) as err:
        raise UserError(f"cannot write the attack table into '{write}' ({err}); pass the README.md to update") from None
    typer.echo(f"wrote the attack table to {write}")
