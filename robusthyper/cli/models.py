"""`robusthyper models`: the checkpoints in the model store."""

from __future__ import annotations

import typer

from robusthyper.cli.common import StoreOpt, user_errors


@user_errors
def models(store: StoreOpt = None) -> None:
    """List the checkpoints in the model store, newest last per recipe."""
    from robusthyper.store import default_store, list_checkpoints

    rows = list_checkpoints(store)
    if not rows:
        typer.echo(f"no checkpoints in '{store or default_store()}'; train one with `robusthyper train det`")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("recipe", "posterior", "dataset", "test acc", "train s", "created", "path")
    for r in rows:
        if "error" in r:
            table.add_row(r["recipe"], "-", "-", "-", "-", "-", f"{r['path']} ({r['error']})")
            continue
        acc = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
        secs = f"{r['train_seconds']:.1f}" if r["train_seconds"] is not None else "-"
        table.add_row(
            r["recipe"], str(r["posterior"]), str(r["dataset"]), acc, secs, str(r["created"]), r["path"]
        )
    Console(width=200).print(table)
