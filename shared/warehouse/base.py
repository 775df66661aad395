"""The warehouse contract: what a loader may ask of wherever Exact's data lands.

One interface, two dialects (Azure SQL, SQLite). The loader commits each page through
``commit_page``: the page's upserts, its deletions and the new cursor in ONE transaction, so a
step that dies anywhere leaves either the whole page and its cursor or neither. Delivery of
load steps is at least once; every write here is idempotent and monotonic (see below), which
turns at-least-once delivery into an exactly-once result.

Rules every implementation keeps (the shared test-suite checks them per dialect):

- Tables are keyed by ``(Division, <entity key>)``; columns carry Exact's field names, plus
  ``_SyncedAt`` (when the row was last written) and ``_DeletedAt`` (soft delete).
- **Monotonic upsert**: a row is written only when its ``Timestamp`` is >= the stored one, so a
  replayed old page never reverts newer data. Entities without ``Timestamp`` (Divisions) are
  plain upserts.
- **Tombstones**: each applied deletion is remembered as ``(entity, division, key, Timestamp,
  DeletedDate)``. A row whose ``Timestamp`` is <= a tombstone's is not written (it was read
  before its deletion but committed after it); a re-insert with a higher ``Timestamp`` wins.
  A deletion removes (hard) or marks (soft, ``_DeletedAt``) a stored row only when the row's
  ``Timestamp`` is lower than the deletion's. Exact's ``Timestamp`` is one global row version,
  comparable between an entity's ``sync/…`` stream and ``sync/Deleted``.
- **Where a deletion's Timestamp comes from**: ``deletions`` are ``(entity, key)`` pairs. When
  the page is the ``sync/Deleted`` stream (``entity`` is ``catalog.DELETED`` and ``rows`` are its
  records), each pair takes ``Timestamp`` and ``DeletedDate`` from the record whose
  ``EntityKey`` is that key (and whose ``EntityType`` is the entity's, when both are known).
  A pair with no such record falls back to ``cursor.timestamp`` (the page's highest: never
  lower than the deletion's own); with neither, the page is refused as ``InvalidPage``.
- Rows are de-duplicated by key within a page (the highest ``Timestamp`` wins; on a tie the
  later row): a duplicate key would make a MERGE fail.
- The cursor is written as given (the loader owns its meaning; a ``--full`` reload may move it
  back). ``cursor.connection``/``division``/``entity`` must match the page.

Values arrive converted (``shared.exact.convert``): guid -> lower-case ``str``, datetime ->
aware UTC ``datetime``, int/int64 -> ``int``, decimal -> ``float``, ``bool``, ``str``, ``None``.
``read_rows`` returns them in the same forms. Datetimes are stored to the millisecond (Exact's
``/Date(ms)/`` precision).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, cast

from shared.errors import ExactSyncError
from shared.exact.catalog import Entity

DeleteMode = Literal["hard", "soft"]


def check_delete_mode(mode: str) -> DeleteMode:
    """``mode`` as a ``DeleteMode``; ``ValueError`` for anything but ``hard`` or ``soft``."""
    if mode not in ("hard", "soft"):
        raise ValueError(f"delete_mode must be 'hard' or 'soft', got {mode!r}")
    return cast(DeleteMode, mode)


@dataclass(frozen=True)
class Cursor:
    """Where a (connection, division, entity) load stands, committed with the page it follows."""

    connection: str
    division: int
    entity: str  # catalog entity name, e.g. "Accounts" or "Deleted"
    timestamp: int | None  # highest Exact Timestamp committed (sync endpoints)
    next_url: str | None  # continuation for endpoints without Timestamp (regular/bulk)
    complete: bool  # the last read reached the end of the data
    run_id: str | None
    updated_at: datetime | None


@dataclass(frozen=True)
class PageResult:
    """What one ``commit_page`` changed. ``upserted + skipped_stale == len(rows)``."""

    upserted: int  # rows inserted or updated
    deleted: int  # rows deleted (hard) or marked deleted (soft)
    skipped_stale: (
        int  # rows not written: older than the stored row or its tombstone, or an in-page duplicate
    )


@dataclass(frozen=True)
class FailedStep:
    """One recorded failure of a load step (message text as given: already secret-free)."""

    at: datetime
    reason: str
    message: str


class Warehouse(Protocol):
    dialect: str  # "sqlite" | "azure_sql"

    def migrate(self) -> list[str]:
        """Create or update every table (idempotent); return the DDL statements applied."""
        ...

    def read_cursor(self, connection: str, division: int, entity: str) -> Cursor | None: ...

    def commit_page(
        self,
        *,
        entity: Entity,
        division: int,
        rows: Sequence[Mapping[str, Any]],
        deletions: Sequence[tuple[Entity, str]] = (),
        cursor: Cursor,
    ) -> PageResult:
        """Upsert ``rows``, apply ``deletions`` and store ``cursor`` in one transaction."""
        ...

    def record_failed_step(self, *, message: str, reason: str, at: datetime) -> None: ...

    def read_rows(self, entity: Entity, division: int) -> list[dict[str, Any]]:
        """The live (not deleted) rows of one division, ordered by key, catalog fields only."""
        ...

    def close(self) -> None: ...


class WarehouseError(ExactSyncError):
    """A warehouse operation failed; the message names the operation and the database error."""


class WarehouseUnavailable(WarehouseError):
    """The database stayed unreachable or busy through every retry (transient errors only)."""


class InvalidPage(WarehouseError, ValueError):
    """A page that cannot be committed as given; nothing was written."""
