"""What every settings table shares: strict pydantic models, one-line validation errors, and TOML files
looked up by name in a data folder (`defenses/` for recipes, `attacks/` for attack presets): the user's
./<folder> first, then the built-in files shipped in the package (`builtin_dir`).

It imports nothing of robusthyper but `errors`, so recipes, posteriors, attack specs and gate policies can all
build on it without importing each other.
"""

from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from robusthyper.errors import ConfigError, UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 has no tomllib; tomli is the same parser (a dependency there)
    import tomli as tomllib


class StrictModel(BaseModel):
    """Base of every settings table: unknown keys are errors, values are not coerced, objects are frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line: where, which key, what is wrong, and the value given."""
    first = err.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{loc}'; remove it or fix its spelling"
    if first["type"] == "missing":
        return f"{source}: required key '{loc}' is missing; add it"
    if first["type"] == "value_error":
        return f"{source}: [{loc}] {msg.removeprefix('Value error, ')}"
    given = first.get("input")
    more = f" ({len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: key '{loc}' = {given!r} is invalid: {msg}{more}"


def builtin_dir(dirname: str) -> Path:
    """The built-in TOML files of a data folder (defenses/ or attacks/). The top-level folders are their one
    source: a wheel or sdist build maps them into the package as robusthyper/_data/<dirname>/ (pyproject.toml),
    so an installed copy finds them there; a checkout (editable install, or PYTHONPATH) has no _data/ and reads
    the folder beside the package. Both are looked up from the robusthyper actually imported, never another."""
    package = Path(str(importlib.resources.files("robusthyper")))
    installed = package / "_data" / dirname
    return installed if installed.is_dir() else package.parent / dirname


def search_dirs(dirname: str) -> list[Path]:
    """Where names of TOML files in a data folder resolve: ./<dirname> first (the user's own, which wins),
    then the built-in ones (`builtin_dir`)."""
    return list(dict.fromkeys(d.resolve() for d in (Path.cwd() / dirname, builtin_dir(dirname))))


def available_tomls(dirname: str) -> list[str]:
    return sorted({p.stem for d in search_dirs(dirname) if d.is_dir() for p in d.glob("*.toml")})


def find_toml(ref: str, dirname: str, what: str) -> Path:
    """A path to a TOML file, or a name looked up in `search_dirs(dirname)`; `what` names it in errors."""
    as_path = Path(ref)
    if as_path.suffix == ".toml" or as_path.parent != Path("."):
        if not as_path.is_file():
            raise UserError(f"{what} file '{ref}' does not exist; check the path")
        return as_path
    for directory in search_dirs(dirname):
        candidate = directory / f"{ref}.toml"
        if candidate.is_file():
            return candidate
    known = ", ".join(available_tomls(dirname)) or "none found"
    raise UserError(f"unknown {what} '{ref}'; known {what}s: {known} (or pass a path to a .toml)")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; malformed or unreadable files are one-line `ConfigError`s."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: malformed TOML ({err}); fix the syntax") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({err})") from None
