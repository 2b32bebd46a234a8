"""The contract every registered posterior keeps (DESIGN.md §5), plus Bayes by Backprop's KL."""

from __future__ import annotations

import pytest
import torch
from conftest import ALL_KINDS, tiny_posterior, tiny_recipe
from torch.distributions import Normal, kl_divergence

from robusthyper import store
from robusthyper.data import dataset_info
from robusthyper.nets import functional_logits
from robusthyper.posteriors import POSTERIORS, PosteriorKind, build_posterior, posterior_class
from robusthyper.posteriors.bbb import BayesByBackprop, softplus

X = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_is_complete() -> None:
    for kind in PosteriorKind:
        if kind in POSTERIORS:
            assert POSTERIORS[kind].kind == kind.value
    with pytest.raises(ValueError, match="unknown posterior kind 'nope'"):
        posterior_class("nope")


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("arch", ["mlp", "lenet5"])
def test_logits_shape(kind: str, arch: str) -> None:
    posterior = tiny_posterior(kind, arch)
    assert posterior.logits(X, 3, gen()).shape == (3, 5, 10)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_trainable_parameter_gets_a_gradient(kind: str) -> None:
    posterior = tiny_posterior(kind)
    logits, kl = posterior.elbo_terms(X, 2, gen())
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.arange(5).repeat(2)) + kl / 100
    loss.backward()
    missing = [n for n, p in posterior.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in posterior.parameters() if p.grad is not None)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_samples_differ_for_stochastic_posteriors(kind: str) -> None:
    posterior = tiny_posterior(kind)
    with torch.no_grad():
        logits = posterior.logits(X, 4, gen())
    spread = (logits - logits.mean(0)).abs().max().item()
    if posterior.stochastic:
        assert spread > 1e-6
    else:
        assert spread == 0.0


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_same_seed_same_output_and_global_rng_is_irrelevant(kind: str) -> None:
    posterior = tiny_posterior(kind)
    with torch.no_grad():
        torch.manual_seed(1)
        a = posterior.logits(X, 3, gen(7))
        torch.manual_seed(2)  # tools such as torchattacks reseed the global RNG; samples must not care
        b = posterior.logits(X, 3, gen(7))
        c = posterior.logits(X, 3, gen(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    if posterior.stochastic:
        assert not torch.equal(a, c)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_stays_stochastic_in_eval_mode(kind: str) -> None:
    posterior = tiny_posterior(kind).eval()
    with torch.no_grad():
        logits = posterior.logits(X, 4, gen())
    assert (logits.std(0).max().item() > 0) == posterior.stochastic


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_checkpoint_round_trip_gives_identical_predictions(kind: str, tmp_path) -> None:
    posterior = tiny_posterior(kind)
    with torch.no_grad():  # move every parameter off its initial value so a silent re-init would show
        for p in posterior.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = store.save(posterior, tiny_recipe(kind), {"test_accuracy": 0.5}, tmp_path)
    loaded = store.load(path).posterior
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.logits(X, 3, gen(3)), posterior.eval().logits(X, 3, gen(3)), rtol=0, atol=0
        )


SAMPLING_KINDS = [k for k in ALL_KINDS if tiny_posterior(k).sample_params(1, gen())]


@pytest.mark.parametrize("kind", SAMPLING_KINDS)
def test_batched_samples_equal_a_loop_over_samples(kind: str) -> None:
    """One batched call for K samples gives what K separate single-sample calls give."""
    posterior = tiny_posterior(kind, "lenet5")
    params = posterior.sample_params(4, gen())
    with torch.no_grad():
        batched = functional_logits(posterior.net, params, X)
        looped = torch.cat([functional_logits(posterior.net, {n: p[i : i + 1] for n, p in params.items()}, X)
                            for i in range(4)])  # fmt: skip
        chunked = functional_logits(posterior.net, params, X, chunk_size=3)
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked, batched, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prior_sigma", [1.0, 0.3])
def test_bbb_kl_matches_torch_distributions(prior_sigma: float) -> None:
    recipe = tiny_recipe("bbb").model_copy(update={"posterior": {"kind": "bbb", "prior_sigma": prior_sigma}})
    posterior = build_posterior(recipe, dataset_info("mnist5k"))
    assert isinstance(posterior, BayesByBackprop)
    with torch.no_grad():
        for rho in posterior.rho.values():
            rho.copy_(torch.randn_like(rho))
    prior = Normal(0.0, prior_sigma)
    expected = sum(
        kl_divergence(
            Normal(mu, torch.nn.functional.softplus(posterior.rho[n.replace(".", "__")])), prior
        ).sum()
        for n, mu in posterior.net.named_parameters()
    )
    torch.testing.assert_close(posterior.kl(), expected)


def test_fast_softplus_equals_torchs_to_a_few_ulps_and_its_gradient_is_the_sigmoid() -> None:
    x = torch.cat([
        torch.linspace(-80.0, 80.0, 20001), -torch.logspace(-8, 1.9, 2000), torch.logspace(-8, 1.9, 2000),
        torch.tensor([0.0, -1e-30, 1e-30, -30.0, -17.0, -16.6, 15.0]),  # w = 1 + exp(-|x|) rounds to 1 below ~-16.6
    ]).double()  # fmt: skip
    exact = torch.nn.functional.softplus(x, threshold=1e4)  # torch's double kernel, no linear cut-off
    torch.testing.assert_close(softplus(x), exact, rtol=1e-14, atol=0)
    torch.testing.assert_close(softplus(x.float()).double(), exact, rtol=4e-7, atol=0)  # fp32: ~2 ulp
    xg = x[::50].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(softplus(xg).sum(), xg)
    torch.testing.assert_close(grad, torch.sigmoid(xg.detach()))
    assert torch.autograd.gradcheck(softplus, (torch.randn(8, dtype=torch.float64, requires_grad=True),))


def test_bbb_samples_have_the_posterior_moments() -> None:
    posterior = tiny_posterior("bbb")
    with torch.no_grad():
        for rho in posterior.rho.values():
            rho.fill_(0.0)  # sigma = softplus(0) = log 2
        samples = posterior.sample_params(4000, gen())
    name, mu = next(iter(posterior.net.named_parameters()))
    w = samples[name]
    torch.testing.assert_close(w.mean(0), mu.detach(), atol=0.06, rtol=0)
    assert abs(w.std(0).mean().item() - torch.log(torch.tensor(2.0)).item()) < 0.01


def test_shared_prefix_path_equals_the_whole_net() -> None:
    """MC dropout's fast path (trunk once, head as a K*B batch) computes the same function as the whole net."""
    posterior = tiny_posterior("mcd", "lenet5")
    for m in posterior.net.modules():
        if getattr(m, "stochastic", False):
            m.p = 0.0  # identical masks, so the paths must agree exactly
    with torch.no_grad():
        fast = posterior.logits(X, 3, gen())
        whole = posterior.net(X)
    for k in range(3):
        torch.testing.assert_close(fast[k], whole, rtol=1e-6, atol=1e-6)


def test_mcd_masks_follow_p() -> None:
    posterior = tiny_posterior("mcd")
    assert posterior.options.p == 0.5
    dropouts = [m for m in posterior.net.modules() if getattr(m, "stochastic", False)]
    assert dropouts and all(m.p == 0.5 for m in dropouts)
    posterior.eval()
    h = torch.ones(2000, 32)
    out = dropouts[0](h)
    assert abs((out == 0).float().mean().item() - 0.5) < 0.05
    assert set(out.unique().tolist()) <= {0.0, 2.0}


def test_bbb_elbo_terms_equal_the_plain_path() -> None:
    """bbb's elbo_terms computes sigma once for the samples and the KL: the same logits, KL and gradients as
    sampling and KL computed separately (the base class's path)."""
    posterior = tiny_posterior("bbb")
    x = torch.rand(5, 1, 28, 28)
    logits, kl = posterior.elbo_terms(x, 3, torch.Generator().manual_seed(4))
    params = posterior.sample_params(3, torch.Generator().manual_seed(4))
    plain_logits = functional_logits(posterior.net, params, x, k=3)
    plain_kl = posterior.kl(params)
    torch.testing.assert_close(logits, plain_logits)
    torch.testing.assert_close(kl, plain_kl)
    fast = torch.autograd.grad((logits.sum() + kl), list(posterior.parameters()))
    plain = torch.autograd.grad((plain_logits.sum() + plain_kl), list(posterior.parameters()))
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b)
