"""Tests of robusthyper.attacks.paper: the BHN and BbH FGSM protocols as their code ran them (single-sample
gradient; averaged signs; no clipping), their spec fields and presets, and the registry building them.
Whether they overstate robustness is an empirical question for the sweep, not a unit test: on a tiny MLP,
unclipped FGSM at eps 0.1 was as strong as PGD-10 (inputs leaving [0, 1] add attack power)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_recipe

from robusthyper.attacks import build_attack, load_preset, make_spec
from robusthyper.attacks.paper import PaperFgsm, bbh_fgsm, bhn_fgsm, input_gradient
from robusthyper.ensemble import StochasticEnsemble
from robusthyper.errors import ConfigError
from robusthyper.nets import frozen
from robusthyper.train import fit

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def models(small_mnist):
    det = fit(tiny_recipe("det", epochs=4, val_fraction=0.0), small_mnist, progress=False).posterior
    mcd = fit(tiny_recipe("mcd", epochs=4, val_fraction=0.0), small_mnist, progress=False).posterior
    return {"det": det.eval(), "mcd": mcd.eval()}


@pytest.fixture(scope="module")
def batch(small_mnist):
    return small_mnist.test.x[:64], small_mnist.test.y[:64]


def _ens(posterior, k: int = 1, seed: int = 0) -> StochasticEnsemble:
    return StochasticEnsemble(posterior, k, torch.Generator().manual_seed(seed))


def test_specs_and_presets() -> None:
    bhn = make_spec(attack="paper-bhn-fgsm", eps=0.1)
    assert (bhn.k_attack, bhn.clip, bhn.steps, bhn.random_init) == (1, False, 1, False)
    assert bhn.label == "paper-bhn-fgsm" and bhn.protocol == "paper-bhn"
    bbh = make_spec(attack="paper-bbh-fgsm", eps=0.1)
    assert (bbh.samples_averaged, bbh.clip, bbh.protocol) == (100, False, "paper-bbh")
    assert make_spec(attack="fgsm", eps=0.1).clip and make_spec(attack="fgsm", eps=0.1).protocol == "strong"
    for bad in (
        {"attack": "pgd", "clip": False},
        {"attack": "paper-bhn-fgsm", "samples_averaged": 10},
        {"attack": "paper-bbh-fgsm", "samples_averaged": 0},
        {"attack": "paper-bbh-fgsm", "steps": 5},
        {"attack": "paper-bhn-fgsm", "norm": "l2"},
    ):
        with pytest.raises(ConfigError):
            make_spec(eps=0.1, **bad)
    bhn_specs, bbh_specs = load_preset("paper-bhn-fgsm"), load_preset("paper-bbh-fgsm")
    assert {s.attack for s in bhn_specs} == {"paper-bhn-fgsm"}
    assert all(not s.clip and s.k_attack == 1 for s in bhn_specs + bbh_specs)
    assert all(s.samples_averaged == 100 for s in bbh_specs) and max(s.eps for s in bbh_specs) == 0.4


def test_bhn_is_unclipped_fgsm_from_one_sample(models, batch) -> None:
    x, y = batch
    posterior = models["mcd"]
    with frozen(posterior):
        grad = input_gradient(_ens(posterior, 1, 3), x, y, 1)  # the same single dropout mask as below
        x_adv = bhn_fgsm(_ens(posterior, 1, 3), x, y, 0.2)
    assert torch.equal(x_adv, x + 0.2 * grad.sign())
    assert x_adv.min() < 0 or x_adv.max() > 1  # not clipped, as the BHN code
    assert (x_adv - x).abs().max() == pytest.approx(0.2)
    with frozen(posterior):
        clipped = bhn_fgsm(_ens(posterior, 1, 3), x, y, 0.2, clip=True)
    assert clipped.min() >= 0 and clipped.max() <= 1


def test_bbh_averages_single_sample_signs(models, batch) -> None:
    x, y = batch[0][:16], batch[1][:16]
    posterior = models["mcd"]
    with frozen(posterior):
        ens = _ens(posterior, 1, 4)
        expected = sum(input_gradient(ens, x, y, 1).sign() for _ in range(10)) / 10
        x_adv = bbh_fgsm(_ens(posterior, 1, 4), x, y, 0.3, samples=10)
    assert torch.allclose(x_adv, x + 0.3 * expected)
    delta = (x_adv - x).abs()
    assert delta.max() <= 0.3 + 1e-6
    assert ((delta > 0) & (delta < 0.3 - 1e-6)).any()  # samples disagree: the perturbation shrinks
    # A point estimate's samples all agree: BbH's protocol is then plain unclipped FGSM.
    with frozen(models["det"]):
        det_bbh = bbh_fgsm(_ens(models["det"]), x, y, 0.3, samples=5)
        det_bhn = bhn_fgsm(_ens(models["det"]), x, y, 0.3)
    assert torch.allclose(det_bbh, det_bhn)


def test_registry_builds_them_and_generate_is_unclipped(models, batch) -> None:
    x, y = batch
    for name in ("paper-bhn-fgsm", "paper-bbh-fgsm"):
        spec = make_spec(attack=name, eps=0.3, samples_averaged=5 if "bbh" in name else None)
        with frozen(models["mcd"]):
            attack = build_attack(models["mcd"], spec, SHAPE, 10, batch_size=40)
            assert isinstance(attack, PaperFgsm)
            x_adv = attack.generate(x, y)
        assert x_adv.shape == x.shape and (x_adv < 0).any()
        assert (x_adv - x).abs().max() <= 0.3 + 1e-6
