"""Single-use nonces (the OAuth ``state``), claimed at most once across every process.

``claim(nonce, expires_at)`` answers True exactly once per nonce: the first caller wins, every
replay (same process or another instance) gets False. The stores make the claim atomic in the
storage itself (an exclusive ``link()`` of a complete file, which fails like ``O_CREAT | O_EXCL``
when the name exists; a blob upload with ``If-None-Match: *``), so no lock is needed.

A nonce whose ``expires_at`` has passed is refused (False) without being recorded: the stores keep a
claimed nonce only until its expiry and then prune it, so accepting a late first claim could let a
replay in after the pruning. Callers still check the state's own signature and expiry first.
Pruning is cheap: at most once per ``prune_interval`` per process, and it removes only entries whose
recorded expiry has passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from shared.clock import Clock, SystemClock
from shared.errors import ExactSyncError
from shared.settings import Settings
from shared.stores.local_file import ensure_private_directory

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

log = logging.getLogger(__name__)

DEFAULT_PRUNE_INTERVAL = 3600.0
NONCE_PREFIX = "nonces/"
_ABANDONED_AFTER = 3600.0


class NonceStoreError(ExactSyncError):
    """The nonce store could not be read or written; the claim's outcome is unknown (treat as refused)."""


class NonceStore(Protocol):
    def claim(self, nonce: str, expires_at: float) -> bool:
        """True the first time ``nonce`` is claimed (and it has not expired); False ever after."""
        ...


def _key(nonce: str) -> str:
    """A fixed-length, path-safe name; the nonce itself is never stored or logged."""
    if not nonce:
        raise ValueError("empty nonce")
    return hashlib.sha256(nonce.encode("utf-8")).hexdigest()


class _ClaimStore(ABC):
    """The rules both stores share: an expired nonce is refused unrecorded, expired entries are
    pruned at most once per ``prune_interval``, and ``_record`` makes the claim atomic."""

    def __init__(self, *, clock: Clock | None, prune_interval: float) -> None:
        self._clock = clock or SystemClock()
        self._prune_interval = prune_interval
        self._next_prune = 0.0
        self._prune_guard = threading.Lock()

    def claim(self, nonce: str, expires_at: float) -> bool:
        now = self._clock.now()
        if expires_at <= now:
            return False
        if self._prune_due(now):
            self.prune(now)
        return self._record(_key(nonce), expires_at)

    def prune(self, now: float | None = None) -> int:
        """Remove nonces whose expiry has passed; returns how many."""
        return self._prune(self._clock.now() if now is None else now)

    def _prune_due(self, now: float) -> bool:
        with self._prune_guard:
            if now < self._next_prune:
                return False
            self._next_prune = now + self._prune_interval
            return True

    @abstractmethod
    def _record(self, key: str, expires_at: float) -> bool:
        """Record ``key`` unless it exists: True exactly once per key."""

    @abstractmethod
    def _prune(self, now: float) -> int:
        """Remove the entries expired at ``now``; returns how many."""


class FileNonceStore(_ClaimStore):
    """Nonces as files ``<directory>/<sha256(nonce)>`` holding their expiry (also their mtime, so
    pruning can skip live entries by ``stat`` alone)."""

    def __init__(
        self,
        directory: Path | str,
        *,
        clock: Clock | None = None,
        prune_interval: float = DEFAULT_PRUNE_INTERVAL,
    ) -> None:
        super().__init__(clock=clock, prune_interval=prune_interval)
        self.directory = Path(directory)

    def _record(self, key: str, expires_at: float) -> bool:
        path = self.directory / key
        try:
            ensure_private_directory(self.directory)
            # Write the complete entry (expiry as content and as mtime) under a private name, then
            # link it into place: link() fails if the name exists, exactly like O_CREAT|O_EXCL, but
            # the entry never exists half-written, so a concurrent prune cannot mistake it for junk.
            tmp = self.directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, repr(float(expires_at)).encode("ascii"))
                os.utime(fd, (expires_at, expires_at))
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        except OSError as exc:
            raise NonceStoreError(f"cannot record a nonce in {self.directory}: {exc.strerror}") from None
        return True

    def _prune(self, now: float) -> int:
        removed = 0
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.name.endswith(".tmp"):
                    # Left by a claim that died between writing and linking (real-time age).
                    if time.time() - entry.stat().st_ctime > _ABANDONED_AFTER:
                        os.unlink(entry.path)
                    continue
                if len(entry.name) != 64 or entry.stat().st_mtime >= now:
                    continue
                expiry = _read_expiry(Path(entry.path))  # the content confirms what mtime says
                if expiry is not None and expiry >= now:
                    continue
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("pruning nonce file %s: %s", entry.name, exc.strerror)
        return removed


def _read_expiry(path: Path) -> float | None:
    try:
        return float(path.read_text("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None


class BlobNonceStore(_ClaimStore):
    """Nonces as blobs ``nonces/<sha256(nonce)>`` with the expiry in their metadata.

    The upload uses ``overwrite=False`` (``If-None-Match: *``): the service lets exactly one
    upload of a name succeed; the others get 409 ``BlobAlreadyExists``. Should an upload reach the
    service but its answer be lost, the SDK's retry gets the 409 and the claim answers False: a
    rare refusal of a genuine state (the person starts again), never an accepted replay.
    """

    def __init__(
        self,
        container: ContainerClient,
        *,
        clock: Clock | None = None,
        prune_interval: float = DEFAULT_PRUNE_INTERVAL,
    ) -> None:
        super().__init__(clock=clock, prune_interval=prune_interval)
        self.container = container

    def _record(self, key: str, expires_at: float) -> bool:
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

        name = NONCE_PREFIX + key
        metadata = {"expires_at": repr(float(expires_at))}
        try:
            try:
                self.container.upload_blob(name, b"", overwrite=False, metadata=metadata)
            except ResourceNotFoundError:  # the container does not exist yet
                with contextlib.suppress(ResourceExistsError):
                    self.container.create_container()
                self.container.upload_blob(name, b"", overwrite=False, metadata=metadata)
        except ResourceExistsError:
            return False
        except AzureError as exc:
            raise NonceStoreError(f"cannot record a nonce in blob storage ({type(exc).__name__})") from None
        return True

    def _prune(self, now: float) -> int:
        """Failures only log: a nonce left behind is pruned by a later run."""
        from azure.core.exceptions import AzureError

        removed = 0
        try:
            for blob in self.container.list_blobs(name_starts_with=NONCE_PREFIX, include=["metadata"]):
                try:
                    expiry = float((blob.metadata or {}).get("expires_at", "inf"))
                except ValueError:
                    continue
                if expiry < now:
                    with contextlib.suppress(AzureError):
                        self.container.delete_blob(blob.name)
                        removed += 1
        except AzureError as exc:
            log.warning("pruning nonces: %s", type(exc).__name__)
        return removed


def make_nonce_store(settings: Settings, clock: Clock | None = None) -> NonceStore:
    """Blob nonces in the lock container when Azure Storage is configured, else files in home."""
    if settings.uses_azure_storage:
        from shared.azure_storage import container_client

        return BlobNonceStore(container_client(settings, settings.lock_container), clock=clock)
    return FileNonceStore(settings.home / "nonces", clock=clock)
