"""Pick the connection lock the settings ask for: a blob lease with Azure Storage, else ``flock``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.clock import Clock
from shared.locks.base import ConnectionLock
from shared.settings import Settings

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

#: Storage client options for lock traffic: the SDK's default retry backs off 15 s and more, longer
#: than a renewal interval; the lock retries on its own, so keep the SDK's retries short.
LOCK_CLIENT_OPTIONS: dict[str, float] = {
    "retry_total": 2,
    "initial_backoff": 0.5,
    "increment_base": 2,
    "random_jitter_range": 0.5,
    "connection_timeout": 5,
    "read_timeout": 10,
}


def make_lock(settings: Settings, clock: Clock | None = None, *, lease_seconds: int = 30) -> ConnectionLock:
    """The configured ``ConnectionLock``; builds no storage client until the first ``hold``.

    ``clock`` measures acquire timeouts; leave it None (real time) unless the whole process runs
    on a simulated clock.
    """
    if settings.uses_azure_storage:
        from shared.azure_storage import container_client
        from shared.locks.blob_lease import BlobLeaseLock

        def build() -> ContainerClient:
            return container_client(settings, settings.lock_container, **LOCK_CLIENT_OPTIONS)

        return BlobLeaseLock(build, lease_seconds=lease_seconds, clock=clock)
    from shared.locks.file_lock import FileLock

    return FileLock(settings.home / "locks", clock=clock)
