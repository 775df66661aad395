"""One lock per connection, shared by every process that may refresh its tokens.

Every path that may refresh (API calls, the rotation timer, the consent callback, the CLI) takes
the same lock before it re-reads the store and decides: that is what stops two processes from
presenting the same refresh token. ``hold`` returns a ``LockHold``: a context manager that takes
the lock on enter (waiting up to ``timeout`` seconds, then ``LockTimeout``) and releases it on exit.
A lease-based lock can be LOST while held (renewal failed for longer than the lease); the holder
learns it from ``hold.lost`` or ``hold.check()`` and must not write tokens after that.
"""

from __future__ import annotations

from abc import abstractmethod
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Protocol

from shared.errors import ExactSyncError


class LockTimeout(ExactSyncError):
    """The connection's lock stayed taken for the whole timeout."""

    def __init__(self, connection: str, timeout: float, *, detail: str = "") -> None:
        self.connection = connection
        self.timeout = timeout
        super().__init__(
            f"could not take the lock of connection {connection!r} within {timeout:g} s "
            f"(another process holds it{': ' + detail if detail else ''})"
        )


class LockLost(ExactSyncError):
    """The lock was lost while held (its lease expired or was broken): stop before writing."""

    def __init__(self, connection: str, detail: str) -> None:
        self.connection = connection
        super().__init__(f"lost the lock of connection {connection!r}: {detail}")


class LockHold(AbstractContextManager[None]):
    """Base of what ``ConnectionLock.hold`` returns: enter takes the lock, exit releases it."""

    def __init__(self, connection: str) -> None:
        self.connection = connection
        self._lost_reason: str | None = None

    @property
    def lost(self) -> bool:
        """True once the lock is known to be lost while held (sticky)."""
        return self._lost_reason is not None

    @property
    def lost_reason(self) -> str | None:
        return self._lost_reason

    def mark_lost(self, reason: str) -> None:
        if self._lost_reason is None:
            self._lost_reason = reason

    def check(self) -> None:
        """Raise ``LockLost`` if the lock was lost; call it before writing under the lock."""
        if self._lost_reason is not None:
            raise LockLost(self.connection, self._lost_reason)

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    @abstractmethod
    def acquire(self) -> None:
        """Take the lock or raise ``LockTimeout``."""

    @abstractmethod
    def release(self) -> None:
        """Give the lock back (idempotent)."""


class ConnectionLock(Protocol):
    def hold(self, connection: str, *, timeout: float) -> AbstractContextManager[None]:
        """Take the connection's lock for a ``with`` block; ``LockTimeout`` after ``timeout`` s."""
        ...
