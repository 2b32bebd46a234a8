"""Tests of robusthyper.ensemble: the stochastic ensemble (log-mean output, fresh samples, its own generator,
MC dropout on in eval), the ART estimator and its two EOT gradient estimators, and the DLR loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import ALL_KINDS, tiny_posterior
from torch import Tensor, nn

from robusthyper.chunking import (
    BACKWARD_FACTOR,
    CPU_LIMITS,
    GPU_MAX_ROWS,
    GPU_MEMORY_SHARE,
    RowLimits,
    activation_bytes_per_row,
    gpu_row_limits,
    row_limits,
)
from robusthyper.ensemble import (
    DifferenceLogitsRatio,
    EotMode,
    StochasticEnsemble,
    art_classifier,
)
from robusthyper.loading import ModulePosterior
from robusthyper.nets import frozen, functional_logits
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


def test_mean_loss_pgd_equals_torchattacks_eotpgd_on_the_same_samples() -> None:
    """The benchmark's like-for-like premise: robusthyper's mean-loss PGD (ART) takes the steps torchattacks'
    EOTPGD takes when both see the same K samples (EOTPGD: one sample per forward, K forwards per step)."""
    torchattacks = pytest.importorskip("torchattacks")
    from art.attacks.evasion import ProjectedGradientDescent

    inner = tiny_posterior("bbb")
    with torch.no_grad():  # a wide posterior, so that the samples disagree
        for rho in inner.rho.values():
            rho.fill_(-2.0)
    k = 3
    post = FrozenSamples(inner, k)

    class OneSampleInTurn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.post, self.calls = post, 0

        def forward(self, x: Tensor) -> Tensor:
            self.calls += 1
            return self.post.logits(x, k)[(self.calls - 1) % k]

    x, y = _x(), torch.arange(8) % 10
    eps, alpha, steps = 0.1, 0.02, 6
    clf = art_classifier(StochasticEnsemble(post, k), "mean-loss", input_shape=SHAPE, nb_classes=10)
    pgd = ProjectedGradientDescent(clf, eps=eps, eps_step=alpha, max_iter=steps, num_random_init=0,
                                   batch_size=8, verbose=False)  # fmt: skip
    peer = torchattacks.EOTPGD(
        OneSampleInTurn(), eps=eps, alpha=alpha, steps=steps, eot_iter=k, random_start=False
    )
    with frozen(post):
        ours = pgd.generate(x.numpy(), y.numpy())
        theirs = peer(x, y).numpy()
    assert np.abs(ours - x.numpy()).max() > eps / 2
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_sample_chunks_with_gradients_equal_the_plain_path_on_the_same_samples() -> None:
    """bbb splits K (not the batch) in an attack step: each chunk's samples, drawn in turn from the ensemble's
    generator, give what one plain evaluation of all those samples gives, values and input gradients."""
    post = tiny_posterior("bbb")
    assert (
        post.chunk_samples
        and not tiny_posterior("mcd").chunk_samples
        and not tiny_posterior("bhn").chunk_samples
    )
    x = _x(6).requires_grad_(True)
    ens = StochasticEnsemble(
        post, 5, torch.Generator().manual_seed(7), max_rows_grad=12
    )  # 2 samples x 6 inputs
    chunked = ens.sample_logits(x)
    gen = torch.Generator().manual_seed(7)
    draws = []
    for n in (2, 2, 1):  # the chunks' draws, in the same order
        draws.append(post.sample_params(n, gen))
        torch.randint(0, 2**62, (1,), generator=gen)  # each logits call also seeds its module randomness
    params = {name: torch.cat([d[name] for d in draws]) for name in draws[0]}
    plain = functional_logits(post.net, params, x)
    torch.testing.assert_close(chunked, plain, rtol=1e-6, atol=1e-6)
    (g_chunked,) = torch.autograd.grad(chunked.logsumexp(0).sum(), x)
    (g_plain,) = torch.autograd.grad(plain.logsumexp(0).sum(), x)
    torch.testing.assert_close(g_chunked, g_plain, rtol=1e-5, atol=1e-6)
    big = StochasticEnsemble(post, 3, max_rows_grad=4)(x)  # batch > rows: the batch is split as well
    assert big.shape == (6, 10)


@pytest.mark.parametrize("eot", ["bma", "mean-loss"])
def test_loss_gradient_in_pieces_equals_one_graph_and_arts_own(eot: str) -> None:
    """The estimator's loss_gradient differentiates the batch in pieces (bounded memory): same samples, same
    gradient as one graph over the batch, and (bma) as ART's own PyTorchClassifier.loss_gradient."""
    x, y = _x(10), torch.arange(10) % 10
    onehot = np.eye(10, dtype=np.float32)[y.numpy()]
    for kind in ("mcd", "bbb"):
        post = tiny_posterior(kind)
        grads = []
        for rows_backward in (10_000, 12):  # one graph; pieces of 3 inputs x 4 samples
            ens = StochasticEnsemble(post, 4, torch.Generator().manual_seed(5), max_rows_grad=8,
                                     max_rows_backward=rows_backward)  # fmt: skip
            clf = art_classifier(ens, eot, input_shape=SHAPE, nb_classes=10)
            with frozen(post):
                grads.append(clf.loss_gradient(x, torch.from_numpy(onehot)))
        if kind == "mcd":  # pieces are whole micro-batches: the same masks are drawn either way
            torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
        assert len(StochasticEnsemble(post, 4, max_rows_grad=8, max_rows_backward=12).gradient_pieces(10)) > 1
    post = FrozenSamples(tiny_posterior("bbb"), k=4)
    ens = StochasticEnsemble(post, 4, max_rows_grad=8, max_rows_backward=12)  # pieces of 2 inputs
    clf = art_classifier(ens, eot, input_shape=SHAPE, nb_classes=10)
    ours = clf.loss_gradient(x.numpy(), onehot)
    assert len(ens.gradient_pieces(10)) == 5
    xr = x.clone().requires_grad_(True)
    logits = post.logits(xr, 4)
    if eot == "bma":
        loss = nn.functional.nll_loss(torch.logsumexp(logits.log_softmax(-1), 0) - math.log(4), y)
        arts_own = super(type(clf), clf).loss_gradient(x.numpy(), onehot)  # PyTorchClassifier's, one graph
        np.testing.assert_allclose(ours, arts_own, rtol=1e-4, atol=1e-7)
    else:
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(4))
    (expected,) = torch.autograd.grad(loss, xr)
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-4, atol=1e-7)


def test_activation_bytes_per_row_counts_what_the_backward_keeps() -> None:
    """An MLP with frozen weights and input gradients keeps only its hidden ReLU output per row (4 bytes per
    unit): the weights, saved whatever the batch, cancel."""
    for hidden in (48, 96):
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        assert activation_bytes_per_row(ModulePosterior(net, stochastic=False), _x(3)) == 4 * hidden
    # and a real posterior: LeNet-5's conv activations, ~100 kB per row
    assert 50_000 < activation_bytes_per_row(tiny_posterior("bbb", "lenet5"), _x(2)) < 200_000


def test_gpu_row_limits_fill_a_share_of_free_memory_within_bounds() -> None:
    per_row, free = 100_000, 16 * 2**30
    rows = int(GPU_MEMORY_SHARE * free / (BACKWARD_FACTOR * per_row))
    assert gpu_row_limits(per_row, free) == RowLimits(rows, rows, rows)
    assert gpu_row_limits(1, free) == RowLimits(GPU_MAX_ROWS, GPU_MAX_ROWS, GPU_MAX_ROWS)  # capped
    assert gpu_row_limits(per_row, 2**20) == CPU_LIMITS  # never below the CPU's
    assert row_limits(tiny_posterior("mcd"), _x(2)) == CPU_LIMITS  # a CPU's are the constants


def test_limits_are_the_devices_unless_set_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    post = tiny_posterior("mcd")
    ens = StochasticEnsemble(post, 4)
    assert (ens.max_rows, ens.max_rows_grad, ens.max_rows_backward) == (
        CPU_LIMITS.max_rows, CPU_LIMITS.max_rows_grad, CPU_LIMITS.max_rows_backward
    )  # fmt: skip
    # What a GPU does on its first call, simulated: measured limits replace the defaults, not explicit ones.
    measured = RowLimits(max_rows=3, max_rows_grad=4, max_rows_backward=8)
    calls = []
    monkeypatch.setattr("robusthyper.ensemble.row_limits", lambda p, x: calls.append(x.shape) or measured)
    ens = StochasticEnsemble(post, 4, max_rows_backward=12)
    ens._sized = False
    ens.max_rows = 5  # assigned after construction: also explicit
    x = _x(6).requires_grad_(True)
    assert ens(x).shape == (6, 10) and ens(x).shape == (6, 10)
    assert calls == [x.shape]  # measured once
    assert (ens.max_rows, ens.max_rows_grad, ens.max_rows_backward) == (5, 4, 12)
    assert len(ens.gradient_pieces(6)) == 2  # 12 rows a piece at K = 4: 3 inputs, one sample_logits step of 1
