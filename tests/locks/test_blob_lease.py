"""BlobLeaseLock on Azurite with real OS processes: exclusion, renewal, a killed holder, a lost lease."""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobLeaseClient, ContainerClient

from shared.locks.base import LockLost, LockTimeout
from shared.locks.blob_lease import BlobLeaseLock
from tests.fixtures.azurite import AzuriteHandle
from tests.locks import workers

pytestmark = pytest.mark.azurite


def _container(azurite: AzuriteHandle, name: str) -> ContainerClient:
    return ContainerClient.from_connection_string(azurite.connection_string, name)


@pytest.fixture
def location(azurite: AzuriteHandle) -> dict[str, Any]:
    return {
        "connection_string": azurite.connection_string,
        "container": f"locks-{uuid.uuid4().hex[:12]}",  # created by the lock on first use
        "lease_seconds": 15,
    }


def test_creates_container_and_blob_then_excludes_and_releases(
    location: dict[str, Any], azurite: AzuriteHandle
) -> None:
    container = _container(azurite, location["container"])
    assert not container.exists()
    first = BlobLeaseLock(container, lease_seconds=15)
    second = BlobLeaseLock(lambda: _container(azurite, location["container"]), lease_seconds=15)

    with first.hold("acme-nl", timeout=5):
        assert container.get_blob_client("acme-nl").get_blob_properties().lease.state == "leased"
        started = time.monotonic()
        with pytest.raises(LockTimeout, match="acme-nl"), second.hold("acme-nl", timeout=0.5):
            pass
        assert time.monotonic() - started >= 0.5
        with second.hold("beta-be", timeout=5):  # another connection is another blob
            pass

    # Released on exit: the other instance gets it at once, and the blob is left for next time.
    started = time.monotonic()
    with second.hold("acme-nl", timeout=5):
        assert time.monotonic() - started < 1
    assert container.get_blob_client("acme-nl").get_blob_properties().lease.state == "available"


def test_lease_seconds_follow_azure_rules(azurite: AzuriteHandle) -> None:
    container = _container(azurite, "unused")
    for bad in (14, 61):
        with pytest.raises(ValueError, match="15-60"):
            BlobLeaseLock(container, lease_seconds=bad)


@pytest.mark.slow
def test_a_broken_lease_is_reported_as_lost(
    location: dict[str, Any], azurite: AzuriteHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shared.locks.blob_lease")
    container = _container(azurite, location["container"])
    lock = BlobLeaseLock(container, lease_seconds=15)
    hold = lock.hold("acme-nl", timeout=5)
    with hold:
        assert not hold.lost
        # Someone breaks the lease (an operator, or the service after an outage).
        BlobLeaseClient(container.get_blob_client("acme-nl")).break_lease(lease_break_period=0)
        deadline = time.monotonic() + 8  # the next renewal comes within lease_seconds / 3
        while not hold.lost and time.monotonic() < deadline:
            time.sleep(0.1)
        assert hold.lost
        assert hold.lost_reason is not None and "renewal refused" in hold.lost_reason
        with pytest.raises(LockLost, match="acme-nl"):
            hold.check()
        assert "lock of acme-nl lost" in caplog.text
        with lock.hold("acme-nl", timeout=5):  # the blob is free for others now
            pass


@pytest.mark.slow
def test_mutual_exclusion_across_processes(tmp_path: Path, location: dict[str, Any]) -> None:
    overlaps, counter = workers.run_contenders(
        tmp_path, "blob", location, processes=4, iterations=6, hold_seconds=0.02
    )
    assert overlaps == 0
    assert counter == 24


@pytest.mark.slow
def test_renewal_outlives_the_lease_and_a_killed_holder_lease_expires(
    tmp_path: Path, location: dict[str, Any], azurite: AzuriteHandle
) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready = tmp_path / "ready"
    holder = ctx.Process(target=workers.hold_until_killed, args=("blob", location, "acme-nl", str(ready)))
    holder.start()
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        acquired_at = json.loads(ready.read_text())["at"]
        lock = BlobLeaseLock(_container(azurite, location["container"]), lease_seconds=15)

        # Past lease_seconds the holder's renewals keep the lease: still taken.
        time.sleep(max(0.0, acquired_at + 17 - time.monotonic()))
        with pytest.raises(LockTimeout), lock.hold("acme-nl", timeout=0.5):
            pass

        holder.kill()  # SIGKILL: no release, no more renewals
        holder.join(10)
        killed_at = time.monotonic()
        with lock.hold("acme-nl", timeout=30):
            waited = time.monotonic() - killed_at
        # Freed by expiry alone: 15 s after the last renewal, which was at most 5 s before the kill.
        assert 5 <= waited <= 20, waited
    finally:
        if holder.is_alive():
            holder.kill()
            holder.join(10)
