"""Tests of robusthyper.attacks.adaptive: the adaptive loss (lambda = 0 is the plain PGD-EOT loss), the PGD
loop's budget, that a positive lambda lowers the mutual information of adversarial inputs on a tiny MC-dropout
model, and detection-aware accuracy against a brute-force count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_recipe
from torch import nn

from robusthyper.attacks import build_attack, make_spec
from robusthyper.attacks.adaptive import (
    AdaptivePGD,
    adaptive_loss,
    detection_aware_accuracy,
    detection_table,
    detection_threshold,
)
from robusthyper.ensemble import EotMode, StochasticEnsemble
from robusthyper.errors import ConfigError
from robusthyper.metrics import log_predictive, mutual_information, predictive_entropy
from robusthyper.nets import frozen
from robusthyper.train import fit

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def mcd(small_mnist):
    return fit(tiny_recipe("mcd", epochs=4, val_fraction=0.0), small_mnist, progress=False).posterior.eval()


@pytest.fixture(scope="module")
def batch(small_mnist):
    return small_mnist.test.x[:48], small_mnist.test.y[:48]


def _logits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(6, 5, 10, generator=gen) * 3, torch.randint(0, 10, (5,), generator=gen)


# ---------------------------------------------------------------- the loss


def test_lambda_zero_is_the_plain_pgd_eot_loss() -> None:
    logits, y = _logits()
    plain = nn.CrossEntropyLoss()(log_predictive(logits), y)  # what the ART estimator's BMA loss computes
    assert torch.allclose(adaptive_loss(logits, y, 0.0).mean(), plain)
    per_sample = nn.CrossEntropyLoss()(logits.flatten(0, 1), y.repeat(6))  # EOT mean-loss
    assert torch.allclose(adaptive_loss(logits, y, 0.0, eot=EotMode.MEAN_LOSS).mean(), per_sample)


@pytest.mark.parametrize(("score", "fn"), [("mi", mutual_information), ("entropy", predictive_entropy)])
def test_adaptive_loss_subtracts_the_score(score, fn) -> None:
    logits, y = _logits(1)
    expected = adaptive_loss(logits, y, 0.0) - 2.5 * fn(logits)
    assert torch.allclose(adaptive_loss(logits, y, 2.5, score), expected)
    with pytest.raises(ValueError, match="unknown detection score"):
        adaptive_loss(logits, y, 1.0, "wat")


def test_spec_fields_validated() -> None:
    spec = make_spec(attack="pgd-adaptive", eps=0.1)
    assert spec.attack == "pgd-adaptive" and spec.detection_weight == 1.0
    assert spec.detection_score == "mi" and spec.steps == 40 and spec.step_size == pytest.approx(0.025)
    assert spec.label == "pgd-adaptive-40" and spec.protocol == "strong"
    assert make_spec(attack="pgd", eps=0.1).detection_weight == 0.0  # old specs unchanged
    for bad in (
        {"attack": "pgd", "detection_weight": 1.0},
        {"attack": "pgd-adaptive", "detection_weight": -1.0},
        {"attack": "pgd-adaptive", "detection_score": "auroc"},
        {"attack": "pgd-adaptive", "norm": "l2"},
    ):
        with pytest.raises(ConfigError):
            make_spec(eps=0.1, **bad)


# ---------------------------------------------------------------- the attack


def test_stays_in_the_ball_and_the_unit_box(mcd, batch) -> None:
    x, y = batch
    spec = make_spec(attack="pgd-adaptive", eps=0.1, steps=3, k_attack=4, detection_weight=2.0)
    np.random.seed(0)
    with frozen(mcd):
        attack = build_attack(mcd, spec, SHAPE, 10, batch_size=20)  # through the registry
        assert isinstance(attack, AdaptivePGD)
        x_adv = attack.generate(x, y)
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert (x_adv != x).any()


def _attack_mi(posterior, x, y, weight: float) -> tuple[float, float]:
    spec = make_spec(attack="pgd-adaptive", eps=0.1, steps=10, k_attack=8, detection_weight=weight)
    np.random.seed(0)
    with frozen(posterior):
        ens = StochasticEnsemble(posterior, 8, torch.Generator().manual_seed(3))
        x_adv = AdaptivePGD(ens, spec).perturb(x, y)
        with torch.no_grad():
            logits = StochasticEnsemble(posterior, 64, torch.Generator().manual_seed(9)).sample_logits(x_adv)
    wrong = (log_predictive(logits).argmax(-1) != y).float().mean().item()
    return mutual_information(logits).mean().item(), wrong


def test_adaptive_lowers_mutual_information(mcd, batch) -> None:
    x, y = batch
    mi_plain, wrong_plain = _attack_mi(mcd, x, y, 0.0)
    mi_adaptive, wrong_adaptive = _attack_mi(mcd, x, y, 5.0)
    print(f"MI {mi_adaptive:.3f} vs {mi_plain:.3f}; misclassified {wrong_adaptive:.3f} vs {wrong_plain:.3f}")
    assert mi_adaptive < 0.85 * mi_plain
    # Two phases: PGD until the label flips, so the adaptive attack misclassifies about as many inputs as
    # plain PGD (a one-phase objective misclassified far fewer at larger eps).
    assert wrong_adaptive >= wrong_plain - 0.1


# ---------------------------------------------------------------- detection-aware accuracy


def _brute_force(clean, adv, correct, fpr) -> float:
    n = len(clean)
    allowed = int(np.floor(fpr * n + 1e-9))
    # The smallest clean score t such that at most `allowed` clean scores exceed t.
    threshold = min(t for t in clean if sum(1 for c in clean if c > t) <= allowed)
    defended = 0
    for score, ok in zip(adv, correct, strict=True):
        if ok or score > threshold:
            defended += 1
    return defended / len(adv)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fpr", [0.05, 0.1, 0.0])
def test_detection_aware_accuracy_matches_brute_force(seed, fpr) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 120))
    clean = np.round(rng.random(n), 1 if seed % 2 else 6)  # ties on odd seeds
    adv = np.round(rng.random(n) + 0.3, 1 if seed % 2 else 6)
    correct = rng.random(n) < 0.3
    got = detection_aware_accuracy(clean, adv, correct, fpr)
    assert got == pytest.approx(_brute_force(list(clean), list(adv), list(correct), fpr))
    assert np.mean(clean > detection_threshold(clean, fpr)) <= fpr + 1e-12


def test_detection_aware_accuracy_edges() -> None:
    clean = np.arange(100.0)
    assert detection_threshold(clean, 0.05) == 94.0  # 95..99 (5 inputs) above it
    assert detection_aware_accuracy(clean, np.full(10, 1000.0), np.zeros(10, bool)) == 1.0
    assert detection_aware_accuracy(clean, np.full(10, -1.0), np.ones(10, bool)) == 1.0
    assert detection_aware_accuracy(clean, np.full(10, -1.0), np.zeros(10, bool)) == 0.0
    with pytest.raises(ValueError):
        detection_threshold(np.array([]), 0.05)


def test_detection_table_per_attack() -> None:
    rng = np.random.default_rng(0)
    frames = []
    for attack, shift in (("pgd-40", 1.0), ("pgd-adaptive-40", 0.0)):
        frames.append(
            pd.DataFrame(
                {
                    "model": "m",
                    "attack": attack,
                    "norm": "linf",
                    "eps": 0.1,
                    "k_eval": 10,
                    "seed": 0,
                    "clean_mi": rng.random(200),
                    "adv_mi": rng.random(200) + shift,
                    "adv_correct": np.zeros(200, bool),
                    "clean_entropy": 0.0,
                    "adv_entropy": 0.0,
                }
            )  # fmt: skip
        )
    table = detection_table(pd.concat(frames), "mi").set_index("attack")
    assert table.loc["pgd-40", "detection_aware_acc"] > 0.9
    assert table.loc["pgd-adaptive-40", "detection_aware_acc"] < 0.2
    assert (table["robust_acc"] == 0).all()


def test_runs_through_evaluate_and_scores_detection(mcd, small_mnist) -> None:
    """The registry lets `evaluate.run` take pgd-adaptive as is; its `.examples` feed `detection_table`."""
    from robusthyper.evaluate import run
    from robusthyper.loading import ModelUnderTest

    common = {"eps": 0.1, "steps": 5, "k_attack": 4, "k_eval": 16}
    specs = [
        make_spec(attack="pgd", **common),
        make_spec(attack="pgd-adaptive", detection_weight=5.0, **common),
    ]
    evaluation = run([ModelUnderTest("mcd", mcd, kind="mcd")], specs, small_mnist.test, dataset="mnist5k",
                     n=48, progress=False)  # fmt: skip
    assert {"pgd-5", "pgd-adaptive-5"} <= set(evaluation.results["attack"])
    table = detection_table(evaluation.examples, "mi").set_index("attack")
    assert {"pgd-5", "pgd-adaptive-5"} <= set(table.index)
    assert (table["detection_aware_acc"] >= table["robust_acc"]).all()
