"""Tests of robusthyper.ensemble: the stochastic ensemble (log-mean output, fresh samples, its own generator,
MC dropout on in eval), the ART estimator and its two EOT gradient estimators, and the DLR loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import ALL_KINDS, tiny_posterior
from torch import Tensor, nn

from robusthyper.ensemble import (
    DifferenceLogitsRatio,
    EotMode,
    ModulePosterior,
    StochasticEnsemble,
    art_classifier,
    frozen,
)
from robusthyper.nets import functional_logits
from robusthyper.posteriors.base import Posterior

SHAPE = (1, 28, 28)


class FrozenSamples(Posterior):
    """Replays one fixed set of K parameter samples (common random numbers): a deterministic ensemble."""

    def __init__(self, posterior: Posterior, k: int, seed: int = 0) -> None:
        super().__init__(posterior.net)
        self.inner = posterior
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed)
            self.params = {n: p.detach() for n, p in posterior.sample_params(k, gen).items()}
        self.k = k

    def logits(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        assert k == self.k, "a frozen ensemble always evaluates its own K samples"
        return functional_logits(self.net, self.params, x, k=self.k)


def _x(n: int = 8, seed: int = 0) -> Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_log_mean_output_is_a_distribution(kind: str) -> None:
    ens = StochasticEnsemble(tiny_posterior(kind), k=7)
    out = ens(_x())
    assert out.shape == (8, 10)
    assert torch.allclose(out.exp().sum(-1), torch.ones(8), atol=1e-5)
    assert (out <= 1e-6).all()


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_fresh_samples_and_own_generator(kind: str) -> None:
    post = tiny_posterior(kind)
    x = _x()
    a = StochasticEnsemble(post, 5, torch.Generator().manual_seed(3))
    b = StochasticEnsemble(post, 5, torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    out_a = a(x)
    torch.manual_seed(123)  # tools reseed the global RNG: the ensemble must not care
    out_b = b(x)
    assert torch.equal(out_a, out_b)
    if post.stochastic:
        assert not torch.equal(a(x), out_a), "each forward pass must draw fresh samples"
    else:
        assert a.k == 1 and torch.equal(a(x), out_a)


def test_mc_dropout_stays_on_in_eval() -> None:
    ens = StochasticEnsemble(tiny_posterior("mcd"), k=1)
    ens.eval()
    ens.posterior.eval()
    x = _x()
    assert not torch.equal(ens(x), ens(x))
    # ART's predict switches its wrapper (and so ours) to eval: still stochastic.
    clf = art_classifier(ens, "bma", input_shape=SHAPE, nb_classes=10)
    p1, p2 = clf.predict(x.numpy()), clf.predict(x.numpy())
    assert not np.array_equal(p1, p2)


def test_chunked_evaluation_without_grad() -> None:
    ens = StochasticEnsemble(tiny_posterior("bbb"), k=10, max_rows=16)  # 8 inputs: chunks of 2 samples
    with torch.no_grad():
        logits = ens.sample_logits(_x())
        out = ens(_x())
    assert logits.shape == (10, 8, 10)
    assert torch.allclose(out.exp().sum(-1), torch.ones(8), atol=1e-5)


def test_frozen_restores_requires_grad() -> None:
    post = tiny_posterior("bbb")
    before = [p.requires_grad for p in post.parameters()]
    with frozen(post):
        assert not any(p.requires_grad for p in post.parameters())
    assert [p.requires_grad for p in post.parameters()] == before


def test_estimator_outputs_log_probabilities() -> None:
    """APGD refuses estimators whose outputs look like probabilities; ours are log-probabilities."""
    clf = art_classifier(
        StochasticEnsemble(tiny_posterior("mcd"), 4), "bma", input_shape=SHAPE, nb_classes=10
    )
    pred = clf.predict(_x().numpy())
    assert pred.shape == (8, 10) and (pred <= 0).all()
    assert np.allclose(np.exp(pred).sum(1), 1, atol=1e-5)


def _grad(post: Posterior, k: int, eot: str, x: Tensor, y: Tensor) -> np.ndarray:
    clf = art_classifier(StochasticEnsemble(post, k), eot, input_shape=SHAPE, nb_classes=10)
    with frozen(post):
        return clf.loss_gradient(x.numpy(), np.eye(10, dtype=np.float32)[y.numpy()])


def test_bma_and_mean_loss_agree_for_one_sample() -> None:
    post = FrozenSamples(tiny_posterior("bbb"), k=1)
    x, y = _x(), torch.arange(8) % 10
    g_bma, g_mean = _grad(post, 1, "bma", x, y), _grad(post, 1, "mean-loss", x, y)
    assert np.allclose(g_bma, g_mean, rtol=1e-4, atol=1e-7)


def test_bma_and_mean_loss_differ_for_several_samples() -> None:
    torch.manual_seed(0)
    inner = tiny_posterior("bbb")
    with torch.no_grad():  # a wide posterior, so that the K samples disagree
        for rho in inner.rho.values():
            rho.fill_(0.0)
    post = FrozenSamples(inner, k=6)
    x, y = _x(), torch.arange(8) % 10
    g_bma, g_mean = _grad(post, 6, "bma", x, y), _grad(post, 6, "mean-loss", x, y)
    assert not np.allclose(g_bma, g_mean, rtol=1e-2, atol=1e-6)
    # Both are the gradients they claim to be: check against autograd directly.
    xr = x.clone().requires_grad_(True)
    logits = post.logits(xr, 6)
    bma_loss = nn.functional.nll_loss(torch.logsumexp(logits.log_softmax(-1), 0) - math.log(6), y)
    mean_loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(6))
    (gb,) = torch.autograd.grad(bma_loss, xr, retain_graph=True)
    (gm,) = torch.autograd.grad(mean_loss, xr)
    assert np.allclose(g_bma, gb.numpy(), rtol=1e-4, atol=1e-7)
    assert np.allclose(g_mean, gm.numpy(), rtol=1e-4, atol=1e-7)


def test_mean_loss_compute_loss_per_example() -> None:
    post = FrozenSamples(tiny_posterior("bbb"), k=3)
    clf = art_classifier(StochasticEnsemble(post, 3), EotMode.MEAN_LOSS, input_shape=SHAPE, nb_classes=10)
    x, y = _x(), torch.arange(8) % 10
    losses = clf.compute_loss(x.numpy(), np.eye(10, dtype=np.float32)[y.numpy()], reduction="none")
    with torch.no_grad():
        logits = post.logits(x, 3)
        expected = torch.stack([nn.functional.cross_entropy(lg, y, reduction="none") for lg in logits]).mean(
            0
        )
    assert losses.shape == (8,)
    assert np.allclose(losses, expected.numpy(), atol=1e-5)


def test_module_posterior_wraps_a_plain_module() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Dropout(0.5)).train()
    post = ModulePosterior(net, stochastic=True)
    ens = StochasticEnsemble(post, 4)
    ens.eval()  # must not reach the user's module: its dropout is its posterior
    out = ens.sample_logits(_x())
    assert out.shape == (4, 8, 10) and not torch.equal(out[0], out[1])
    det = StochasticEnsemble(ModulePosterior(net.eval(), stochastic=False), 4)
    assert det.k == 1


def test_dlr_matches_its_definition_and_is_shift_invariant() -> None:
    z = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    loss = DifferenceLogitsRatio(reduction="none")(z, y)
    for i in range(6):
        s = z[i].sort(descending=True).values
        other = torch.cat([z[i][: y[i]], z[i][y[i] + 1 :]]).max()
        assert torch.isclose(loss[i], -(z[i, y[i]] - other) / (s[0] - s[2]), atol=1e-6)
    assert torch.allclose(DifferenceLogitsRatio("none")(z.log_softmax(-1), y), loss, atol=1e-5)
    assert torch.isclose(DifferenceLogitsRatio()(z, y), loss.mean())


def test_rejects_bad_k() -> None:
    with pytest.raises(ValueError, match="k=0"):
        StochasticEnsemble(tiny_posterior("det"), 0)


def test_micro_batches_with_gradients_change_nothing_but_speed() -> None:
    post = FrozenSamples(tiny_posterior("bbb"), k=4)
    x = _x(10).requires_grad_(True)
    whole = StochasticEnsemble(post, 4, max_rows_grad=10_000)(x)
    pieces = StochasticEnsemble(post, 4, max_rows_grad=12)(x)  # 3 inputs x 4 samples per call
    assert torch.allclose(whole, pieces, atol=1e-6)
    (g_whole,) = torch.autograd.grad(whole.sum(), x)
    (g_pieces,) = torch.autograd.grad(pieces.sum(), x)
    assert torch.allclose(g_whole, g_pieces, atol=1e-6)
    with torch.no_grad():
        assert StochasticEnsemble(tiny_posterior("mcd"), 7, max_rows_grad=4).sample_logits(x).shape == (
            7,
            10,
            10,
        )
