"""FGSM (Goodfellow, Shlens, Szegedy 2015, "Explaining and harnessing adversarial examples").

Threat model: Linf or L2 ball of radius eps around x, inputs in [0, 1].
x_adv = clip(x + eps * sign(grad_x L(x, y)), 0, 1) for Linf; eps * grad / ||grad||_2 for L2. One gradient of
the ensemble's EOT loss (K_attack samples). Kept as the papers' comparison: iterative attacks must beat it.
ART's `FastGradientMethod` calls `loss_gradient` once per batch with numpy arrays.

Arguments (`AttackSpec`): eps; step_size = eps (FGSM's step is the budget); steps 1 and no random start.
Shapes: x `[B, C, H, W]` in [0, 1], y `[B]` index labels -> x_adv like x.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robusthyper.attacks.base import ArtAttack, ArtEstimator, AttackFamily, Norm, Trait, cross_entropy

if TYPE_CHECKING:
    from robusthyper.attacks.spec import AttackSpec


def build(estimator: ArtEstimator, spec: AttackSpec, batch_size: int) -> ArtAttack:
    from art.attacks.evasion import FastGradientMethod

    return FastGradientMethod(
        estimator,
        norm="inf" if spec.norm is Norm.LINF else 2,
        eps=float(spec.eps),
        eps_step=spec.step,
        num_random_init=0,
        batch_size=batch_size,
    )


FGSM = AttackFamily(
    name="fgsm",
    summary="Fast gradient sign method (Goodfellow et al. 2015): one step of eps along the gradient's sign.",
    steps=1,
    step_factor=1.0,
    random_init=False,
    traits=frozenset({Trait.SINGLE_STEP}),
    norms=(Norm.LINF, Norm.L2),
    art_attack=build,
    loss=cross_entropy,
)
