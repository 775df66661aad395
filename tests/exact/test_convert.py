"""Row conversion by catalog type: canonical values, Amsterdam dates to UTC, clear errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.exact.catalog import CATALOG, DELETED, entity
from shared.exact.convert import (
    convert_row,
    convert_value,
    parse_exact_date,
    timestamp_of,
    to_exact_date,
)
from shared.exact.errors import ConversionError


def ms_of_wall(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """Exact's number for an Amsterdam wall-clock time: that wall time read as if it were UTC."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


def test_winter_date_is_one_hour_ahead_of_utc() -> None:
    # 2022-01-01 11:00 in Amsterdam (CET, UTC+1) is 10:00 UTC.
    assert parse_exact_date("/Date(1641034800000)/") == datetime(2022, 1, 1, 10, 0, tzinfo=UTC)
    assert parse_exact_date(f"/Date({ms_of_wall(2022, 1, 1, 11)})/") == datetime(2022, 1, 1, 10, tzinfo=UTC)


def test_summer_date_is_two_hours_ahead_of_utc() -> None:
    got = parse_exact_date(f"/Date({ms_of_wall(2024, 7, 15, 14, 30)})/")
    assert got == datetime(2024, 7, 15, 12, 30, tzinfo=UTC)
    assert got.tzinfo is UTC


def test_spring_forward_transition() -> None:
    # 2024-03-31: clocks jump 02:00 CET -> 03:00 CEST (01:00 UTC).
    assert parse_exact_date(f"/Date({ms_of_wall(2024, 3, 31, 1, 59)})/") == datetime(
        2024, 3, 31, 0, 59, tzinfo=UTC
    )
    assert parse_exact_date(f"/Date({ms_of_wall(2024, 3, 31, 3, 0)})/") == datetime(
        2024, 3, 31, 1, 0, tzinfo=UTC
    )
    # 02:30 does not exist: read with the offset before the jump (CET), deterministically.
    assert parse_exact_date(f"/Date({ms_of_wall(2024, 3, 31, 2, 30)})/") == datetime(
        2024, 3, 31, 1, 30, tzinfo=UTC
    )


def test_fall_back_transition() -> None:
    # 2024-10-27: 03:00 CEST -> 02:00 CET (01:00 UTC); 02:00-03:00 happens twice.
    assert parse_exact_date(f"/Date({ms_of_wall(2024, 10, 27, 1, 30)})/") == datetime(
        2024, 10, 26, 23, 30, tzinfo=UTC
    )
    assert parse_exact_date(f"/Date({ms_of_wall(2024, 10, 27, 3, 30)})/") == datetime(
        2024, 10, 27, 2, 30, tzinfo=UTC
    )
    ambiguous = ms_of_wall(2024, 10, 27, 2, 30)
    # Without a hint: the first occurrence (CEST).
    assert parse_exact_date(f"/Date({ambiguous})/") == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    # An offset naming the second occurrence picks it; one naming the first keeps it.
    assert parse_exact_date(f"/Date({ambiguous}+0100)/") == datetime(2024, 10, 27, 1, 30, tzinfo=UTC)
    assert parse_exact_date(f"/Date({ambiguous}+0200)/") == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)


def test_offset_suffix_does_not_change_the_amsterdam_reading() -> None:
    ms = ms_of_wall(2023, 5, 1, 9)
    expected = datetime(2023, 5, 1, 7, tzinfo=UTC)
    for suffix in ("", "+0100", "+0200", "-0500", "+0000"):
        assert parse_exact_date(f"/Date({ms}{suffix})/") == expected


def test_round_trip_of_every_hour_across_a_year_outside_the_fold() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    for hour in range(0, 366 * 24, 7):
        moment = datetime.fromtimestamp(start + hour * 3600 + 17 * 60, UTC)
        back = parse_exact_date(to_exact_date(moment))
        if back != moment:  # only the repeated autumn hour may be ambiguous, and then by one hour
            assert (moment - back).total_seconds() == 3600
            assert moment.month == 10


def test_dates_before_1970_and_out_of_range() -> None:
    assert parse_exact_date(f"/Date({ms_of_wall(1969, 12, 31, 23)})/") == datetime(
        1969, 12, 31, 22, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="range"):
        parse_exact_date("/Date(99999999999999999)/")


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("guid", "B4F5A0C2-1D2E-4F3A-9B8C-0123456789AB", "b4f5a0c2-1d2e-4f3a-9b8c-0123456789ab"),
        ("str", "     12", "     12"),
        ("int", 7, 7),
        ("int", "7", 7),
        ("int", 7.0, 7),
        ("int64", "9223372036854775807", 9223372036854775807),
        ("int64", 123456789012, 123456789012),
        ("decimal", "12.50", 12.5),
        ("decimal", 3, 3.0),
        ("decimal", -0.1, -0.1),
        ("decimal", "1E3", 1000.0),
        ("bool", True, True),
        ("bool", "false", False),
        ("datetime", None, None),
        ("guid", None, None),
    ],
)
def test_values_by_type(kind: str, raw: object, expected: object) -> None:
    value = convert_value(kind, raw)  # type: ignore[arg-type]
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("guid", "not-a-guid"),
        ("guid", "{b4f5a0c2-1d2e-4f3a-9b8c-0123456789ab}"),
        ("guid", 12),
        ("str", 12),
        ("int", True),
        ("int", "7.5"),
        ("int", 7.5),
        ("int", "٣"),  # a non-ASCII digit
        ("int64", ""),
        ("decimal", "NaN"),
        ("decimal", float("inf")),
        ("decimal", "12,50"),
        ("bool", 1),
        ("bool", "yes"),
        ("datetime", "2024-01-01T00:00:00"),
        ("datetime", "/Date(abc)/"),
        ("datetime", 1641034800000),
    ],
)
def test_malformed_values_are_refused(kind: str, raw: object) -> None:
    with pytest.raises(ValueError, match="expected"):
        convert_value(kind, raw)  # type: ignore[arg-type]


def _accounts_row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "__metadata": {
            "uri": "https://x/api/v1/1/sync/CRM/Accounts(guid'...')",
            "type": "Exact.Web.Api.Models.Account",
        },
        "ID": "AAAAAAAA-0000-4000-8000-000000000001",
        "Timestamp": "918273",
        "Code": "                 1",
        "Name": "Café Noord",
        "Status": "C",
        "Blocked": False,
        "IsSales": True,
        "IsSupplier": False,
        "Email": None,
        "Country": "NL",
        "Created": "/Date(1641034800000)/",
        "Modified": f"/Date({ms_of_wall(2024, 7, 1, 12)})/",
        "City": "Delft",  # not in the catalog: dropped
    }
    row.update(overrides)
    return row


def test_convert_row_uses_catalog_order_and_types() -> None:
    accounts = entity("Accounts")
    out = convert_row(accounts, _accounts_row())
    assert list(out) == [f.name for f in accounts.fields]
    assert out["ID"] == "aaaaaaaa-0000-4000-8000-000000000001"
    assert out["Timestamp"] == 918273
    assert out["Code"] == "                 1"
    assert out["Email"] is None
    assert out["Created"] == datetime(2022, 1, 1, 10, tzinfo=UTC)
    assert out["Modified"] == datetime(2024, 7, 1, 10, tzinfo=UTC)
    assert convert_row("accounts", _accounts_row(Timestamp=918273)) == out


def test_convert_row_names_entity_and_field_on_bad_values() -> None:
    with pytest.raises(ConversionError, match=r"Accounts\.Created: expected an Exact date") as caught:
        convert_row("Accounts", _accounts_row(Created="yesterday"))
    assert caught.value.entity == "Accounts"
    assert caught.value.field == "Created"
    row = _accounts_row()
    del row["Name"]
    with pytest.raises(ConversionError, match=r"Accounts\.Name: .*absent"):
        convert_row("Accounts", row)


def test_every_catalog_entity_has_convertible_types() -> None:
    samples = {
        "guid": "00000000-0000-4000-8000-00000000000A",
        "str": "x",
        "int": 1,
        "int64": "2",
        "decimal": "1.5",
        "bool": True,
        "datetime": "/Date(0)/",
    }
    for item in (*CATALOG, DELETED):
        row = {f.name: samples[f.type] for f in item.fields}
        out = convert_row(item, row)
        assert set(out) == {f.name for f in item.fields}


def test_timestamp_of_number_or_string() -> None:
    assert timestamp_of({"Timestamp": 5}) == 5
    assert timestamp_of({"Timestamp": "5"}) == 5
    with pytest.raises(ValueError, match="Timestamp"):
        timestamp_of({"Timestamp": "5L"})
