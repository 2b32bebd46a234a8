"""Sweeps: models × attack specs (every attack, eps and K_attack of a suite) into one run folder.

A *cell* is one (model, spec) pair, evaluated by `robusthyper.evaluate.run` on the first n test examples.
Each finished cell is recorded at once as `<run>/cells/<key>.parquet` (its per-example table, with its result
rows and the settings it was computed under in the file's metadata), written under a temporary name and
renamed. The key is a hash of everything that determines the cell's numbers: the model's name and weights
(checkpoint sha256, or a hash of a factory model's state), the full spec, the dataset, n, the batch size
(evaluation draws one generator per batch), the device type and the table schema version. So a killed sweep
resumes where it stopped, neither redoing nor losing a finished cell, and a sweep resumed with other settings
recomputes rather than reuses (cells recorded under other settings stay on disk, unused).

Global RNGs are reseeded before every cell, so a cell's numbers do not depend on which cells ran before it in
the same process: a resumed sweep produces the same table as an uninterrupted one.

Before the cells, every model's input gradient is probed once (`probe_gradients`): a model whose gradient is
all zero or not finite is swept all the same, with one warning line, and its sanity flag says so.

At the end the sweep assembles the tidy table (the cells' rows, the per-example worst case over attacks per
(model, norm, eps, K_eval, seed), and OOD detection AUROCs per model), writes `results.csv`/`.parquet`,
`examples.parquet` and `meta.json` (with `schema_version`) into the run folder, and builds `index.html`.

OOD rows: `attack = "ood"`, `input` = the OOD set, `metric` = `ood_auroc_entropy` / `ood_auroc_mi` (and the
mean scores `ood_entropy` / `ood_mi` on the OOD inputs), `eps` NaN; in-distribution inputs are the same n test
examples, OOD inputs as many (uniform noise always; Fashion-MNIST for MNIST models when it is available; the
other five classes for CIFAR-5).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from robusthyper import sanity
from robusthyper.attacks.spec import AttackSpec
from robusthyper.device import resolve_device
from robusthyper.errors import ConfigError, DataMissingError, UserError
from robusthyper.evaluate import GRADIENT_PROBE
from robusthyper.files import atomic_path, ensure_writable
from robusthyper.loading import LoadedModels, ModelUnderTest, load_models

log = logging.getLogger(__name__)

CELLS = "cells"
CELL_VERSION = 5
"""Part of every cell's key: bump it when a change to the code changes what a cell computes."""
CELL_META_KEY = b"robusthyper.cell"
OOD_ATTACK = "ood"
OOD_METRICS = {"entropy": "ood_auroc_entropy", "mi": "ood_auroc_mi"}
"""Score -> metric name of the OOD detection AUROC (in-distribution negatives, OOD positives)."""
OOD_MEANS = {"entropy": "ood_entropy", "mi": "ood_mi"}
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
    """What `run_sweep` returns. `computed` and `reused` count cells (attack and OOD) of this call."""

    results: pd.DataFrame
    examples: pd.DataFrame
    run_dir: Path
    computed: int
    reused: int
    report: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


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


# --------------------------------------------------------------------------------------------------------
# Cells on disk


def cell_key(payload: dict[str, Any]) -> str:
    """A stable hash of a cell's settings (JSON with sorted keys)."""
    text = json.dumps(payload, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def write_cell(
    folder: Path, payload: dict[str, Any], rows: list[dict[str, Any]], examples: pd.DataFrame
) -> Path:
    """Record a finished cell as `<folder>/<key>.parquet` (temporary name, then `os.replace`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = cell_key(payload)
    table = pa.Table.from_pandas(examples, preserve_index=False)
    info = json.dumps({"key": payload, "rows": rows}, default=str, allow_nan=True).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), CELL_META_KEY: info})
    final = folder / f"{key}.parquet"
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp)
    return final


def read_cell(path: Path, payload: dict[str, Any]) -> tuple[list[dict[str, Any]], pd.DataFrame] | None:
    """A recorded cell's rows and examples, or None when it is missing, unreadable or recorded under other
    settings (then it is recomputed)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
        info = json.loads((table.schema.metadata or {})[CELL_META_KEY])
    except Exception as err:  # noqa: BLE001 - a damaged cell is recomputed, never trusted
        log.warning("recorded cell %s is unreadable (%s); recomputing it", path.name, type(err).__name__)
        return None
    expected = json.loads(json.dumps(payload, sort_keys=True, default=str, allow_nan=True))
    if info.get("key") != expected:
        log.warning("recorded cell %s was computed under other settings; recomputing it", path.name)
        return None
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != CELL_META_KEY}
    return list(info["rows"]), table.replace_schema_metadata(metadata).to_pandas()


# --------------------------------------------------------------------------------------------------------
# Computing cells (module-level functions: tests interrupt a sweep by patching them)


def _seed_everything(seed: int) -> None:
    """ART's random starts and Square use numpy's global RNG, some tools torch's: seed both per cell."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def compute_cell(
    model: ModelUnderTest,
    spec: AttackSpec,
    split: Any,
    *,
    dataset: str,
    n: int,
    batch_size: int,
    clean_cache: dict[tuple, Any],
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """One (model, spec) cell: `robusthyper.evaluate.run` on it alone; the clean evaluation is shared."""
    from robusthyper.evaluate import run

    _seed_everything(spec.seed)
    evaluation = run(
        [model],
        [spec],
        split,
        dataset=dataset,
        n=n,
        batch_size=batch_size,
        progress=False,
        clean_cache=clean_cache,
        gradient_check=False,  # run_sweep probes every model once (probe_gradients), not once per cell
    )
    return evaluation.results.to_dict("records"), evaluation.examples


@torch.no_grad()
def uncertainty_scores(
    posterior: Any, x: torch.Tensor, *, k_eval: int, seed: int, batch_size: int
) -> dict[str, torch.Tensor]:
    """Predictive entropy and mutual information `[N]` of the model average over K_eval samples, drawn from
    the same per-batch generators as the evaluation of clean inputs (`robusthyper.evaluate`)."""
    from robusthyper.evaluate import _eval_generator, _evaluate
    from robusthyper.nets import frozen

    device = posterior.device
    y = torch.zeros(len(x), dtype=torch.long, device=device)  # labels are not needed for the scores
    parts: dict[str, list[np.ndarray]] = {"entropy": [], "mi": []}
    with frozen(posterior):
        for b, start in enumerate(range(0, len(x), batch_size)):
            xb = x[start : start + batch_size].to(device)
            out = _evaluate(
                posterior, xb, y[start : start + batch_size], k_eval, _eval_generator(device, seed, b)
            )
            parts["entropy"].append(out["entropy"])
            parts["mi"].append(out["mi"])
    return {key: torch.from_numpy(np.concatenate(values)) for key, values in parts.items()}


def ood_auroc(
    posterior: Any,
    x_in: torch.Tensor,
    x_out: torch.Tensor,
    *,
    k_eval: int = 100,
    seed: int = 0,
    batch_size: int = 128,
) -> dict[str, float]:
    """OOD detection: AUROC of in-distribution `x_in` (negatives) vs `x_out` (positives), scored by predictive
    entropy and by mutual information (`{"entropy": .., "mi": ..}`; 0.5 is chance), plus the mean scores on
    `x_out` (`{"mean_entropy": .., "mean_mi": ..}`). Inputs `[N, C, H, W]` in [0, 1]."""
    from robusthyper.metrics import auroc

    inside = uncertainty_scores(posterior, x_in, k_eval=k_eval, seed=seed, batch_size=batch_size)
    outside = uncertainty_scores(posterior, x_out, k_eval=k_eval, seed=seed, batch_size=batch_size)
    out = {score: auroc(inside[score], outside[score]) for score in ("entropy", "mi")}
    out |= {f"mean_{score}": float(outside[score].double().mean()) for score in ("entropy", "mi")}
    return out


def compute_ood_cell(
    model: ModelUnderTest,
    x_in: torch.Tensor,
    ood_name: str,
    x_out: torch.Tensor,
    *,
    dataset: str,
    k_eval: int,
    seed: int,
    batch_size: int,
) -> list[dict[str, Any]]:
    """The OOD rows of one model against one OOD set."""
    _seed_everything(seed)
    values = ood_auroc(model.posterior, x_in, x_out, k_eval=k_eval, seed=seed, batch_size=batch_size)
    base = {"model": model.name, "posterior": model.kind, "dataset": dataset, "n": len(x_in),
            "attack": OOD_ATTACK, "norm": None, "eps": math.nan, "steps": math.nan, "step_size": math.nan,
            "restarts": math.nan, "random_init": None, "eot": None, "k_attack": math.nan, "k_eval": k_eval,
            "seed": seed, "input": ood_name}  # fmt: skip
    rows = [{**base, "metric": OOD_METRICS[s], "value": float(values[s])} for s in OOD_METRICS]
    rows += [{**base, "metric": OOD_MEANS[s], "value": float(values[f"mean_{s}"])} for s in OOD_MEANS]
    return rows


def ood_sets(
    dataset: str, data: Any, n: int, seed: int, data_dir: Path | None
) -> tuple[list[tuple[str, torch.Tensor]], list[str]]:
    """The OOD inputs for a dataset (`n` of each) and notes on sets that are unavailable."""
    from robusthyper.data import load_dataset

    shape = tuple(data.test.x.shape[1:])
    noise = torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed + 104_729))
    sets: list[tuple[str, torch.Tensor]] = [(UNIFORM_NOISE, noise)]
    notes: list[str] = []
    other = {"mnist5k": "fashion-mnist", "mnist": "fashion-mnist", "fashion-mnist": "mnist5k"}.get(dataset)
    if other is not None:
        try:
            sets.append((other, load_dataset(other, data_dir).test.x[:n]))
        except DataMissingError as err:
            notes.append(f"OOD detection vs {other} skipped: {err}")
    if data.ood is not None:
        sets.append((f"{dataset}-ood", data.ood.x[:n]))
    return sets, notes


# --------------------------------------------------------------------------------------------------------
# The run folder


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> int:
    """Fail early (before anything is loaded or written) when the run folder cannot be used; return how
    many cells it already records."""
    from robusthyper import results as res

    hint = "pass another --out folder"
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run folder '{run_dir}' is a file; {hint}")
    probe = run_dir if run_dir.exists() else _nearest_existing(run_dir)
    if not probe.is_dir():
        raise UserError(f"run folder '{run_dir}' cannot be created: '{probe}' is a file; {hint}")
    ensure_writable(probe, hint)
    if not run_dir.exists():
        return 0
    cells = sorted((run_dir / CELLS).glob("*.parquet")) if (run_dir / CELLS).is_dir() else []
    if overwrite:
        return len(cells)
    res.check_schema(run_dir)  # another schema version: one line, unless --overwrite
    has_results = any((run_dir / name).exists() for name in (res.RESULTS_CSV, res.RESULTS_PARQUET))
    if not (run_dir / CELLS).is_dir():
        if has_results:
            raise UserError(f"'{run_dir}' holds results that no sweep recorded; {hint} or add --overwrite")
        visible = [p for p in run_dir.iterdir() if not p.name.startswith(".")]
        if visible:
            raise UserError(f"run folder '{run_dir}' is not empty and holds no sweep; {hint}")
    if cells and not resume:
        raise UserError(
            f"'{run_dir}' already records {len(cells)} cell(s); resume it (--resume), discard them "
            f"(--overwrite), or {hint}"
        )
    return len(cells)


def _prepare_cells(run_dir: Path, overwrite: bool) -> Path:
    cells = run_dir / CELLS
    if overwrite and cells.is_dir():
        shutil.rmtree(cells)
    try:
        cells.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create '{cells}' ({err.strerror or err}); pass another --out folder"
        ) from None
    for stale in cells.glob(".*.partial"):  # a write that a kill cut short
        stale.unlink(missing_ok=True)
    return cells


def probe_gradients(
    models: Sequence[ModelUnderTest], split: Any, n: int, spec: AttackSpec
) -> dict[str, dict[str, float]]:
    """Each model's `sanity.gradient_health` on its first min(n, GRADIENT_PROBE) test examples, with the
    first spec's K_attack and seed (cheap: one backward pass per model), warning in one line about a model
    whose gradient is all zero or not finite (`evaluate.check_gradients`). Used by the sweep (recomputed on
    every call, resumed or not) and by `robusthyper attack`."""
    from robusthyper.evaluate import check_gradients
    from robusthyper.nets import frozen

    health: dict[str, dict[str, float]] = {}
    count = min(n, GRADIENT_PROBE)
    for model in models:
        posterior = model.posterior
        x, y = split.x[:count].to(posterior.device), split.y[:count].to(posterior.device)
        with frozen(posterior):
            health[model.name] = check_gradients(posterior, x, y, k=spec.k_attack, seed=spec.seed,
                                                 name=model.name)  # fmt: skip
    return health


def sanity_flags(
    results: pd.DataFrame,
    examples: pd.DataFrame,
    models: Sequence[ModelUnderTest],
    health: dict[str, dict[str, float]],
    dataset: str,
    spec: AttackSpec,
) -> list[sanity.Flag]:
    """`sanity.flags` on a run's table plus each model's gradient-health rows (which stay out of the
    results table: they are not an attack)."""
    rows = [row for model in models for row in sanity.gradient_health_rows(
        model.name, health[model.name], posterior=model.kind, dataset=dataset, k_attack=spec.k_attack)]  # fmt: skip
    return sanity.flags(pd.concat([results, pd.DataFrame(rows)], ignore_index=True), examples)


# --------------------------------------------------------------------------------------------------------
# The sweep


def _specs_for(model: ModelUnderTest, specs: Sequence[AttackSpec]) -> list[AttackSpec]:
    """The specs a model needs: a deterministic model has one sample, so an EOT study's K_attack values
    are one attack for it (K_attack 1, run once), not several identical cells with duplicate rows."""
    if getattr(model.posterior, "stochastic", True):
        return list(specs)
    return list(dict.fromkeys(spec.model_copy(update={"k_attack": 1}) for spec in specs))


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
    meta: dict[str, Any] | None = None,
) -> SweepResult:
    """Evaluate every model under every spec into `run_dir`, recording each cell as it finishes.

    `models`: recipe names (latest checkpoint in `store`), checkpoint folders, or `module:factory`;
    `dataset` applies to factories only (checkpoints carry theirs). `n`: the first n test examples (default
    all). `resume`: reuse the cells `run_dir` already records under the same settings; `resume=False` on a
    folder with cells is a `UserError` unless `overwrite`, which discards them. `ood`: add OOD detection
    AUROCs per model. `train_missing`: train a recipe that has no checkpoint yet. `report`: build
    `index.html` at the end. `meta`: extra keys for meta.json (the CLI adds its argv and suite).

    Returns the tidy `results` (the schema of `robusthyper.evaluate.run` plus OOD rows), the per-example
    `examples`, and how many cells were `computed` now and `reused` from the folder.
    """
    from robusthyper.data import load_dataset
    from robusthyper.evaluate import worst_cases_from_examples
    from robusthyper.results import write_into

    started = time.perf_counter()
    run_dir = Path(run_dir)
    if not specs:
        raise UserError("no attack to run; the suite holds no [[attacks]]")
    if batch_size <= 0:
        raise UserError(f"--batch-size {batch_size} must be positive")
    if n is not None and n <= 0:
        raise UserError(f"--n {n} must be positive")
    device = resolve_device(device)
    recorded = check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    loaded = load_models(models, store=store, data_dir=data_dir, device=device, dataset=dataset,
                         train_missing=train_missing, quiet=progress is False)  # fmt: skip
    data = load_dataset(loaded.dataset, data_dir)
    n = len(data.test) if n is None else n
    if n > len(data.test):
        raise UserError(f"--n {n} is larger than the {loaded.dataset} test set ({len(data.test)} examples)")
    first = specs[0]
    sets, notes = ood_sets(loaded.dataset, data, n, first.seed, data_dir) if ood else ([], [])
    # Before the cells: a fully masked model is evaluated all the same (and flagged), but said so at once.
    health = probe_gradients(loaded.models, data.test, n, first)

    cells_dir = _prepare_cells(run_dir, overwrite)
    common = {"cell_version": _cell_version(), "dataset": loaded.dataset, "n": n, "batch_size": batch_size,
              "device": torch.device(device).type}  # fmt: skip
    plan: list[tuple[str, ModelUnderTest, Any, dict[str, Any]]] = []
    for model in loaded.models:
        identity = {"name": model.name, "weights": loaded.ids[model.name], "posterior": model.kind}
        for spec in _specs_for(model, specs):
            plan.append(("attack", model, spec, {**common, "model": identity, "spec": spec.settings()}))
        for name, x_out in sets:
            payload = {**common, "model": identity, "ood": name, "n_ood": len(x_out), "k_eval": first.k_eval,
                       "seed": first.seed}  # fmt: skip
            plan.append(("ood", model, (name, x_out), payload))
    keys = {cell_key(p) for *_, p in plan}
    stale = sum(1 for p in cells_dir.glob("*.parquet") if p.stem not in keys)
    log.info("sweep into %s: %d cells (%d models), %d recorded before", run_dir, len(plan), len(loaded.models),
             recorded)  # fmt: skip
    if stale:
        log.info("%d recorded cell(s) in %s belong to other settings: kept, not used", stale, cells_dir)

    from tqdm.auto import tqdm

    computed = reused = 0
    records: dict[str, tuple[list[dict[str, Any]], pd.DataFrame]] = {}
    clean_cache: dict[tuple, Any] = {}
    x_in = data.test.x[:n]
    bar = tqdm(total=len(plan), desc="sweep", unit="cell", disable=None if progress is None else not progress)
    try:
        with bar:
            for i, (kind, model, what, payload) in enumerate(plan):
                key = cell_key(payload)
                path = cells_dir / f"{key}.parquet"
                label = f"{what.label} eps={what.eps:g}" if kind == "attack" else f"ood {what[0]}"
                bar.set_postfix_str(f"{model.name} {label}")
                record = read_cell(path, payload)  # check_run_dir: no cells unless resuming
                if record is None:
                    cell_started = time.perf_counter()
                    if kind == "attack":
                        rows, examples = compute_cell(
                            model,
                            what,
                            data.test,
                            dataset=loaded.dataset,
                            n=n,
                            batch_size=batch_size,
                            clean_cache=clean_cache,
                        )
                    else:
                        rows = compute_ood_cell(
                            model,
                            x_in,
                            what[0],
                            what[1],
                            dataset=loaded.dataset,
                            k_eval=first.k_eval,
                            seed=first.seed,
                            batch_size=batch_size,
                        )
                        examples = pd.DataFrame()
                    write_cell(cells_dir, payload, rows, examples)
                    record = read_cell(path, payload)  # the table is always assembled from what is on disk
                    assert record is not None
                    computed += 1
                    log.info("cell %d/%d %s %s: %.1f s", i + 1, len(plan), model.name, label,
                             time.perf_counter() - cell_started)  # fmt: skip
                else:
                    reused += 1
                    log.info("cell %d/%d %s %s: recorded", i + 1, len(plan), model.name, label)
                records[key] = record
                bar.update(1)
    except KeyboardInterrupt:
        log.warning("interrupted: %d of %d cells are recorded in %s; run the same command to resume",
                    len(records), len(plan), run_dir)  # fmt: skip
        raise

    result_rows: list[dict[str, Any]] = []
    example_frames: list[pd.DataFrame] = []
    for model in loaded.models:
        cells = []
        ood_rows: list[dict[str, Any]] = []
        for kind, owner, what, payload in plan:
            if owner is not model:
                continue
            rows, examples = records[cell_key(payload)]
            if kind == "ood":
                ood_rows += rows
                continue
            result_rows += rows
            example_frames.append(examples)
            seconds = next((r["value"] for r in rows if r["metric"] == "seconds"), 0.0)
            cells.append((what, examples, float(seconds)))
        worst_rows, worst_examples = worst_cases_from_examples(model, cells, loaded.dataset, n)
        result_rows += worst_rows
        example_frames += worst_examples
        result_rows += ood_rows
    results = pd.DataFrame(result_rows)
    examples = pd.concat(example_frames, ignore_index=True) if example_frames else pd.DataFrame()
    found = sanity_flags(results, examples, loaded.models, health, loaded.dataset, first)
    warnings = [*notes, *(str(f) for f in found)]
    for message in warnings:
        log.warning("%s", message)

    seconds = time.perf_counter() - started
    info = {"command": "sweep", "device": device,
            "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
            "torch_threads": torch.get_num_threads(), "seconds": seconds, "models": loaded.meta,
            "data_source": data.source, "dataset": loaded.dataset, "n": n, "batch_size": batch_size,
            "specs": [s.settings() for s in specs], "ood_sets": [name for name, _ in sets],
            "cells": {"total": len(plan), "computed": computed, "reused": reused, "recorded_before": recorded,
                      "other_settings": stale},
            "gradient_health": health, "flags": len(found), "warnings": warnings, **(meta or {})}  # fmt: skip
    write_into(run_dir, results, info, examples, flags=sanity.flags_to_frame(found))
    page = None
    if report:
        from robusthyper.report import build

        logging.getLogger("matplotlib").setLevel(logging.WARNING)
        page = build(run_dir)
    return SweepResult(results, examples, run_dir, computed, reused, page, info, warnings)


def _cell_version() -> str:
    from robusthyper.results import SCHEMA_VERSION

    return f"{CELL_VERSION}.{SCHEMA_VERSION}"


__all__ = [
    "CELLS",
    "OOD_ATTACK",
    "OOD_METRICS",
    "LoadedModels",
    "Suite",
    "SweepResult",
    "load_models",
    "load_suite",
    "ood_auroc",
    "probe_gradients",
    "run_sweep",
    "sanity_flags",
    "uncertainty_scores",
]
