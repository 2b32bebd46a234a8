"""One driver per run folder: a lock file that names its holder.

Two drivers writing one run folder would both compute every missing cell (the records stay consistent, the
work is done twice). `RunLock` makes the second one stop at once with one line naming the holder (pid, host,
since when). The lock is `<run>/.lock`, created exclusively (`O_EXCL`) and removed when the run ends, however it
ends. A lock left by a driver killed with -9 is stale: on the same host its pid no longer runs, and the next
driver takes it over; a lock from another host cannot be checked from here, so it is reported, with how to
remove it.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from robusthyper.errors import UserError

LOCK = ".lock"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class RunLock:
    """`with RunLock(run_dir, command):` holds the run folder's lock for the block."""

    def __init__(self, run_dir: Path, command: str = "sweep") -> None:
        self.path = Path(run_dir) / LOCK
        self.command = command
        self.held = False

    def holder(self) -> dict[str, Any] | None:
        """The lock's contents, or None when there is no lock (an unreadable one counts as held)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            found = json.loads(text)
        except json.JSONDecodeError:
            return {}
        return found if isinstance(found, dict) else {}

    def stale(self, holder: dict[str, Any]) -> bool:
        """A lock whose holder ran on this host and no longer runs."""
        pid = holder.get("pid")
        return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _running(pid)

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
        for _ in range(3):  # a stale lock is removed and the exclusive create retried
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue  # released in between
                if self.stale(holder):
                    self.path.unlink(missing_ok=True)
                    continue
                who = (f"pid {holder.get('pid')} on host {holder.get('host')} ({holder.get('command')}, since "
                       f"{holder.get('since')})") if holder else "an unreadable lock"  # fmt: skip
                raise UserError(
                    f"run folder '{self.path.parent}' is being written by {who}; wait for it to finish, or delete "
                    f"'{self.path}' if that process is gone"
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(me, out)
            self.held = True
            return
        raise UserError(f"cannot take the lock '{self.path}' (it keeps changing); try again")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:  # fmt: skip
        self.release()
