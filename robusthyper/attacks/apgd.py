"""APGD-CE and APGD-DLR (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks").

PGD with momentum and a per-example step size that halves when progress stalls (checkpoints at fixed fractions
of `steps`), starting at 2 eps. APGD-CE maximises cross-entropy; APGD-DLR the difference-of-logits ratio, which
is invariant to shifting and rescaling the logits. Both get the EOT ensemble: given `loss_type`, ART rebuilds a
plain estimator around `estimator.model` and drops our `mean-loss` override, so the estimator is built here with
the loss already set and ART gets `loss_type=None` (`robusthyper.ensemble`). DLR on log p̄ equals DLR on any
logits of the same model average (shift invariance).
"""

from __future__ import annotations

from typing import Any

from robusthyper.attacks.spec import AttackSpec, Norm


def build(estimator: Any, spec: AttackSpec, batch_size: int) -> Any:
    from art.attacks.evasion import AutoProjectedGradientDescent

    return AutoProjectedGradientDescent(
        estimator,
        norm="inf" if spec.norm is Norm.LINF else 2,
        eps=float(spec.eps),
        eps_step=float(spec.step_size or 2 * spec.eps),
        max_iter=int(spec.steps),
        targeted=False,
        nb_random_init=1,
        batch_size=batch_size,
        loss_type=None,
        verbose=False,
    )
