"""Attack presets and suites: `attacks/<name>.toml`, found in ./attacks (the user's own) and then in the
project's attacks/ folder, or given as a path.

A preset is either one attack as top-level keys, or a suite of `[[attacks]]` tables; `eps` may be a list (an
eps grid) and every key is an `AttackSpec` field. Unknown keys are errors. Example:

    description = "PGD-40 with EOT"
    attack = "pgd"
    norm = "linf"
    eps = [0.05, 0.1, "8/255"]
    steps = 40
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib

from robusthyper.attacks.spec import AttackSpec, applicable, expand
from robusthyper.errors import ConfigError, UserError

PRESET_DIRNAME = "attacks"


def preset_search_dirs() -> list[Path]:
    project = Path(__file__).resolve().parent.parent.parent / PRESET_DIRNAME
    return list(dict.fromkeys(d.resolve() for d in (Path.cwd() / PRESET_DIRNAME, project)))


def available_presets() -> list[str]:
    return sorted({p.stem for d in preset_search_dirs() if d.is_dir() for p in d.glob("*.toml")})


def is_preset_ref(ref: str) -> bool:
    """A path to a TOML file, or the name of a preset (not an attack name)."""
    return ref.endswith(".toml") or "/" in ref or ref in available_presets()


def find_preset(ref: str) -> Path:
    path = Path(ref)
    if path.suffix == ".toml" or path.parent != Path("."):
        if not path.is_file():
            raise UserError(f"attack preset '{ref}' does not exist; check the path")
        return path
    for directory in preset_search_dirs():
        if (directory / f"{ref}.toml").is_file():
            return directory / f"{ref}.toml"
    known = ", ".join(available_presets()) or "none found"
    raise UserError(f"unknown attack preset '{ref}'; known presets: {known}")


def load_preset(ref: str, overrides: dict[str, Any] | None = None) -> list[AttackSpec]:
    """The specs a preset describes (one per attack and eps), with `overrides` (CLI flags) applied."""
    path = find_preset(ref)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: malformed TOML ({err}); fix the syntax") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({err})") from None
    data.pop("description", None)
    tables = data.pop("attacks", None)
    if tables is None:
        tables = [data]
    elif data:
        raise ConfigError(
            f"{path}: keys {sorted(data)} outside [[attacks]] tables; put them inside each table"
        )
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: 'attacks' must be an array of tables ([[attacks]])")
    specs: list[AttackSpec] = []
    for i, table in enumerate(tables):
        source = f"{path}" if len(tables) == 1 else f"{path} [[attacks]] #{i + 1}"
        specs += expand({**table, **applicable(table.get("attack", "pgd"), overrides or {})}, source)
    return specs
