"""SQLite specifics: one transaction per page (proved by failing it at the sqlite3 boundary),
WAL, soft-delete bookkeeping, waiting for another process's write lock, clear errors."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.exact.catalog import DELETED
from shared.warehouse.base import WarehouseError, WarehouseUnavailable
from shared.warehouse.sqlite import SqliteWarehouse
from tests.warehouse.rows import ACCOUNTS, account, cursor, deleted, deleted_cursor, guid


class Trap:
    """Makes the Nth matching statement fail, like a disk error or a killed connection would."""

    def __init__(self) -> None:
        self.armed: Callable[[str], bool] | None = None
        self.seen: list[str] = []

    def connection_class(self) -> type[sqlite3.Connection]:
        trap = self

        class TrappedConnection(sqlite3.Connection):
            def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
                trap.check(sql)
                return super().execute(sql, *args)

            def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
                trap.check(sql)
                return super().executemany(sql, *args)

        return TrappedConnection

    def check(self, sql: str) -> None:
        self.seen.append(sql)
        if self.armed is not None and self.armed(sql):
            self.armed = None  # once
            raise sqlite3.OperationalError("disk I/O error (injected)")


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Everything in the file, read by a separate plain connection."""
    cx = sqlite3.connect(path)
    try:
        tables = [
            r[0] for r in cx.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        ]
        return {t: sorted(cx.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    finally:
        cx.close()


STATEMENTS = {
    "entity upsert": lambda sql: sql.startswith('INSERT INTO "exact_accounts"'),
    "tombstones": lambda sql: sql.startswith('INSERT INTO "exactsync_tombstones"'),
    "delete": lambda sql: sql.startswith('DELETE FROM "exact_accounts"'),
    "soft delete": lambda sql: sql.startswith('UPDATE "exact_accounts"'),
    "cursor": lambda sql: sql.startswith('INSERT INTO "exactsync_state"'),
    "commit": lambda sql: sql == "COMMIT",
}


@pytest.mark.parametrize("mode", ["hard", "soft"])
@pytest.mark.parametrize("failing", list(STATEMENTS))
def test_a_page_that_fails_midway_leaves_neither_rows_nor_cursor(
    tmp_path: Path, failing: str, mode: str
) -> None:
    if (failing, mode) in {("delete", "soft"), ("soft delete", "hard")}:
        pytest.skip("that statement does not run in this mode")
    path = tmp_path / "w.sqlite3"
    trap = Trap()
    wh = SqliteWarehouse(
        path,
        delete_mode="soft" if mode == "soft" else "hard",
        factory=trap.connection_class(),
        auto_migrate=True,
    )
    wh.commit_page(
        entity=ACCOUNTS, division=1, rows=[account(1, 5), account(2, 6)], cursor=cursor(ACCOUNTS, 6)
    )
    before = snapshot(path)

    # One Deleted page that upserts its records, writes tombstones, deletes and moves the cursor;
    # and one Accounts page. Each must be all or nothing.
    pages: list[dict[str, Any]] = [
        {
            "entity": DELETED,
            "division": 1,
            "rows": [deleted(ACCOUNTS, guid(1), 9)],
            "deletions": [(ACCOUNTS, guid(1))],
            "cursor": deleted_cursor(9),
        },
        {
            "entity": ACCOUNTS,
            "division": 1,
            "rows": [account(3, 7), account(2, 8)],
            "cursor": cursor(ACCOUNTS, 8),
        },
    ]
    failed = 0
    for page in pages:
        trap.armed = STATEMENTS[failing]
        try:
            wh.commit_page(**page)
        except WarehouseError as exc:
            assert "injected" in str(exc)
            failed += 1
            assert snapshot(path) == before  # nothing of the page, not even the cursor
            assert wh.read_cursor("acme", 1, page["cursor"].entity) == (
                None if page["entity"] is DELETED else cursor(ACCOUNTS, 6)
            )
        else:
            assert trap.armed is not None  # this page never ran the failing statement
            trap.armed = None
            before = snapshot(path)
    assert failed >= 1
    # the connection is still good: the same pages commit afterwards
    for page in pages:
        wh.commit_page(**page)
    assert [r["ID"] for r in wh.read_rows(ACCOUNTS, 1)] == [guid(2), guid(3)]
    assert wh.read_cursor("acme", 1, "Deleted") == deleted_cursor(9)
    wh.close()


def test_one_transaction_per_page(tmp_path: Path) -> None:
    trap = Trap()
    wh = SqliteWarehouse(tmp_path / "w.sqlite3", factory=trap.connection_class(), auto_migrate=True)
    trap.seen.clear()
    wh.commit_page(
        entity=ACCOUNTS, division=1, rows=[account(n, n) for n in range(500)], cursor=cursor(ACCOUNTS, 499)
    )
    writes = [s for s in trap.seen if not s.startswith("SELECT")]
    assert writes[0] == "BEGIN IMMEDIATE" and writes[-1] == "COMMIT"
    assert len(writes) == 4  # BEGIN, one executemany for 500 rows, the cursor, COMMIT


def test_wal_and_synchronous_normal(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite3"
    wh = SqliteWarehouse(path, auto_migrate=True)
    cx = sqlite3.connect(path)
    assert cx.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cx.close()
    assert wh._cx.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    wh.close()


def test_soft_delete_keeps_the_row_with_its_deletion_time(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite3"
    wh = SqliteWarehouse(path, delete_mode="soft", auto_migrate=True)
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 5)], cursor=cursor(ACCOUNTS, 5))
    record = deleted(ACCOUNTS, guid(1), 9)
    wh.commit_page(
        entity=DELETED, division=1, rows=[record], deletions=[(ACCOUNTS, guid(1))], cursor=deleted_cursor(9)
    )
    cx = sqlite3.connect(path)
    rows = cx.execute('SELECT "ID", "_DeletedAt", "_SyncedAt" FROM exact_accounts').fetchall()
    tombstones = cx.execute("SELECT * FROM exactsync_tombstones").fetchall()
    cx.close()
    assert [(r[0], r[1]) for r in rows] == [
        (guid(1), record["DeletedDate"].isoformat(timespec="milliseconds")[:-6] + "Z")
    ]
    assert rows[0][2].endswith("Z")
    assert [(t[0], t[1], t[2], t[3]) for t in tombstones] == [("Accounts", 1, guid(1), 9)]
    # a re-insert clears the mark
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 12)], cursor=cursor(ACCOUNTS, 12))
    cx = sqlite3.connect(path)
    assert cx.execute('SELECT "_DeletedAt" FROM exact_accounts').fetchall() == [(None,)]
    cx.close()
    wh.close()


def test_hard_delete_removes_the_row(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite3"
    wh = SqliteWarehouse(path, delete_mode="hard", auto_migrate=True)
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 5)], cursor=cursor(ACCOUNTS, 5))
    wh.commit_page(
        entity=DELETED,
        division=1,
        rows=[deleted(ACCOUNTS, guid(1), 9)],
        deletions=[(ACCOUNTS, guid(1))],
        cursor=deleted_cursor(9),
    )
    assert snapshot(path)["exact_accounts"] == []
    wh.close()


def test_a_writer_waits_for_another_connections_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite3"
    wh = SqliteWarehouse(path, auto_migrate=True)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 5)], cursor=cursor(ACCOUNTS, 5))
    assert time.monotonic() - started >= 0.4
    release.join()
    other.close()

    impatient = SqliteWarehouse(path, busy_timeout=0.1)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(WarehouseUnavailable, match="locked"):
        impatient.commit_page(entity=ACCOUNTS, division=1, rows=[account(2, 6)], cursor=cursor(ACCOUNTS, 6))
    blocker.execute("ROLLBACK")
    blocker.close()
    assert [r["ID"] for r in wh.read_rows(ACCOUNTS, 1)] == [guid(1)]
    impatient.close()
    wh.close()


def test_missing_tables_name_the_fix(tmp_path: Path) -> None:
    wh = SqliteWarehouse(tmp_path / "w.sqlite3")  # not migrated
    with pytest.raises(WarehouseError, match="exactsync migrate"):
        wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 5)], cursor=cursor(ACCOUNTS, 5))
    wh.close()


def test_migrate_creates_every_table_once(tmp_path: Path) -> None:
    wh = SqliteWarehouse(tmp_path / "w.sqlite3")
    applied = wh.migrate()
    assert all(s.startswith("CREATE TABLE IF NOT EXISTS") for s in applied)
    names = set(snapshot(tmp_path / "w.sqlite3"))
    assert {"exactsync_state", "exactsync_tombstones", "exactsync_failed_steps", "exact_deleted"} <= names
    assert {"exact_accounts", "exact_transaction_lines", "exact_divisions"} <= names
    assert wh.migrate() == []
    wh.close()
