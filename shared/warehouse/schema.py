"""Tables, derived from the entity catalog, and their DDL in each dialect.

Type choices (one row per catalog field type; the same value must come back from both):

============  =========================  ===========================================================
catalog       Azure SQL                  SQLite
============  =========================  ===========================================================
guid          UNIQUEIDENTIFIER           TEXT, lower-case ``8-4-4-4-12``
str           NVARCHAR(MAX) (Unicode;    TEXT
              a text key: NVARCHAR(400))
int           INT                        INTEGER
int64         BIGINT                     INTEGER
decimal       FLOAT (binary double)      REAL
bool          BIT                        INTEGER 0/1
datetime      DATETIME2(3), UTC          TEXT ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (ISO-8601 UTC)
============  =========================  ===========================================================

Why FLOAT for decimals: Exact's API types amounts, quantities and prices as ``Edm.Double`` and
the client converts them to ``float``; a 53-bit FLOAT stores exactly the double Exact sent, so the
warehouse adds no rounding of its own (a DECIMAL(19,4) would silently cut a price with six
decimals, and the equality of source and target could not be checked value for value). Cast to
DECIMAL in reporting views when a fixed scale is wanted. Why NVARCHAR(MAX): the catalog has no
lengths, and a load that fails (or truncates) on one long description is worse than a wide
column; keys stay short (NVARCHAR(400), so that Division + key fit the 900-byte index key).
Why DATETIME2(3): Exact's ``/Date(ms)/`` has millisecond precision; UTC by convention.

Every entity table is keyed by ``(Division, <key>)`` and carries ``_SyncedAt`` (last write,
UTC) and ``_DeletedAt`` (soft delete; NULL = live). Support tables: ``exactsync_state``
(cursor per connection, division, entity), ``exactsync_tombstones`` (applied deletions) and
``exactsync_failed_steps``. ``migrate`` only adds: missing tables, then missing columns (added
nullable); it never drops or retypes a column.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.exact.catalog import CATALOG, DELETED, Entity, FieldType

DIVISION = "Division"
SYNCED_AT = "_SyncedAt"
DELETED_AT = "_DeletedAt"
STATE_TABLE = "exactsync_state"
TOMBSTONE_TABLE = "exactsync_tombstones"
FAILED_STEPS_TABLE = "exactsync_failed_steps"

#: Every entity the warehouse keeps a table for: the catalog plus the sync/Deleted stream.
ENTITIES: tuple[Entity, ...] = (*CATALOG, DELETED)

_SQLITE_TYPES: dict[FieldType, str] = {
    "guid": "TEXT",
    "str": "TEXT",
    "int": "INTEGER",
    "int64": "INTEGER",
    "decimal": "REAL",
    "bool": "INTEGER",
    "datetime": "TEXT",
}
_TSQL_TYPES: dict[FieldType, str] = {
    "guid": "UNIQUEIDENTIFIER",
    "str": "NVARCHAR(MAX)",
    "int": "INT",
    "int64": "BIGINT",
    "decimal": "FLOAT",
    "bool": "BIT",
    "datetime": "DATETIME2(3)",
}
#: A text key must fit SQL Server's 900-byte clustered index key together with Division.
TSQL_TEXT_KEY = "NVARCHAR(400)"


@dataclass(frozen=True)
class Column:
    name: str
    sqlite_type: str
    tsql_type: str
    nullable: bool = True
    identity: bool = False  # an ever-increasing surrogate key (failed steps)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


def stored_fields(entity: Entity) -> tuple[str, ...]:
    """Catalog fields written from a row's values (``Division`` comes from the page instead)."""
    return tuple(f.name for f in entity.fields if f.name != DIVISION)


def field_type(entity: Entity, name: str) -> FieldType:
    return entity.field(name).type


def entity_table(entity: Entity) -> Table:
    columns = [Column(DIVISION, "INTEGER", "INT", nullable=False)]
    for name in stored_fields(entity):
        kind = field_type(entity, name)
        is_key = name == entity.key
        tsql = TSQL_TEXT_KEY if is_key and kind == "str" else _TSQL_TYPES[kind]
        columns.append(Column(name, _SQLITE_TYPES[kind], tsql, nullable=not is_key))
    columns.append(Column(SYNCED_AT, "TEXT", "DATETIME2(3)", nullable=False))
    columns.append(Column(DELETED_AT, "TEXT", "DATETIME2(3)"))
    return Table(entity.table, tuple(columns), (DIVISION, entity.key))


STATE = Table(
    STATE_TABLE,
    (
        Column("connection", "TEXT", "NVARCHAR(200)", nullable=False),
        Column("division", "INTEGER", "INT", nullable=False),
        Column("entity", "TEXT", "NVARCHAR(128)", nullable=False),
        Column("timestamp", "INTEGER", "BIGINT"),
        Column("next_url", "TEXT", "NVARCHAR(MAX)"),
        Column("complete", "INTEGER", "BIT", nullable=False),
        Column("run_id", "TEXT", "NVARCHAR(200)"),
        Column("updated_at", "TEXT", "DATETIME2(3)"),
    ),
    ("connection", "division", "entity"),
)

TOMBSTONES = Table(
    TOMBSTONE_TABLE,
    (
        Column("entity", "TEXT", "NVARCHAR(128)", nullable=False),
        Column("division", "INTEGER", "INT", nullable=False),
        Column("entity_key", "TEXT", "NVARCHAR(300)", nullable=False),
        Column("timestamp", "INTEGER", "BIGINT", nullable=False),
        Column("deleted_date", "TEXT", "DATETIME2(3)"),
        Column("recorded_at", "TEXT", "DATETIME2(3)", nullable=False),
    ),
    ("entity", "division", "entity_key"),
)

FAILED_STEPS = Table(
    FAILED_STEPS_TABLE,
    (
        Column("id", "INTEGER", "BIGINT", nullable=False, identity=True),
        Column("at", "TEXT", "DATETIME2(3)", nullable=False),
        Column("reason", "TEXT", "NVARCHAR(MAX)", nullable=False),
        Column("message", "TEXT", "NVARCHAR(MAX)", nullable=False),
    ),
    ("id",),
)

SUPPORT_TABLES: tuple[Table, ...] = (STATE, TOMBSTONES, FAILED_STEPS)


def all_tables(entities: Iterable[Entity] = ENTITIES) -> tuple[Table, ...]:
    return (*SUPPORT_TABLES, *(entity_table(e) for e in entities))


# --- SQLite -----------------------------------------------------------------------------------


def sqlite_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sqlite_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sqlite_create(table: Table) -> str:
    parts = []
    for column in table.columns:
        if column.identity:
            # INTEGER PRIMARY KEY is the rowid: ever-increasing without AUTOINCREMENT's bookkeeping.
            parts.append(f"{sqlite_quote(column.name)} INTEGER PRIMARY KEY")
            continue
        null = "" if column.nullable else " NOT NULL"
        parts.append(f"{sqlite_quote(column.name)} {column.sqlite_type}{null}")
    if not any(c.identity for c in table.columns):
        parts.append(f"PRIMARY KEY ({', '.join(sqlite_quote(k) for k in table.primary_key)})")
    return f"CREATE TABLE IF NOT EXISTS {sqlite_quote(table.name)} ({', '.join(parts)})"


def sqlite_add_column(table: Table, column: Column) -> str:
    return (
        f"ALTER TABLE {sqlite_quote(table.name)} ADD COLUMN {sqlite_quote(column.name)} {column.sqlite_type}"
    )


# --- T-SQL ------------------------------------------------------------------------------------


def tsql_quote(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def tsql_literal(text: str) -> str:
    return "N'" + text.replace("'", "''") + "'"


def tsql_name(schema: str, table: str) -> str:
    return f"{tsql_quote(schema)}.{tsql_quote(table)}"


def tsql_create(table: Table, schema: str) -> str:
    """Guarded CREATE TABLE: safe to run again, and safe when two deployments race."""
    parts = []
    for column in table.columns:
        identity = " IDENTITY(1, 1)" if column.identity else ""
        null = " NULL" if column.nullable else " NOT NULL"
        parts.append(f"{tsql_quote(column.name)} {column.tsql_type}{identity}{null}")
    pk = ", ".join(tsql_quote(k) for k in table.primary_key)
    parts.append(f"CONSTRAINT {tsql_quote('PK_' + table.name)} PRIMARY KEY CLUSTERED ({pk})")
    qualified = tsql_literal(f"{tsql_quote(schema)}.{tsql_quote(table.name)}")
    return (
        f"IF OBJECT_ID({qualified}, N'U') IS NULL "
        f"CREATE TABLE {tsql_name(schema, table.name)} ({', '.join(parts)})"
    )


def tsql_add_column(table: Table, column: Column, schema: str) -> str:
    qualified = tsql_literal(f"{tsql_quote(schema)}.{tsql_quote(table.name)}")
    return (
        f"IF COL_LENGTH({qualified}, {tsql_literal(column.name)}) IS NULL "
        f"ALTER TABLE {tsql_name(schema, table.name)} ADD {tsql_quote(column.name)} {column.tsql_type} NULL"
    )
