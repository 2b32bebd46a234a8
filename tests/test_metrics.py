"""Every estimator against a closed form or a brute-force computation."""

from __future__ import annotations

import math

import pytest
import torch

from robusthyper import metrics


def test_log_predictive_is_the_log_of_the_mean_softmax() -> None:
    logits = torch.randn(7, 5, 4, generator=torch.Generator().manual_seed(0))
    expected = torch.softmax(logits, -1).mean(0).log()
    torch.testing.assert_close(metrics.log_predictive(logits), expected)
    torch.testing.assert_close(metrics.log_predictive(logits).exp().sum(-1), torch.ones(5))


def test_identical_samples_have_zero_mutual_information() -> None:
    one = torch.randn(1, 6, 3)
    assert metrics.mutual_information(one.expand(10, 6, 3)).abs().max() < 1e-6


def test_uniform_predictions_have_entropy_log_c() -> None:
    torch.testing.assert_close(
        metrics.predictive_entropy(torch.zeros(3, 4, 10)), torch.full((4,), math.log(10))
    )


def test_mutual_information_of_disagreeing_certain_samples_is_log_k() -> None:
    """K confident samples that each pick a different class: H[p̄] = log K, mean H[p_k] ≈ 0."""
    logits = torch.full((4, 1, 4), -50.0)
    for k in range(4):
        logits[k, 0, k] = 50.0
    torch.testing.assert_close(
        metrics.mutual_information(logits), torch.tensor([math.log(4)]), atol=1e-5, rtol=0
    )


def test_entropy_and_mi_by_brute_force() -> None:
    logits = torch.randn(5, 3, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    p = torch.softmax(logits, -1)
    pbar = p.mean(0)
    h_total = -(pbar * pbar.log()).sum(-1)
    h_each = -(p * p.log()).sum(-1).mean(0)
    torch.testing.assert_close(metrics.predictive_entropy(logits), h_total)
    torch.testing.assert_close(metrics.mutual_information(logits), h_total - h_each)


def test_nll_and_brier_by_hand() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    labels = torch.tensor([0, 1])
    torch.testing.assert_close(metrics.nll(probs.log(), labels), -torch.tensor([0.7, 0.25]).log())
    expected = torch.tensor([0.3**2 + 0.2**2 + 0.1**2, 0.25**2 + 0.75**2 + 0.5**2])
    torch.testing.assert_close(metrics.brier(probs.log(), labels), expected)


def test_perfectly_calibrated_toy_has_ece_near_zero() -> None:
    """Labels drawn from the predicted distribution itself: calibrated by construction."""
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(40000, 4, generator=g) * 2, -1)
    labels = torch.multinomial(probs, 1, generator=g).squeeze(1)
    assert metrics.expected_calibration_error(probs.log(), labels) < 0.01


def test_overconfident_predictions_have_the_expected_ece() -> None:
    """Always 90% sure, right half of the time: ECE = |0.9 - 0.5| = 0.4."""
    probs = torch.tensor([[0.9, 0.1]]).repeat(1000, 1)
    labels = torch.arange(1000) % 2
    assert metrics.expected_calibration_error(probs.log(), labels) == pytest.approx(0.4, abs=1e-4)


def test_reliability_bins_reproduce_torchmetrics_ece() -> None:
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(500, 5, generator=g) * 3, -1)
    labels = torch.randint(0, 5, (500,), generator=g)
    bins = metrics.reliability_bins(probs.log(), labels, n_bins=10)
    ece = (bins["count"] * (bins["accuracy"] - bins["confidence"]).abs()).sum() / 500
    assert float(ece) == pytest.approx(
        metrics.expected_calibration_error(probs.log(), labels, n_bins=10), abs=1e-5
    )
    assert int(bins["count"].sum()) == 500


def test_auroc_against_pairwise_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    neg = torch.randint(0, 5, (40,), generator=g).float()  # ties on purpose
    pos = torch.randint(2, 8, (30,), generator=g).float()
    wins = (pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :]).float()
    assert metrics.auroc(neg, pos) == pytest.approx(wins.mean().item())
    assert metrics.auroc(torch.zeros(5), torch.ones(5)) == 1.0
    assert math.isnan(metrics.auroc(torch.zeros(0), torch.ones(5)))
