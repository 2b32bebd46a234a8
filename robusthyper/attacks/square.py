"""Square attack (Andriushchenko, Croce, Flammarion, Hein 2020, "Square attack: a query-efficient black-box
adversarial attack via random search").

Threat model: Linf or L2 ball of radius eps around x, inputs in [0, 1]; only the model's outputs are used.
Gradient-free: random square-shaped updates at the corners of the eps-ball, kept when the margin loss of the
prediction falls; `steps` is the number of queries, `p_init` 0.8 as in the paper. It sees the ensemble only
through `predict` (log p̄ over K_attack fresh samples per query), so it is a check against gradient masking:
a white-box attack that does worse than Square is broken. ART draws its squares from numpy's global RNG.

Arguments (`AttackSpec`): eps; steps = 1000 queries; no step size. Shapes: x `[B, C, H, W]` in [0, 1],
y `[B]` index labels -> x_adv like x.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robusthyper.attacks.base import ArtAttack, ArtEstimator, AttackFamily, Norm, Trait, cross_entropy

if TYPE_CHECKING:
    from robusthyper.attacks.spec import AttackSpec


def build(estimator: ArtEstimator, spec: AttackSpec, batch_size: int) -> ArtAttack:
    import numpy as np
    from art.attacks.evasion import SquareAttack

    return SquareAttack(
        estimator,
        norm=np.inf if spec.norm is Norm.LINF else 2,
        eps=float(spec.eps),
        max_iter=int(spec.steps),
        p_init=0.8,
        nb_restarts=1,
        batch_size=batch_size,
        verbose=False,
    )


SQUARE = AttackFamily(
    name="square",
    summary="Square attack (Andriushchenko et al. 2020): gradient-free random search; a gradient-masking check.",
    steps=1000,
    step_factor=None,
    random_init=True,
    traits=frozenset({Trait.GRADIENT_FREE}),
    norms=(Norm.LINF, Norm.L2),
    art_attack=build,
    loss=cross_entropy,  # carried by the estimator; Square itself uses only `predict`
)
