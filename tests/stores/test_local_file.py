"""LocalFileTokenStore on a real file system, with a reader in another OS process."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from shared.stores.base import InvalidConnectionName, TokenStoreError
from shared.stores.local_file import LocalFileTokenStore
from shared.tokens import TokenStatus
from tests.stores import workers
from tests.stores.records import ACCESS_MARK, REFRESH_MARK, record


def test_round_trip_list_and_delete(tmp_path: Path) -> None:
    store = LocalFileTokenStore(tmp_path / "tokens")
    assert store.load("acme-nl") is None
    assert store.list_connections() == []

    first = record("acme-nl", generation=1)
    store.save(first)
    store.save(record("beta-be", generation=7, status=TokenStatus.NEEDS_REAUTH))
    assert store.load("acme-nl") == first
    assert store.load("beta-be").status is TokenStatus.NEEDS_REAUTH  # type: ignore[union-attr]
    assert store.list_connections() == ["acme-nl", "beta-be"]

    second = record("acme-nl", generation=2)
    store.save(second)
    assert store.load("acme-nl") == second

    store.delete("acme-nl")
    store.delete("acme-nl")  # no error the second time
    assert store.load("acme-nl") is None
    assert store.list_connections() == ["beta-be"]


def test_files_are_private_and_no_temp_files_remain(tmp_path: Path) -> None:
    directory = tmp_path / "home" / "tokens"
    store = LocalFileTokenStore(directory)
    old_umask = os.umask(0o000)  # the most permissive umask must not widen anything
    try:
        for generation in range(3):
            store.save(record(generation=generation))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "acme-nl.json").stat().st_mode) == 0o600
    assert sorted(os.listdir(directory)) == ["acme-nl.json"]


def test_corrupted_or_partial_file_gives_a_clear_error_without_content(tmp_path: Path) -> None:
    store = LocalFileTokenStore(tmp_path)
    good = record().to_json()
    path = tmp_path / "acme-nl.json"

    path.write_text(good[: len(good) // 2])  # a torn write
    with pytest.raises(TokenStoreError) as info:
        store.load("acme-nl")
    message = str(info.value)
    assert "acme-nl.json" in message and "corrupted" in message and "not valid JSON" in message
    assert ACCESS_MARK not in message and REFRESH_MARK not in message

    path.write_text("")
    with pytest.raises(TokenStoreError, match="is empty"):
        store.load("acme-nl")

    path.write_text(json.dumps({"connection": "acme-nl", "access_token": f"{ACCESS_MARK}-x"}))
    with pytest.raises(TokenStoreError, match="not a complete token record") as info:
        store.load("acme-nl")
    assert ACCESS_MARK not in str(info.value)

    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TokenStoreError, match="not UTF-8"):
        store.load("acme-nl")

    (tmp_path / "other.json").write_text(record("acme-nl").to_json())
    with pytest.raises(TokenStoreError, match="holds the record of connection 'acme-nl'"):
        store.load("other")

    store.save(record(generation=9))  # a save repairs the file
    assert store.load("acme-nl").generation == 9  # type: ignore[union-attr]


def test_bad_connection_names_are_refused_before_touching_files(tmp_path: Path) -> None:
    store = LocalFileTokenStore(tmp_path)
    for bad in ["../escape", "Acme", "", "a" * 41, "a b", "-lead", "acme_nl", "acme.json"]:
        with pytest.raises(InvalidConnectionName, match="lowercase"):
            store.load(bad)
    with pytest.raises(InvalidConnectionName):
        store.save(record("UPPER"))
    assert os.listdir(tmp_path) == []
    (tmp_path / "Not-Valid.json").write_text("{}")  # foreign files are not listed
    (tmp_path / ".acme-nl.json.0123.tmp").write_text("{}")
    assert store.list_connections() == []


@pytest.mark.slow
def test_a_reader_in_another_process_never_sees_a_partial_record(tmp_path: Path) -> None:
    """Writer and reader run as separate OS processes; every read must parse and be one record."""
    ctx = multiprocessing.get_context("spawn")
    directory = str(tmp_path / "tokens")
    writes = 300
    pad = 20_000  # ~40 KB per record: a non-atomic write would be caught half-way
    workers.write_generations(directory, "acme-nl", 1, pad)  # the reader starts on a full file
    stop, out = tmp_path / "stop", tmp_path / "reader.json"
    reader = ctx.Process(target=workers.read_until, args=(directory, "acme-nl", str(stop), str(out)))
    reader.start()
    writer = ctx.Process(target=workers.write_generations, args=(directory, "acme-nl", writes, pad))
    writer.start()
    writer.join(60)
    stop.touch()
    reader.join(60)
    assert writer.exitcode == 0 and reader.exitcode == 0
    seen = json.loads(out.read_text())
    assert seen["errors"] == []
    assert seen["reads"] > 50
    assert seen["generations"] == sorted(seen["generations"])  # never an older record after a newer
    assert len(set(seen["generations"])) > 3  # the reader really overlapped the writes
    assert LocalFileTokenStore(directory).load("acme-nl").generation == writes  # type: ignore[union-attr]
