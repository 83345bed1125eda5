"""An exclusive lock file holding its owner's pid: one owner per data dir.

`up` holds DATA_DIR/run/up.lock while it runs; the billing service (or an
offline billing command) holds DATA_DIR/run/billing.lock while it writes the
ledger.  flock, not a pid file: the kernel releases it when the owner dies,
however it dies, so there are no stale locks.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Self


class LockHeld(Exception):
    def __init__(self, path: Path, pid: int | None):
        super().__init__(f"{path} is locked by pid {pid}")
        self.path, self.pid = path, pid


class PidLock:
    """An exclusive flock on ``path`` holding the owner's pid."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> Self:
        """Take the lock or raise ``LockHeld`` naming the holder's pid (None if not written yet)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)    # O_CLOEXEC: children don't hold it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise LockHeld(self.path, int(owner) if owner.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)                     # closing drops the flock

    def held_elsewhere(self) -> bool:
        """True while another process holds the lock."""
        try:
            self.acquire()
        except LockHeld:
            return True
        self.release()
        return False

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
