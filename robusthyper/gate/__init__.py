"""CI robustness gates: check a model's robustness and uncertainty numbers against a policy.

    from robusthyper.gate import check, load_policy
    from robusthyper.run import read_run
    policy, _ = load_policy("robustness.toml")
    violations = check(read_run("reports/my-run"), policy)   # or Run.of(results_table)

`robusthyper gate` (the CLI) runs the policy's evaluation itself through the sweep engine, or checks an
existing run (`--results`), prints a table of every rule, writes JUnit XML and JSON on request, and exits 0
when every rule passes, 1 when one fails, 2 on bad input.

Modules: `policy` (the TOML schema), `stats` (Wilson and Newcombe intervals), `check` (the pure rule check),
`runs` (reading runs, running the evaluation), `output` (table, JUnit XML, JSON).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robusthyper.gate.check import (
    GateInputError,
    RuleResult,
    Violation,
    check,
    evaluate_rules,
    violations,
)
from robusthyper.gate.policy import (
    FLAG_CODES,
    Evaluation,
    FlagRule,
    GatePolicy,
    Rule,
    load_policy,
    parse_policy,
)
from robusthyper.gate.stats import newcombe
from robusthyper.run.tables import wilson

__all__ = [
    "FLAG_CODES", "Evaluation", "FlagRule", "GateInputError", "GatePolicy", "GateRun", "Rule", "RuleResult", "Violation", "check",
    "evaluate_rules", "load_policy", "newcombe", "parse_policy", "run_gate", "violations", "wilson",
]  # fmt: skip


@dataclass
class GateRun:
    """What `run_gate` did: every rule checked, where the numbers came from, and how long it took."""

    checked: list[RuleResult]
    policy_source: str
    results_source: Path
    seconds: float
    computed: int | None = None
    reused: int | None = None
    page: Path | None = None
    """The run's HTML report, when the gate ran the evaluation (the sweep builds it)."""

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.checked)


def run_gate(
    policy_path: Path | None = None,
    *,
    results: Path | None = None,
    baseline: Path | None = None,
    run_dir: Path | None = None,
    out: Path = Path("reports"),
    store: Path | None = None,
    data_dir: Path | None = None,
    device: str = "cpu",
    quiet: bool = False,
    report: bool = True,
    execution: dict[str, Any] | None = None,
) -> GateRun:
    """Load the policy, get the numbers (from `results`, or by evaluating), and check every rule.

    Bad input raises a `UserError` before any evaluation starts where it can be told then. `execution`:
    executor, address, cpus_per_cell, gpus_per_cell given on the command line (they override the policy's).
    """
    from robusthyper.gate import runs

    started = time.perf_counter()
    policy, source = load_policy(policy_path)
    base = runs.read_run(baseline, "--baseline") if baseline is not None else None
    if base is None and policy.needs_baseline:
        first = next(r for r in policy.rules if r.needs_baseline)
        raise GateInputError(f"rule '{first.label}' compares with a baseline; pass --baseline RUN_DIR")
    if results is not None:
        numbers = runs.Numbers(runs.read_run(results))
    else:
        numbers = runs.evaluate(policy, source=source, run_dir=run_dir, out=out, store=store, data_dir=data_dir,
                                device=device, quiet=quiet, report=report, execution=execution)  # fmt: skip
    checked = evaluate_rules(numbers.run, policy, baseline=base)
    source_path = numbers.run.folder if results is None else Path(results)
    return GateRun(checked, source, Path(source_path or "."), time.perf_counter() - started, numbers.computed,
                   numbers.reused, numbers.page)  # fmt: skip
