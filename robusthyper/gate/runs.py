"""Where the gate's numbers come from: an existing run folder (`--results`), a baseline (`--baseline`), or an
evaluation the gate runs itself from the policy's `[evaluate]` section through `robusthyper.sweep`.

The gate's own run folder is `reports/gate-<fingerprint>`, the fingerprint hashing the evaluation settings,
never the thresholds. The sweep records every finished cell there, keyed by the model's weights and the full
settings: re-running after a failure or a changed threshold recomputes nothing, a retrained model is
evaluated afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from robusthyper.errors import UserError
from robusthyper.gate.check import GateInputError, select
from robusthyper.gate.policy import DETECTION_METRICS, OOD_ATTACK, Evaluation, FlagRule, GatePolicy

log = logging.getLogger(__name__)

SCHEMA_KEYS = ("schema_version", "results_schema_version")
INPUT_METRICS = ("accuracy", "nll", "entropy", "mutual_information")
WORST_CASE = "worst-case"
OOD_METRICS = ("ood_auroc_entropy", "ood_auroc_mi", "ood_entropy", "ood_mi")


@dataclass
class Tables:
    """A run's results (tidy), its per-example table and sanity flags (or None) and where they came from."""

    results: pd.DataFrame
    examples: pd.DataFrame | None
    source: Path
    computed: int | None = None
    reused: int | None = None
    page: Path | None = None
    flags: pd.DataFrame | None = None
    """The run's flags.csv (`robusthyper.sanity.flags_to_frame`); None when the run has none."""


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to replace
        raise UserError(
            f"cannot read '{path}' ({type(err).__name__}); is it a robusthyper results file?"
        ) from None


def read_flags(folder: Path) -> pd.DataFrame | None:
    """A run folder's sanity flags (flags.csv; headers only when the run is clean), or None without one."""
    from robusthyper import results as run_files

    path = folder / getattr(run_files, "FLAGS_CSV", "flags.csv")
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except Exception as err:  # noqa: BLE001 - an unreadable file is the user's to replace
        raise UserError(f"cannot read '{path}' ({type(err).__name__}); re-run the evaluation") from None


def read_run(path: Path | str, what: str = "--results") -> Tables:
    """A run folder (results.parquet or .csv, and examples and flags.csv when present) or a results file
    (with the flags.csv beside it, if any)."""
    from robusthyper import results as run_files

    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} '{path}' does not exist; pass a run folder such as reports/<run-id>")
    if path.is_file():
        if path.suffix not in (".csv", ".parquet"):
            raise UserError(f"{what} '{path}' is not a .csv or .parquet results file, nor a run folder")
        return Tables(_read(path), None, path, flags=read_flags(path.parent))
    meta_path = path / run_files.META
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"'{meta_path}' is not valid JSON ({err}); re-run the evaluation") from None
        supported = int(getattr(run_files, "SCHEMA_VERSION", 1))
        for key in SCHEMA_KEYS:
            if isinstance(meta, dict) and key in meta and meta[key] != supported:
                raise GateInputError(
                    f"{what} '{path}' holds results of schema version {meta[key]!r}; this robusthyper reads "
                    f"version {supported}; re-run it with this robusthyper"
                )
    found = [path / n for n in (run_files.RESULTS_PARQUET, run_files.RESULTS_CSV) if (path / n).is_file()]
    if not found:
        raise UserError(f"{what} '{path}' holds no results.csv or results.parquet; is it a run folder?")
    examples = next(
        (
            _read(path / n)
            for n in (run_files.EXAMPLES_PARQUET, run_files.EXAMPLES_CSV)
            if (path / n).is_file()
        ),
        None,
    )
    return Tables(_read(found[0]), examples, path, flags=read_flags(path))


# ---------------------------------------------------------------------------------------------- evaluating


def plan_specs(evaluation: Evaluation, source: str = "policy") -> list[Any]:
    """The AttackSpecs of `[evaluate]`: every attack table (or preset) for every seed and K_attack."""
    from robusthyper.attacks import expand

    specs: list[Any] = []
    for i, table in enumerate(evaluation.attacks):
        table = dict(table)
        preset = table.pop("preset", None)
        where = f"{source} [[evaluate.attacks]] #{i + 1}"
        for seed in evaluation.seeds:
            for k_attack in evaluation.k_attack or [None]:
                extra = {"seed": seed, "k_attack": k_attack, "k_eval": evaluation.k_eval}
                overrides = {**table, **{k: v for k, v in extra.items() if v is not None}}
                if preset is not None:
                    if not isinstance(preset, str):
                        raise UserError(f"{where}: preset must be a preset name or path, not {preset!r}")
                    specs += _load_suite(preset, overrides)
                else:
                    specs += expand(overrides, where)
    return list(dict.fromkeys(specs))


def _load_suite(ref: str, overrides: dict[str, Any]) -> list[Any]:
    """A preset's or a suite's specs (a suite may also set `n`, which the policy's own `n` overrides)."""
    try:
        from robusthyper.sweep import load_suite
    except ImportError:
        from robusthyper.attacks import load_preset

        return load_preset(ref, overrides)
    return load_suite(ref, overrides).specs


def precheck(policy: GatePolicy, specs: list[Any]) -> None:
    """Before a long evaluation, fail on a rule that names a model, attack or eps the evaluation lacks."""
    from robusthyper.loading import result_name

    assert policy.evaluate is not None
    names = [result_name(ref) for ref in policy.evaluate.models]
    rows = []
    for spec in specs:
        for name in names:
            for which in ("clean", "adversarial"):
                rows += [{**spec.settings(), "model": name, "attack": spec.label, "eps": spec.eps, "input": which,
                          "metric": m, "value": 0.0} for m in (*INPUT_METRICS, *DETECTION_METRICS)]  # fmt: skip
    groups: dict[tuple, set[str]] = {}
    for spec in specs:
        groups.setdefault((spec.norm, spec.eps, spec.k_eval, spec.seed), set()).add(spec.label)
    for (_, eps, _, _), labels in groups.items():
        if len(labels) > 1:
            rows += [{"model": name, "attack": WORST_CASE, "eps": eps, "input": "adversarial",
                      "metric": "accuracy", "value": 0.0} for name in names]  # fmt: skip
    if policy.evaluate.ood:
        rows += [{"model": name, "attack": OOD_ATTACK, "eps": float("nan"), "input": "ood", "metric": m,
                  "value": 0.0} for name in names for m in OOD_METRICS]  # fmt: skip
    planned = pd.DataFrame(rows)
    for rule in policy.rules:
        if isinstance(rule, FlagRule):
            missing = [] if None in names else [m for m in rule.models or [] if m not in names]
            if missing:
                raise GateInputError(f"rule '{rule.label}': model '{missing[0]}' is not in the policy's "
                                     f"[evaluate] section; models there: {', '.join(map(str, names))}")  # fmt: skip
            continue
        if None in names and rule.model not in names:
            continue  # a checkpoint path: its name is known only once it is loaded
        ood = rule.metric in OOD_METRICS or rule.attack == OOD_ATTACK
        if ood and not policy.evaluate.ood:
            raise GateInputError(f"rule '{rule.label}' needs OOD AUROCs; set ood = true in [evaluate]")
        metric = rule.metric if rule.metric in set(planned["metric"]) else "accuracy"
        # OOD set names depend on the datasets installed: checked against the results instead.
        probe = rule.model_copy(update={"metric": metric, "input": None if ood else rule.input})
        try:
            select(planned, probe, "policy's [evaluate] section")
        except GateInputError as err:
            raise GateInputError(str(err).replace(probe.label, rule.label)) from None


def fingerprint(evaluation: Evaluation) -> str:
    """A short hash of the evaluation settings (not the thresholds): the name of the gate's run folder.

    The sweep keys every recorded cell by the model's weights and the full settings, so a retrained model in
    the same folder is evaluated afresh while unchanged cells are reused."""
    text = json.dumps(evaluation.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def evaluate(
    policy: GatePolicy,
    *,
    source: str,
    run_dir: Path | None,
    out: Path,
    store: Path | None,
    data_dir: Path | None,
    device: str,
    quiet: bool,
    report: bool = True,
) -> Tables:
    """Run (or resume) the policy's evaluation into its run folder and return the tables."""
    if policy.evaluate is None:
        raise UserError(
            f"{source} has no [evaluate] section; add one, or check a finished run with --results"
        )
    specs = plan_specs(policy.evaluate, source)
    precheck(policy, specs)
    try:
        from robusthyper.sweep import run_sweep
    except ImportError:
        raise UserError(
            "this robusthyper has no sweep engine to run the policy's evaluation; pass --results RUN_DIR"
        ) from None
    ev = policy.evaluate
    run_dir = run_dir or out / f"gate-{fingerprint(ev)}"
    done = run_sweep(run_dir, ev.models, specs, dataset=ev.dataset, store=store, data_dir=data_dir, n=ev.n,
                     batch_size=ev.batch_size, device=device, resume=True, progress=False if quiet else None,
                     ood=ev.ood, report=report, meta={"gate_policy": source})  # fmt: skip
    page = getattr(done, "report", None)
    folder = Path(getattr(done, "run_dir", run_dir))
    return Tables(done.results, getattr(done, "examples", None), folder, _count(done, "computed"),
                  _count(done, "reused"), None if page is None else Path(page), read_flags(folder))  # fmt: skip


def _count(done: Any, name: str) -> int | None:
    value = getattr(done, name, None)
    if value is None:
        return None
    return value if isinstance(value, int) else len(value)
