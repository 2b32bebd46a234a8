"""BbH: the kNN KL estimator against closed forms, the generators, and the KL weight's effect on the spread."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_recipe
from torch.distributions import MultivariateNormal, kl_divergence

from robusthyper.config import load_recipe
from robusthyper.data import dataset_info
from robusthyper.estimators import knn_kl
from robusthyper.nets import functional_logits
from robusthyper.posteriors import build_posterior, posterior_options
from robusthyper.posteriors.bbh import BayesByHypernet

X = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def bbh(arch: str = "mlp", seed: int = 0, **options) -> BayesByHypernet:
    recipe = tiny_recipe("bbh", arch).model_copy(update={"posterior": {"kind": "bbh", **options}})
    torch.manual_seed(seed)
    posterior = build_posterior(recipe, dataset_info("mnist5k"))
    assert isinstance(posterior, BayesByHypernet)
    return posterior


def test_knn_kl_is_the_formula_computed_by_brute_force() -> None:
    x, y = torch.randn(4, 3, generator=gen(1)), torch.randn(6, 3, generator=gen(2))
    total = 0.0
    for i in range(4):
        rho = min(math.dist(x[i].tolist(), x[j].tolist()) for j in range(4) if j != i)
        nu = min(math.dist(x[i].tolist(), y[j].tolist()) for j in range(6))
        total += math.log(nu / rho)
    expected = 3 * total / 4 + math.log(6 / 3)
    assert knn_kl(x, y).item() == pytest.approx(expected, rel=1e-5)


def test_knn_kl_converges_to_the_closed_form_kl_of_two_gaussians() -> None:
    q = MultivariateNormal(torch.tensor([0.5, -0.3]), torch.tensor([[0.6, 0.2], [0.2, 0.4]]))
    p = MultivariateNormal(torch.zeros(2), torch.eye(2))
    exact = kl_divergence(q, p).item()

    def mean_abs_error(n: int, repeats: int) -> float:
        errors = []
        for r in range(repeats):
            torch.manual_seed(r)
            errors.append(abs(knn_kl(q.sample((n,)), p.sample((n,))).item() - exact))
        return sum(errors) / repeats

    small, large = mean_abs_error(20, 40), mean_abs_error(3000, 4)
    assert large < 0.1 * max(exact, 1.0)
    assert large < small / 3


def test_knn_kl_of_identical_distributions_is_near_zero_and_rejects_bad_input() -> None:
    torch.manual_seed(0)
    assert abs(knn_kl(torch.randn(3000, 3), torch.randn(3000, 3)).item()) < 0.1
    with pytest.raises(ValueError, match="n >= 2"):
        knn_kl(torch.randn(1, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="need"):
        knn_kl(torch.randn(4, 3), torch.randn(5, 2))


def test_knn_kl_gradient_is_finite() -> None:
    x = torch.randn(5, 100, requires_grad=True)
    knn_kl(x, torch.randn(5, 100)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_weights_mode_generates_every_parameter_from_shared_noise() -> None:
    posterior = bbh()
    names = {n for n, _ in posterior.net.named_parameters()}
    params = posterior.sample_params(3, gen())
    assert set(params) == names
    assert all(params[n].shape == (3, *p.shape) for n, p in posterior.net.named_parameters())
    assert not any(p.requires_grad for p in posterior.net.parameters())  # all replaced by samples
    zs = posterior._noise(3, gen())
    assert all(z is zs[0] for z in zs)
    independent = bbh(shared_noise=False)._noise(3, gen())
    assert not torch.equal(independent[0], independent[1])


def test_generators_start_at_the_nets_init_with_a_small_spread() -> None:
    posterior = bbh()
    params = posterior.sample_params(64, gen())
    for name, p in posterior.net.named_parameters():
        rms = p.square().mean().sqrt()
        spread = params[name].std(0).mean()
        assert 0 < spread < 0.3 * rms
        assert (params[name].mean(0) - p).abs().mean() < 0.3 * rms


def test_scales_mode_uses_the_shared_direction_fast_path() -> None:
    posterior = bbh("lenet5", target="scales")
    params = posterior.sample_params(3, gen(5))
    assert set(params) == {f"{n}.g" for n, m in posterior.net.named_modules() if hasattr(m, "g")}
    with torch.no_grad():
        fast = posterior.logits(X, 3, gen(5))
        plain = functional_logits(posterior.net, params, X)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    trainable = {n for n, p in posterior.named_parameters() if p.requires_grad and n.startswith("net.")}
    assert trainable and all(n.endswith((".v", ".bias")) for n in trainable)


def test_elbo_terms_estimate_the_kl_from_at_least_n_samples() -> None:
    posterior = bbh(kl_samples=4, prior_samples=3)
    logits, kl = posterior.elbo_terms(X, 1, gen(2))
    assert logits.shape == (1, 5, 10)
    # elbo_terms draws n = 4 samples, then the prior samples, from one generator: replay that stream
    stream = gen(2)
    params = posterior.sample_params(4, stream)
    torch.testing.assert_close(kl, posterior.kl(params, stream))
    assert torch.isfinite(kl)


def _spread_after_training(kl_weight: float, target: str) -> float:
    """Train a tiny bbh on a fixed random task and return the mean std of its generated parameters."""
    posterior = bbh(seed=1, target=target, noise_dim=4, hidden_features=[8])
    x = torch.rand(64, 1, 28, 28, generator=gen(3))
    y = torch.randint(0, 10, (64,), generator=gen(4))
    optimizer = torch.optim.Adam([p for p in posterior.parameters() if p.requires_grad], lr=3e-3)
    stream = gen(5)
    for _ in range(60):
        logits, kl = posterior.elbo_terms(x, 2, stream)
        loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(2)) + kl_weight * kl / 1000
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        params = posterior.sample_params(32, gen(6))
    return torch.cat([p.flatten(1) for p in params.values()], 1).std(0).mean().item()


@pytest.mark.parametrize("target", ["scales", "weights"])
def test_spread_grows_with_the_kl_weight(target: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ops this small only lose to thread hand-offs (20x on a busy 2-core machine)
    try:
        none, some, more = (_spread_after_training(w, target) for w in (0.0, 1.0, 10.0))
    finally:
        torch.set_num_threads(threads)
    assert none < 0.5 * some
    assert some < more


def test_options_are_validated_and_recipes_load() -> None:
    with pytest.raises(ValueError, match="unknown key 'widths'"):
        posterior_options({"kind": "bbh", "widths": [3]})
    with pytest.raises(ValueError, match="kl_samples"):
        posterior_options({"kind": "bbh", "kl_samples": 1})
    for name in ("bhn", "bbh"):
        recipe = load_recipe(name)
        assert recipe.posterior_kind == name and recipe.net.arch == "lenet5" and recipe.dataset == "mnist5k"


def test_only_whole_weight_sets_split_samples_in_attack_steps() -> None:
    """bbh generating every weight draws K samples once per step (like bbb); scales mode splits the batch."""
    info = dataset_info("mnist5k")
    for target, expected in (("weights", True), ("scales", False)):
        recipe = tiny_recipe("bbh", "lenet5").model_copy(
            update={"posterior": {"kind": "bbh", "target": target}}
        )
        assert build_posterior(recipe, info).chunk_samples is expected
