"""APGD-CE and APGD-DLR (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks").

Threat model: Linf or L2 ball of radius eps around x, inputs in [0, 1].
PGD with momentum and a per-example step size that halves when progress stalls (checkpoints at fixed fractions
of `steps`), starting at 2 eps. APGD-CE maximises cross-entropy; APGD-DLR the difference-of-logits ratio, which
is invariant to shifting and rescaling the logits. Both get the EOT ensemble: given `loss_type`, ART rebuilds a
plain estimator around `estimator.model` and drops our `mean-loss` override, so the estimator is built with
the family's loss already set and ART gets `loss_type=None` (`robusthyper.ensemble`). DLR on log p̄ equals DLR
on any logits of the same model average (shift invariance).

Arguments (`AttackSpec`): eps; steps = 100 and an initial step_size = 2 eps, random start (Croce & Hein).
Shapes: x `[B, C, H, W]` in [0, 1], y `[B]` index labels -> x_adv like x. The two families share this file:
they are one algorithm with two losses.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from robusthyper.attacks.base import ArtAttack, ArtEstimator, AttackFamily, Norm, Trait, cross_entropy

if TYPE_CHECKING:
    from torch import nn

    from robusthyper.attacks.spec import AttackSpec


def build(estimator: ArtEstimator, spec: AttackSpec, batch_size: int) -> ArtAttack:
    from art.attacks.evasion import AutoProjectedGradientDescent

    return AutoProjectedGradientDescent(
        estimator,
        norm="inf" if spec.norm is Norm.LINF else 2,
        eps=float(spec.eps),
        eps_step=spec.step,
        max_iter=int(spec.steps),
        targeted=False,
        nb_random_init=1,
        batch_size=batch_size,
        loss_type=None,
        verbose=False,
    )


def dlr() -> nn.Module:
    """The difference-of-logits-ratio loss (`robusthyper.ensemble.DifferenceLogitsRatio`)."""
    from robusthyper.ensemble import DifferenceLogitsRatio

    return DifferenceLogitsRatio()


APGD_CE = AttackFamily(
    name="apgd-ce",
    summary="Auto-PGD on cross-entropy (Croce & Hein 2020): momentum and a step size adapted per example.",
    steps=100,
    step_factor=2.0,
    random_init=True,
    traits=frozenset({Trait.ITERATIVE}),
    norms=(Norm.LINF, Norm.L2),
    art_attack=build,
    loss=cross_entropy,
)
APGD_DLR = replace(
    APGD_CE,
    name="apgd-dlr",
    summary="Auto-PGD on the difference-of-logits-ratio loss (Croce & Hein 2020): invariant to logit scaling.",
    loss=dlr,
)
"""The same algorithm and defaults as APGD-CE; only the loss differs."""
