"""Attacks: an explicit registry from `AttackName` to a builder of the ART attack, plus the loss the ART
estimator must carry for it. One small file per attack family; add one by adding a file and a line here.

`build_attack(posterior, spec, ...)` wraps a posterior in a `StochasticEnsemble` (K_attack samples, its own
generator) and an ART estimator with the spec's EOT mode, and returns an object with ART's `generate(x, y)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robusthyper.attacks import adaptive, apgd, fgsm, paper, pgd, square
from robusthyper.attacks.presets import available_presets, find_preset, load_preset
from robusthyper.attacks.spec import AttackName, AttackSpec, Norm, expand, make_spec, parse_eps
from robusthyper.ensemble import DifferenceLogitsRatio, StochasticEnsemble, art_classifier
from robusthyper.posteriors.base import Posterior


@dataclass(frozen=True)
class AttackFamily:
    build: Callable[[Any, AttackSpec, int], Any]
    """(ART estimator, spec, batch size) -> ART attack."""
    loss: Callable[[], nn.Module]
    """The attack loss the estimator carries (on log p̄; per sample in mean-loss mode)."""


ATTACKS: dict[AttackName, AttackFamily] = {
    AttackName.FGSM: AttackFamily(fgsm.build, nn.CrossEntropyLoss),
    AttackName.PGD: AttackFamily(pgd.build, nn.CrossEntropyLoss),
    AttackName.APGD_CE: AttackFamily(apgd.build, nn.CrossEntropyLoss),
    AttackName.APGD_DLR: AttackFamily(apgd.build, DifferenceLogitsRatio),
    AttackName.SQUARE: AttackFamily(square.build, nn.CrossEntropyLoss),
    # Own torch loops on the estimator's ensemble (the ART loss is unused): attacks/adaptive.py, paper.py.
    AttackName.PGD_ADAPTIVE: AttackFamily(adaptive.build, nn.CrossEntropyLoss),
    AttackName.PAPER_BHN_FGSM: AttackFamily(paper.build, nn.CrossEntropyLoss),
    AttackName.PAPER_BBH_FGSM: AttackFamily(paper.build, nn.CrossEntropyLoss),
}


def build_attack(
    posterior: Posterior,
    spec: AttackSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
) -> Any:
    """The ART attack for `spec` against `posterior`'s model average (K = `spec.k_attack` per step).

    `generator` drives posterior sampling during the attack (default: seeded with `spec.seed`). Seed numpy
    before `generate`: ART's random starts and Square's squares come from its global RNG.
    """
    if spec.eps <= 0:
        raise ValueError("eps = 0 needs no attack: evaluate the clean inputs instead")
    device = posterior.device
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(spec.seed)
    ensemble = StochasticEnsemble(posterior, spec.k_attack, generator)
    family = ATTACKS[spec.attack]
    estimator = art_classifier(ensemble, spec.eot, family.loss(), input_shape, num_classes)
    return family.build(estimator, spec, batch_size)


__all__ = [
    "ATTACKS",
    "AttackFamily",
    "AttackName",
    "AttackSpec",
    "Norm",
    "available_presets",
    "build_attack",
    "expand",
    "find_preset",
    "load_preset",
    "make_spec",
    "parse_eps",
]
