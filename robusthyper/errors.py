"""User-facing errors.

A `UserError` is a mistake the user can fix (a bad name, a missing file, a malformed TOML). The CLI prints
its one-line message and exits with code 2 instead of a traceback; library callers can catch it.
"""

from __future__ import annotations


class UserError(Exception):
    """A fixable user mistake: the message names the bad value and the fix, on one line."""

    exit_code = 2


class DataMissingError(UserError):
    """A dataset is not where we would load it from."""


class CheckpointError(UserError):
    """A checkpoint is missing, truncated, corrupt, or from another architecture."""


class ConfigError(UserError):
    """A recipe or spec has an unknown key or a bad value."""
