"""The embedded warehouse: one SQLite file, shared safely by several loader processes.

Why these settings: WAL lets readers (a demo query, ``read_rows``) run beside the writer, and
``synchronous=NORMAL`` in WAL mode still never corrupts the file (a power cut can lose the last
commits, which at-least-once delivery re-loads); together they are the fast configuration in
``performance.md``. Every write transaction starts with ``BEGIN IMMEDIATE`` so it takes the
write lock up front (a deferred transaction that upgrades later can fail with SQLITE_BUSY
without waiting), and the busy timeout makes a second process wait for it instead of failing.
One page = one transaction = one ``executemany`` per statement kind.
"""

# S608: statement text is built from catalog identifiers (quoted); every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.clock import Clock, SystemClock
from shared.exact.catalog import Entity, FieldType
from shared.warehouse import page as pages
from shared.warehouse.base import (
    Cursor,
    DeleteMode,
    FailedStep,
    PageResult,
    WarehouseError,
    WarehouseUnavailable,
    check_delete_mode,
)
from shared.warehouse.schema import (
    DELETED_AT,
    DIVISION,
    ENTITIES,
    FAILED_STEPS,
    STATE,
    SYNCED_AT,
    TOMBSTONES,
    all_tables,
    field_type,
    sqlite_add_column,
    sqlite_create,
    sqlite_literal,
    sqlite_quote,
    stored_fields,
)

q = sqlite_quote


def _read_time(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class _Statements:
    """The SQL text of one entity, built once (the text depends only on the catalog entry)."""

    def __init__(self, entity: Entity) -> None:
        table = q(entity.table)
        self.names = stored_fields(entity)
        stamped = pages.has_timestamp(entity)
        columns = [DIVISION, *self.names, SYNCED_AT, DELETED_AT]
        column_list = ", ".join(q(c) for c in columns)
        conflict = f"ON CONFLICT ({q(DIVISION)}, {q(entity.key)}) DO UPDATE SET " + ", ".join(
            [f"{q(n)} = excluded.{q(n)}" for n in self.names if n != entity.key]
            + [f"{q(SYNCED_AT)} = excluded.{q(SYNCED_AT)}", f"{q(DELETED_AT)} = NULL"]
        )
        numbered = ", ".join(f"?{i}" for i in range(1, len(self.names) + 3))  # Division, fields, _SyncedAt
        newer = f" WHERE excluded.{q('Timestamp')} >= {table}.{q('Timestamp')} OR {table}.{q('Timestamp')} IS NULL"
        self.upsert = f"INSERT INTO {table} ({column_list}) VALUES ({numbered}, NULL) {conflict}"
        self.upsert_guarded = self.upsert
        if stamped:
            self.upsert += newer
            key_at = 2 + self.names.index(entity.key)
            stamp_at = 2 + self.names.index("Timestamp")
            key_param = (
                f"?{key_at}"
                if field_type(entity, entity.key) in ("guid", "str")
                else f"CAST(?{key_at} AS TEXT)"
            )
            # A row read before its deletion but committed after it must not come back: insert
            # (or update) only when no tombstone at least as new as the row exists.
            self.upsert_guarded = (
                f"INSERT INTO {table} ({column_list}) SELECT {numbered}, NULL "
                f"WHERE NOT EXISTS (SELECT 1 FROM {q(TOMBSTONES.name)} AS d "
                f"WHERE d.{q('entity')} = {sqlite_literal(entity.name)} AND d.{q('division')} = ?1 "
                f"AND d.{q('entity_key')} = {key_param} AND d.{q('timestamp')} >= ?{stamp_at}) "
                f"{conflict}{newer}"
            )
        older = f" AND ({q('Timestamp')} IS NULL OR {q('Timestamp')} < ?3)" if stamped else ""
        self.hard_delete = f"DELETE FROM {table} WHERE {q(DIVISION)} = ?1 AND {q(entity.key)} = ?2{older}"
        self.soft_delete = (
            f"UPDATE {table} SET {q(DELETED_AT)} = ?4, {q(SYNCED_AT)} = ?5 "
            f"WHERE {q(DIVISION)} = ?1 AND {q(entity.key)} = ?2 AND {q(DELETED_AT)} IS NULL{older}"
        )
        self.any_tombstone = (
            f"SELECT 1 FROM {q(TOMBSTONES.name)} WHERE {q('entity')} = ? AND {q('division')} = ? LIMIT 1"
        )
        selected = [q(f.name) for f in entity.fields]
        self.read = (
            f"SELECT {', '.join(selected)} FROM {table} WHERE {q(DIVISION)} = ? AND {q(DELETED_AT)} IS NULL "
            f"ORDER BY {q(entity.key)}"
        )


_TOMBSTONE_UPSERT = (
    f"INSERT INTO {q(TOMBSTONES.name)} ({', '.join(q(c.name) for c in TOMBSTONES.columns)}) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    f"ON CONFLICT ({', '.join(q(k) for k in TOMBSTONES.primary_key)}) DO UPDATE SET "
    f"{q('timestamp')} = excluded.{q('timestamp')}, {q('deleted_date')} = excluded.{q('deleted_date')}, "
    f"{q('recorded_at')} = excluded.{q('recorded_at')} "
    f"WHERE excluded.{q('timestamp')} > {q(TOMBSTONES.name)}.{q('timestamp')}"
)
_STATE_COLUMNS = tuple(c.name for c in STATE.columns)
_STATE_UPSERT = (
    f"INSERT INTO {q(STATE.name)} ({', '.join(q(c) for c in _STATE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _STATE_COLUMNS)}) "
    f"ON CONFLICT ({', '.join(q(k) for k in STATE.primary_key)}) DO UPDATE SET "
    + ", ".join(f"{q(c)} = excluded.{q(c)}" for c in _STATE_COLUMNS if c not in STATE.primary_key)
)
_STATE_READ = (
    f"SELECT {', '.join(q(c) for c in _STATE_COLUMNS)} FROM {q(STATE.name)} "
    f"WHERE {q('connection')} = ? AND {q('division')} = ? AND {q('entity')} = ?"
)
_FAILED_INSERT = (
    f"INSERT INTO {q(FAILED_STEPS.name)} ({q('at')}, {q('reason')}, {q('message')}) VALUES (?, ?, ?)"
)
_FAILED_READ = f"SELECT {q('at')}, {q('reason')}, {q('message')} FROM {q(FAILED_STEPS.name)} ORDER BY {q('id')} DESC LIMIT ?"


class SqliteWarehouse:
    """The ``Warehouse`` on one SQLite file (the embedded default)."""

    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        delete_mode: DeleteMode = "hard",
        clock: Clock | None = None,
        busy_timeout: float = 60.0,
        factory: type[sqlite3.Connection] = sqlite3.Connection,
        entities: Sequence[Entity] = ENTITIES,
        auto_migrate: bool = False,
    ) -> None:
        self.delete_mode = check_delete_mode(delete_mode)
        self.path = str(path)
        self._clock = clock or SystemClock()
        self._entities = tuple(entities)
        self._statements: dict[Entity, _Statements] = {}
        self._lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
            self._cx = sqlite3.connect(
                self.path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                factory=factory,
            )
            if self.path != ":memory:":
                self._cx.execute("PRAGMA journal_mode=WAL")
            self._cx.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise WarehouseError(f"SQLite warehouse {self.path}: cannot open: {exc}") from exc
        if auto_migrate:
            self.migrate()

    # --- plumbing ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.now(), UTC)

    def _error(self, what: str, exc: sqlite3.Error) -> WarehouseError:
        text = str(exc)
        if "no such table" in text or "no such column" in text:
            text += " (run `exactsync migrate` to create or update the tables)"
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return WarehouseUnavailable(f"SQLite warehouse {self.path}: {what}: {text}")
        return WarehouseError(f"SQLite warehouse {self.path}: {what} failed: {text}")

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the write lock from its first statement."""
        with self._lock:
            cx = self._cx
            try:
                cx.execute("BEGIN IMMEDIATE")
                try:
                    yield cx
                    cx.execute("COMMIT")
                except BaseException:
                    if cx.in_transaction:
                        cx.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._error(what, exc) from exc

    def _entity_sql(self, entity: Entity) -> _Statements:
        statements = self._statements.get(entity)
        if statements is None:
            statements = self._statements[entity] = _Statements(entity)
        return statements

    # --- Warehouse --------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        applied: list[str] = []
        with self._transaction("migrate") as cx:
            existing = {row[0] for row in cx.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for table in all_tables(self._entities):
                if table.name not in existing:
                    statement = sqlite_create(table)
                    cx.execute(statement)
                    applied.append(statement)
                    continue
                have = {row[1] for row in cx.execute(f"PRAGMA table_info({q(table.name)})")}
                for column in table.columns:
                    if column.name not in have:
                        statement = sqlite_add_column(table, column)
                        cx.execute(statement)
                        applied.append(statement)
        return applied

    def read_cursor(self, connection: str, division: int, entity: str) -> Cursor | None:
        with self._lock:
            try:
                row = self._cx.execute(_STATE_READ, (connection, division, entity)).fetchone()
            except sqlite3.Error as exc:
                raise self._error("read_cursor", exc) from exc
        if row is None:
            return None
        return Cursor(
            connection=row[0],
            division=row[1],
            entity=row[2],
            timestamp=row[3],
            next_url=row[4],
            complete=bool(row[5]),
            run_id=row[6],
            updated_at=_read_time(row[7]),
        )

    def commit_page(
        self,
        *,
        entity: Entity,
        division: int,
        rows: Sequence[Mapping[str, Any]],
        deletions: Sequence[tuple[Entity, str]] = (),
        cursor: Cursor,
    ) -> PageResult:
        page = pages.prepare(entity=entity, division=division, rows=rows, deletions=deletions, cursor=cursor)
        sql = self._entity_sql(entity)
        now = self._now()
        synced = pages.sqlite_time(now)
        # Encode everything before the transaction: a bad value refuses the page, writing nothing.
        params = [
            (division, *values, synced) for values in pages.encode_rows("sqlite", entity, sql.names, page)
        ]
        tombstones = [
            (
                d.entity.name,
                division,
                d.key_text,
                d.timestamp,
                None if d.deleted_date is None else pages.sqlite_time(d.deleted_date),
                synced,
            )
            for d in page.deletions
        ]
        state = self._state_params(cursor, now)
        upserted = deleted = 0
        with self._transaction(f"commit_page {entity.name} division {division}") as cx:
            if params:
                guarded = pages.has_timestamp(entity) and (
                    cx.execute(sql.any_tombstone, (entity.name, division)).fetchone() is not None
                )
                upserted = cx.executemany(sql.upsert_guarded if guarded else sql.upsert, params).rowcount
            if tombstones:
                cx.executemany(_TOMBSTONE_UPSERT, tombstones)
                deleted = self._apply_deletions(cx, page, synced)
            cx.execute(_STATE_UPSERT, state)
        return PageResult(upserted=upserted, deleted=deleted, skipped_stale=len(rows) - upserted)

    def _apply_deletions(self, cx: sqlite3.Connection, page: pages.Page, synced: str) -> int:
        by_entity: dict[Entity, list[pages.Deletion]] = {}
        for deletion in page.deletions:
            by_entity.setdefault(deletion.entity, []).append(deletion)
        count = 0
        for target, items in by_entity.items():
            sql = self._entity_sql(target)
            if self.delete_mode == "hard":
                params: list[tuple[Any, ...]] = [(page.division, d.key, d.timestamp) for d in items]
                statement = sql.hard_delete
            else:
                params = [
                    (
                        page.division,
                        d.key,
                        d.timestamp,
                        synced if d.deleted_date is None else pages.sqlite_time(d.deleted_date),
                        synced,
                    )
                    for d in items
                ]
                statement = sql.soft_delete
            if self.delete_mode == "hard" and not pages.has_timestamp(target):
                # The statement then numbers only ?1 and ?2, and SQLite wants exactly that many.
                params = [p[:2] for p in params]
            count += cx.executemany(statement, params).rowcount
        return count

    def _state_params(self, cursor: Cursor, now: datetime) -> tuple[Any, ...]:
        return (
            cursor.connection,
            cursor.division,
            cursor.entity,
            cursor.timestamp,
            cursor.next_url,
            1 if cursor.complete else 0,
            cursor.run_id,
            pages.sqlite_time(pages.cursor_time(cursor, now)),
        )

    def record_failed_step(self, *, message: str, reason: str, at: datetime) -> None:
        when = pages.sqlite_time(pages.checked_time(at, "record_failed_step: at"))
        with self._transaction("record_failed_step") as cx:
            cx.execute(_FAILED_INSERT, (when, reason, message))

    def read_failed_steps(self, limit: int = 100) -> list[FailedStep]:
        """The most recent failed steps, newest first (operations and tests)."""
        with self._lock:
            try:
                rows = self._cx.execute(_FAILED_READ, (limit,)).fetchall()
            except sqlite3.Error as exc:
                raise self._error("read_failed_steps", exc) from exc
        return [FailedStep(at=datetime.fromisoformat(r[0]), reason=r[1], message=r[2]) for r in rows]

    def read_rows(self, entity: Entity, division: int) -> list[dict[str, Any]]:
        sql = self._entity_sql(entity)
        with self._lock:
            try:
                rows = self._cx.execute(sql.read, (division,)).fetchall()
            except sqlite3.Error as exc:
                raise self._error(f"read_rows {entity.name}", exc) from exc
        return pages.decode_rows(entity, rows, _DECODERS)

    def close(self) -> None:
        with self._lock:
            self._cx.close()


def _same(value: Any) -> Any:
    return value


_DECODERS: dict[FieldType, pages.Decoder] = {
    "guid": _same,
    "str": _same,
    "int": _same,
    "int64": _same,
    "decimal": float,
    "bool": bool,
    "datetime": _read_time,
}
