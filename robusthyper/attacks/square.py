"""Square attack (Andriushchenko, Croce, Flammarion, Hein 2020, "Square attack: a query-efficient black-box
adversarial attack via random search").

Gradient-free: random square-shaped updates at the corners of the eps-ball, kept when the margin loss of the
prediction falls; `steps` is the number of queries, `p_init` 0.8 as in the paper. It sees the ensemble only
through `predict` (log p̄ over K_attack fresh samples per query), so it is a check against gradient masking:
a white-box attack that does worse than Square is broken. ART draws its squares from numpy's global RNG.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robusthyper.attacks.spec import AttackSpec, Norm


def build(estimator: Any, spec: AttackSpec, batch_size: int) -> Any:
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
