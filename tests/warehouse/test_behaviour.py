"""What every warehouse dialect must do, run on SQLite always and on SQL Server when configured.

Each test commits pages through the public interface and reads back through it; nothing here
knows which dialect it talks to.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.exact.catalog import DELETED, Entity, Field
from shared.warehouse.base import Cursor, InvalidPage, PageResult
from shared.warehouse.schema import ENTITIES
from tests.warehouse.conftest import MakeWarehouse
from tests.warehouse.rows import (
    ACCOUNTS,
    DIVISIONS,
    TRANSACTION_LINES,
    account,
    cursor,
    deleted,
    deleted_cursor,
    division_row,
    guid,
    line,
)


def test_rows_come_back_exactly_as_committed(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse()
    accounts = [account(n, 100 + n) for n in range(1, 6)]
    accounts[0]["Email"] = "a@b.nl"
    lines = [line(n, 1000 + n) for n in range(50)]

    assert wh.commit_page(
        entity=ACCOUNTS, division=1, rows=accounts, cursor=cursor(ACCOUNTS, 105)
    ) == PageResult(upserted=5, deleted=0, skipped_stale=0)
    wh.commit_page(entity=TRANSACTION_LINES, division=1, rows=lines, cursor=cursor(TRANSACTION_LINES, 1049))

    assert wh.read_rows(ACCOUNTS, 1) == sorted(accounts, key=lambda r: r["ID"])
    back = wh.read_rows(TRANSACTION_LINES, 1)
    assert back == sorted(lines, key=lambda r: r["ID"])
    # the canonical forms, not just equal values
    first = back[0]
    assert isinstance(first["AmountDC"], float) and isinstance(first["Timestamp"], int)
    assert first["Date"].tzinfo is not None and first["Date"].utcoffset() == timedelta(0)
    assert wh.read_rows(ACCOUNTS, 2) == []


def test_cursor_is_committed_with_its_page_and_read_back(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse()
    assert wh.read_cursor("acme", 1, "Accounts") is None
    at = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    given = Cursor(
        "acme",
        1,
        "Accounts",
        2**40,
        "https://start.exactonline.nl/api/v1/1/x?$skiptoken=guid'ab'",
        True,
        "r-7",
        at,
    )
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 5)], cursor=given)
    assert wh.read_cursor("acme", 1, "Accounts") == given
    # another connection, division or entity has its own cursor
    assert wh.read_cursor("other", 1, "Accounts") is None
    assert wh.read_cursor("acme", 2, "Accounts") is None
    assert wh.read_cursor("acme", 1, "Items") is None
    # written as given, also backwards (a --full reload restarts the stream)
    restart = replace(given, timestamp=1, next_url=None, complete=False, run_id=None, updated_at=at)
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[], cursor=restart)
    assert wh.read_cursor("acme", 1, "Accounts") == restart


def test_cursor_without_updated_at_gets_the_commit_time(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse()
    before = datetime.now(UTC) - timedelta(seconds=5)
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[], cursor=cursor(ACCOUNTS, None, updated_at=None))
    stored = wh.read_cursor("acme", 1, "Accounts")
    assert stored is not None and stored.updated_at is not None and stored.updated_at >= before
    assert stored.timestamp is None and stored.complete is False


def test_older_versions_never_overwrite_newer_ones(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse()
    wh.commit_page(
        entity=ACCOUNTS, division=1, rows=[account(1, 50, Name="v50")], cursor=cursor(ACCOUNTS, 50)
    )

    stale = wh.commit_page(
        entity=ACCOUNTS, division=1, rows=[account(1, 40, Name="v40")], cursor=cursor(ACCOUNTS, 40)
    )
    assert stale == PageResult(upserted=0, deleted=0, skipped_stale=1)
    assert [r["Name"] for r in wh.read_rows(ACCOUNTS, 1)] == ["v50"]

    same = wh.commit_page(
        entity=ACCOUNTS, division=1, rows=[account(1, 50, Name="v50")], cursor=cursor(ACCOUNTS, 50)
    )
    assert same.upserted == 1  # a replay of the same version rewrites it (>=): harmless, idempotent

    newer = wh.commit_page(
        entity=ACCOUNTS, division=1, rows=[account(1, 60, Name="v60")], cursor=cursor(ACCOUNTS, 60)
    )
    assert newer == PageResult(upserted=1, deleted=0, skipped_stale=0)
    assert [(r["Name"], r["Timestamp"]) for r in wh.read_rows(ACCOUNTS, 1)] == [("v60", 60)]


def test_replaying_every_page_changes_nothing(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse()
    pages = [[account(n, 10 * p + n, Name=f"p{p}") for n in range(p, p + 4)] for p in range(1, 4)]
    for p, rows in enumerate(pages):
        wh.commit_page(entity=ACCOUNTS, division=1, rows=rows, cursor=cursor(ACCOUNTS, 10 * p))
    once = wh.read_rows(ACCOUNTS, 1)
    for p, rows in enumerate(pages):  # at-least-once delivery: the whole run again
        wh.commit_page(entity=ACCOUNTS, division=1, rows=rows, cursor=cursor(ACCOUNTS, 10 * p))
    assert wh.read_rows(ACCOUNTS, 1) == once
    assert {r["Name"] for r in once} == {"p1", "p2", "p3"}


def test_duplicate_keys_in_one_page_keep_the_newest(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse()
    rows = [account(1, 7, Name="new"), account(2, 3), account(1, 5, Name="old"), account(1, 6, Name="mid")]
    result = wh.commit_page(entity=ACCOUNTS, division=1, rows=rows, cursor=cursor(ACCOUNTS, 7))
    assert result == PageResult(upserted=2, deleted=0, skipped_stale=2)
    assert [(r["ID"], r["Name"]) for r in wh.read_rows(ACCOUNTS, 1)] == [
        (guid(1), "new"),
        (guid(2), account(2, 3)["Name"]),
    ]
    # a key written in upper case is the same key
    upper = account(2, 9, Name="upper")
    upper["ID"] = upper["ID"].upper()
    result = wh.commit_page(
        entity=ACCOUNTS, division=1, rows=[upper, account(2, 8)], cursor=cursor(ACCOUNTS, 9)
    )
    assert result.upserted == 1
    assert [(r["ID"], r["Name"]) for r in wh.read_rows(ACCOUNTS, 1)][1] == (guid(2), "upper")


def test_entities_without_timestamp_are_plain_upserts(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse()
    div_cursor = cursor(DIVISIONS, None, complete=True)
    wh.commit_page(entity=DIVISIONS, division=1, rows=[division_row(1), division_row(2)], cursor=div_cursor)
    result = wh.commit_page(
        entity=DIVISIONS,
        division=1,
        rows=[division_row(2, Description="first"), division_row(2, Description="renamed")],
        cursor=div_cursor,
    )
    assert result == PageResult(upserted=1, deleted=0, skipped_stale=1)  # the later duplicate wins
    assert wh.read_rows(DIVISIONS, 1) == [division_row(1), division_row(2, Description="renamed")]


def test_divisions_are_separate(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse()
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 5, Name="one")], cursor=cursor(ACCOUNTS, 5))
    wh.commit_page(
        entity=ACCOUNTS, division=2, rows=[account(1, 3, Name="two")], cursor=cursor(ACCOUNTS, 3, division=2)
    )
    assert [r["Name"] for r in wh.read_rows(ACCOUNTS, 1)] == ["one"]
    assert [r["Name"] for r in wh.read_rows(ACCOUNTS, 2)] == ["two"]
    # a deletion in division 2 leaves division 1 alone
    wh.commit_page(
        entity=DELETED,
        division=2,
        rows=[deleted(ACCOUNTS, guid(1), 9, division=2)],
        deletions=[(ACCOUNTS, guid(1))],
        cursor=deleted_cursor(9, division=2),
    )
    assert [r["Name"] for r in wh.read_rows(ACCOUNTS, 1)] == ["one"]
    assert wh.read_rows(ACCOUNTS, 2) == []


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_a_deletion_removes_the_row(make_warehouse: MakeWarehouse, mode: str) -> None:
    wh = make_warehouse(delete_mode=mode)
    wh.commit_page(
        entity=ACCOUNTS, division=1, rows=[account(1, 10), account(2, 11)], cursor=cursor(ACCOUNTS, 11)
    )
    record = deleted(ACCOUNTS, guid(1), 20)
    result = wh.commit_page(
        entity=DELETED, division=1, rows=[record], deletions=[(ACCOUNTS, guid(1))], cursor=deleted_cursor(20)
    )
    assert result == PageResult(upserted=1, deleted=1, skipped_stale=0)  # upserted: the Deleted record itself
    assert [r["ID"] for r in wh.read_rows(ACCOUNTS, 1)] == [guid(2)]
    assert wh.read_rows(DELETED, 1) == [record]
    assert wh.read_cursor("acme", 1, "Deleted") == deleted_cursor(20)
    # the same Deleted page again: nothing more to delete
    again = wh.commit_page(
        entity=DELETED, division=1, rows=[record], deletions=[(ACCOUNTS, guid(1))], cursor=deleted_cursor(20)
    )
    assert again.deleted == 0
    assert [r["ID"] for r in wh.read_rows(ACCOUNTS, 1)] == [guid(2)]


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_a_row_read_before_its_deletion_but_committed_after_it_stays_deleted(
    make_warehouse: MakeWarehouse, mode: str
) -> None:
    wh = make_warehouse(delete_mode=mode)
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 10)], cursor=cursor(ACCOUNTS, 10))
    # sync/Deleted is committed first (the row was deleted at Timestamp 20) ...
    wh.commit_page(
        entity=DELETED,
        division=1,
        rows=[deleted(ACCOUNTS, guid(1), 20), deleted(ACCOUNTS, guid(3), 21, n=1)],
        deletions=[(ACCOUNTS, guid(1)), (ACCOUNTS, guid(3))],
        cursor=deleted_cursor(21),
    )
    # ... then a slow Accounts step commits versions it read before the deletions (15 and 12;
    # key 3 was never stored at all): neither may come back.
    late = wh.commit_page(
        entity=ACCOUNTS,
        division=1,
        rows=[account(1, 15, Name="stale"), account(3, 12), account(4, 13)],
        cursor=cursor(ACCOUNTS, 15),
    )
    assert late == PageResult(upserted=1, deleted=0, skipped_stale=2)
    assert [r["ID"] for r in wh.read_rows(ACCOUNTS, 1)] == [guid(4)]


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_a_reinsert_newer_than_the_deletion_wins(make_warehouse: MakeWarehouse, mode: str) -> None:
    wh = make_warehouse(delete_mode=mode)
    wh.commit_page(
        entity=ACCOUNTS, division=1, rows=[account(1, 10, Name="before")], cursor=cursor(ACCOUNTS, 10)
    )
    wh.commit_page(
        entity=DELETED,
        division=1,
        rows=[deleted(ACCOUNTS, guid(1), 20)],
        deletions=[(ACCOUNTS, guid(1))],
        cursor=deleted_cursor(20),
    )
    assert wh.read_rows(ACCOUNTS, 1) == []
    back = wh.commit_page(
        entity=ACCOUNTS, division=1, rows=[account(1, 30, Name="again")], cursor=cursor(ACCOUNTS, 30)
    )
    assert back == PageResult(upserted=1, deleted=0, skipped_stale=0)
    assert wh.read_rows(ACCOUNTS, 1) == [account(1, 30, Name="again")]
    # the old deletion replayed cannot remove the newer row, and the old version cannot return
    replay = wh.commit_page(
        entity=DELETED,
        division=1,
        rows=[deleted(ACCOUNTS, guid(1), 20)],
        deletions=[(ACCOUNTS, guid(1))],
        cursor=deleted_cursor(20),
    )
    assert replay.deleted == 0
    wh.commit_page(
        entity=ACCOUNTS, division=1, rows=[account(1, 10, Name="before")], cursor=cursor(ACCOUNTS, 10)
    )
    assert wh.read_rows(ACCOUNTS, 1) == [account(1, 30, Name="again")]
    # and a later deletion removes it again
    wh.commit_page(
        entity=DELETED,
        division=1,
        rows=[deleted(ACCOUNTS, guid(1), 40)],
        deletions=[(ACCOUNTS, guid(1))],
        cursor=deleted_cursor(40),
    )
    assert wh.read_rows(ACCOUNTS, 1) == []


def test_deletions_of_several_entities_in_one_page(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse(delete_mode="soft")
    wh.commit_page(
        entity=ACCOUNTS, division=1, rows=[account(1, 1), account(2, 2)], cursor=cursor(ACCOUNTS, 2)
    )
    wh.commit_page(
        entity=TRANSACTION_LINES,
        division=1,
        rows=[line(1, 3), line(2, 4)],
        cursor=cursor(TRANSACTION_LINES, 4),
    )
    records = [deleted(ACCOUNTS, guid(2), 10), deleted(TRANSACTION_LINES, line(1, 0)["ID"], 11)]
    result = wh.commit_page(
        entity=DELETED,
        division=1,
        rows=records,
        deletions=[(ACCOUNTS, guid(2)), (TRANSACTION_LINES, line(1, 0)["ID"].upper())],
        cursor=deleted_cursor(11),
    )
    assert result.deleted == 2
    assert [r["ID"] for r in wh.read_rows(ACCOUNTS, 1)] == [guid(1)]
    assert [r["ID"] for r in wh.read_rows(TRANSACTION_LINES, 1)] == [line(2, 0)["ID"]]


def test_a_deletion_without_its_record_uses_the_cursor_timestamp(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse()
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 10)], cursor=cursor(ACCOUNTS, 10))
    wh.commit_page(
        entity=DELETED, division=1, rows=[], deletions=[(ACCOUNTS, guid(1))], cursor=deleted_cursor(50)
    )
    assert wh.read_rows(ACCOUNTS, 1) == []
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 49)], cursor=cursor(ACCOUNTS, 49))
    assert wh.read_rows(ACCOUNTS, 1) == []
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 51)], cursor=cursor(ACCOUNTS, 51))
    assert [r["Timestamp"] for r in wh.read_rows(ACCOUNTS, 1)] == [51]


def test_a_deletion_older_than_the_stored_row_leaves_it(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse()
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 30)], cursor=cursor(ACCOUNTS, 30))
    result = wh.commit_page(
        entity=DELETED,
        division=1,
        rows=[deleted(ACCOUNTS, guid(1), 20)],
        deletions=[(ACCOUNTS, guid(1))],
        cursor=deleted_cursor(20),
    )
    assert result.deleted == 0
    assert [r["Timestamp"] for r in wh.read_rows(ACCOUNTS, 1)] == [30]


@pytest.mark.parametrize(
    ("rows", "deletions", "page_cursor", "problem"),
    [
        ([account(1, 5)], (), cursor(ACCOUNTS, 5, division=2), "cursor is for division 2"),
        ([account(1, 5)], (), cursor(DIVISIONS, 5), "entity 'Divisions'"),
        ([{**account(1, 5), "ID": None}], (), cursor(ACCOUNTS, 5), "has no ID"),
        ([{**account(1, 5), "Timestamp": None}], (), cursor(ACCOUNTS, 5), "Timestamp must be an integer"),
        ([{**account(1, 5), "Timestamp": "5"}], (), cursor(ACCOUNTS, 5), "Timestamp must be an integer"),
        (
            [account(1, 5), {**account(2, 6), "Created": datetime(2024, 1, 1)}],
            (),
            cursor(ACCOUNTS, 6),
            "Created",
        ),
        (
            [account(1, 5), {**account(2, 6), "Blocked": "yes"}],
            (),
            cursor(ACCOUNTS, 6),
            "Blocked must be a bool",
        ),
        ([{**account(1, 5), "Name": 12}], (), cursor(ACCOUNTS, 5), "Name must be a string"),
        ([account(1, 5)], [(ACCOUNTS, guid(1))], cursor(ACCOUNTS, None), "no Timestamp"),
        ([account(1, 5)], [("Accounts", guid(1))], cursor(ACCOUNTS, 5), "not a catalog entity"),
        ([account(1, 5)], (), replace(cursor(ACCOUNTS, 5), updated_at=datetime(2024, 1, 1)), "updated_at"),
    ],
)
def test_a_bad_page_is_refused_and_writes_nothing(
    make_warehouse: MakeWarehouse,
    rows: list[dict[str, object]],
    deletions: object,
    page_cursor: Cursor,
    problem: str,
) -> None:
    wh = make_warehouse()
    with pytest.raises(InvalidPage, match=problem):
        wh.commit_page(entity=ACCOUNTS, division=1, rows=rows, deletions=deletions, cursor=page_cursor)  # type: ignore[arg-type]
    assert wh.read_rows(ACCOUNTS, 1) == []
    assert wh.read_cursor("acme", 1, "Accounts") is None
    assert wh.read_cursor("acme", 2, "Accounts") is None


def test_failed_steps_are_stored_as_given(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse()
    at = datetime(2025, 6, 1, 12, 0, 0, 250000, tzinfo=UTC)
    wh.record_failed_step(
        message='{"division": 1, "entity": "Accounts"} — ünïcode', reason="invalid: entity", at=at
    )
    wh.record_failed_step(message="second", reason="rate budget", at=at + timedelta(seconds=1))
    steps = wh.read_failed_steps()  # type: ignore[attr-defined]
    assert [(s.message, s.reason, s.at) for s in steps] == [
        ("second", "rate budget", at + timedelta(seconds=1)),
        ('{"division": 1, "entity": "Accounts"} — ünïcode', "invalid: entity", at),
    ]


def test_migrate_is_idempotent_and_adds_new_columns(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse()
    assert wh.migrate() == []
    grown = Entity(
        name=ACCOUNTS.name,
        table=ACCOUNTS.table,
        key=ACCOUNTS.key,
        fields=(*ACCOUNTS.fields, Field("Phone", "str"), Field("CreditLine", "decimal")),
        regular_path=ACCOUNTS.regular_path,
        sync_path=ACCOUNTS.sync_path,
        deleted_entity_type=ACCOUNTS.deleted_entity_type,
    )
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 5)], cursor=cursor(ACCOUNTS, 5))
    entities = tuple(grown if e.name == "Accounts" else e for e in ENTITIES)
    newer = make_warehouse(entities=entities, migrate=False)
    applied = newer.migrate()
    assert len(applied) == 2 and "Phone" in applied[0] and "CreditLine" in applied[1]
    assert newer.migrate() == []
    row = {**account(2, 6), "Phone": "+31 20 000", "CreditLine": 2500.5}
    newer.commit_page(entity=grown, division=1, rows=[row], cursor=cursor(grown, 6))
    assert newer.read_rows(grown, 1) == [{**account(1, 5), "Phone": None, "CreditLine": None}, row]


def test_a_failed_step_needs_an_aware_time(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse()
    with pytest.raises(InvalidPage, match="at must be a timezone-aware datetime"):
        wh.record_failed_step(message="m", reason="r", at=datetime(2025, 1, 1))
    assert wh.read_failed_steps() == []  # type: ignore[attr-defined]
