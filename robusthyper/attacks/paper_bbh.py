"""The Bayes by Hypernet paper's own FGSM protocol (Pawlowski, Brock, Lee, Rajchl, Glocker 2017, "Implicit
weight uncertainty in neural networks"; the authors' TensorFlow code), replayed to show by how much it overstates
robustness (METHODS.md §2). Weak on purpose: never a robustness claim.

Threat model as the paper ran it: Linf ball of radius eps, *no* clipping to [0, 1].
The mean of `samples_averaged` single-sample FGSM images: x_adv = x + eps * mean_j sign(grad_x CE_j) with a
fresh posterior sample per j; the averaged signs give a perturbation smaller than eps wherever the samples
disagree. The paper used the first 100 test images (run with `--n 100`). The loop is in
`robusthyper.attacks.paper`.

Arguments (`AttackSpec`): eps; samples_averaged = 100, k_attack = 1, clip = false; one step, no random start.
Shapes: x `[B, C, H, W]` in [0, 1], y `[B]` index labels -> x_adv like x (may leave [0, 1]).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robusthyper.attacks.base import Attack, AttackFamily, Norm, Trait

if TYPE_CHECKING:
    from robusthyper.attacks.spec import AttackSpec
    from robusthyper.ensemble import StochasticEnsemble


SAMPLES_AVERAGED = 100
"""Single-sample FGSM signs averaged, as the paper did."""


def build(ensemble: StochasticEnsemble, spec: AttackSpec, batch_size: int) -> Attack:
    from robusthyper.attacks.paper import PaperFgsm

    return PaperFgsm(ensemble, spec, batch_size, samples=spec.samples_averaged or SAMPLES_AVERAGED)


PAPER_BBH_FGSM = AttackFamily(
    name="paper-bbh-fgsm",
    summary="BbH's own weak protocol (Pawlowski et al. 2017): eps times the mean of samples_averaged "
    "single-sample gradient signs, no clipping.",
    steps=1,
    step_factor=1.0,
    random_init=False,
    traits=frozenset({Trait.SINGLE_STEP, Trait.PAPER_PROTOCOL, Trait.OWN_LOOP}),
    norms=(Norm.LINF,),
    protocol="paper-bbh",
    spec_defaults={"clip": False, "k_attack": 1, "samples_averaged": SAMPLES_AVERAGED},
    build=build,
)
