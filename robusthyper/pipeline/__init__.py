"""One pipeline behind every evaluation: plan -> execute -> assemble (-> write, `robusthyper.sweep`).

`evaluate` plans the cells of models x specs (x OOD sets, `plan`), takes those a run folder already records
(`cells.CellStore`), hands the rest to an executor (`executors`; in this process by default) and records each
as it arrives, then assembles the tidy tables and the sanity flags (`assemble`). `robusthyper.evaluate.run`
is this in memory; `robusthyper.sweep.run_sweep` (behind `robusthyper sweep`, `attack` and `gate`) adds the
run folder, its meta.json and the report.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from robusthyper.attacks import AttackSpec
from robusthyper.data import Split
from robusthyper.errors import UserError
from robusthyper.loading import ModelUnderTest
from robusthyper.pipeline.assemble import Assembled, assemble
from robusthyper.pipeline.cells import CellRecord, CellStore
from robusthyper.pipeline.executors import Executor, LocalExecutor
from robusthyper.pipeline.plan import Cell, Plan, Workload, plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellRun:
    """Provenance of one cell of a plan: the seconds it took and the node that ran it (now, or when it was
    recorded: `reused`)."""

    label: str
    key: str
    seconds: float
    node: str
    reused: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Evaluated:
    """What `evaluate` returns: the assembled tables, the plan, how many cells were computed now and
    reused from the run folder, and each cell's provenance (in plan order)."""

    tables: Assembled
    plan: Plan
    computed: int
    reused: int
    cells: list[CellRun]

    @property
    def seconds(self) -> dict[str, float]:
        """Cell label -> seconds it took (computed now or when recorded)."""
        return {cell.label: cell.seconds for cell in self.cells}


def check_settings(models: Sequence[ModelUnderTest], specs: Sequence[AttackSpec], n: int, available: int,
                   batch_size: int, dataset: str) -> None:  # fmt: skip
    """Bad settings are one-line `UserError`s before any work starts."""
    if not models:
        raise UserError("no model to evaluate; pass --model NAME")
    names = [m.name for m in models]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserError(f"two models are named {twice[0]!r}; pass each model once (names label the rows)")
    if not specs:
        raise UserError("no attack to run; pass --attack NAME and --eps VALUE (or a suite with [[attacks]])")
    if batch_size <= 0:
        raise UserError(f"--batch-size {batch_size} must be positive")
    if not 0 < n <= available:
        raise UserError(f"--n {n} is out of range: the {dataset} test set has {available} examples")


def evaluate(
    models: Sequence[ModelUnderTest],
    specs: Sequence[AttackSpec],
    split: Split,
    *,
    dataset: str,
    n: int | None = None,
    batch_size: int = 128,
    ids: Mapping[str, str] | None = None,
    ood_inputs: Mapping[str, torch.Tensor] | None = None,
    store: CellStore | None = None,
    executor: Executor | None = None,
    progress: bool | None = None,
) -> Evaluated:
    """Every model under every spec (and against every OOD set of `ood_inputs`) on the first n examples of
    `split`. `ids`: model name -> identity of its weights (default: the object's id, for runs in memory).
    `store`: record each finished cell there and reuse what it holds. `executor`: default `LocalExecutor`."""
    n = len(split) if n is None else n
    check_settings(models, specs, n, len(split), batch_size, dataset)
    ids = ids or {m.name: f"memory:{id(m.posterior)}" for m in models}
    ood_inputs = dict(ood_inputs or {})
    device = str(models[0].posterior.device)
    the_plan = plan(models, specs, ids=ids, dataset=dataset, n=n, batch_size=batch_size, device=device,
                    ood_sets=[(name, len(x)) for name, x in ood_inputs.items()])  # fmt: skip
    work = Workload({m.name: m for m in models}, split, dataset, n, batch_size, ood_inputs)
    records, computed, reused = _execute(the_plan, work, store, executor or LocalExecutor(), progress)
    runs = [CellRun(cell.label, cell.key, records[cell.key].seconds, records[cell.key].node, cell.key in reused)
            for cell in the_plan.cells]  # fmt: skip
    return Evaluated(assemble(the_plan, records), the_plan, computed, len(reused), runs)


def _execute(
    the_plan: Plan, work: Workload, store: CellStore | None, executor: Executor, progress: bool | None
) -> tuple[dict[str, CellRecord], int, set[str]]:
    from tqdm.auto import tqdm

    records: dict[str, CellRecord] = {}
    missing: list[Cell] = []
    for cell in the_plan.cells:
        record = None if store is None else store.read(cell)
        if record is None:
            missing.append(cell)
        else:
            records[cell.key] = record
    by_key = {cell.key: cell for cell in missing}
    log.info("%d cells (%d models): %d recorded, %d to compute", len(the_plan), len(work.models), len(records),
             len(missing))  # fmt: skip
    bar = tqdm(total=len(the_plan), initial=len(records), desc="cells", unit="cell",
               disable=None if progress is None else not progress)  # fmt: skip
    computed = 0
    try:
        with bar:
            for record in executor.execute(missing, work):
                cell = by_key.pop(record.key)  # once: a record for a cell already recorded is a bug
                if store is not None:
                    store.write(cell, record)
                    reread = store.read(cell)  # the table is always assembled from what is on disk
                    assert reread is not None
                    record = reread
                records[cell.key] = record
                computed += 1
                bar.set_postfix_str(cell.label)
                bar.update(1)
                log.info("cell %s: %.1f s", cell.label, record.seconds)
    except KeyboardInterrupt:
        where = f" in {store.folder.parent}; run the same command to resume" if store is not None else ""
        log.warning("interrupted: %d of %d cells are recorded%s", len(records), len(the_plan), where)
        raise
    if by_key:
        raise RuntimeError(f"the executor returned no record for {len(by_key)} cell(s), e.g. "
                           f"{next(iter(by_key.values())).label}")  # fmt: skip
    return records, computed, {cell.key for cell in the_plan.cells} - {cell.key for cell in missing}


__all__ = ["CellRun", "CellStore", "Evaluated", "Executor", "LocalExecutor", "evaluate", "plan"]
