"""`robusthyper data list`: every dataset, where it loads from, whether it is available."""

from __future__ import annotations

import typer

from robusthyper.cli.common import DataDirOpt, user_errors

data_app = typer.Typer(
    help="Datasets: where they load from and whether they are available.", no_args_is_help=True
)


@data_app.command("list")
@user_errors
def data_list(data_dir: DataDirOpt = None) -> None:
    """Print each dataset, where it would load from, and whether it is available."""
    from rich.console import Console
    from rich.table import Table

    from robusthyper.data import describe_datasets

    table = Table("dataset", "available", "source", "how to get it")
    for row in describe_datasets(data_dir):
        table.add_row(
            row["name"], "yes" if row["available"] else "no", str(row["source"]), row.get("note") or ""
        )
    Console(width=200).print(table)
