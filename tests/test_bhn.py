"""BHN: the flow's change of variables, its sampling direction, the MC KL, and the shared-V fast path."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_posterior
from torch.distributions import Independent, Normal

from robusthyper.nets import functional_logits
from robusthyper.posteriors.bhn import (
    BayesianHypernetwork,
    BHNOptions,
    build_flow,
    scaled_logits,
    standard_normal_log_prob,
)

X = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def perturbed_flow(options: BHNOptions, features: int = 6):
    """A flow whose layers are far from their near-identity init, so every test has something to check."""
    torch.manual_seed(0)
    flow = build_flow(torch.randn(features), options)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


FLOWS = [
    BHNOptions(flow="coupling", transforms=3, hidden_features=[16]),
    BHNOptions(flow="iaf", transforms=2, hidden_features=[16]),
    BHNOptions(transforms=0),
]


@pytest.mark.parametrize("options", FLOWS, ids=["coupling", "iaf", "affine"])
def test_flow_is_invertible_and_its_log_det_matches_autograd(options: BHNOptions) -> None:
    flow = perturbed_flow(options).double()
    transform = flow.transform()  # g -> eps
    eps = torch.randn(4, 6, generator=gen(), dtype=torch.float64)
    g, ladj = transform.inv.call_and_ladj(eps)
    torch.testing.assert_close(transform(g), eps, rtol=1e-9, atol=1e-9)
    for i in range(eps.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda e: transform.inv(e), eps[i])
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(jac).logabsdet, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("options", FLOWS, ids=["coupling", "iaf", "affine"])
def test_sampled_log_q_equals_the_flow_density(options: BHNOptions) -> None:
    """log q from the sampling direction (base density minus log-det) equals zuko's scoring direction."""
    posterior = tiny_posterior("bhn")
    posterior.flow = perturbed_flow(options, posterior.features)
    posterior.double()  # scoring divides by scales ~1e-3: float32 round-off alone moves log q by ~1e-4
    g, log_q = posterior.sample_with_log_prob(5, gen())
    torch.testing.assert_close(log_q, posterior.log_prob(g), rtol=1e-9, atol=1e-9)


def test_affine_only_flow_is_the_gaussian_torch_distributions_gives() -> None:
    posterior = tiny_posterior("bhn")
    posterior.flow = perturbed_flow(BHNOptions(transforms=0), posterior.features)
    affine = posterior.flow.transform.transforms[-1]
    q = Independent(Normal(affine.loc, affine.log_scale.exp() + 1e-3), 1)
    g, log_q = posterior.sample_with_log_prob(7, gen())
    torch.testing.assert_close(log_q, q.log_prob(g))
    # and the draws are that Gaussian's: eps from the generator, pushed through loc + scale * eps
    eps = torch.randn(7, posterior.features, generator=gen())
    torch.testing.assert_close(g, affine.loc + (affine.log_scale.exp() + 1e-3) * eps)


def test_initial_posterior_is_nearly_deterministic_around_the_nets_scales() -> None:
    posterior = tiny_posterior("bhn")
    initial = torch.cat([layer.g.detach() for _, layer in posterior.layers])
    with torch.no_grad():
        g, _ = posterior.sample_with_log_prob(200, gen())
    sigma = math.exp(-7.0) + 1e-3
    assert g.std(0).mean().item() == pytest.approx(sigma, rel=0.3)
    assert (g.mean(0) - initial).abs().max().item() < 0.05 * initial.abs().mean().item()


def test_kl_is_log_q_minus_log_prior_of_the_same_samples() -> None:
    posterior = tiny_posterior("bhn")
    lam = posterior.options.prior_precision
    g, log_q = posterior.sample_with_log_prob(4, gen(3))
    prior = Normal(0.0, 1.0 / math.sqrt(lam)).log_prob(g).sum(-1)
    torch.testing.assert_close(posterior.kl(posterior.split(g)), (log_q - prior).mean(), rtol=1e-4, atol=1e-3)
    _, kl = posterior.elbo_terms(X, 4, gen(3))
    torch.testing.assert_close(kl, (log_q - prior).mean())


def test_standard_normal_log_prob() -> None:
    eps = torch.randn(3, 5)
    torch.testing.assert_close(standard_normal_log_prob(eps), Normal(0.0, 1.0).log_prob(eps).sum(-1))


@pytest.mark.parametrize("arch", ["mlp", "lenet5"])
def test_fast_path_equals_the_weight_copy_path(arch: str) -> None:
    posterior = tiny_posterior("bhn", arch)
    posterior.flow = perturbed_flow(BHNOptions(transforms=2, hidden_features=[16]), posterior.features)
    posterior.double()  # the two paths sum in different orders: compare them where rounding is negligible
    x = X.double()
    with torch.no_grad():
        fast = posterior.logits(x, 5, gen(4))  # chunk_size 8 > K: one chunk
        params = posterior.split(posterior.sample_with_log_prob(5, gen(4))[0])
        plain = functional_logits(posterior.net, params, x)
        posterior.options = posterior.options.model_copy(update={"chunk_size": 2})
        chunked = posterior.logits(x, 5, gen(4))
    assert fast.std(0).max() > 1e-3  # the perturbed flow really gives different samples
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(chunked, plain, rtol=1e-10, atol=1e-10)
    with torch.no_grad():  # K = 1 takes the plain path; it must be the same function
        one = posterior.logits(x, 1, gen(4))
        g1 = posterior.sample_with_log_prob(1, gen(4))[0]
        torch.testing.assert_close(one, scaled_logits(posterior.net, posterior.split(g1), x))


def test_the_nets_own_scales_are_frozen_and_everything_else_trains() -> None:
    posterior = tiny_posterior("bhn")
    assert all(not layer.g.requires_grad for _, layer in posterior.layers)
    trainable = {n for n, p in posterior.named_parameters() if p.requires_grad}
    assert any(n.startswith("flow.") for n in trainable)
    assert {n for n in trainable if n.startswith("net.")} == {
        f"net.{name}.{p}" for name, _ in posterior.layers for p in ("v", "bias")
    }


def test_needs_a_weight_normalised_net() -> None:
    from robusthyper.nets import build_net

    with pytest.raises(ValueError, match="weight-normalised"):
        BayesianHypernetwork(build_net("mlp", (1, 28, 28), 10, [0.1], [0.3], widths=[4]))


def test_fast_path_rejects_scales_it_cannot_apply() -> None:
    posterior = tiny_posterior("bhn")
    with pytest.raises(ValueError, match="not top-level"):
        scaled_logits(posterior.net, {"99.g": torch.ones(2, 3)}, X)


@pytest.mark.parametrize("arch", ["mlp", "lenet5"])
def test_fast_path_input_gradient_equals_the_plain_path(arch: str) -> None:
    """Attacks differentiate the shared-V path with respect to the input: its gradient is the plain one's."""
    posterior = tiny_posterior("bhn", arch)
    posterior.flow = perturbed_flow(BHNOptions(transforms=2, hidden_features=[16]), posterior.features)
    posterior.double()
    params = {n: p.detach() for n, p in posterior.split(posterior.sample_with_log_prob(6, gen(2))[0]).items()}
    y = torch.arange(5) % 10
    grads = []
    for path in (
        lambda x: scaled_logits(posterior.net, params, x, 4),
        lambda x: functional_logits(posterior.net, params, x),
    ):
        x = X.double().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(path(x).flatten(0, 1), y.repeat(6))
        grads.append(torch.autograd.grad(loss, x)[0])
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-12)
