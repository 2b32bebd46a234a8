"""What every command shares: option types, the `UserError` wrapper, device resolution, logging setup.

Only typer and the standard library are imported here (see `robusthyper.cli`)."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, ParamSpec, TypeVar

import typer

from robusthyper.errors import UserError

if TYPE_CHECKING:
    from robusthyper.pipeline.executors import Executor

P = ParamSpec("P")
R = TypeVar("R")

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
ModelsOpt = Annotated[
    list[str],
    typer.Option(
        "--model",
        "-m",
        help="A recipe name (its latest checkpoint in the store), a checkpoint folder, or module:factory "
        "returning a Posterior or an nn.Module. Repeatable.",
    ),
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Examples per attack batch.")]
TrainMissingOpt = Annotated[
    bool, typer.Option("--train", help="Train a recipe whose checkpoint is missing first, then evaluate it.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N, or auto (cuda when available).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log lines.")]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="Dataset for module:factory models (default mnist5k); checkpoints use their own.",
        show_default=False,
    ),
]
ExecutorOpt = Annotated[
    str,
    typer.Option(
        "--executor",
        help="Where the cells run: local (this process, one after another) or ray (each cell a Ray task; "
        "needs robusthyper[ray]).",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="With --executor ray: the cluster's HOST:PORT (the driver runs on one of its nodes), auto (the "
        "cluster `ray start` started on this machine), or local (default: a private cluster on 127.0.0.1).",
        show_default=False,
    ),
]
CpusPerCellOpt = Annotated[
    int | None,
    typer.Option(
        "--cpus-per-cell",
        help="With --executor ray: CPUs Ray reserves per cell, and torch threads in it (default 1).",
        show_default=False,
    ),
]
GpusPerCellOpt = Annotated[
    float | None,
    typer.Option(
        "--gpus-per-cell",
        help="With --executor ray and --device cuda: GPUs Ray reserves per cell (0.5 lets two cells share one; "
        "default 0).",
        show_default=False,
    ),
]


def executor_from_options(executor: str, address: str | None, cpus_per_cell: int | None,
                          gpus_per_cell: float | None) -> Executor:  # fmt: skip
    """The executor the options name (`robusthyper.pipeline.choice.make_executor`; imports torch)."""
    from robusthyper.pipeline.choice import make_executor

    return make_executor(executor, address=address, cpus_per_cell=cpus_per_cell, gpus_per_cell=gpus_per_cell)


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a `UserError` into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            fail(str(err))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def resolve_device(device: str) -> str:
    """`robusthyper.device.resolve_device`, imported when a command runs (it imports torch)."""
    from robusthyper.device import resolve_device as resolve

    return resolve(device)


def setup_logging(quiet: bool, *quiet_loggers: str) -> None:
    """Per-epoch log lines for logs (CI, files); on a terminal the progress bar shows the same figures.
    Warnings always show. `quiet_loggers` (e.g. 'art', which logs every batch at INFO) stay at WARNING."""
    verbose = not quiet and not sys.stderr.isatty()
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr
    )
    for name in quiet_loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
