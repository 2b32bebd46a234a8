"""`robusthyper attack`: attack models with EOT, print a table, write reports/<run-id>/ with its sanity flags."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

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
def attack(
    model: ModelsOpt,
    attack_name: Annotated[
        list[str] | None,
        typer.Option(
            "--attack",
            "-a",
            help="An attack family listed above, or a preset (attacks/<name>.toml or a path). "
            "Repeatable; several attacks also give the worst case per example. Default: pgd.",
            show_default=False,
        ),
    ] = None,
    eps: Annotated[
        list[str] | None,
        typer.Option("--eps", help="Perturbation budget, e.g. 0.1 or 8/255. Repeatable.", show_default=False),
    ] = None,
    norm: Annotated[
        str | None, typer.Option("--norm", help="linf (default) or l2.", show_default=False)
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps",
            help="Iterations (queries for square); default per attack (listed above).",
            show_default=False,
        ),
    ] = None,
    step_size: Annotated[
        float | None,
        typer.Option("--step-size", help="Step size; default per attack (listed above).", show_default=False),
    ] = None,
    restarts: Annotated[
        int | None, typer.Option("--restarts", help="Independent runs; worst case kept.", show_default=False)
    ] = None,
    random_init: Annotated[
        bool | None,
        typer.Option(
            "--random-init/--no-random-init", help="Random start in the eps-ball.", show_default=False
        ),
    ] = None,
    eot: Annotated[
        list[str] | None,
        typer.Option(
            "--eot", help="EOT estimator: bma (default) or mean-loss. Repeatable.", show_default=False
        ),
    ] = None,
    k_attack: Annotated[
        list[int] | None,
        typer.Option(
            "--k-attack",
            help="Posterior samples per attack step (default 20). Repeatable: one run per value.",
            show_default=False,
        ),
    ] = None,
    k_eval: Annotated[
        int | None,
        typer.Option("--k-eval", help="Posterior samples for evaluation (default 100).", show_default=False),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the run (default 0).", show_default=False)
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Test examples evaluated (the first n).")] = 1000,
    batch_size: BatchSizeOpt = 128,
    device: DeviceOpt = "auto",
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
    dataset: DatasetOpt = None,
    train_missing: TrainMissingOpt = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for reports/<run-id>/.")] = Path("reports"),
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Also write the run's HTML report (index.html).")
    ] = False,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="Report folder name (default: a UTC timestamp). An attack interrupted in "
                     "that folder resumes from its finished cells.", show_default=False),
    ] = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    cpus_per_cell: CpusPerCellOpt = None,
    gpus_per_cell: GpusPerCellOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Attack models with EOT and print clean and robust accuracy, NLL, entropy and mutual information."""
    # The command's --help is `help_text()`: this docstring plus the registered attack families.
    from robusthyper.run import new_run_id, schema

    setup_logging(quiet, "art")  # ART logs every batch's success rate at INFO
    # Specs first: bad input fails before anything is loaded or written.
    specs = _specs(attack_name, eps, k_attack, eot, {"norm": norm, "steps": steps, "step_size": step_size,
                   "restarts": restarts, "random_init": random_init, "k_eval": k_eval, "seed": seed})  # fmt: skip
    if n <= 0:
        raise UserError(f"--n {n} must be positive")
    runner = executor_from_options(executor, address, cpus_per_cell, gpus_per_cell)
    folder = out / (run_id or new_run_id())
    # An attack killed halfway left its finished cells in its folder: the same --run-id resumes it.
    interrupted = (folder / schema.CELLS).is_dir() and not (folder / schema.META).exists()
    if run_id is not None and folder.exists() and not interrupted:
        raise UserError(f"report folder '{folder}' already exists; pass another --run-id")

    from robusthyper.evaluate import summary
    from robusthyper.sweep import run_sweep

    done = run_sweep(folder, model, specs, dataset=dataset, store=store, data_dir=data_dir, n=n,
                     batch_size=batch_size, device=device, resume=interrupted, progress=False if quiet else None,
                     ood=False, train_missing=train_missing, report=report, command="attack",
                     meta={"argv": sys.argv[1:]}, executor=runner)  # fmt: skip
    if not quiet:
        dataset_name = done.results[schema.DATASET].iloc[0]
        _print_table(summary(done.results), f"{dataset_name}, n={n}")
    for message in done.warnings:
        typer.echo(message, err=True)
    typer.echo(f"wrote {done.run_dir} in {done.meta['seconds']:.1f} s")


def help_text() -> str:
    """The attack command's help: its docstring, then one line per registered attack family (name, summary,
    defaults, norms), read from the registry when the app is built (`robusthyper.cli.create_app`)."""
    from robusthyper.attacks import help_lines

    lines = "\n".join(f"- {line}" for line in help_lines())
    return f"{(attack.__doc__ or '').strip()}\n\nAttack families (--attack):\n\n{lines}"


def _specs(
    refs: list[str] | None,
    eps: list[str] | None,
    k_attack: list[int] | None,
    eot: list[str] | None,
    options: dict[str, Any],
) -> list[Any]:
    """The AttackSpecs of the command line: every attack (a name or a preset) for every K_attack and EOT
    mode, with the options that were given."""
    from robusthyper.attacks import FAMILIES, available_presets, expand, load_preset
    from robusthyper.attacks.presets import is_preset_ref
    from robusthyper.attacks.spec import applicable

    common: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    if eps:
        common["eps"] = list(eps)
    specs = []
    known = list(FAMILIES)
    for ref in refs or ["pgd"]:
        if ref.lower() not in known and not is_preset_ref(ref):
            raise UserError(
                f"unknown attack '{ref}'; known: {', '.join(known)}; presets: {', '.join(available_presets())}"
            )
        k_values: list[int | None] = [*k_attack] if k_attack else [None]
        eot_values: list[str | None] = [*eot] if eot else [None]
        for k_value in k_values:
            for eot_value in eot_values:
                extra = {"k_attack": k_value, "eot": eot_value}
                overrides = {**common, **{k: v for k, v in extra.items() if v is not None}}
                if ref.lower() in known:
                    specs += expand({"attack": ref.lower(), **applicable(ref, overrides)}, "command line")
                else:
                    specs += load_preset(ref, overrides)
    return specs


def _print_table(wide: Any, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in wide.columns:
        table.add_column(column, justify="left" if column in ("model", "attack", "norm", "eot") else "right")
    for row in wide.itertuples(index=False):
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    Console(width=220).print(table)
