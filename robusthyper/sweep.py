"""Sweeps: models x attack specs (every attack, eps and K_attack of a suite) into one run folder.

`run_sweep` is the one library function behind `robusthyper sweep`, `robusthyper attack` and the gate's own
evaluation: it checks the settings and the run folder before anything is loaded, takes the folder's lock (one
driver per run folder, `robusthyper.pipeline.lock`), loads the models
(`robusthyper.loading`), runs the pipeline (`robusthyper.pipeline.evaluate`: plan -> execute -> assemble),
recording each finished cell in `<run>/cells/` so a killed sweep resumes where it stopped and a sweep with
other settings recomputes, then writes the run folder (`robusthyper.run.write_run`: results, examples,
flags.csv, meta.json) and, on request, the HTML report.

OOD rows: `attack = "ood"`, `input` = the OOD set, `metric` = `ood_auroc_entropy` / `ood_auroc_mi` (and the
mean scores `ood_entropy` / `ood_mi` on the OOD inputs), `eps` NaN; in-distribution inputs are the same n test
examples, OOD inputs as many (uniform noise always; Fashion-MNIST for MNIST models when it is available; the
other five classes for CIFAR-5).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from robusthyper import sanity
from robusthyper.attacks.spec import AttackSpec
from robusthyper.data import Dataset
from robusthyper.errors import ConfigError, DataMissingError, UserError
from robusthyper.run import Run, run_meta, write_run

if TYPE_CHECKING:
    from robusthyper.pipeline.executors import Executor

log = logging.getLogger(__name__)

UNIFORM_NOISE = "uniform-noise"
SUITE_KEYS = ("n",)
"""Suite-level keys besides `description` and `[[attacks]]`: `n`, the number of test examples."""


@dataclass(frozen=True)
class Suite:
    """A suite TOML: its specs (one per attack, eps and K_attack), its default n and description."""

    path: Path
    specs: list[AttackSpec]
    n: int | None = None
    description: str = ""


@dataclass
class SweepResult:
    """What `run_sweep` returns: the run it wrote, how many cells (attack, OOD, probe) this call computed and
    reused, the report's path, and the warnings (unavailable OOD sets and sanity flags)."""

    run: Run
    computed: int
    reused: int
    report: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def results(self) -> pd.DataFrame:
        return self.run.results

    @property
    def examples(self) -> pd.DataFrame:
        return self.run.examples if self.run.examples is not None else pd.DataFrame()

    @property
    def run_dir(self) -> Path:
        assert self.run.folder is not None
        return self.run.folder

    @property
    def meta(self) -> dict[str, Any]:
        return self.run.meta


def load_suite(ref: str, overrides: dict[str, Any] | None = None) -> Suite:
    """A suite (`attacks/<name>.toml` or a path): the specs of `load_preset` plus the suite-level `n`.

    Unknown keys, an empty eps grid and an empty suite are one-line `ConfigError`s."""
    from robusthyper.attacks.presets import find_preset, specs_from_data
    from robusthyper.settings import read_toml

    path = find_preset(ref)
    data = read_toml(path)
    n = data.pop("n", None)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise ConfigError(f"{path}: n = {n!r} must be a positive whole number of test examples")
    description = str(data.get("description", ""))
    if "attacks" in data and not data["attacks"]:
        raise ConfigError(f"{path}: the suite has no [[attacks]] tables; add at least one")
    specs = specs_from_data(path, data, overrides)
    return Suite(path, specs, n, description)


def ood_sets(dataset: str, data: Dataset, n: int, seed: int, data_dir: Path | None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The OOD inputs for a dataset (`n` of each) and notes on sets that are unavailable."""
    from robusthyper.data import load_dataset

    shape = tuple(data.test.x.shape[1:])
    sets = {UNIFORM_NOISE: torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed + 104_729))}
    notes: list[str] = []
    other = {"mnist5k": "fashion-mnist", "mnist": "fashion-mnist", "fashion-mnist": "mnist5k"}.get(dataset)
    if other is not None:
        try:
            sets[other] = load_dataset(other, data_dir).test.x[:n]
        except DataMissingError as err:
            notes.append(f"OOD detection vs {other} skipped: {err}")
    if data.ood is not None:
        sets[f"{dataset}-ood"] = data.ood.x[:n]
    return sets, notes


def run_sweep(
    run_dir: Path,
    models: Sequence[str],
    specs: Sequence[AttackSpec],
    *,
    dataset: str | None = None,
    store: Path | None = None,
    data_dir: Path | None = None,
    n: int | None = None,
    batch_size: int = 128,
    device: str = "cpu",
    resume: bool = True,
    progress: bool | None = None,
    ood: bool = True,
    overwrite: bool = False,
    train_missing: bool = False,
    report: bool = True,
    command: str = "sweep",
    meta: dict[str, Any] | None = None,
    executor: Executor | None = None,
) -> SweepResult:
    """Evaluate every model under every spec into `run_dir`, recording each cell as it finishes.

    `models`: recipe names (latest checkpoint in `store`), checkpoint folders, or `module:factory`;
    `dataset` applies to factories only (checkpoints carry theirs). `n`: the first n test examples (default
    all). `resume`: reuse the cells `run_dir` already records under the same settings; `resume=False` on a
    folder with cells is a `UserError` unless `overwrite`, which discards them. `ood`: add OOD detection
    AUROCs per model. `train_missing`: train a recipe that has no checkpoint yet. `report`: build
    `index.html` at the end. `command` and `meta` (extra keys: argv, suite) go into meta.json. `executor`:
    where the cells run (default in this process; `pipeline.choice.make_executor`); one that connects is
    started before the run folder is touched and closed at the end. meta.json's `cells.cells` names, per cell,
    its seconds, the node that ran it and whether it was reused.
    """
    from robusthyper import pipeline
    from robusthyper.data import load_dataset
    from robusthyper.device import resolve_device
    from robusthyper.loading import load_models
    from robusthyper.pipeline.cells import CellStore, open_run_folder
    from robusthyper.pipeline.executors import LocalExecutor, executor_meta, session
    from robusthyper.pipeline.lock import RunLock

    started = time.perf_counter()
    run_dir = Path(run_dir)
    if not specs:
        raise UserError("no attack to run; the suite holds no [[attacks]]")
    if batch_size <= 0:
        raise UserError(f"--batch-size {batch_size} must be positive")
    if n is not None and n <= 0:
        raise UserError(f"--n {n} must be positive")
    device = resolve_device(device)
    executor = executor or LocalExecutor()
    with session(executor):  # a cluster that cannot be reached fails here, with nothing written
        recorded = open_run_folder(run_dir, resume=resume, overwrite=overwrite)
        created = [d for d in (run_dir, *run_dir.parents) if not d.exists()]  # innermost first
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir, command)  # one driver per run folder: a second one stops here, naming this one
        lock.acquire()
        try:
            loaded = load_models(models, store=store, data_dir=data_dir, device=device, dataset=dataset,
                                 train_missing=train_missing, quiet=progress is False)  # fmt: skip
            data = load_dataset(loaded.dataset, data_dir)
            n = len(data.test) if n is None else n
            if n > len(data.test):
                raise UserError(f"--n {n} is larger than the {loaded.dataset} test set ({len(data.test)} examples)")
            inputs, notes = ood_sets(loaded.dataset, data, n, specs[0].seed, data_dir) if ood else ({}, [])
            cells = CellStore(run_dir)
            cells.prepare(overwrite)
            done = pipeline.evaluate(loaded.models, specs, data.test, dataset=loaded.dataset, n=n, batch_size=batch_size,
                                     ids=loaded.ids, ood_inputs=inputs, store=cells, progress=progress,
                                     executor=executor)  # fmt: skip
            tables = done.tables
            planned = {cell.key for cell in done.plan.cells}
            stale = sum(1 for path in cells.recorded() if path.stem not in planned)
            warnings = [*notes, *(str(f) for f in tables.flags)]
            for message in warnings:
                log.warning("%s", message)
            info = run_meta(
                run_dir.name, command=command, device=device,
                device_name=torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
                torch_threads=torch.get_num_threads(), seconds=time.perf_counter() - started, models=loaded.meta,
                data_source=data.source, dataset=loaded.dataset, n=n, batch_size=batch_size,
                specs=[s.settings() for s in specs], ood_sets=list(inputs),
                cells={"total": len(done.plan), "computed": done.computed, "reused": done.reused,
                       "recorded_before": recorded, "other_settings": stale,
                       "cells": [cell.to_dict() for cell in done.cells]},
                executor=executor_meta(executor),
                gradient_health=tables.health, flags=len(tables.flags), warnings=warnings, **(meta or {}),
            )  # fmt: skip
            flags = sanity.flags_to_frame(tables.flags)
            write_run(run_dir, tables.results, info, tables.examples, flags)
            page = None
            if report:
                from robusthyper.report import build

                logging.getLogger("matplotlib").setLevel(logging.WARNING)
                page = build(run_dir)
            run = Run.of(tables.results, tables.examples, flags, info)
            run.folder = run_dir
            return SweepResult(run, done.computed, done.reused, page, warnings)
        except BaseException:
            lock.release()
            for folder in created:  # a run that failed before its first cell leaves nothing behind
                if any(folder.iterdir()):
                    break
                folder.rmdir()
            raise
        finally:
            lock.release()


__all__ = ["Suite", "SweepResult", "load_suite", "ood_sets", "run_sweep"]
