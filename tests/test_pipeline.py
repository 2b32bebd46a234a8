"""Tests of the pipeline (robusthyper.pipeline): the plan decides K once, any executor gives the same tables
as the in-process one (cells in another order, here), and the gate's planned tables have exactly the rows
and columns a real run of the same specs writes."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence

import pandas as pd
import pytest
from conftest import tiny_posterior

from robusthyper import pipeline
from robusthyper.attacks import make_spec
from robusthyper.loading import ModelUnderTest
from robusthyper.pipeline.assemble import planned_tables
from robusthyper.pipeline.cells import CellRecord
from robusthyper.pipeline.executors import run_cell
from robusthyper.pipeline.plan import Cell, CellKind, Workload, plan
from robusthyper.run import schema

FAST = {"k_attack": 3, "k_eval": 4}
SPECS = [make_spec(attack="fgsm", eps=0.1, **FAST), make_spec(attack="pgd", eps=0.1, steps=2, **FAST),
         make_spec(attack="pgd", eps=0.1, steps=2, k_attack=6, k_eval=4)]  # fmt: skip


@pytest.fixture(scope="module")
def models() -> list[ModelUnderTest]:
    return [ModelUnderTest("det", tiny_posterior("det"), kind="det"),
            ModelUnderTest("mcd", tiny_posterior("mcd"), kind="mcd")]  # fmt: skip


def test_the_plan_decides_k_once(models) -> None:
    planned = plan(models, SPECS, ids={"det": "a", "mcd": "b"}, dataset="mnist5k", n=8, batch_size=4,
                   device="cpu", ood_sets=[("noise", 8)])  # fmt: skip
    # A point estimate has one sample: K_attack 3 and 6 of the same PGD are one cell for it, at K = 1.
    assert [s.k_attack for s in planned.specs["det"]] == [1, 1]
    assert [s.k_attack for s in planned.specs["mcd"]] == [3, 3, 6]
    kinds = [(c.model, c.kind) for c in planned.cells]
    assert kinds == [("det", CellKind.PROBE), ("det", CellKind.ATTACK), ("det", CellKind.ATTACK),
                     ("det", CellKind.OOD), ("mcd", CellKind.PROBE), *[("mcd", CellKind.ATTACK)] * 3,
                     ("mcd", CellKind.OOD)]  # fmt: skip
    assert len({c.key for c in planned.cells}) == len(planned.cells)  # every cell has its own key
    other = plan(models, SPECS, ids={"det": "a", "mcd": "c"}, dataset="mnist5k", n=8, batch_size=4,
                 device="cpu", ood_sets=[("noise", 8)])  # fmt: skip
    changed = {c.key for c in other.cells} ^ {c.key for c in planned.cells}
    assert len(changed) == 2 * 5  # retrained weights (another id): all five mcd cells, on each side


class Reversed:
    """An executor of another kind: every cell in this process, last planned first."""

    def __init__(self) -> None:
        self.seen: list[Cell] = []

    def execute(self, cells: Sequence[Cell], work: Workload) -> Iterator[CellRecord]:
        for cell in reversed(cells):
            self.seen.append(cell)
            yield run_cell(cell, work)


def test_an_executor_plugs_in_without_changing_the_numbers(models, small_mnist) -> None:
    local = pipeline.evaluate(models, SPECS, small_mnist.test, dataset="mnist5k", n=12, batch_size=6,
                              progress=False)  # fmt: skip
    other = Reversed()
    moved = pipeline.evaluate(models, SPECS, small_mnist.test, dataset="mnist5k", n=12, batch_size=6,
                              progress=False, executor=other)  # fmt: skip
    assert [c.key for c in other.seen] == [c.key for c in reversed(local.plan.cells)]
    timeless = lambda f: f[f["metric"] != "seconds"].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(timeless(moved.tables.results), timeless(local.tables.results))
    pd.testing.assert_frame_equal(moved.tables.examples, local.tables.examples)
    assert [f.code for f in moved.tables.flags] == [f.code for f in local.tables.flags]
    assert (moved.computed, moved.reused) == (local.computed, 0)


def test_planned_tables_match_a_real_run(models, small_mnist) -> None:
    """What the gate checks its rules against before evaluating: the same rows and columns as a run."""
    real = pipeline.evaluate(models[1:], SPECS, small_mnist.test, dataset="mnist5k", n=6, batch_size=6,
                             progress=False).tables  # fmt: skip
    results, examples = planned_tables(["mcd"], SPECS, ood=False)
    assert list(results.columns) == list(real.results.columns) == list(schema.RESULT_COLUMNS)
    assert list(examples.columns) == list(real.examples.columns) == list(schema.EXAMPLE_COLUMNS)
    keys = ["model", "attack", "family", "eps", "k_attack", "input", "metric"]
    as_set = lambda f: set(map(tuple, f[keys].astype(str).to_numpy().tolist()))  # noqa: E731
    assert as_set(results) == as_set(real.results)
    assert schema.WORST_CASE in set(results["attack"])


# ---------------------------------------------------------------- executor options (no Ray needed)


def test_executor_options_are_checked_before_any_work(monkeypatch) -> None:
    from robusthyper.errors import UserError
    from robusthyper.pipeline.choice import make_executor
    from robusthyper.pipeline.executors import LocalExecutor

    assert isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(UserError, match="--executor 'spark' is not one of local, ray"):
        make_executor("spark")
    with pytest.raises(UserError, match="--address needs --executor ray"):
        make_executor("local", address="auto")
    with pytest.raises(UserError, match="--gpus-per-cell needs --executor ray"):
        make_executor("local", gpus_per_cell=1)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(UserError, match=r"needs Ray, which is not installed; pip install 'robusthyper\[ray\]'"):
        make_executor("ray")


@pytest.mark.parametrize(("address", "message"), [
    ("nowhere", "is not auto, local or HOST:PORT"), ("10.0.0.1:99999", "is not auto, local or HOST:PORT"),
    ("ray://10.0.0.1:10001", "Ray client addresses"),
])  # fmt: skip
def test_a_malformed_address_is_one_line(address: str, message: str) -> None:
    from robusthyper.errors import UserError
    from robusthyper.pipeline.ray_executor import RayExecutor, parse_address

    assert parse_address(None) == parse_address("local") == ("local", None, None)
    assert parse_address("127.0.0.1:6379") == ("address", "127.0.0.1", 6379)
    with pytest.raises(UserError, match=message):
        RayExecutor(address)
    with pytest.raises(UserError, match="--cpus-per-cell 0 must be a whole number >= 1"):
        RayExecutor(cpus_per_cell=0)


def test_sweep_without_ray_is_one_line_and_exit_2(monkeypatch, tmp_path) -> None:
    from typer.testing import CliRunner

    from robusthyper.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(app, ["sweep", "quick", "--model", "det", "--out", str(tmp_path / "r"),
                                      "--executor", "ray"])  # fmt: skip
    assert result.exit_code == 2 and "robusthyper[ray]" in result.output
    assert not (tmp_path / "r").exists()


def test_where_cells_run_is_not_part_of_the_gate_run_name() -> None:
    from robusthyper.gate.policy import Evaluation
    from robusthyper.gate.runs import fingerprint

    base = {"models": ["det"], "attacks": [{"attack": "fgsm", "eps": 0.1}]}
    on_ray = Evaluation.model_validate({**base, "executor": "ray", "address": "auto", "cpus_per_cell": 2})
    assert fingerprint(on_ray) == fingerprint(Evaluation.model_validate(base))
    with pytest.raises(ValueError, match="executor"):
        Evaluation.model_validate({**base, "executor": "dask"})
