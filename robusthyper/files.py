"""Atomic file writes: a reader (or a run killed halfway) never sees half a file; and the one check that an
output folder is writable, made before long work so that it fails at once rather than at the end.

Each file is written under a temporary name beside its destination, then renamed over it (`os.replace` is
atomic within a folder); a failed write leaves the destination as it was and removes the temporary file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from robusthyper.errors import UserError


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block ends without error.

    Readable by all (0644), as a plain `open` would leave it (mkstemp's 0600 would hide reports from others).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path | str, payload: bytes) -> Path:
    """Write `payload` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def ensure_writable(folder: Path, hint: str) -> Path:
    """Create `folder` if needed and prove it writable with a temporary file (permissions alone do not tell:
    read-only mounts, full disks, root), or raise a one-line `UserError` that ends with `hint`, the fix."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(f"'{folder}' is not writable ({reason}); {hint}") from None
    return folder
