"""Executors: given the cells a run still needs, yield their records as they finish.

The pipeline does not care where a cell runs: it hands an executor the missing cells and the `Workload`
they read, and writes each record it gets back into the run folder at once (so an interrupted run resumes).
`LocalExecutor` runs them one after another in this process; `ray_executor.RayExecutor` runs each as a Ray
task. An executor only has to implement `execute` (results must not depend on where a cell ran: every cell
reseeds its RNGs); one that connects to something may also have `start()` (called before a run folder is
touched, so a bad address fails with nothing written) and `close()` (`session`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from robusthyper import compute
from robusthyper.errors import UserError
from robusthyper.pipeline.cells import CellRecord
from robusthyper.pipeline.plan import Cell, CellKind, Workload


class Executor(Protocol):
    """Runs cells; yields one `CellRecord` per cell, in any order."""

    def execute(self, cells: Sequence[Cell], work: Workload) -> Iterator[CellRecord]: ...


def run_cell(cell: Cell, work: Workload, clean_cache: dict[tuple[Any, ...], Any] | None = None) -> CellRecord:
    """Compute one cell in this process (`robusthyper.compute`)."""
    started = time.perf_counter()
    model = work.models[cell.model]
    spec = cell.spec
    assert spec is not None
    examples = None
    if cell.kind is CellKind.ATTACK:
        rows, examples = compute.attack_cell(model.name, model.kind, model.posterior, spec, work.split,
                                             dataset=work.dataset, n=work.n, batch_size=work.batch_size,
                                             clean_cache=clean_cache)  # fmt: skip
    elif cell.kind is CellKind.OOD:
        assert cell.ood_set is not None
        rows = compute.ood_cell(model.name, model.kind, model.posterior, work.split.x[: work.n], cell.ood_set,
                                work.ood_inputs[cell.ood_set], dataset=work.dataset, k_eval=spec.k_eval,
                                seed=spec.seed, batch_size=work.batch_size)  # fmt: skip
    else:
        rows = compute.probe_cell(model.name, model.kind, model.posterior, work.split, n=work.n,
                                  dataset=work.dataset, k_attack=spec.k_attack, seed=spec.seed)  # fmt: skip
    import pandas as pd

    return CellRecord(cell.key, rows, pd.DataFrame() if examples is None else examples,
                      time.perf_counter() - started, socket.gethostname())  # fmt: skip


class LocalExecutor:
    """Every cell in this process, in plan order; clean evaluations are shared between cells."""

    def execute(self, cells: Sequence[Cell], work: Workload) -> Iterator[CellRecord]:
        clean_cache: dict[tuple[Any, ...], Any] = {}
        for cell in cells:
            yield run_cell(cell, work, clean_cache)


EXECUTORS = ("local", "ray")
"""The names `--executor` takes."""


def make_executor(name: str = "local", *, address: str | None = None, cpus_per_cell: int | None = None,
                  gpus_per_cell: float | None = None) -> Executor:  # fmt: skip
    """The executor `--executor NAME` names, with its options; options of another executor, an unknown name
    and `ray` without Ray installed are one-line `UserError`s (before anything is loaded or written)."""
    name = name.strip().lower()
    if name not in EXECUTORS:
        raise UserError(f"--executor '{name}' is not one of {', '.join(EXECUTORS)}")
    if name == "local":
        given = [flag for flag, value in (("--address", address), ("--cpus-per-cell", cpus_per_cell),
                                          ("--gpus-per-cell", gpus_per_cell)) if value is not None]  # fmt: skip
        if given:
            raise UserError(f"{given[0]} needs --executor ray")
        return LocalExecutor()
    import importlib.util

    from robusthyper.pipeline.ray_executor import INSTALL_HINT, RayExecutor

    if importlib.util.find_spec("ray") is None:
        raise UserError(f"--executor ray needs Ray, which is not installed; {INSTALL_HINT}")
    return RayExecutor(address, 1 if cpus_per_cell is None else cpus_per_cell,
                       0.0 if gpus_per_cell is None else float(gpus_per_cell))  # fmt: skip


def executor_meta(executor: Executor) -> dict[str, Any]:
    """What meta.json records about the executor."""
    meta = getattr(executor, "meta", None)
    return dict(meta) if isinstance(meta, dict) else {"kind": "local" if isinstance(executor, LocalExecutor)
                                                      else type(executor).__name__}  # fmt: skip


@contextmanager
def session(executor: Executor) -> Iterator[Executor]:
    """`start()` the executor (when it has one) for the block and `close()` it after, however it ends."""
    start = getattr(executor, "start", None)
    if callable(start):
        start()
    try:
        yield executor
    finally:
        close = getattr(executor, "close", None)
        if callable(close):
            close()
