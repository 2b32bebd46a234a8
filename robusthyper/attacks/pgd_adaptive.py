"""Adaptive PGD against uncertainty-based detection (Carlini & Wagner 2017, "Adversarial examples are not
easily detected"; Feng, Rudner, Tsilivis, Kempe 2024, "Attacking Bayes"; METHODS.md §4).

Threat model: Linf ball of radius eps around x, inputs in [0, 1], against a defender who also flags inputs whose
mutual information (or predictive entropy) is high. The attacker maximises, per example,
CE(log p̄(.|x), y) - detection_weight * score(x) with PGD (two phases, best iterate kept): the loop is in
`robusthyper.attacks.adaptive` (torch, imported only when the attack is built).

Arguments (`AttackSpec`): eps; steps = 40, step_size = eps/4, random start (as PGD); detection_weight = 1.0
(0 is plain PGD-EOT); detection_score = 'mi' or 'entropy'. Shapes: x `[B, C, H, W]` in [0, 1], y `[B]` index
labels -> x_adv like x.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robusthyper.attacks.base import Attack, AttackFamily, Norm, Trait

if TYPE_CHECKING:
    from robusthyper.attacks.spec import AttackSpec
    from robusthyper.ensemble import StochasticEnsemble


def build(ensemble: StochasticEnsemble, spec: AttackSpec, batch_size: int) -> Attack:
    from robusthyper.attacks.adaptive import AdaptivePGD

    return AdaptivePGD(ensemble, spec, batch_size)


PGD_ADAPTIVE = AttackFamily(
    name="pgd-adaptive",
    summary="Adaptive PGD (Carlini & Wagner 2017; Feng et al. 2024): PGD on CE - detection_weight * MI or "
    "entropy, to evade uncertainty-based detection.",
    steps=40,
    step_factor=0.25,
    random_init=True,
    traits=frozenset({Trait.ITERATIVE, Trait.DETECTION_AWARE, Trait.OWN_LOOP}),
    norms=(Norm.LINF,),
    spec_defaults={"detection_weight": 1.0},
    build=build,
)
