"""`robusthyper gate`: check robustness and uncertainty rules for CI (exit 0 pass, 1 fail, 2 bad input)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robusthyper.cli.common import (
    AddressOpt,
    CpusPerCellOpt,
    DataDirOpt,
    DeviceOpt,
    GpusPerCellOpt,
    QuietOpt,
    StoreOpt,
    resolve_device,
    setup_logging,
    user_errors,
)


@user_errors
def gate(
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            "-p",
            help="Policy TOML (rules, and an \\[evaluate] section). Default: the \\[tool.robusthyper.gate] "
            "table of ./pyproject.toml, else ./robustness.toml.",
            show_default=False,
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            "--results",
            help="Check this finished run folder (or results .csv/.parquet) instead of evaluating.",
            show_default=False,
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            help="Run folder or results file to compare with (max_drop and max_rise rules).",
            show_default=False,
        ),
    ] = None,
    junit_xml: Annotated[
        Path | None,
        typer.Option(
            "--junit-xml", help="Write a JUnit XML report here (one test case per rule).", show_default=False
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the verdict as JSON on stdout instead of a table.")
    ] = False,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="Run folder for the gate's own evaluation (default: <out>/gate-<fingerprint>); finished "
            "cells are reused on a re-run.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the default run folder.")] = Path("reports"),
    report: Annotated[
        bool,
        typer.Option(
            "--report/--no-report", help="Build the run's HTML report (index.html) after evaluating."
        ),
    ] = True,
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="Where the evaluation's cells run: local or ray (default: the policy's [evaluate] executor, "
            "else local).",
            show_default=False,
        ),
    ] = None,
    address: AddressOpt = None,
    cpus_per_cell: CpusPerCellOpt = None,
    gpus_per_cell: GpusPerCellOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Check robustness and uncertainty rules for CI: exit 0 when all pass, 1 when one fails, 2 on bad input."""
    from robusthyper.gate import run_gate
    from robusthyper.gate.output import check_writable, print_table, to_json, write_atomic

    setup_logging(quiet, "art")
    if junit_xml is not None:
        check_writable(junit_xml)  # fail before a long evaluation, not after it
    device_name = resolve_device(device) if results is None else "cpu"
    done = run_gate(policy, results=results, baseline=baseline, run_dir=run_dir, out=out, store=store,
                    data_dir=data_dir, device=device_name, quiet=quiet or as_json, report=report,
                    execution={"executor": executor, "address": address, "cpus_per_cell": cpus_per_cell,
                               "gpus_per_cell": gpus_per_cell})  # fmt: skip
    if junit_xml is not None:
        from robusthyper.gate.output import junit_xml as render_junit

        write_atomic(junit_xml, render_junit(done.checked, done.policy_source, done.seconds))
    failed = [r for r in done.checked if not r.passed]
    if as_json:
        typer.echo(to_json(done.checked, {"policy": done.policy_source, "run": str(done.results_source),
                                          "computed": done.computed, "reused": done.reused,
                                          "report": None if done.page is None else str(done.page)}))  # fmt: skip
    else:
        if not quiet:
            print_table(done.checked, title=f"robusthyper gate: {done.policy_source}")
        cells = "" if done.computed is None else f"; {done.computed} cells computed, {done.reused} reused"
        typer.echo(f"{len(done.checked) - len(failed)}/{len(done.checked)} rules pass "
                   f"({done.results_source}{cells})")  # fmt: skip
        if done.page is not None:
            typer.echo(f"report: {done.page}")
        for r in failed:
            typer.echo(f"FAIL {r.name}: {r.message()}", err=True)
    if failed:
        raise typer.Exit(1)
