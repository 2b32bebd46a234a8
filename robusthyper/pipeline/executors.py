"""Executors: given the cells a run still needs, yield their records as they finish.

The pipeline does not care where a cell runs: it hands an executor the missing cells and the `Workload`
they read, and writes each record it gets back into the run folder at once (so an interrupted run resumes).
`LocalExecutor` runs them one after another in this process; `ray_executor.RayExecutor` runs each as a Ray
task (`choice.make_executor` picks one by name). An executor only has to implement `execute` (results must not depend on where a cell ran: every cell
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
