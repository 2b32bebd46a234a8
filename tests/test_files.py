"""Atomic writes: the destination is either the old file or the whole new one, never half of it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from robusthyper.errors import UserError
from robusthyper.files import atomic_path, ensure_writable, write_atomic


def test_write_atomic_replaces_the_file_readable_by_all(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    assert write_atomic(target, b"new") == target
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left behind


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="killed"), atomic_path(target) as tmp:
        tmp.write_text("half of the ne")
        raise RuntimeError("killed halfway")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_ensure_writable_creates_the_folder_and_leaves_nothing_in_it(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    assert ensure_writable(folder, "pass --out DIR") == folder
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_an_unwritable_folder_is_one_line_naming_it_and_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError) as err:
        ensure_writable(blocker / "sub", "pass --out DIR")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"'{blocker / 'sub'}' is not writable (")
    assert message.endswith("; pass --out DIR")
