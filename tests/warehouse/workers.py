"""Loader-like processes for the multi-process SQLite tests (spawned; importable by name)."""

from __future__ import annotations

from pathlib import Path

from shared.warehouse.sqlite import SqliteWarehouse
from tests.warehouse.rows import ACCOUNTS, account, cursor

ROWS_PER_PAGE = 200


def overlapping_writer(path: str, worker: int, pages: int, keys: int) -> None:
    """Writes every key on every page; Timestamp ``page * 100 + worker`` (unique per writer)."""
    wh = SqliteWarehouse(Path(path), busy_timeout=60)
    for page in range(pages):
        stamp = page * 100 + worker
        rows = [account(n, stamp, Name=f"w{worker}-p{page}") for n in range(keys)]
        wh.commit_page(
            entity=ACCOUNTS, division=1, rows=rows, cursor=cursor(ACCOUNTS, stamp, connection=f"w{worker}")
        )
    wh.close()


def paged_writer(path: str, last_page: int) -> None:
    """Page ``i`` holds keys ``i*200 … i*200+199`` and moves the cursor to ``i``; resumes from the cursor."""
    wh = SqliteWarehouse(Path(path), busy_timeout=60)
    stored = wh.read_cursor("acme", 1, "Accounts")
    start = 0 if stored is None or stored.timestamp is None else stored.timestamp + 1
    for page in range(start, last_page + 1):
        rows = [account(page * ROWS_PER_PAGE + j, page, Code=f"page{page}") for j in range(ROWS_PER_PAGE)]
        wh.commit_page(entity=ACCOUNTS, division=1, rows=rows, cursor=cursor(ACCOUNTS, page))
    wh.close()
