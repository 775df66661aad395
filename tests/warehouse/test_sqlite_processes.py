"""Several processes on one SQLite file, and a process killed in the middle of a page."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from shared.warehouse.sqlite import SqliteWarehouse
from tests.warehouse import workers
from tests.warehouse.rows import ACCOUNTS, cursor

pytestmark = pytest.mark.slow
spawn = multiprocessing.get_context("spawn")


def test_concurrent_writer_processes_keep_every_newest_version(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite3"
    SqliteWarehouse(path, auto_migrate=True).close()
    writers, pages, keys = 3, 15, 150
    procs = [
        spawn.Process(target=workers.overlapping_writer, args=(str(path), w, pages, keys))
        for w in range(writers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * writers  # nobody hit "database is locked"

    wh = SqliteWarehouse(path)
    rows = wh.read_rows(ACCOUNTS, 1)
    newest = (pages - 1) * 100 + writers - 1
    assert len(rows) == keys
    assert {(r["Timestamp"], r["Name"]) for r in rows} == {(newest, f"w{writers - 1}-p{pages - 1}")}
    for w in range(writers):
        assert wh.read_cursor(f"w{w}", 1, "Accounts") == cursor(
            ACCOUNTS, (pages - 1) * 100 + w, connection=f"w{w}"
        )
    wh.close()


def test_a_writer_killed_mid_page_leaves_whole_pages_and_resumes_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite3"
    SqliteWarehouse(path, auto_migrate=True).close()
    reader = SqliteWarehouse(path)
    last_page = 400
    rng = random.Random(7)

    def check() -> int:
        """Pages present are exactly 0..cursor, each complete: the cursor and its rows moved together."""
        # The cursor and the rows are two reads: one read transaction (a WAL snapshot) holds both,
        # so a page the writer commits in between cannot make them disagree.
        reader._cx.execute("BEGIN")
        try:
            stored = reader.read_cursor("acme", 1, "Accounts")
            rows = reader.read_rows(ACCOUNTS, 1)
        finally:
            reader._cx.execute("COMMIT")
        at = -1 if stored is None or stored.timestamp is None else stored.timestamp
        per_page = Counter(r["Timestamp"] for r in rows)
        assert set(per_page) == set(range(at + 1))
        assert set(per_page.values()) <= {workers.ROWS_PER_PAGE}
        return at

    kills = 0
    for _ in range(3):
        before = check()
        proc = spawn.Process(target=workers.paged_writer, args=(str(path), last_page))
        proc.start()
        deadline = time.monotonic() + 60
        while check() < before + 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.05))
        if proc.is_alive():
            os.kill(proc.pid or 0, signal.SIGKILL)
            kills += 1
        proc.join(30)
        assert check() >= before + 3
    assert kills >= 1
    # resume to the end: every page exactly once
    proc = spawn.Process(target=workers.paged_writer, args=(str(path), last_page))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0
    assert check() == last_page
    assert len(reader.read_rows(ACCOUNTS, 1)) == (last_page + 1) * workers.ROWS_PER_PAGE
    reader.close()
