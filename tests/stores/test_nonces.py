"""Nonce stores: claimed exactly once, also when several OS processes race for the same nonces."""

from __future__ import annotations

import json
import multiprocessing
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

from shared.stores.nonces import NONCE_PREFIX, BlobNonceStore, FileNonceStore, NonceStore
from tests.doubles.clock import ManualClock
from tests.fixtures.azurite import AzuriteHandle
from tests.stores import workers


def _claims_once(store: NonceStore, clock: ManualClock) -> None:
    expires = clock.now() + 600
    assert store.claim("state-nonce-1", expires) is True
    assert store.claim("state-nonce-1", expires) is False  # replay
    assert store.claim("state-nonce-1", expires + 999) is False  # replay with another expiry
    assert store.claim("state-nonce-2", expires) is True
    assert store.claim("late-nonce", clock.now() - 1) is False  # expired before its first claim
    assert store.claim("late-nonce", clock.now() + 60) is True  # it was not recorded


def test_file_store_claims_once_and_prunes_only_expired(tmp_path: Path) -> None:
    clock = ManualClock(1_800_000_000.0)
    store = FileNonceStore(tmp_path / "nonces", clock=clock)
    _claims_once(store, clock)
    files = os.listdir(tmp_path / "nonces")
    assert len(files) == 3 and all(len(name) == 64 for name in files)  # hashes: the nonce is not stored
    assert not any("state-nonce" in (tmp_path / "nonces" / f).read_text() for f in files)

    assert store.prune() == 0  # nothing expired yet
    clock.t += 120  # "late-nonce" (60 s) has expired, the others (600 s) not
    assert store.prune() == 1
    clock.t += 600
    assert store.prune() == 2
    assert os.listdir(tmp_path / "nonces") == []


def test_file_store_prunes_by_itself_at_most_once_per_interval(tmp_path: Path) -> None:
    clock = ManualClock(1_800_000_000.0)
    store = FileNonceStore(tmp_path, clock=clock, prune_interval=100)
    assert store.claim("a", clock.now() + 10)
    clock.t += 50
    assert store.claim("b", clock.now() + 10)  # "a" expired, but no prune is due yet
    assert len(os.listdir(tmp_path)) == 2
    clock.t += 60
    assert store.claim("c", clock.now() + 10)  # prune ran: "a" and "b" went
    assert len(os.listdir(tmp_path)) == 1


@pytest.mark.azurite
def test_blob_store_claims_once_and_prunes_only_expired(azurite: AzuriteHandle) -> None:
    clock = ManualClock(1_800_000_000.0)
    container = ContainerClient.from_connection_string(
        azurite.connection_string, f"n-{uuid.uuid4().hex[:10]}"
    )
    store = BlobNonceStore(container, clock=clock)  # the container is created on first claim
    _claims_once(store, clock)
    names = [blob.name for blob in container.list_blobs()]
    assert len(names) == 3 and all(name.startswith(NONCE_PREFIX) for name in names)
    assert not any("state-nonce" in name for name in names)
    container.upload_blob("acme-nl", b"")  # a lock blob in the same container is left alone
    clock.t += 120
    assert store.prune() == 1
    clock.t += 600
    assert store.prune() == 2
    assert [blob.name for blob in container.list_blobs()] == ["acme-nl"]


def _race(
    tmp_path: Path, kind: str, location: dict[str, Any], processes: int, nonces: list[str]
) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    outs = [tmp_path / f"{kind}-won-{i}.json" for i in range(processes)]
    procs = [
        ctx.Process(target=workers.claim_nonces, args=(kind, location, nonces, barrier, str(out)))
        for out in outs
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [p.exitcode for p in procs] == [0] * processes
    return [nonce for out in outs for nonce in json.loads(out.read_text())]


@pytest.mark.slow
def test_file_store_concurrent_claims_yield_exactly_one_winner(tmp_path: Path) -> None:
    nonces = [f"nonce-{i}" for i in range(40)]
    won = _race(tmp_path, "file", {"directory": str(tmp_path / "nonces")}, 6, nonces)
    assert sorted(won) == sorted(nonces)  # each nonce won exactly once, none lost


@pytest.mark.slow
@pytest.mark.azurite
def test_blob_store_concurrent_claims_yield_exactly_one_winner(
    tmp_path: Path, azurite: AzuriteHandle
) -> None:
    nonces = [f"nonce-{i}" for i in range(25)]
    location = {"connection_string": azurite.connection_string, "container": f"n-{uuid.uuid4().hex[:10]}"}
    ContainerClient.from_connection_string(
        azurite.connection_string, location["container"]
    ).create_container()
    won = _race(tmp_path, "blob", location, 5, nonces)
    assert sorted(won) == sorted(nonces)
