"""PGD (Madry, Makelov, Schmidt, Tsipras, Vladu 2018, "Towards deep learning models resistant to adversarial
attacks").

Threat model: Linf or L2 ball of radius eps around x, inputs in [0, 1].
`steps` iterations of x <- Proj_{B(x0, eps) ∩ [0,1]}(x + step_size * sign(grad)) (Linf; the normalised gradient
for L2), from a uniform random point in the ball when `random_init` (ART draws it from numpy's global RNG:
the evaluation seeds numpy). ART's `ProjectedGradientDescentPyTorch` keeps tensors on the device and calls the
estimator's `loss_gradient` every step, so each step sees K_attack fresh posterior samples (EOT). Returns the
final iterate; restarts are run by `robusthyper.evaluate`, which keeps the worst case per example.

Arguments (`AttackSpec`): eps; steps = 40 and step_size = eps/4 with a random start (METHODS.md §4: >= 40
steps of eps/4). Shapes: x `[B, C, H, W]` in [0, 1], y `[B]` index labels -> x_adv like x.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robusthyper.attacks.base import ArtAttack, ArtEstimator, AttackFamily, Norm, Trait, cross_entropy

if TYPE_CHECKING:
    from robusthyper.attacks.spec import AttackSpec


def build(estimator: ArtEstimator, spec: AttackSpec, batch_size: int) -> ArtAttack:
    from art.attacks.evasion import ProjectedGradientDescent

    return ProjectedGradientDescent(
        estimator,
        norm="inf" if spec.norm is Norm.LINF else 2,
        eps=float(spec.eps),
        eps_step=spec.step,
        max_iter=int(spec.steps),
        num_random_init=1 if spec.random_init else 0,
        batch_size=batch_size,
        verbose=False,
    )


PGD = AttackFamily(
    name="pgd",
    summary="Projected gradient descent (Madry et al. 2018): signed-gradient steps projected onto the eps-ball, "
    "from a random start.",
    steps=40,
    step_factor=0.25,
    random_init=True,
    traits=frozenset({Trait.ITERATIVE}),
    norms=(Norm.LINF, Norm.L2),
    art_attack=build,
    loss=cross_entropy,
)
