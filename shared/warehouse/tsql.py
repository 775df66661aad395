"""T-SQL text for the Azure SQL warehouse, built from the catalog (no values ever in the text).

The page batch is the heart: ONE round trip carries the whole page as two JSON parameters and
runs, in order, the entity MERGE (monotonic, tombstone-guarded), the tombstone MERGE, one
DELETE (or soft-delete UPDATE) per entity the page deletes from, and the cursor MERGE, then
returns the counts. Why this shape:

- ``MERGE … WITH (HOLDLOCK)``: without the serializable hint two concurrent MERGEs of the same
  new key can both take the NOT MATCHED branch and one fails on the primary key.
- ``OPENJSON(@rows) WITH (…)``: one NVARCHAR(MAX) parameter instead of 18 000 bound values;
  parameters are first copied into typed variables because pyodbc may send a long string as
  ``ntext``, which OPENJSON refuses as its argument.
- The source holds each key once (the page is de-duplicated in Python): a duplicate key makes
  MERGE fail ("attempted to UPDATE or DELETE the same row more than once").
- ``SET XACT_ABORT ON``: any error aborts the batch and dooms the transaction, so nothing of a
  half-run page can be committed by mistake; the caller rolls back and may re-run it.
- Targets are matched on the source's columns only (``ON t.Division = s.Division AND …``):
  filtering the target inside ``ON`` is documented to give wrong results.
"""

# S608: statement text is built from catalog identifiers (quoted); every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import functools
from collections.abc import Sequence

from shared.exact.catalog import Entity, FieldType
from shared.warehouse.base import check_delete_mode
from shared.warehouse.page import has_timestamp
from shared.warehouse.schema import (
    DELETED_AT,
    DIVISION,
    FAILED_STEPS,
    STATE,
    SYNCED_AT,
    TOMBSTONES,
    entity_table,
    field_type,
    stored_fields,
    tsql_literal,
    tsql_name,
    tsql_quote,
)

q = tsql_quote

#: The batch's parameters, in the order ``page_batch`` binds them.
PAGE_PARAMETERS: tuple[tuple[str, str], ...] = (
    ("division", "INT"),
    ("rows", "NVARCHAR(MAX)"),  # JSON array of row objects keyed by field name
    ("deletions", "NVARCHAR(MAX)"),  # JSON array of {entity, key, timestamp, deleted_date}
    ("now", "DATETIME2(3)"),  # _SyncedAt, UTC
    ("page_cursor", "NVARCHAR(MAX)"),  # JSON object: the Cursor (JSON, so no parameter is ever NULL)
)

_KEY_CONVERSIONS: dict[FieldType, str] = {
    "guid": "TRY_CONVERT(UNIQUEIDENTIFIER, j.[entity_key])",
    "int": "TRY_CONVERT(INT, j.[entity_key])",
    "int64": "TRY_CONVERT(BIGINT, j.[entity_key])",
    "str": "j.[entity_key]",
}

_DELETIONS_SCHEMA = (
    "[entity] NVARCHAR(128) '$.entity', [entity_key] NVARCHAR(300) '$.key', "
    "[timestamp] BIGINT '$.timestamp', [deleted_date] DATETIME2(3) '$.deleted_date'"
)


def json_path(name: str) -> str:
    escaped = name.replace("'", "''").replace('"', '\\"')
    return f"'$.\"{escaped}\"'"


def _tsql_type(entity: Entity, name: str) -> str:
    return entity_table(entity).column(name).tsql_type


def _merge_rows(entity: Entity, schema: str) -> str:
    names = stored_fields(entity)
    table = tsql_name(schema, entity.table)
    with_clause = ", ".join(f"{q(n)} {_tsql_type(entity, n)} {json_path(n)}" for n in names)
    guard = ""
    if has_timestamp(entity):
        with_clause += f", [_key] NVARCHAR(300) {json_path(entity.key)}"
        # Read before its deletion, committed after it: a tombstone at least as new keeps it out.
        guard = (
            f" WHERE NOT EXISTS (SELECT 1 FROM {tsql_name(schema, TOMBSTONES.name)} AS d"
            f" WHERE d.[entity] = {tsql_literal(entity.name)} AND d.[division] = @division"
            " AND d.[entity_key] = j.[_key] AND d.[timestamp] >= j.[Timestamp])"
        )
    source = (
        f"SELECT @division AS {q(DIVISION)}, {', '.join('j.' + q(n) for n in names)}"
        f" FROM OPENJSON(@rows) WITH ({with_clause}) AS j{guard}"
    )
    updates = [f"t.{q(n)} = s.{q(n)}" for n in names if n != entity.key]
    updates += [f"t.{q(SYNCED_AT)} = @now", f"t.{q(DELETED_AT)} = NULL"]
    newer = " AND (t.[Timestamp] IS NULL OR s.[Timestamp] >= t.[Timestamp])" if has_timestamp(entity) else ""
    columns = [DIVISION, *names]
    return (
        f"MERGE {table} WITH (HOLDLOCK) AS t\n"
        f"USING ({source}) AS s\n"
        f"ON t.{q(DIVISION)} = s.{q(DIVISION)} AND t.{q(entity.key)} = s.{q(entity.key)}\n"
        f"WHEN MATCHED{newer} THEN UPDATE SET {', '.join(updates)}\n"
        f"WHEN NOT MATCHED BY TARGET THEN INSERT ({', '.join(q(c) for c in columns)}, {q(SYNCED_AT)}, {q(DELETED_AT)})"
        f" VALUES ({', '.join('s.' + q(c) for c in columns)}, @now, NULL);\n"
        "SET @upserted = @@ROWCOUNT;\n"
    )


def _merge_tombstones(schema: str) -> str:
    columns = "[entity], [division], [entity_key], [timestamp], [deleted_date], [recorded_at]"
    return (
        f"MERGE {tsql_name(schema, TOMBSTONES.name)} WITH (HOLDLOCK) AS t\n"
        "USING (SELECT j.[entity], @division AS [division], j.[entity_key], j.[timestamp], j.[deleted_date]"
        f" FROM OPENJSON(@deletions) WITH ({_DELETIONS_SCHEMA}) AS j) AS s\n"
        "ON t.[entity] = s.[entity] AND t.[division] = s.[division] AND t.[entity_key] = s.[entity_key]\n"
        "WHEN MATCHED AND s.[timestamp] > t.[timestamp] THEN UPDATE SET t.[timestamp] = s.[timestamp],"
        " t.[deleted_date] = s.[deleted_date], t.[recorded_at] = @now\n"
        f"WHEN NOT MATCHED BY TARGET THEN INSERT ({columns})"
        " VALUES (s.[entity], s.[division], s.[entity_key], s.[timestamp], s.[deleted_date], @now);\n"
    )


def _apply_deletions(target: Entity, schema: str, delete_mode: str) -> str:
    table = tsql_name(schema, target.table)
    key = _KEY_CONVERSIONS[field_type(target, target.key)]
    source = (
        f"SELECT {key} AS [k], j.[timestamp], j.[deleted_date]"
        f" FROM OPENJSON(@deletions) WITH ({_DELETIONS_SCHEMA}) AS j"
        f" WHERE j.[entity] = {tsql_literal(target.name)}"
    )
    join = f"INNER JOIN ({source}) AS d ON t.{q(DIVISION)} = @division AND t.{q(target.key)} = d.[k]"
    older = "(t.[Timestamp] IS NULL OR t.[Timestamp] < d.[timestamp])" if has_timestamp(target) else ""
    if delete_mode == "hard":
        where = f" WHERE {older}" if older else ""
        statement = f"DELETE t FROM {table} AS t {join}{where};\n"
    else:
        where = f" WHERE t.{q(DELETED_AT)} IS NULL" + (f" AND {older}" if older else "")
        statement = (
            f"UPDATE t SET t.{q(DELETED_AT)} = COALESCE(d.[deleted_date], @now), t.{q(SYNCED_AT)} = @now"
            f" FROM {table} AS t {join}{where};\n"
        )
    return statement + "SET @deleted = @deleted + @@ROWCOUNT;\n"


def _merge_state(schema: str) -> str:
    columns = [c.name for c in STATE.columns]
    keys = STATE.primary_key
    cursor_schema = ", ".join(
        f"{q(c.name)} {c.tsql_type} {json_path(c.name)}" for c in STATE.columns if c.name != "division"
    )
    selected = ", ".join("@division AS [division]" if c == "division" else f"c.{q(c)}" for c in columns)
    return (
        f"MERGE {tsql_name(schema, STATE.name)} WITH (HOLDLOCK) AS t\n"
        f"USING (SELECT {selected} FROM OPENJSON(@page_cursor) WITH ({cursor_schema}) AS c) AS s\n"
        f"ON {' AND '.join(f't.{q(k)} = s.{q(k)}' for k in keys)}\n"
        f"WHEN MATCHED THEN UPDATE SET {', '.join(f't.{q(c)} = s.{q(c)}' for c in columns if c not in keys)}\n"
        f"WHEN NOT MATCHED BY TARGET THEN INSERT ({', '.join(q(c) for c in columns)})"
        f" VALUES ({', '.join('s.' + q(c) for c in columns)});\n"
    )


@functools.lru_cache(maxsize=256)
def page_batch(
    entity: Entity, deletion_targets: tuple[Entity, ...], delete_mode: str, schema: str = "dbo"
) -> str:
    """The one-round-trip batch for a page of ``entity`` deleting from ``deletion_targets``.

    Binds ``PAGE_PARAMETERS`` in order; returns one result row ``(upserted, deleted)``.
    """
    check_delete_mode(delete_mode)
    declare = "".join(f"DECLARE @{name} {kind} = ?;\n" for name, kind in PAGE_PARAMETERS)
    parts = [
        "SET NOCOUNT ON;\nSET XACT_ABORT ON;\n",
        declare,
        "DECLARE @upserted INT = 0;\nDECLARE @deleted INT = 0;\n",
        _merge_rows(entity, schema),
    ]
    if deletion_targets:
        parts.append(_merge_tombstones(schema))
        parts.extend(_apply_deletions(target, schema, delete_mode) for target in deletion_targets)
    parts.append(_merge_state(schema))
    parts.append("SELECT @upserted AS [upserted], @deleted AS [deleted];")
    return "".join(parts)


def read_rows(entity: Entity, schema: str = "dbo") -> str:
    selected = ", ".join(q(DIVISION) if f.name == DIVISION else q(f.name) for f in entity.fields)
    return (
        f"SELECT {selected} FROM {tsql_name(schema, entity.table)}"
        f" WHERE {q(DIVISION)} = ? AND {q(DELETED_AT)} IS NULL"
    )


def read_cursor(schema: str = "dbo") -> str:
    columns = ", ".join(q(c.name) for c in STATE.columns)
    return (
        f"SELECT {columns} FROM {tsql_name(schema, STATE.name)}"
        " WHERE [connection] = ? AND [division] = ? AND [entity] = ?"
    )


def insert_failed_step(schema: str = "dbo") -> str:
    return f"INSERT INTO {tsql_name(schema, FAILED_STEPS.name)} ([at], [reason], [message]) VALUES (?, ?, ?)"


def read_failed_steps(schema: str = "dbo") -> str:
    return f"SELECT TOP (?) [at], [reason], [message] FROM {tsql_name(schema, FAILED_STEPS.name)} ORDER BY [id] DESC"


def existing_columns() -> str:
    """Every (table, column) of a schema: what ``migrate`` compares the catalog against."""
    return "SELECT TABLE_NAME, COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = ?"


def all_statements(entities: Sequence[Entity], delete_mode: str, schema: str = "dbo") -> list[str]:
    """Every DML/query text the warehouse can send, for parse checks."""
    out = [read_cursor(schema), insert_failed_step(schema), read_failed_steps(schema), existing_columns()]
    for entity in entities:
        out.append(page_batch(entity, (), delete_mode, schema))
        out.append(page_batch(entity, tuple(entities), delete_mode, schema))
        out.append(read_rows(entity, schema))
    return out
