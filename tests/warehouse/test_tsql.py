"""Every T-SQL text the Azure SQL warehouse can send parses as T-SQL (sqlglot), with the shape we rely on."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from shared.exact.catalog import CATALOG, DELETED, Entity
from shared.warehouse import tsql
from shared.warehouse.schema import ENTITIES, all_tables, entity_table, tsql_add_column, tsql_create
from tests.warehouse.rows import ACCOUNTS, DIVISIONS, TRANSACTION_LINES


def parse(sql: str) -> list[exp.Expr]:
    statements = [
        s for s in sqlglot.parse(sql, read="tsql", error_level=sqlglot.ErrorLevel.RAISE) if s is not None
    ]
    for statement in statements:
        # sqlglot falls back to an opaque Command for syntax it does not understand: not good enough.
        assert not list(statement.find_all(exp.Command)), statement.sql("tsql")[:200]
    return statements


def holdlock(merge: exp.Merge) -> bool:
    hints = merge.this.args.get("hints") or []
    return any("HOLDLOCK" in hint.sql("tsql").upper() for hint in hints)


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_every_statement_parses(mode: str) -> None:
    for sql in tsql.all_statements(ENTITIES, mode):
        assert parse(sql)
    for sql in tsql.all_statements(ENTITIES, mode, schema="exactsync_test_1"):
        assert parse(sql)


@pytest.mark.parametrize("entity", [*CATALOG, DELETED], ids=lambda e: e.name)
def test_page_batch_is_one_holdlock_merge_from_openjson_plus_the_cursor(entity: Entity) -> None:
    sql = tsql.page_batch(entity, (), "hard")
    statements = parse(sql)
    merges = [s for s in statements if isinstance(s, exp.Merge)]
    assert len(merges) == 2  # the page, the cursor
    page_merge, state_merge = merges
    assert page_merge.this.name == entity.table
    assert state_merge.this.name == "exactsync_state"
    assert all(holdlock(m) for m in merges)
    source = page_merge.args["using"]
    assert source.find(exp.OpenJSON) is not None
    assert source.find(exp.OpenJSON).this.name == "rows"  # OPENJSON(@rows)
    # the statement binds exactly the declared parameters, in one batch
    placeholders = [p for s in statements for p in s.find_all(exp.Placeholder)]
    assert len(placeholders) == len(tsql.PAGE_PARAMETERS)
    assert isinstance(statements[-1], exp.Select)  # the counts come back in the same round trip
    assert sql.startswith("SET NOCOUNT ON;\nSET XACT_ABORT ON;")


def test_monotonic_and_tombstone_guard_only_where_there_is_a_timestamp() -> None:
    accounts = tsql.page_batch(ACCOUNTS, (), "hard")
    assert "s.[Timestamp] >= t.[Timestamp]" in accounts
    assert "[exactsync_tombstones] AS d" in accounts and "d.[timestamp] >= j.[Timestamp]" in accounts
    divisions = tsql.page_batch(DIVISIONS, (), "hard")
    assert "Timestamp" not in divisions.split("MERGE [dbo].[exactsync_state]")[0]


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_deletions_merge_tombstones_and_touch_each_target_table(mode: str) -> None:
    targets = (ACCOUNTS, DIVISIONS, TRANSACTION_LINES)
    statements = parse(tsql.page_batch(DELETED, targets, mode))
    merges = [s for s in statements if isinstance(s, exp.Merge)]
    assert [m.this.name for m in merges] == ["exact_deleted", "exactsync_tombstones", "exactsync_state"]
    assert all(holdlock(m) for m in merges)
    assert merges[1].args["using"].find(exp.OpenJSON).this.name == "deletions"
    kind = exp.Delete if mode == "hard" else exp.Update
    changes = [s for s in statements if isinstance(s, kind)]
    assert len(changes) == len(targets)
    for change, target in zip(changes, targets, strict=True):
        sql = change.sql("tsql")
        assert target.table in sql and "OPENJSON(@deletions)" in sql
        assert f"N'{target.name}'" in sql
        assert ("[Timestamp] < d.[timestamp]" in sql) == (target is not DIVISIONS)
        if mode == "soft":
            assert "_DeletedAt" in sql


def test_ddl_parses_and_uses_the_documented_types() -> None:
    for table in all_tables():
        statement = parse(tsql_create(table, "dbo"))[0]
        assert isinstance(statement, exp.IfBlock) and statement.find(exp.Create) is not None
        for column in table.columns:
            (alter,) = parse(tsql_add_column(table, column, "dbo"))
            assert alter.find(exp.Alter) is not None
    accounts = tsql_create(entity_table(ACCOUNTS), "dbo")
    for piece in (
        "[ID] UNIQUEIDENTIFIER NOT NULL",
        "[Timestamp] BIGINT NULL",
        "[Name] NVARCHAR(MAX) NULL",
        "[Blocked] BIT NULL",
        "[Created] DATETIME2(3) NULL",
        "[_SyncedAt] DATETIME2(3) NOT NULL",
        "[_DeletedAt] DATETIME2(3) NULL",
        "PRIMARY KEY CLUSTERED ([Division], [ID])",
    ):
        assert piece in accounts
    assert "[AmountDC] FLOAT NULL" in tsql_create(entity_table(TRANSACTION_LINES), "dbo")
    assert "[Code] INT NOT NULL" in tsql_create(entity_table(DIVISIONS), "dbo")
