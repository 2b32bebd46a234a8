"""The training loop: annealing, validation split, learning on real digits, reproducibility."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_recipe

from robusthyper.data import Split
from robusthyper.train import evaluate_accuracy, fit, kl_schedule, split_validation


def test_kl_schedule_delay_then_linear_ramp() -> None:
    spec = tiny_recipe("bbb", kl_weight=0.5, kl_anneal_delay=2, kl_anneal_epochs=4).train
    assert [kl_schedule(spec, e) for e in (0, 1.9, 2, 4, 6, 10)] == [0.0, 0.0, 0.0, 0.25, 0.5, 0.5]
    assert kl_schedule(tiny_recipe("bbb").train, 0) == 1.0
    assert kl_schedule(tiny_recipe("bbb", kl_anneal_delay=1).train, 0.5) == 0.0


def test_validation_split_is_disjoint_and_seeded() -> None:
    split = Split(torch.arange(100.0).view(100, 1, 1, 1), torch.arange(100))
    fit_a, val_a = split_validation(split, 0.2, seed=3)
    fit_b, val_b = split_validation(split, 0.2, seed=3)
    assert len(val_a) == 20 and len(fit_a) == 80
    assert torch.equal(val_a.y, val_b.y)
    assert not set(val_a.y.tolist()) & set(fit_a.y.tolist())
    assert split_validation(split, 0.0, seed=3)[1] is None


@pytest.mark.parametrize("kind", ["det", "mcd", "bbb"])
def test_training_learns_real_digits(kind: str, small_mnist) -> None:
    recipe = tiny_recipe(kind, epochs=4, lr=3e-3, val_fraction=0.1)
    untrained = fit(recipe.model_copy(update={"train": recipe.train.model_copy(update={"epochs": 0})}),
                    small_mnist, progress=False)  # fmt: skip
    trained = fit(recipe, small_mnist, progress=False)
    assert untrained.metrics["test_accuracy"] < 0.3
    assert trained.metrics["test_accuracy"] > 0.75
    assert len(trained.history) == 4 and "val_accuracy" in trained.history[-1]
    assert trained.history[-1]["nll"] < trained.history[0]["nll"]


def test_training_is_reproducible(small_mnist) -> None:
    recipe = tiny_recipe("mcd", epochs=1)
    a = fit(recipe, small_mnist, progress=False).posterior.state_dict()
    b = fit(recipe, small_mnist, progress=False).posterior.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_evaluate_accuracy_uses_one_sample_for_a_point_estimate(small_mnist) -> None:
    posterior = fit(tiny_recipe("det", epochs=1), small_mnist, progress=False).posterior
    g = torch.Generator().manual_seed(0)
    assert evaluate_accuracy(posterior, small_mnist.test, 50, g) == evaluate_accuracy(
        posterior, small_mnist.test, 1, g
    )
