"""Reference: "REST API" section and the "Entities" table, one test per fact."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import pytest

from tests.conformance.support import (
    SELECT_MESSAGE,
    Exact,
    SandboxFactory,
    odata_error_text,
    start,
    utc,
)

DATE = re.compile(r"^/Date\((-?\d+)\)/$")
SYNC_ENTITIES = {
    # sync path, regular path, bulk path, key, $select
    "Accounts": ("sync/CRM/Accounts", "crm/Accounts", "bulk/CRM/Accounts", "ID", "ID,Timestamp,Code,Name"),
    "TransactionLines": (
        "sync/Financial/TransactionLines",
        "financialtransaction/TransactionLines",
        "bulk/Financial/TransactionLines",
        "ID",
        "ID,Timestamp,EntryID,AmountDC,Date",
    ),
    "Items": ("sync/Logistics/Items", "logistics/Items", "bulk/Logistics/Items", "ID", "ID,Timestamp,Code"),
    "Projects": ("sync/Project/Projects", "project/Projects", None, "ID", "ID,Timestamp,Code"),
    "SalesInvoices": (
        "sync/SalesInvoice/SalesInvoices",
        "salesinvoice/SalesInvoices",
        "bulk/SalesInvoice/SalesInvoices",
        "InvoiceID",
        "InvoiceID,Timestamp,InvoiceNumber",
    ),
}
ALL_ACCOUNTS = "Blocked eq false or Blocked eq true"
DELETED_ENTITY_TYPES = {"TransactionLines": 1, "Accounts": 2, "Items": 9, "SalesInvoices": 13, "Projects": 21}


def results(answer: Any) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["d"]["results"]
    return rows


def every_row(driver: Exact, token: str, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """Follow ``__next`` to the end."""
    rows: list[dict[str, Any]] = []
    url: str | None = driver.url(path, params)
    while url:
        answer = driver.get(url, token)
        rows.extend(results(answer))
        url = answer.json()["d"].get("__next")
    return rows


def timestamp(row: dict[str, Any]) -> int:
    """Reference: accept ``Timestamp`` as a number or a string."""
    return int(row["Timestamp"])


def session(factory: SandboxFactory, **options: Any) -> tuple[Exact, str, int]:
    driver = Exact(start(factory, **options))
    token = driver.tokens()["access_token"]
    return driver, token, driver.handle.divisions[0]


# -- paths, Me, divisions, format -----------------------------------------------------------------


def test_me_has_no_division_and_answers_d_results(sandbox_factory: SandboxFactory) -> None:
    """Paths: ``GET /api/v1/current/Me`` gives ``{"d":{"results":[{"CurrentDivision":…,"UserID":…}]}}``."""
    driver, token, _division = session(sandbox_factory)
    me = results(driver.api("current/Me", token))
    assert len(me) == 1
    assert isinstance(me[0]["CurrentDivision"], int)
    assert me[0]["CurrentDivision"] in driver.handle.divisions
    assert me[0]["UserID"]
    driver.close()


@pytest.mark.parametrize("path", ["system/Divisions", "system/AllDivisions", "hrm/Divisions"])
def test_division_endpoints_are_keyed_by_int_code(sandbox_factory: SandboxFactory, path: str) -> None:
    """Paths: ``system/Divisions`` (key ``Code``, int), ``system/AllDivisions``, ``hrm/Divisions``."""
    driver, token, division = session(sandbox_factory)
    rows = results(driver.api(f"{division}/{path}", token))
    assert rows
    assert all(isinstance(row["Code"], int) for row in rows)
    assert division in {row["Code"] for row in rows}
    for name in ("Description", "Current", "Customer", "CustomerName", "Country", "Currency", "Status"):
        assert name in rows[0], (name, rows[0])
    assert {row["Status"] for row in rows} <= {0, 1, 2}
    driver.close()


def test_without_accept_json_the_answer_is_atom_xml(sandbox_factory: SandboxFactory) -> None:
    """Format: without ``Accept: application/json`` the answer is Atom XML."""
    driver, token, division = session(sandbox_factory)
    answer = driver.api(
        f"{division}/crm/Accounts", token, {"$select": "ID,Name", "$filter": ALL_ACCOUNTS}, accept_json=False
    )
    assert answer.status_code == 200
    assert "xml" in answer.headers["content-type"]
    root = ElementTree.fromstring(answer.content)
    assert root.tag.endswith("feed"), root.tag
    assert root.tag.startswith("{http://www.w3.org/2005/Atom}")
    me = driver.api("current/Me", token, accept_json=False)
    assert "xml" in me.headers["content-type"]
    ElementTree.fromstring(me.content)
    driver.close()


# -- OData v2 JSON, paging --------------------------------------------------------------------------


def test_rows_carry_metadata_uri_and_type(sandbox_factory: SandboxFactory) -> None:
    """Format: rows carry ``__metadata`` (uri, type)."""
    driver, token, division = session(sandbox_factory)
    for row in results(
        driver.api(f"{division}/crm/Accounts", token, {"$select": "ID,Name", "$filter": ALL_ACCOUNTS})
    ):
        assert row["__metadata"]["uri"].startswith("http")
        assert row["ID"] in row["__metadata"]["uri"]
        assert row["__metadata"]["type"]
    driver.close()


@pytest.mark.parametrize(
    ("path", "page"),
    [("crm/Accounts", 60), ("bulk/CRM/Accounts", 1000), ("sync/CRM/Accounts", 1000)],
)
def test_page_size_and_next_link(sandbox_factory: SandboxFactory, path: str, page: int) -> None:
    """Page size: 60 regular, 1000 on bulk and sync; ``__next`` is an absolute URL repeating
    ``$select``/``$filter`` and adding ``$skiptoken``; following it pages without gaps or repeats."""
    driver, token, division = session(sandbox_factory, row_counts={"Accounts": 2500})
    select = "ID,Timestamp,Name" if path.startswith("sync/") else "ID,Name"
    row_filter = "Timestamp gt 1L" if path.startswith("sync/") else ALL_ACCOUNTS
    params = {"$select": select, "$filter": row_filter}
    url: str | None = driver.url(f"{division}/{path}", params)
    seen: list[str] = []
    sizes: list[int] = []
    while url:
        answer = driver.get(url, token)
        d = answer.json()["d"]
        sizes.append(len(d["results"]))
        seen.extend(row["ID"] for row in d["results"])
        url = d.get("__next")
        if url:
            parts = urlsplit(url)
            assert parts.scheme == "http" and parts.netloc == urlsplit(driver.handle.base_url).netloc, url
            assert parts.path == f"/api/v1/{division}/{path}"
            query = parse_qs(parts.query)
            assert query["$select"] == [select]
            assert query["$filter"] == [row_filter]
            assert re.fullmatch(r"guid'[0-9a-fA-F-]{36}'|\d+L", query["$skiptoken"][0]), query["$skiptoken"]
    assert sizes[0] == page
    assert all(size == page for size in sizes[:-1]) and sizes[-1] <= page
    assert len(seen) == len(set(seen)) == 2500
    driver.close()


def test_top_limits_the_page(sandbox_factory: SandboxFactory) -> None:
    driver, token, division = session(sandbox_factory)
    rows = results(
        driver.api(
            f"{division}/sync/CRM/Accounts",
            token,
            {"$select": "ID,Timestamp", "$filter": "Timestamp gt 1L", "$top": "5"},
        )
    )
    assert len(rows) == 5
    driver.close()


@pytest.mark.parametrize(
    "path", ["bulk/CRM/Accounts", "sync/CRM/Accounts", "sync/Financial/TransactionLines", "sync/Deleted"]
)
def test_select_is_required_on_bulk_and_sync(sandbox_factory: SandboxFactory, path: str) -> None:
    """``$select`` required on bulk and sync: 400 "Please add a $select or a $top=1 statement…"."""
    driver, token, division = session(sandbox_factory)
    params = {"$filter": "Timestamp gt 1L"} if path.startswith("sync/") else {"$filter": ALL_ACCOUNTS}
    answer = driver.api(f"{division}/{path}", token, params)
    assert answer.status_code == 400
    assert odata_error_text(answer) == SELECT_MESSAGE
    driver.close()


@pytest.mark.parametrize("entity", sorted(SYNC_ENTITIES))
def test_filter_is_required_on_regular_and_bulk_forms_of_entities_with_a_sync_twin(
    sandbox_factory: SandboxFactory, entity: str
) -> None:
    """ "Endpoints that have a sync twin require a ``$filter`` on their regular/bulk form"."""
    driver, token, division = session(sandbox_factory)
    _sync, regular, bulk, key, _select = SYNC_ENTITIES[entity]
    for path in (regular, bulk):
        if path is None:
            continue
        answer = driver.api(f"{division}/{path}", token, {"$select": key})
        assert answer.status_code == 400, (path, answer.status_code)
        odata_error_text(answer)
    driver.close()


# -- literals, sync ordering ----------------------------------------------------------------------


def test_guid_literal_selects_one_row(sandbox_factory: SandboxFactory) -> None:
    """Literals: ``guid'…'``."""
    driver, token, division = session(sandbox_factory)
    key = driver.dump(division, "Accounts")[7]["ID"]
    rows = results(
        driver.api(f"{division}/crm/Accounts", token, {"$select": "ID,Name", "$filter": f"ID eq guid'{key}'"})
    )
    assert [row["ID"] for row in rows] == [key]
    driver.close()


@pytest.mark.parametrize("entity", sorted(SYNC_ENTITIES))
def test_sync_is_ordered_by_timestamp_and_gt_is_strict(sandbox_factory: SandboxFactory, entity: str) -> None:
    """Sync: ordered by ``Timestamp``; ``Timestamp gt {n}L`` excludes ``n``; ``gt 1L`` is everything."""
    driver, token, division = session(sandbox_factory)
    path, _regular, _bulk, key, select = SYNC_ENTITIES[entity]
    everything = every_row(
        driver, token, f"{division}/{path}", {"$select": select, "$filter": "Timestamp gt 1L"}
    )
    live = driver.dump(division, entity)
    assert sorted(row[key] for row in everything) == sorted(row[key] for row in live)
    stamps = [timestamp(row) for row in everything]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    middle = stamps[len(stamps) // 2]
    after = every_row(
        driver, token, f"{division}/{path}", {"$select": select, "$filter": f"Timestamp gt {middle}L"}
    )
    assert [timestamp(row) for row in after] == [s for s in stamps if s > middle]
    driver.close()


def test_changed_rows_come_back_with_a_higher_timestamp(sandbox_factory: SandboxFactory) -> None:
    """Sync (incremental): a change gets a new, higher row version; ``gt last`` returns only it."""
    driver, token, division = session(sandbox_factory)
    before = results(
        driver.api(
            f"{division}/sync/CRM/Accounts", token, {"$select": "ID,Timestamp", "$filter": "Timestamp gt 1L"}
        )
    )
    last = max(timestamp(row) for row in before)
    changed = driver.mutate(division, "Accounts", update=2, insert=1)
    rows = results(
        driver.api(
            f"{division}/sync/CRM/Accounts",
            token,
            {"$select": "ID,Timestamp", "$filter": f"Timestamp gt {last}L"},
        )
    )
    assert sorted(row["ID"] for row in rows) == sorted(changed["updated"] + changed["inserted"])
    driver.close()


def test_sync_deleted_fields_and_entity_types(sandbox_factory: SandboxFactory) -> None:
    """Deletes: ``sync/Deleted`` (Timestamp, DeletedBy, DeletedDate, Division, EntityKey, EntityType,
    ID); EntityType 1 TransactionLines, 2 Accounts, 9 Items, 13 SalesInvoices, 21 Projects."""
    driver, token, division = session(sandbox_factory)
    fields = "Timestamp,DeletedBy,DeletedDate,Division,EntityKey,EntityType,ID"
    before = results(
        driver.api(f"{division}/sync/Deleted", token, {"$select": fields, "$filter": "Timestamp gt 1L"})
    )
    last = max((timestamp(row) for row in before), default=1)
    deleted = {
        entity: driver.mutate(division, entity, delete=1)["deleted"][0] for entity in DELETED_ENTITY_TYPES
    }
    rows = results(
        driver.api(f"{division}/sync/Deleted", token, {"$select": fields, "$filter": f"Timestamp gt {last}L"})
    )
    assert {row["EntityKey"]: row["EntityType"] for row in rows} == {
        key: DELETED_ENTITY_TYPES[entity] for entity, key in deleted.items()
    }
    for row in rows:
        assert set(fields.split(",")) <= set(row)
        assert row["Division"] == division
        assert DATE.match(row["DeletedDate"]), row
        assert row["ID"]
    driver.close()


@pytest.mark.parametrize("entity", sorted(SYNC_ENTITIES))
def test_the_admin_dump_is_what_the_api_serves(sandbox_factory: SandboxFactory, entity: str) -> None:
    """Not a reference row, but every equality test of the project leans on it: the dump is the
    live rows exactly as the sync API returns them with every field selected."""
    driver, token, division = session(sandbox_factory)
    path, _regular, _bulk, key, _select = SYNC_ENTITIES[entity]
    driver.mutate(division, entity, insert=2, update=2, delete=1)
    live = driver.dump(division, entity)
    fields = ",".join(live[0])
    served = every_row(driver, token, f"{division}/{path}", {"$select": fields, "$filter": "Timestamp gt 1L"})
    for row in served:
        row.pop("__metadata")
    assert sorted(served, key=lambda row: str(row[key])) == sorted(live, key=lambda row: str(row[key]))
    driver.close()


# -- dates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant_utc", "amsterdam_wall_clock"),
    [
        ("2025-01-15T10:00:10", "2025-01-15T11:00:10"),  # CET, UTC+1
        ("2025-07-15T10:00:10", "2025-07-15T12:00:10"),  # CEST, UTC+2
    ],
    ids=["winter", "summer"],
)
def test_dates_are_amsterdam_wall_clock_in_epoch_ms(
    sandbox_factory: SandboxFactory, instant_utc: str, amsterdam_wall_clock: str
) -> None:
    """Dates: ``/Date(ms)/`` encodes Dutch local time (Europe/Amsterdam), not UTC: a row changed at a
    known UTC instant shows that instant's Amsterdam wall-clock time read as UTC."""
    driver, token, division = session(sandbox_factory, at=instant_utc)
    moment = driver.now()
    key = driver.mutate(division, "Accounts", update=1)["updated"][0]
    row = results(
        driver.api(
            f"{division}/crm/Accounts", token, {"$select": "ID,Modified", "$filter": f"ID eq guid'{key}'"}
        )
    )[0]
    match = DATE.match(row["Modified"])
    assert match, row
    shown = int(match.group(1)) / 1000
    expected = utc(amsterdam_wall_clock) + (moment - utc(instant_utc))
    assert abs(shown - expected) < 5, (row["Modified"], expected)
    driver.close()


# -- sizes ----------------------------------------------------------------------------------------


def long_filter_url(driver: Exact, division: int, length: int) -> str:
    """A valid sync URL of exactly ``length`` characters (``and ID ne guid'…'`` terms, then zeros
    in front of the Int64 literal)."""
    base = driver.url(f"{division}/sync/CRM/Accounts", {"$select": "ID", "$filter": "Timestamp gt 1L"})
    term = "%20and%20ID%20ne%20guid'00000000-0000-0000-0000-000000000000'"
    url = base + term * ((length - len(base)) // len(term))
    url = url.replace("gt%201L", "gt%20" + "0" * (length - len(url)) + "1L", 1)
    assert len(url) == length, (len(url), length)
    return url


def test_urls_up_to_6000_characters_are_served_and_longer_ones_refused(
    sandbox_factory: SandboxFactory,
) -> None:
    """Size limits: URL up to 6000 characters (the whole URL, the stricter reading)."""
    driver, token, division = session(sandbox_factory)
    assert driver.get(long_filter_url(driver, division, 6000), token).status_code == 200
    answer = driver.get(long_filter_url(driver, division, 6001), token)
    assert answer.status_code in (400, 414), answer.status_code
    driver.close()


# -- entities -------------------------------------------------------------------------------------

ENTITY_FIELDS = {
    "crm/Accounts": ("ID", "Code Name Status Blocked IsSales IsSupplier Email Country Created Modified"),
    "project/Projects": (
        "ID",
        "Code Description Account AccountCode Type Manager StartDate EndDate Modified",
    ),
    "salesinvoice/SalesInvoices": (
        "InvoiceID",
        "InvoiceNumber InvoiceTo OrderedBy Journal Status Type AmountDC AmountFC VATAmountDC Currency InvoiceDate DueDate",
    ),
    "financialtransaction/TransactionLines": (
        "ID",
        "EntryID EntryNumber LineNumber Date FinancialYear FinancialPeriod GLAccount GLAccountCode AmountDC AmountFC Account Project Status Type",
    ),
    "logistics/Items": (
        "ID",
        "Code Description IsSalesItem IsStockItem Unit Stock StandardSalesPrice StartDate EndDate Modified",
    ),
}
DATE_FIELDS = {"Created", "Modified", "StartDate", "EndDate", "InvoiceDate", "DueDate", "Date"}


@pytest.mark.parametrize("path", sorted(ENTITY_FIELDS))
def test_entities_have_their_key_and_fields(sandbox_factory: SandboxFactory, path: str) -> None:
    """Entities table: key and notable fields, on the regular endpoint; dates as ``/Date(ms)/``."""
    driver, token, division = session(sandbox_factory)
    key, names = ENTITY_FIELDS[path]
    fields = [key, *names.split()]
    params = {"$select": ",".join(fields), "$filter": f"{key} ne guid'00000000-0000-0000-0000-000000000000'"}
    rows = results(driver.api(f"{division}/{path}", token, params))
    assert rows
    for row in rows:
        assert set(fields) <= set(row), set(fields) - set(row)
        for name in DATE_FIELDS & set(fields):
            assert row[name] is None or DATE.match(row[name]), (name, row[name])
    if path == "crm/Accounts":
        codes = [row["Code"] for row in rows if row["Code"] is not None]
        assert codes and all(len(code) == 18 for code in codes), codes[:3]
        assert any(code.startswith(" ") for code in codes)
    if path == "salesinvoice/SalesInvoices":
        assert {row["Status"] for row in rows} <= {10, 20, 50}
    if path == "project/Projects":
        assert {row["Type"] for row in rows} <= {1, 2, 3, 4, 5}
    driver.close()
