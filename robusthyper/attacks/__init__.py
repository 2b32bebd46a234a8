"""Attacks: the registry of self-describing attack families (`FAMILIES`), and `build_attack`.

Each family's file declares an `AttackFamily` (name, summary, defaults, traits, norms, builder: see
`robusthyper.attacks.base`); one `register` line in `registry.py` adds it. `AttackSpec` defaults and validation, the
sanity checks (`robusthyper.sanity`), `robusthyper attack --help` and the README's attack table
(`robusthyper attacks`) all read the registry, so adding an attack is one new file plus one line here.

`build_attack(posterior, spec, ...)` wraps a posterior in a `StochasticEnsemble` (K_attack samples, its own
generator) and returns the family's `Attack`: `generate(x, y) -> x_adv` on tensors.

Importing this package is cheap (no torch, numpy, pydantic or ART): `AttackSpec`, `make_spec`, the presets and
the other spec helpers are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from robusthyper.attacks.base import ArtAdapter, ArtAttack, ArtEstimator, Attack, AttackFamily, Norm, Trait
from robusthyper.attacks.registry import (
    FAMILIES,
    build_attack,
    families_with,
    family,
    family_of_label,
    help_lines,
    markdown_table,
    register,
    registered,
    unregister,
)

if TYPE_CHECKING:
    from robusthyper.attacks.presets import available_presets, find_preset, load_preset
    from robusthyper.attacks.spec import AttackSpec, applicable, expand, make_spec, parse_eps

_LAZY = {
    "AttackSpec": "robusthyper.attacks.spec",
    "applicable": "robusthyper.attacks.spec",
    "expand": "robusthyper.attacks.spec",
    "make_spec": "robusthyper.attacks.spec",
    "parse_eps": "robusthyper.attacks.spec",
    "available_presets": "robusthyper.attacks.presets",
    "find_preset": "robusthyper.attacks.presets",
    "load_preset": "robusthyper.attacks.presets",
}


def __getattr__(name: str) -> Any:
    """The spec and preset helpers, imported on first use (they need pydantic and torch)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FAMILIES",
    "ArtAdapter",
    "ArtAttack",
    "ArtEstimator",
    "Attack",
    "AttackFamily",
    "AttackSpec",
    "Norm",
    "Trait",
    "applicable",
    "available_presets",
    "build_attack",
    "expand",
    "families_with",
    "family",
    "family_of_label",
    "find_preset",
    "help_lines",
    "load_preset",
    "make_spec",
    "markdown_table",
    "parse_eps",
    "register",
    "registered",
    "unregister",
]
