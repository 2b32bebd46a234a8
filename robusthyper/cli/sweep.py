"""`robusthyper sweep`: every model under every attack and eps of a suite, resumably, into one run folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from robusthyper.cli.common import (
    AddressOpt,
    BatchSizeOpt,
    CpusPerCellOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    ExecutorOpt,
    GpusPerCellOpt,
    ModelsOpt,
    QuietOpt,
    StoreOpt,
    TrainMissingOpt,
    executor_from_options,
    setup_logging,
    user_errors,
)
from robusthyper.errors import UserError


@user_errors
def sweep(
    suite: Annotated[
        str, typer.Argument(help="Suite: attacks/<name>.toml by name (quick, standard) or a path to a TOML.")
    ],
    model: ModelsOpt,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Run folder (created; an existing sweep folder is resumed). Default: reports/<run-id>.",
            show_default=False,
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            help="Run folder name under reports/ (default: the suite's name, so re-running resumes).",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="Reuse the cells the run folder already records under the same settings. --no-resume on "
            "a folder with cells stops unless --overwrite.",
        ),
    ] = True,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Discard the cells the run folder records and start over.")
    ] = False,
    n: Annotated[
        int | None,
        typer.Option(
            "--n", help="Test examples (the first n); default: the suite's n, else 1000.", show_default=False
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help="Seed of every attack (default: the suite's, else 0).", show_default=False
        ),
    ] = None,
    ood: Annotated[
        bool,
        typer.Option(
            "--ood/--no-ood", help="Also measure OOD detection AUROC (noise, Fashion-MNIST, CIFAR-5)."
        ),
    ] = True,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 128,
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
    dataset: DatasetOpt = None,
    train_missing: TrainMissingOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    cpus_per_cell: CpusPerCellOpt = None,
    gpus_per_cell: GpusPerCellOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run every model under every attack and eps of a suite into one run folder, recording each finished
    cell (a killed sweep resumes where it stopped), then write the HTML report and print its path."""
    from robusthyper.run.schema import DEFAULT_REPORTS
    from robusthyper.sweep import load_suite, run_sweep

    setup_logging(quiet, "art", "matplotlib")
    if out is not None and run_id is not None:
        raise UserError("pass --out DIR or --run-id ID, not both")
    if n is not None and n <= 0:
        raise UserError(f"--n {n} must be positive")
    runner = executor_from_options(executor, address, cpus_per_cell, gpus_per_cell)
    loaded = load_suite(suite, {} if seed is None else {"seed": seed})
    run_dir = out if out is not None else Path(DEFAULT_REPORTS) / (run_id or loaded.path.stem)
    extra = {"argv": sys.argv[1:], "suite": str(loaded.path)}
    done = run_sweep(run_dir, model, loaded.specs, dataset=dataset, store=store, data_dir=data_dir,
                     n=n or loaded.n or 1000, batch_size=batch_size, device=device,
                     resume=resume, progress=False if quiet else None, ood=ood, overwrite=overwrite,
                     train_missing=train_missing, meta=extra, executor=runner)  # fmt: skip
    typer.echo(f"{done.computed} cells computed, {done.reused} reused -> {done.run_dir}")
    typer.echo(str(done.report))
