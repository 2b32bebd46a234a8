"""The Bayesian Hypernetworks paper's own FGSM protocol (Krueger, Huang, Islam, Turner, Lacoste, Courville
2017, "Bayesian hypernetworks"; the authors' Theano code's default), replayed to show by how much it overstates
robustness (METHODS.md §1). Weak on purpose: never a robustness claim.

Threat model as the paper ran it: Linf ball of radius eps, *no* clipping to [0, 1].
x_adv = x + eps * sign(grad_x CE), the gradient from a single posterior sample (`k_attack = 1`; a larger
`k_attack` uses the model average of that many samples). The loop is in `robusthyper.attacks.paper`.

Arguments (`AttackSpec`): eps; k_attack = 1, clip = false (the paper's code; true clamps to [0, 1]); one step,
no random start. Shapes: x `[B, C, H, W]` in [0, 1], y `[B]` index labels -> x_adv like x (may leave [0, 1]).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robusthyper.attacks.base import Attack, AttackFamily, Norm, Trait

if TYPE_CHECKING:
    from robusthyper.attacks.spec import AttackSpec
    from robusthyper.ensemble import StochasticEnsemble


def build(ensemble: StochasticEnsemble, spec: AttackSpec, batch_size: int) -> Attack:
    from robusthyper.attacks.paper import PaperFgsm

    return PaperFgsm(ensemble, spec, batch_size)


PAPER_BHN_FGSM = AttackFamily(
    name="paper-bhn-fgsm",
    summary="BHN's own weak protocol (Krueger et al. 2017): FGSM from one posterior sample's gradient, "
    "no clipping to [0, 1].",
    steps=1,
    step_factor=1.0,
    random_init=False,
    traits=frozenset({Trait.SINGLE_STEP, Trait.PAPER_PROTOCOL, Trait.OWN_LOOP}),
    norms=(Norm.LINF,),
    protocol="paper-bhn",
    spec_defaults={"clip": False, "k_attack": 1},
    build=build,
)
