"""Per-connection locks: a blob lease in Azure Storage, or ``flock`` on a local file."""

from shared.locks.base import ConnectionLock, LockHold, LockLost, LockTimeout
from shared.locks.factory import make_lock

__all__ = ["ConnectionLock", "LockHold", "LockLost", "LockTimeout", "make_lock"]
