"""A connection lock for one machine: ``flock`` on ``<directory>/<connection>.lock``.

``flock`` locks belong to an open file description, so the lock excludes other processes and
other threads of the same process alike (each ``hold`` opens the file anew), and the kernel drops
it when the holder dies, however it dies: no stale lock files, no expiry to tune. It does not
reach across machines (nor reliably across NFS): in Azure use the blob lease lock.

The lock files stay in place (removing one would race with a process that just opened it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
from pathlib import Path

from shared.clock import Clock, SystemClock
from shared.locks.base import LockHold, LockTimeout
from shared.stores.base import validate_connection_name

_FIRST_POLL = 0.005
_MAX_POLL = 0.1


class FileLock:
    """``ConnectionLock`` over ``flock`` (see the module docstring).

    ``clock`` measures the timeout and paces the polling (real time by default).
    """

    def __init__(self, directory: Path | str, *, clock: Clock | None = None) -> None:
        self.directory = Path(directory)
        self._clock = clock or SystemClock()

    def path_for(self, connection: str) -> Path:
        return self.directory / f"{validate_connection_name(connection)}.lock"

    def hold(self, connection: str, *, timeout: float) -> FileLockHold:
        return FileLockHold(self, connection, timeout)


class FileLockHold(LockHold):
    def __init__(self, lock: FileLock, connection: str, timeout: float) -> None:
        super().__init__(connection)
        self._lock = lock
        self._path = lock.path_for(connection)
        self._timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError("this lock hold is already entered")
        clock = self._lock._clock
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = clock.now() + self._timeout
        poll = _FIRST_POLL
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    remaining = deadline - clock.now()
                    if remaining <= 0:
                        raise LockTimeout(self.connection, self._timeout) from None
                    clock.sleep(min(remaining, random.uniform(poll / 2, poll)))  # noqa: S311
                    poll = min(poll * 2, _MAX_POLL)
                    continue
                break
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
