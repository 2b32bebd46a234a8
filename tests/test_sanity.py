"""Tests of robusthyper.sanity: each flag on small hand-made tables (and none within sampling noise), the
gradient-health numbers, and the planted-masking model: results from actually running `evaluate.run` (FGSM,
PGD, Square at two eps) trip at least two flags on a model whose gradients are masked, none on a tiny
well-behaved model."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from conftest import tiny_recipe
from torch import nn

from robusthyper import sanity
from robusthyper.attacks import make_spec
from robusthyper.evaluate import run
from robusthyper.loading import ModelUnderTest, ModulePosterior
from robusthyper.sanity import Flag, Severity, Tolerance, flags, flags_to_frame, gradient_health
from robusthyper.train import fit

N_EVAL = 100


def _row(model="m", attack="pgd-40", eps=0.1, acc=0.5, n=1000, k_attack=20, **extra) -> list[dict]:
    base = {"model": model, "attack": attack, "norm": "linf", "eps": eps, "eot": "bma", "k_attack": k_attack,
            "k_eval": 100, "seed": 0, "restarts": 1, "n": n, **extra}  # fmt: skip
    return [
        {**base, "input": "clean", "metric": "accuracy", "value": 0.95},
        {**base, "input": "adversarial", "metric": "accuracy", "value": acc},
        {**base, "input": "adversarial", "metric": "nll", "value": 3.0},
    ]


def _table(*points: tuple) -> pd.DataFrame:
    """points: (attack, eps, acc) or (attack, eps, acc, extra dict)."""
    rows = []
    for point in points:
        attack, eps, acc, *extra = point
        rows += _row(attack=attack, eps=eps, acc=acc, **(extra[0] if extra else {}))
    return pd.DataFrame(rows)


def _codes(found: list[Flag]) -> set[str]:
    return {f.code for f in found}


# ---------------------------------------------------------------- each flag on a hand-made table


def test_clean_bill() -> None:
    table = _table(("fgsm", 0.1, 0.40), ("fgsm", 0.3, 0.10), ("pgd-40", 0.1, 0.20), ("pgd-40", 0.3, 0.0),
                   ("square-1000", 0.1, 0.35), ("square-1000", 0.3, 0.02))  # fmt: skip
    assert flags(table) == []
    assert flags(pd.DataFrame()) == []


def test_non_monotone_beyond_noise_only() -> None:
    found = flags(_table(("pgd-40", 0.1, 0.20), ("pgd-40", 0.2, 0.30), ("pgd-40", 0.3, 0.0)))
    assert [(f.code, f.eps) for f in found] == [("non-monotone", 0.2)]
    assert "rises from 0.200" in found[0].message and found[0].severity is Severity.ERROR
    # Within two binomial standard errors at n = 100 (about 0.06): noise, not a flag.
    table = _table(("pgd-40", 0.1, 0.20, {"n": 100}), ("pgd-40", 0.2, 0.24, {"n": 100}))
    assert flags(table) == []
    # The same rise at n = 10,000 is beyond noise.
    table = _table(("pgd-40", 0.1, 0.20, {"n": 10_000}), ("pgd-40", 0.2, 0.24, {"n": 10_000}))
    assert _codes(flags(table)) == {"non-monotone"}


def test_not_near_zero_only_at_a_large_eps() -> None:
    found = flags(_table(("pgd-40", 0.1, 0.5), ("pgd-40", 0.3, 0.4)))
    assert [(f.code, f.eps, f.attack) for f in found] == [("not-near-zero", 0.3, "pgd-40")]
    assert flags(_table(("pgd-40", 0.1, 0.5), ("pgd-40", 0.2, 0.4))) == []
    assert flags(_table(("pgd-40", 0.2, 0.4)), tolerance=Tolerance(large_eps=0.2)) != []
    assert flags(_table(("fgsm", 0.3, 0.4))) == []  # FGSM is not expected to reach 0


def test_iterative_weaker_than_fgsm() -> None:
    found = flags(_table(("fgsm", 0.1, 0.10), ("pgd-40", 0.1, 0.30), ("apgd-ce-100", 0.1, 0.11)))
    assert [(f.code, f.attack) for f in found] == [("iterative-weaker-than-fgsm", "pgd-40")]
    other_model = _table(("fgsm", 0.1, 0.10), ("pgd-40", 0.1, 0.30, {"model": "other"}))
    assert flags(other_model) == []


def test_eot_study_weak_k_is_not_compared_with_fgsm() -> None:
    """An EOT study's K_attack = 1 PGD is meant to be weak: only each attack's largest K is compared."""
    study = _table(("fgsm", 0.1, 0.10), ("pgd-40", 0.1, 0.30, {"k_attack": 1}),
                   ("pgd-40", 0.1, 0.06, {"k_attack": 10}), ("pgd-40", 0.1, 0.05, {"k_attack": 20}),
                   ("square-1000", 0.1, 0.01, {"k_attack": 1}),
                   ("square-1000", 0.1, 0.4, {"k_attack": 20}))  # fmt: skip
    assert flags(study) == []
    # The largest K still counts: weaker than FGSM there is a flag.
    weak = _table(("fgsm", 0.1, 0.10), ("pgd-40", 0.1, 0.05, {"k_attack": 1}),
                  ("pgd-40", 0.1, 0.30, {"k_attack": 2}))  # fmt: skip
    assert _codes(flags(weak)) == {"iterative-weaker-than-fgsm"}


def test_square_stronger_than_every_gradient_attack() -> None:
    found = flags(_table(("fgsm", 0.1, 0.5), ("pgd-40", 0.1, 0.4), ("square-1000", 0.1, 0.1)))
    assert [(f.code, f.attack) for f in found] == [("square-stronger", "square-1000")]
    assert "pgd-40" in found[0].message
    assert flags(_table(("fgsm", 0.1, 0.5), ("pgd-40", 0.1, 0.1), ("square-1000", 0.1, 0.3))) == []


def test_eot_not_converged() -> None:
    table = _table(("pgd-40", 0.1, 0.40, {"k_attack": 5}), ("pgd-40", 0.1, 0.30, {"k_attack": 10}),
                   ("pgd-40", 0.1, 0.20, {"k_attack": 20}))  # fmt: skip
    found = flags(table)
    assert [f.code for f in found] == ["eot-not-converged"]
    assert "K_attack=10" in found[0].message and "K_attack=20" in found[0].message
    converged = _table(("pgd-40", 0.1, 0.40, {"k_attack": 5}), ("pgd-40", 0.1, 0.21, {"k_attack": 10}),
                       ("pgd-40", 0.1, 0.20, {"k_attack": 20}))  # fmt: skip
    assert flags(converged) == []


def test_papers_protocols_and_worst_case_are_not_checked() -> None:
    table = _table(("paper-bbh-fgsm", 0.1, 0.2), ("paper-bbh-fgsm", 0.2, 0.6), ("worst-case", 0.3, 0.9))
    assert flags(table) == []


def test_gradient_rows_and_frame() -> None:
    rows = sanity.gradient_health_rows("m", {"grad_zero_fraction": 0.9, "grad_nan_fraction": 0.0,
                                             "grad_inf_fraction": 0.01, "grad_abs_mean": 1e-3}, n=32)  # fmt: skip
    found = flags(pd.DataFrame(rows))
    assert _codes(found) == {"zero-gradients", "nonfinite-gradients"}
    frame = flags_to_frame(found)
    assert list(frame.columns) == ["code", "severity", "model", "attack", "eps", "message"]
    assert set(frame["severity"]) == {"error"} and set(frame["attack"]) == {"gradient-check"}
    assert flags_to_frame([]).empty
    with pytest.raises(dataclasses.FrozenInstanceError):
        found[0].code = "x"  # type: ignore[misc]


# ---------------------------------------------------------------- the planted-masking model, end to end


class MaskedNet(nn.Module):
    """A trained net behind input quantisation (round to 4 grey levels: zero gradient almost everywhere)
    plus a tiny term in one pixel, so the gradient is not all zero (evaluate's check passes) but points
    nowhere useful: gradient attacks are masked, the gradient-free Square attack is not."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("direction", torch.linspace(-1, 1, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leak = x[:, :, 14, 14].reshape(-1, 1) * self.direction
        return self.net(torch.round(x * 4) / 4) + 1e-3 * leak


@pytest.fixture(scope="module")
def planted_and_good(small_mnist):
    torch.manual_seed(0)
    good = fit(tiny_recipe("det", epochs=4, val_fraction=0.0), small_mnist, progress=False).posterior.eval()
    planted = ModulePosterior(MaskedNet(good.net), stochastic=False)
    models = [ModelUnderTest("good", good, kind="det"), ModelUnderTest("planted", planted, kind="module")]
    specs = [
        make_spec(attack=attack, eps=eps, k_eval=1, **options)
        for eps in (0.2, 0.3)
        for attack, options in (("fgsm", {}), ("pgd", {"steps": 10}), ("square", {"steps": 40}))
    ]
    evaluation = run(models, specs, small_mnist.test, dataset="mnist5k", n=N_EVAL, progress=False)
    x, y = small_mnist.test.x[:32], small_mnist.test.y[:32]
    health = [
        row
        for model in models
        for row in sanity.gradient_health_rows(
            model.name, gradient_health(model.posterior, x, y, k=1), dataset="mnist5k", n=32
        )
    ]
    return pd.concat([evaluation.results, pd.DataFrame(health)], ignore_index=True), evaluation.examples


def test_gradient_health(planted_and_good) -> None:
    results, _ = planted_and_good
    zero = results[results["metric"] == "grad_zero_fraction"].set_index("model")["value"]
    assert zero["good"] < 0.05 and zero["planted"] > 0.99


def test_planted_model_trips_flags_good_one_none(planted_and_good) -> None:
    results, examples = planted_and_good
    found = flags(results, examples)
    by_model: dict[str, set[str]] = {}
    for flag in found:
        by_model.setdefault(flag.model, set()).add(flag.code)
    assert "good" not in by_model, [str(f) for f in found if f.model == "good"]
    assert len(by_model["planted"]) >= 2, by_model
    assert {"square-stronger", "zero-gradients"} <= by_model["planted"]
    frame = flags_to_frame(found)
    assert set(frame["model"]) == {"planted"}
