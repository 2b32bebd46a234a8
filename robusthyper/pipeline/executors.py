"""Executors: given the cells a run still needs, yield their records as they finish.

The pipeline does not care where a cell runs: it hands an executor the missing cells and the `Workload`
they read, and writes each record it gets back into the run folder at once (so an interrupted run resumes).
`LocalExecutor` runs them one after another in this process; a distributed executor only has to implement
the same `execute` (results must not depend on where a cell ran: every cell reseeds its RNGs).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
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
