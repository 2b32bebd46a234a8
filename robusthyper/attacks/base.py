"""What an attack family declares about itself, and the one adapter from ART attacks to robusthyper's `Attack`.

An `AttackFamily` is a frozen value: name, one-line summary, defaults (steps, step size as a multiple of eps,
random start), `Trait`s, the norms it supports, the protocol its rows belong to, extra spec defaults, and how to
build it. `AttackSpec` (defaults, validation, which command-line overrides apply), `robusthyper.sanity` (which
rows are compared with which), the `robusthyper attack --help` text and the README's attack table all read
these declarations from the registry (`robusthyper.attacks.FAMILIES`), so a new family is one file plus one
registry line.

Two kinds of builder:

- ART-backed (`art_attack` + `loss`): the registry wraps the posterior in a `StochasticEnsemble`, builds ART's
  estimator around it carrying `loss()` (on log p̄; per sample in EOT mean-loss mode), calls
  `art_attack(estimator, spec, batch_size)` and wraps the result in `ArtAdapter`.
- Own loop (`build`): `build(ensemble, spec, batch_size)` gets the `StochasticEnsemble` itself (K_attack
  samples per forward pass, its own generator); no ART estimator is built.

Either way the result is an `Attack`: `generate(x [B, ...], y [B]) -> x_adv [B, ...]`, tensors on the device.

Nothing here imports torch, numpy or ART at module level: `robusthyper --help` lists the families without them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor, nn

    from robusthyper.attacks.spec import AttackSpec
    from robusthyper.ensemble import StochasticEnsemble


class Norm(str, Enum):
    """Threat model: the norm bounding the perturbation."""

    LINF = "linf"
    """max_i |delta_i| <= eps (pixels in [0, 1], so eps <= 1)."""
    L2 = "l2"
    """||delta||_2 <= eps."""


class Trait(str, Enum):
    """What a family is, as the spec's validation and the sanity checks need to know it."""

    SINGLE_STEP = "single-step"
    """One step from x: steps is 1 and no random start (command-line steps, step size and random start do not
    apply); the baseline every iterative attack must beat (sanity: `iterative-weaker-than-fgsm`)."""
    ITERATIVE = "iterative"
    """Many gradient steps on the classification loss: expected to be at least as strong as a single step and
    to bring an undefended model near 0 at a large eps (sanity: `not-near-zero`)."""
    GRADIENT_FREE = "gradient-free"
    """Only queries the model's outputs: a check against masked gradients (sanity: `square-stronger`);
    restarts differ without a random start, since its search is random."""
    OWN_LOOP = "own-loop"
    """A torch loop of its own on the `StochasticEnsemble` (`AttackFamily.build`), not an ART attack."""
    PAPER_PROTOCOL = "paper-protocol"
    """A paper's own (weak) protocol, replayed for comparison: may leave [0, 1] (`clip = false`), never enters
    the worst case and is never checked by the sanity flags."""
    DETECTION_AWARE = "detection-aware"
    """Its objective also lowers an uncertainty score (`detection_weight`), so it may legitimately leave more
    accuracy than plain PGD: sanity does not compare its strength."""


STEPS_SUFFIX = re.compile(r"-\d+$")
"""The '-<steps>' that `AttackSpec.label` appends to a multi-step family's name ('pgd-40')."""
_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


@runtime_checkable
class Attack(Protocol):
    """What `robusthyper.attacks.build_attack` returns."""

    def generate(self, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for inputs `x` `[B, ...]` (on the device) and true index labels `y` `[B]`:
        a float tensor of `x`'s shape on `x`'s device."""
        ...


class ArtEstimator(Protocol):
    """The part of ART's classifier (`robusthyper.ensemble.art_classifier`) that ART's attacks call."""

    @property
    def nb_classes(self) -> int: ...

    def predict(self, x: np.ndarray, batch_size: int = 128, **kwargs: Any) -> np.ndarray: ...

    def loss_gradient(self, x: Any, y: Any, training_mode: bool = False, **kwargs: Any) -> Any: ...


class ArtAttack(Protocol):
    """An ART evasion attack: numpy in, numpy out."""

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray: ...


ArtBuilder = Callable[["ArtEstimator", "AttackSpec", int], "ArtAttack"]
"""(ART estimator, spec, batch size) -> ART attack."""
LoopBuilder = Callable[["StochasticEnsemble", "AttackSpec", int], "Attack"]
"""(ensemble with K_attack samples and its generator, spec, batch size) -> attack."""


class ArtAdapter:
    """An ART attack as an `Attack`: tensors in and out, the true labels passed one-hot (ART's
    `loss_gradient` refuses index labels of shape [B]).

    Attributes: `art` (the ART attack), `estimator` (ART's classifier), `ensemble` (the `StochasticEnsemble`
    inside it, e.g. to set its row limits), `num_classes`.
    """

    def __init__(
        self, art: ArtAttack, estimator: ArtEstimator, ensemble: StochasticEnsemble, num_classes: int
    ) -> None:
        self.art = art
        self.estimator = estimator
        self.ensemble = ensemble
        self.num_classes = num_classes

    def generate(self, x: Tensor, y: Tensor) -> Tensor:
        import numpy as np
        import torch

        onehot = np.eye(self.num_classes, dtype=np.float32)[y.cpu().numpy()]  # true labels, never predictions
        return torch.from_numpy(self.art.generate(x.cpu().numpy(), onehot)).to(x.device)


def cross_entropy() -> nn.Module:
    """CE on the ensemble's log p̄ = NLL of the model average (per sample in EOT mean-loss mode)."""
    from torch import nn

    return nn.CrossEntropyLoss()


@dataclass(frozen=True)
class AttackFamily:
    """One attack family's declaration (module docstring). Checked when built: a contradictory declaration
    (a single step with a random start, an own loop with an ART builder, ...) is a `ValueError`.

    Args:
        name: what users type (`--attack`, `attack = ...`); lower case words joined by '-', never ending in
            '-<digits>' (labels append '-<steps>' to it).
        summary: one line, the paper and what it does (help text and the README's table).
        steps: default iterations (queries for a gradient-free family); 1 for a single step.
        step_factor: default step size as a multiple of eps; None: the family takes no step size.
        random_init: default random start in the eps-ball.
        traits: the family's `Trait`s.
        norms: the threat models it supports; the first is not a default (the spec's norm is).
        protocol: 'strong', or the paper protocol's name ('paper-bhn') for `Trait.PAPER_PROTOCOL`.
        spec_defaults: further `AttackSpec` defaults (e.g. `{"clip": False, "k_attack": 1}`); `samples_averaged`
            is accepted only by the families whose `spec_defaults` name it.
        art_attack, loss: an ART-backed family's builder and the loss its estimator carries.
        build: an own-loop family's builder.
    """

    name: str
    summary: str
    steps: int
    step_factor: float | None
    random_init: bool
    traits: frozenset[Trait]
    norms: tuple[Norm, ...]
    protocol: str = "strong"
    spec_defaults: Mapping[str, Any] = field(default_factory=dict)
    art_attack: ArtBuilder | None = None
    loss: Callable[[], nn.Module] | None = None
    build: LoopBuilder | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "traits", frozenset(Trait(t) for t in self.traits))
        object.__setattr__(self, "norms", tuple(Norm(n) for n in self.norms))
        object.__setattr__(self, "spec_defaults", MappingProxyType(dict(self.spec_defaults)))
        problem = self._problem()
        if problem:
            raise ValueError(f"attack family '{self.name}': {problem}")

    def _problem(self) -> str | None:
        if not _NAME.fullmatch(self.name) or STEPS_SUFFIX.search(self.name):
            return "a name is lower-case words joined by '-', not ending in '-<digits>'"
        if not self.summary.strip() or "\n" in self.summary:
            return "the summary is one non-empty line"
        if self.steps < 1:
            return f"steps={self.steps} must be positive"
        if self.step_factor is not None and not self.step_factor > 0:
            return f"step_factor={self.step_factor} must be positive (or None: no step size)"
        if not self.norms:
            return "declare at least one norm"
        if self.is_single_step and (self.steps != 1 or self.random_init or Trait.ITERATIVE in self.traits):
            return "a single-step family takes 1 step, no random start, and is not iterative"
        if (self.protocol != "strong") != (Trait.PAPER_PROTOCOL in self.traits):
            return "a paper protocol names its protocol (e.g. 'paper-bhn'); every other family is 'strong'"
        if (self.build is None) == (self.art_attack is None):
            return "give either art_attack (with loss) or build (an own loop), not both or neither"
        if (self.build is not None) != (Trait.OWN_LOOP in self.traits):
            return "Trait.OWN_LOOP goes with `build`, and only with it"
        if self.art_attack is not None and self.loss is None:
            return "an ART-backed family declares the loss its estimator carries (e.g. cross_entropy)"
        return None

    @property
    def is_single_step(self) -> bool:
        return Trait.SINGLE_STEP in self.traits

    def has(self, *traits: Trait) -> bool:
        """Whether the family has every one of `traits`."""
        return all(t in self.traits for t in traits)

    def attack(
        self,
        ensemble: StochasticEnsemble,
        spec: AttackSpec,
        input_shape: tuple[int, ...],
        num_classes: int,
        batch_size: int,
    ) -> Attack:
        """This family's attack for `spec` against `ensemble` (see the module docstring)."""
        if self.build is not None:
            return self.build(ensemble, spec, batch_size)
        from robusthyper.ensemble import art_classifier

        assert self.art_attack is not None and self.loss is not None  # __post_init__
        estimator = art_classifier(ensemble, spec.eot, self.loss(), input_shape, num_classes)
        return ArtAdapter(self.art_attack(estimator, spec, batch_size), estimator, ensemble, num_classes)

    def default_step(self) -> str:
        """The default step size in words ('eps/4', '2 eps', '-')."""
        factor = self.step_factor
        if factor is None:
            return "-"
        if factor == 1:
            return "eps"
        if factor < 1 and float(1 / factor).is_integer():
            return f"eps/{int(1 / factor)}"
        return f"{factor:g} eps"


__all__ = [
    "ArtAdapter",
    "ArtAttack",
    "ArtEstimator",
    "Attack",
    "AttackFamily",
    "Norm",
    "Trait",
    "cross_entropy",
]
