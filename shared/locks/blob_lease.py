"""A connection lock across machines: a lease on the blob ``<container>/<connection>``.

Azure Storage grants at most one lease on a blob at a time, so every Function instance, timer and
CLI run that leases the connection's blob excludes all others. Lease timing (``lease_seconds``,
15-60 s as Azure allows; default 30):

- while held, a daemon thread renews the lease every ``lease_seconds / 3`` (default 10 s), so two
  renewals can fail in a row before the lease runs out; a refresh that waits 60 s on a slow token
  endpoint keeps its lease the whole time;
- a holder that dies (killed, scaled in, crashed) simply stops renewing: the service frees the lease
  at most ``lease_seconds`` after the last renewal, with no clean-up by anyone. Waiters therefore
  need a timeout longer than ``lease_seconds`` (plus the token call) to outlast a dead holder;
- if renewing fails for good (the lease was broken or expired and someone else may hold it now),
  the hold is marked ``lost`` and a warning is logged: the holder must check ``hold.lost`` (or call
  ``hold.check()``) before writing tokens, because another process may be refreshing.

Waiting for a held lease retries with jittered exponential backoff (50 ms up to 1 s) until the
timeout; the blob and its container are created on first use, idempotently (the identity needs
Storage Blob Data Contributor or Owner on the account).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.clock import Clock, SystemClock
from shared.locks.base import LockHold, LockTimeout
from shared.stores.base import validate_connection_name

if TYPE_CHECKING:
    from azure.storage.blob import BlobLeaseClient, ContainerClient

log = logging.getLogger(__name__)

MIN_LEASE_SECONDS = 15
MAX_LEASE_SECONDS = 60
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 1.0
#: after a failed (transient) renewal, try again this soon
_RENEW_RETRY = 1.0


class BlobLeaseLock:
    """``ConnectionLock`` over blob leases (see the module docstring).

    ``container`` is a ``ContainerClient`` or a function that builds one (called once, on first
    use, so building the lock imports no Azure SDK). ``clock`` measures the acquire timeout and
    paces its retries; lease renewal always runs on real time, as the service counts it.
    """

    def __init__(
        self,
        container: ContainerClient | Callable[[], ContainerClient],
        *,
        lease_seconds: int = 30,
        clock: Clock | None = None,
    ) -> None:
        if not MIN_LEASE_SECONDS <= lease_seconds <= MAX_LEASE_SECONDS:
            raise ValueError(f"lease_seconds must be {MIN_LEASE_SECONDS}-{MAX_LEASE_SECONDS} (Azure's rule)")
        self.lease_seconds = lease_seconds
        self._clock = clock or SystemClock()
        self._source = container
        self._container: ContainerClient | None = None
        self._guard = threading.Lock()

    @property
    def container(self) -> ContainerClient:
        with self._guard:
            if self._container is None:
                source = self._source
                self._container = source() if callable(source) else source
            return self._container

    def hold(self, connection: str, *, timeout: float) -> BlobLeaseHold:
        return BlobLeaseHold(self, validate_connection_name(connection), timeout)

    def ensure_blob(self, connection: str) -> None:
        """Create the container and the connection's (empty) blob if missing; idempotent."""
        from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

        container = self.container
        try:
            container.upload_blob(connection, b"", overwrite=False)
            return
        except ResourceNotFoundError:
            pass  # the container is missing
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):  # exists already (and may be leased right now)
                return
            raise
        with contextlib.suppress(ResourceExistsError):
            container.create_container()
        try:
            container.upload_blob(connection, b"", overwrite=False)
        except HttpResponseError as exc:
            if exc.status_code not in (409, 412):
                raise


class BlobLeaseHold(LockHold):
    def __init__(self, lock: BlobLeaseLock, connection: str, timeout: float) -> None:
        super().__init__(connection)
        self._lock = lock
        self._timeout = timeout
        self._lease: BlobLeaseClient | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        #: time.monotonic() just before the last successful acquire/renew request was sent
        self._last_renewed = 0.0

    @property
    def lost(self) -> bool:
        if super().lost:
            return True
        if self._lease is not None and time.monotonic() - self._last_renewed >= self._lock.lease_seconds:
            self.mark_lost(f"not renewed for {self._lock.lease_seconds} s: the lease has expired")
            return True
        return False

    def check(self) -> None:
        _ = self.lost  # evaluates the expiry rule
        super().check()

    def acquire(self) -> None:
        from azure.core.exceptions import AzureError, HttpResponseError

        if self._lease is not None:
            raise RuntimeError("this lock hold is already entered")
        lock = self._lock
        clock = lock._clock
        blob = lock.container.get_blob_client(self.connection)
        deadline = clock.now() + self._timeout
        backoff = _FIRST_BACKOFF
        created = False
        detail = "the lease is held by another process"
        # Propose our own lease id: if an acquire reaches the service but its answer is lost, the
        # retry with the same id gets the same lease instead of waiting for it to expire.
        proposed = str(uuid.uuid4())
        while True:
            started = time.monotonic()
            try:
                lease = blob.acquire_lease(lease_duration=lock.lease_seconds, lease_id=proposed)
            except HttpResponseError as exc:
                if exc.status_code == 404 and not created:
                    lock.ensure_blob(self.connection)
                    created = True
                    continue
                if exc.status_code == 409:  # LeaseAlreadyPresent: someone holds it
                    detail = "the lease is held by another process"
                else:
                    detail = f"storage answered {exc.status_code} {_code(exc)}".strip()
                    log.warning("taking the lock of %s: %s; retrying", self.connection, detail)
            except AzureError as exc:
                detail = f"storage unreachable ({type(exc).__name__})"
                log.warning("taking the lock of %s: %s; retrying", self.connection, detail)
            else:
                self._lease = lease
                self._last_renewed = started
                break
            remaining = deadline - clock.now()
            if remaining <= 0:
                raise LockTimeout(self.connection, self._timeout, detail=detail)
            clock.sleep(min(remaining, random.uniform(backoff / 2, backoff)))  # noqa: S311
            backoff = min(backoff * 2, _MAX_BACKOFF)
        self._stop.clear()
        self._renewer = threading.Thread(
            target=self._renew_loop, name=f"lease-renewer-{self.connection}", daemon=True
        )
        self._renewer.start()

    def _renew_loop(self) -> None:
        from azure.core.exceptions import AzureError, HttpResponseError

        lease = self._lease
        assert lease is not None
        seconds = self._lock.lease_seconds
        wait = seconds / 3
        while not self._stop.wait(wait):
            if self.lost:
                log.warning("lock of %s lost: %s", self.connection, self.lost_reason)
                return
            started = time.monotonic()
            try:
                lease.renew()
            except HttpResponseError as exc:
                if exc.status_code in (409, 412):  # the lease is gone or belongs to someone else
                    self.mark_lost(f"renewal refused ({exc.status_code} {_code(exc)})".strip())
                    log.warning("lock of %s lost: %s", self.connection, self.lost_reason)
                    return
                log.warning("renewing the lock of %s failed (%s); retrying", self.connection, exc.status_code)
                wait = _RENEW_RETRY
                continue
            except AzureError as exc:
                log.warning(
                    "renewing the lock of %s failed (%s); retrying", self.connection, type(exc).__name__
                )
                wait = _RENEW_RETRY
                continue
            self._last_renewed = started
            wait = seconds / 3

    def release(self) -> None:
        from azure.core.exceptions import AzureError

        lease, self._lease = self._lease, None
        if lease is None:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=15)
            self._renewer = None
        try:
            lease.release()
        except AzureError as exc:
            # Harmless: a lease we no longer own, or one that expires by itself within lease_seconds.
            log.info(
                "releasing the lock of %s: %s (it expires by itself)", self.connection, type(exc).__name__
            )


def _code(exc: Exception) -> str:
    """The storage error code (e.g. LeaseAlreadyPresent) the SDK attaches to its errors."""
    return str(getattr(exc, "error_code", None) or "")
