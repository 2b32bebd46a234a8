"""The `robusthyper` command line: thin typer commands over library functions.

Only typer and the standard library are imported at module level; torch, ART and pandas are imported inside
the commands, so `robusthyper --help` answers at once. A `UserError` ends in one line on stderr and exit 2.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from robusthyper.errors import UserError

app = typer.Typer(
    help="Honest adversarial-robustness and uncertainty evaluation of Bayesian neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Datasets: where they load from and whether they are available.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

F = TypeVar("F", bound=Callable[..., Any])

StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store", help="Model store folder (default: ./models, or $ROBUSTHYPER_STORE).", show_default=False
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder with torchvision datasets (default: ./data, or $ROBUSTHYPER_DATA_DIR).",
        show_default=False,
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, or auto (cuda when available).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log lines.")]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def user_errors(fn: F) -> F:
    """Turn a `UserError` into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            _fail(str(err))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device '{device}' is not one of cpu, cuda, auto")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is available; use --device cpu or auto")
    return device


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr
    )


@app.command()
@user_errors
def train(
    recipe: Annotated[
        str, typer.Argument(help="Recipe name (defenses/<name>.toml) or path to a recipe TOML.")
    ],
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
    download: Annotated[
        bool, typer.Option("--download", help="Allow torchvision to download the dataset.")
    ] = False,
    device: DeviceOpt = "auto",
    epochs: Annotated[
        int | None,
        typer.Option("--epochs", min=0, help="Override the recipe's number of epochs.", show_default=False),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Override the recipe's seed.", show_default=False)
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a defence from its recipe and save a checkpoint (safetensors + JSON) in the model store."""
    from robusthyper import store as model_store
    from robusthyper.config import load_recipe
    from robusthyper.data import load_dataset
    from robusthyper.train import fit

    _setup_logging(quiet)
    recipe_obj = load_recipe(recipe)
    overrides: dict[str, Any] = {}
    if seed is not None:
        overrides["seed"] = seed
    if epochs is not None:
        overrides["train"] = recipe_obj.train.model_copy(update={"epochs": epochs})
    recipe_obj = recipe_obj.model_copy(update=overrides)
    store_dir = model_store._writable_dir(Path(store or model_store.default_store()))  # fail before training
    device_name = resolve_device(device)
    data = load_dataset(recipe_obj.dataset, data_dir, download=download)
    result = fit(recipe_obj, data, device=device_name, progress=False if quiet else None)
    path = model_store.save(result.posterior, recipe_obj, result.metrics, store_dir, result.history)
    m = result.metrics
    typer.echo(
        f"{recipe_obj.name}: test accuracy {m['test_accuracy']:.4f} (K={int(m['eval_samples'])}) "
        f"in {m['train_seconds']:.1f} s -> {path}"
    )


@app.command()
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


def main() -> None:
    app()
