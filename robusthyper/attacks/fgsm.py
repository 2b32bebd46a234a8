"""FGSM (Goodfellow, Shlens, Szegedy 2015, "Explaining and harnessing adversarial examples").

x_adv = clip(x + eps * sign(grad_x L(x, y)), 0, 1) for Linf; eps * grad / ||grad||_2 for L2. One gradient of
the ensemble's EOT loss (K_attack samples). Kept as the papers' comparison: iterative attacks must beat it.
ART's `FastGradientMethod` calls `loss_gradient` once per batch with numpy arrays.
"""

from __future__ import annotations

from typing import Any

from robusthyper.attacks.spec import AttackSpec, Norm


def build(estimator: Any, spec: AttackSpec, batch_size: int) -> Any:
    from art.attacks.evasion import FastGradientMethod

    return FastGradientMethod(
        estimator,
        norm="inf" if spec.norm is Norm.LINF else 2,
        eps=float(spec.eps),
        eps_step=float(spec.step_size or spec.eps),
        num_random_init=0,
        batch_size=batch_size,
    )
