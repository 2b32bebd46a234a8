"""PGD (Madry, Makelov, Schmidt, Tsipras, Vladu 2018, "Towards deep learning models resistant to adversarial
attacks").

`steps` iterations of x <- Proj_{B(x0, eps) ∩ [0,1]}(x + step_size * sign(grad)) (Linf; the normalised gradient
for L2), from a uniform random point in the ball when `random_init` (ART draws it from numpy's global RNG:
the evaluation seeds numpy). ART's `ProjectedGradientDescentPyTorch` keeps tensors on the device and calls the
estimator's `loss_gradient` every step, so each step sees K_attack fresh posterior samples (EOT). Returns the
final iterate; restarts are run by `robusthyper.evaluate`, which keeps the worst case per example.
"""

from __future__ import annotations

from typing import Any

from robusthyper.attacks.spec import AttackSpec, Norm


def build(estimator: Any, spec: AttackSpec, batch_size: int) -> Any:
    from art.attacks.evasion import ProjectedGradientDescent

    return ProjectedGradientDescent(
        estimator,
        norm="inf" if spec.norm is Norm.LINF else 2,
        eps=float(spec.eps),
        eps_step=float(spec.step_size or spec.eps / 4),
        max_iter=int(spec.steps),
        num_random_init=1 if spec.random_init else 0,
        batch_size=batch_size,
        verbose=False,
    )
