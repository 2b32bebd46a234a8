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
from robusthyper.gate.policy import Evaluation, FlagRule, GatePolicy
from robusthyper.run import Run
from robusthyper.run import schema as s

log = logging.getLogger(__name__)


@dataclass
class Numbers:
    """The run the gate checks, and whether the gate computed it: cells computed and reused, and the page."""

    run: Run
    computed: int | None = None
    reused: int | None = None
    page: Path | None = None


def read_run(path: Path | str, what: str = "--results") -> Run:
    """A run folder or results file to check (`robusthyper.run.read_run`); a newer schema is a
    `GateInputError`."""
    from robusthyper.run import read_run as read

    try:
        return read(path, what)
    except GateInputError:
        raise
    except UserError as err:
        raise GateInputError(str(err)) from None


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
            k_values: list[int | None] = [*evaluation.k_attack] if evaluation.k_attack else [None]
            for k_attack in k_values:
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
    from robusthyper.sweep import load_suite

    return load_suite(ref, overrides).specs


def precheck(policy: GatePolicy, specs: list[Any]) -> None:
    """Before a long evaluation, fail on a rule that names a model, attack or eps the evaluation lacks: each
    rule is matched against the tables the evaluation will write (`pipeline.assemble.planned_tables`)."""
    from robusthyper.loading import result_name
    from robusthyper.pipeline.assemble import planned_tables
    from robusthyper.run.tables import detection_rows

    assert policy.evaluate is not None
    names = [result_name(ref) for ref in policy.evaluate.models]
    known = [name for name in names if name is not None]
    results, examples = planned_tables(known, specs, policy.evaluate.ood)
    planned = pd.concat([results, detection_rows(results, examples)], ignore_index=True) if known else results
    for rule in policy.rules:
        if isinstance(rule, FlagRule):
            missing = [] if None in names else [m for m in rule.models or [] if m not in names]
            if missing:
                raise GateInputError(f"rule '{rule.label}': model '{missing[0]}' is not in the policy's "
                                     f"[evaluate] section; models there: {', '.join(map(str, names))}")  # fmt: skip
            continue
        if None in names and rule.model not in names:
            continue  # a checkpoint path: its name is known only once it is loaded
        ood = rule.metric in s.OOD_METRICS or rule.attack == s.OOD
        if ood and not policy.evaluate.ood:
            raise GateInputError(f"rule '{rule.label}' needs OOD AUROCs; set ood = true in [evaluate]")
        metric = rule.metric if rule.metric in set(planned[s.METRIC]) else s.ACCURACY
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
    text = json.dumps(evaluation.model_dump(mode="json", exclude=set(Evaluation.EXECUTION)), sort_keys=True)
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
    execution: dict[str, Any] | None = None,
) -> Numbers:
    """Run (or resume) the policy's evaluation into its run folder and return the run. `execution`: the
    executor settings given on the command line (executor, address, cpus_per_cell, gpus_per_cell; None:
    the policy's), which override the policy's `[evaluate]` ones."""
    from robusthyper.pipeline.choice import make_executor
    from robusthyper.sweep import run_sweep

    if policy.evaluate is None:
        raise UserError(
            f"{source} has no [evaluate] section; add one, or check a finished run with --results"
        )
    specs = plan_specs(policy.evaluate, source)
    precheck(policy, specs)
    ev = policy.evaluate
    given = {key: value for key, value in (execution or {}).items() if value is not None}
    settings = {key: getattr(ev, key) for key in Evaluation.EXECUTION}
    if given.get("executor", ev.executor) != ev.executor:
        settings = {}  # the policy's address and cpus/gpus per cell belong to its own executor
    settings.update(given)
    executor = make_executor(settings.pop("executor", "local"), **settings)
    run_dir = run_dir or out / f"gate-{fingerprint(ev)}"
    done = run_sweep(run_dir, ev.models, specs, dataset=ev.dataset, store=store, data_dir=data_dir, n=ev.n,
                     batch_size=ev.batch_size, device=device, resume=True, progress=False if quiet else None,
                     ood=ev.ood, report=report, command="gate", meta={"gate_policy": source},
                     executor=executor)  # fmt: skip
    return Numbers(done.run, done.computed, done.reused, done.report)
