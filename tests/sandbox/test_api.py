"""The REST API: formats, OData options, paging, strictness and realistic rows."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import httpx

from shared.clock import ScaledClock
from shared.sandbox.odata import FILTER_MISSING, SELECT_MISSING, SYNC_FILTER_MISSING
from shared.sandbox.server import SandboxHandle
from tests.fixtures.sandbox import obtain_tokens
from tests.sandbox.conftest import Api, Factory, error_text

ACCOUNT_FIELDS = "ID,Timestamp,Code,Name,Status,Blocked,IsSales,IsSupplier,Email,Country,Created,Modified"
LINE_FIELDS = (
    "ID,Timestamp,EntryID,EntryNumber,LineNumber,Date,FinancialYear,FinancialPeriod,GLAccount,GLAccountCode,"
    "AmountDC,AmountFC,Account,Project,Status,Type,Description,Modified"
)
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DATE = re.compile(r"^/Date\((-?\d+)\)/$")


def ms_of(value: str) -> int:
    """The number inside ``/Date(ms)/`` (asserting the shape)."""
    found = DATE.match(value)
    assert found, value
    return int(found.group(1))


def xml_text(element: ElementTree.Element | None, path: str, ns: dict[str, str]) -> ElementTree.Element:
    assert element is not None
    found = element.find(path, ns)
    assert found is not None, path
    return found


def test_me_and_divisions(api: Api) -> None:
    me = api.me()
    assert me.status_code == 200
    row = me.json()["d"]["results"][0]
    assert row["CurrentDivision"] == api.handle.divisions[0]
    assert GUID.match(row["UserID"]) and row["__metadata"]["uri"].startswith(api.handle.base_url)
    assert not any(name.lower().startswith("x-ratelimit") for name in me.headers)
    divisions = api.get("system/Divisions")
    assert divisions.status_code == 200
    rows = divisions.json()["d"]["results"]
    assert [r["Code"] for r in rows] == sorted(api.handle.divisions)
    assert {r["Code"]: r["Current"] for r in rows} == {
        d: d == api.handle.divisions[0] for d in api.handle.divisions
    }
    assert {
        "Description",
        "Customer",
        "CustomerName",
        "Country",
        "Currency",
        "Status",
        "BlockingStatus",
    } <= set(rows[0])
    assert rows[0]["__metadata"]["uri"].endswith(f"/system/Divisions({rows[0]['Code']})")
    one = api.get(f"system/Divisions({rows[1]['Code']})").json()["d"]
    assert one["Code"] == rows[1]["Code"]


def test_atom_xml_unless_json_is_asked_for(api: Api) -> None:
    xml = api.get(
        "sync/CRM/Accounts",
        {"$select": "ID,Timestamp,Name,Email,Modified", "$filter": "Timestamp gt 1L"},
        json=False,
    )
    assert xml.status_code == 200 and xml.headers["content-type"].startswith("application/atom+xml")
    feed = ElementTree.fromstring(xml.content)
    ns = {"a": "http://www.w3.org/2005/Atom", "m": "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata",
          "d": "http://schemas.microsoft.com/ado/2007/08/dataservices"}  # fmt: skip
    entries = feed.findall("a:entry", ns)
    assert len(entries) == 150
    props = entries[0].find("a:content/m:properties", ns)
    assert props is not None
    assert xml_text(props, "d:Timestamp", ns).get(f"{{{ns['m']}}}type") == "Edm.Int64"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", xml_text(props, "d:Modified", ns).text or "")
    nulls = feed.findall(".//d:Email[@m:null='true']", ns)
    assert nulls, "some accounts have no e-mail address"
    error = api.get("sync/CRM/Accounts", json=False)
    assert error.status_code == 400 and error.headers["content-type"].startswith("application/xml")
    assert SELECT_MISSING in error.text
    star = api.get(
        "sync/CRM/Accounts",
        {"$select": "ID", "$filter": "Timestamp gt 1L"},
        headers={"Accept": "*/*"},
        json=False,
    )
    assert star.headers["content-type"].startswith("application/atom+xml")


def test_select_is_required_on_bulk_and_sync(api: Api) -> None:
    for path in ("sync/CRM/Accounts", "bulk/CRM/Accounts", "sync/Financial/TransactionLines", "sync/Deleted"):
        answer = api.get(
            path, {"$filter": "Timestamp gt 1L"} if path.startswith("sync") else {"$filter": "Status eq 'C'"}
        )
        assert answer.status_code == 400, path
        assert error_text(answer) == "Please add a $select or a $top=1 statement to the query string."
    top_one = api.get("sync/CRM/Accounts", {"$top": "1", "$filter": "Timestamp gt 1L"})
    assert top_one.status_code == 200
    (row,) = top_one.json()["d"]["results"]
    assert set(ACCOUNT_FIELDS.split(",")) <= set(row)
    star = api.get("bulk/CRM/Accounts", {"$select": "*", "$filter": "Status eq 'C'"})
    assert star.status_code == 400


def test_entities_with_a_sync_twin_need_a_filter_on_regular_and_bulk(api: Api) -> None:
    for path in ("crm/Accounts", "bulk/CRM/Accounts", "financialtransaction/TransactionLines", "logistics/Items",
                 "bulk/Financial/GLAccounts", "project/Projects", "salesinvoice/SalesInvoices"):  # fmt: skip
        answer = api.get(path, {"$select": "ID" if "Sales" not in path else "InvoiceID"})
        assert answer.status_code == 400, path
        assert error_text(answer) == FILTER_MISSING
    assert api.get("system/Divisions").status_code == 200  # no sync twin, no filter needed


def test_sync_endpoints_need_a_timestamp_filter(api: Api) -> None:
    for params in ({"$select": "ID"}, {"$select": "ID", "$filter": "Name eq 'x'"},
                   {"$select": "ID", "$filter": "Timestamp gt 1L or Name eq 'x'"}, {"$top": "1"}):  # fmt: skip
        answer = api.get("sync/CRM/Accounts", params)
        assert answer.status_code == 400, params
        assert error_text(answer) == SYNC_FILTER_MISSING
    both = api.get(
        "sync/CRM/Accounts", {"$select": "ID,Blocked", "$filter": "Timestamp gt 1L and Blocked eq true"}
    )
    assert both.status_code == 200 and all(r["Blocked"] for r in both.json()["d"]["results"])


def test_unknown_properties_and_options_are_refused(api: Api) -> None:
    unknown = api.get("sync/CRM/Accounts", {"$select": "ID,Nmae", "$filter": "Timestamp gt 1L"})
    assert unknown.status_code == 400 and "Nmae" in error_text(unknown)
    no_timestamp = api.get("crm/Accounts", {"$select": "ID,Timestamp", "$filter": "Status eq 'C'"})
    assert no_timestamp.status_code == 400 and "Timestamp" in error_text(no_timestamp)
    bad_filter = api.get("sync/CRM/Accounts", {"$select": "ID", "$filter": "Nmae eq 'x'"})
    assert bad_filter.status_code == 400
    orderby = api.get(
        "sync/CRM/Accounts", {"$select": "ID", "$filter": "Timestamp gt 1L", "$orderby": "Name"}
    )
    assert orderby.status_code == 400 and "$orderby" in error_text(orderby)
    assert api.get("crm/Nothing", {"$select": "ID"}).status_code == 404
    twice = api.http.get(f"{api.handle.base_url}/api/v1/{api.division}/sync/CRM/Accounts?$select=ID&$select=Name",
                         headers={**api.auth, "Accept": "application/json"})  # fmt: skip
    assert twice.status_code == 400


def test_filter_literals_are_typed(api: Api) -> None:
    int32_for_int64 = api.get("sync/CRM/Accounts", {"$select": "ID", "$filter": "Timestamp gt 1"})
    assert int32_for_int64.status_code == 400
    plain_guid = api.get("crm/Accounts", {"$select": "ID", "$filter": "ID eq 'abc'"})
    assert plain_guid.status_code == 400
    syntax = api.get("crm/Accounts", {"$select": "ID", "$filter": "Status eq"})
    assert syntax.status_code == 400
    bad_date = api.get("crm/Accounts", {"$select": "ID", "$filter": "Modified ge datetime'yesterday'"})
    assert bad_date.status_code == 400


def test_url_longer_than_6000_characters_is_refused(api: Api) -> None:
    long_filter = " or ".join(f"Code eq '{n:>18}'" for n in range(200))
    answer = api.get("crm/Accounts", {"$select": "ID", "$filter": long_filter})
    assert len(str(answer.request.url)) > 6000
    assert answer.status_code == 400 and "too long" in error_text(answer)
    shorter = " or ".join(f"Code eq '{n:>18}'" for n in range(1, 40))
    assert api.get("crm/Accounts", {"$select": "ID", "$filter": shorter}).status_code == 200


def test_sync_pages_follow_next_in_timestamp_order(api: Api) -> None:
    first = api.get("sync/Financial/TransactionLines", {"$select": LINE_FIELDS, "$filter": "Timestamp gt 1L"})
    d = first.json()["d"]
    assert len(d["results"]) == 1000
    nxt = urlsplit(d["__next"])
    assert d["__next"].startswith(
        f"{api.handle.base_url}/api/v1/{api.division}/sync/Financial/TransactionLines?"
    )
    query = parse_qs(nxt.query)
    assert query["$select"] == [LINE_FIELDS] and query["$filter"] == ["Timestamp gt 1L"]
    assert re.fullmatch(r"\d+L", query["$skiptoken"][0])
    rows = api.sync_all("sync/Financial/TransactionLines", LINE_FIELDS)
    assert len(rows) == 2500 == len({r["ID"] for r in rows})
    stamps = [r["Timestamp"] for r in rows]
    assert stamps == sorted(stamps) and all(isinstance(s, int) for s in stamps)
    tail = api.get(
        "sync/Financial/TransactionLines",
        {"$select": "ID,Timestamp", "$filter": f"Timestamp gt {stamps[-2]}L"},
    )
    assert [r["ID"] for r in tail.json()["d"]["results"]] == [rows[-1]["ID"]]


def test_an_exactly_full_last_page_still_links_to_an_empty_page(
    sandbox_factory: Factory, http: httpx.Client
) -> None:
    handle = sandbox_factory(row_counts={"Items": 1000})
    api = Api(handle, http, obtain_tokens(handle, http))
    d = api.get("sync/Logistics/Items", {"$select": "ID,Timestamp", "$filter": "Timestamp gt 1L"}).json()["d"]
    assert len(d["results"]) == 1000 and d["__next"]
    empty = api.get(d["__next"]).json()["d"]
    assert empty == {"results": []}


def test_regular_pages_hold_60_rows_and_skip_by_guid(api: Api) -> None:
    first = api.get("crm/Accounts", {"$select": "ID,Code,Name", "$filter": "Blocked eq false"})
    d = first.json()["d"]
    assert len(d["results"]) == 60
    token = parse_qs(urlsplit(d["__next"]).query)["$skiptoken"][0]
    assert token == f"guid'{d['results'][-1]['ID']}'"
    seen = list(d["results"])
    while d.get("__next"):
        d = api.get(d["__next"]).json()["d"]
        seen.extend(d["results"])
    everything = api.get(
        "bulk/CRM/Accounts", {"$select": "ID,Blocked", "$filter": "Blocked eq false"}
    ).json()["d"]
    assert len(everything["results"]) == len(seen) and "__next" not in everything
    assert {r["ID"] for r in seen} == {r["ID"] for r in everything["results"]}
    assert "Timestamp" not in seen[0]


def test_filters_select_the_right_rows(api: Api) -> None:
    rows = api.sync_all("sync/CRM/Accounts", ACCOUNT_FIELDS)
    target = rows[37]
    by_id = api.get("crm/Accounts", {"$select": "ID,Name", "$filter": f"ID eq guid'{target['ID']}'"}).json()[
        "d"
    ]
    assert [r["ID"] for r in by_id["results"]] == [target["ID"]]
    upper = target["ID"].upper()
    assert api.get("crm/Accounts", {"$select": "ID", "$filter": f"ID eq guid'{upper}'"}).json()["d"][
        "results"
    ]
    ms = ms_of(target["Modified"])
    literal = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    recent = api.sync_all("sync/CRM/Accounts", "ID,Modified")
    expected = {r["ID"] for r in recent if ms_of(r["Modified"]) >= ms}
    answer = api.get(
        "bulk/CRM/Accounts",
        {"$select": "ID", "$filter": f"Modified ge datetime'{literal}' and Blocked eq false"},
    )
    got = {r["ID"] for r in answer.json()["d"]["results"]}
    blocked = {r["ID"] for r in rows if r["Blocked"]}
    assert got == expected - blocked
    either = api.get(
        "crm/Accounts",
        {"$select": "ID", "$filter": f"ID eq guid'{rows[1]['ID']}' or ID eq guid'{rows[2]['ID']}'"},
    )
    assert {r["ID"] for r in either.json()["d"]["results"]} == {rows[1]["ID"], rows[2]["ID"]}
    top = api.get("sync/CRM/Accounts", {"$select": "ID", "$filter": "Timestamp gt 1L", "$top": "7"}).json()[
        "d"
    ]
    assert len(top["results"]) == 7 and "__next" not in top
    single = api.get(f"crm/Accounts(guid'{target['ID']}')", {"$select": "ID,Code"}).json()["d"]
    assert single["ID"] == target["ID"] and single["Code"] == target["Code"]
    foreign = "00000000" + target["ID"][8:]
    assert api.get(f"crm/Accounts(guid'{foreign}')", {"$select": "ID"}).status_code == 404


def test_rows_are_realistic(api: Api) -> None:
    accounts = api.sync_all("sync/CRM/Accounts", ACCOUNT_FIELDS)
    assert all(len(a["Code"]) == 18 and a["Code"] == a["Code"].strip().rjust(18) for a in accounts)
    assert any(a["Email"] is None for a in accounts) and any(a["Country"] is None for a in accounts)
    names = [a["Name"] for a in accounts]
    assert any(any(ord(ch) > 0x2000 for ch in n) for n in names), "unicode beyond Latin-1"
    assert any("'" in n for n in names) and any('"' in n for n in names)
    assert all(DATE.match(a["Modified"]) and DATE.match(a["Created"]) for a in accounts)
    items = api.sync_all("sync/Logistics/Items", "ID,Timestamp,Description")
    assert max(len(i["Description"]) for i in items) > 1000, "long text"
    lines = api.sync_all("sync/Financial/TransactionLines", LINE_FIELDS)
    by_entry: dict[str, list[float]] = {}
    for line in lines:
        by_entry.setdefault(line["EntryID"], []).append(line["AmountDC"])
    complete = [amounts for amounts in by_entry.values() if len(amounts) == 3]
    assert len(complete) == 2500 // 3 and all(abs(sum(a)) < 0.005 for a in complete), "entries balance"
    assert any(line["Project"] is not None for line in lines) and any(
        line["Account"] is None for line in lines
    )
    invoices = api.sync_all(
        "sync/SalesInvoice/SalesInvoices", "InvoiceID,Timestamp,Status,Type,AmountDC,Currency"
    )
    assert {i["Status"] for i in invoices} <= {10, 20, 50} and any(i["AmountDC"] < 0 for i in invoices)
    projects = api.sync_all("sync/Project/Projects", "ID,Timestamp,Type,Account,AccountCode,EndDate")
    assert {p["Type"] for p in projects} <= {1, 2, 3, 4, 5} and any(p["EndDate"] is None for p in projects)
    codes = {a["ID"]: a["Code"] for a in accounts}
    assert all(codes[p["Account"]] == p["AccountCode"] for p in projects if p["Account"])


def test_dates_encode_amsterdam_wall_time(sandbox_factory: Factory, http: httpx.Client) -> None:
    summer, winter = 1_720_000_000.0, 1_737_000_000.0  # 2024-07-03 (UTC+2) and 2025-01-16 (UTC+1)
    handle = sandbox_factory(clock=ScaledClock.starting_now(sim_start=summer))
    api = Api(handle, http, obtain_tokens(handle, http))
    for moment, hours in ((summer, 2), (winter, 1)):
        now = (
            api.admin("POST", "clock", {"to": moment})["now"]
            if moment != summer
            else api.admin("GET", "clock")["now"]
        )
        key = api.admin("POST", "mutate", {"division": api.division, "entity": "Accounts", "update": 1})[
            "updated"
        ][0]
        api.tokens = obtain_tokens(handle, http)  # months later: the old access token has expired
        row = api.get(f"crm/Accounts(guid'{key}')", {"$select": "ID,Modified"}).json()["d"]
        ms = ms_of(row["Modified"])
        assert abs(ms / 1000 - now - hours * 3600) < 5
        wall = datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)
        assert abs(wall.replace(tzinfo=ZoneInfo("Europe/Amsterdam")).timestamp() - now) < 5


def test_sync_deleted_reports_deletions(api: Api) -> None:
    before = api.sync_all("sync/Deleted", "ID,Timestamp,DeletedBy,DeletedDate,Division,EntityKey,EntityType")
    assert before and {r["Division"] for r in before} == {api.division}
    last = max(r["Timestamp"] for r in before)
    for entity, kind in (("Accounts", 2), ("TransactionLines", 1), ("GLAccounts", 7), ("Items", 9),
                         ("SalesInvoices", 13), ("Projects", 21)):  # fmt: skip
        gone = api.admin("POST", "mutate", {"division": api.division, "entity": entity, "delete": 1})[
            "deleted"
        ]
        new = api.sync_all("sync/Deleted", "EntityKey,EntityType,Timestamp", after=last)
        assert [(r["EntityKey"], r["EntityType"]) for r in new] == [(gone[0], kind)]
        last = new[0]["Timestamp"]


def test_timestamps_can_be_sent_as_strings(api: Api) -> None:
    api.admin("POST", "config", {"timestamp_as_string": True})
    row = api.get(
        "sync/CRM/Accounts", {"$select": "ID,Timestamp", "$filter": "Timestamp gt 1L", "$top": "1"}
    ).json()
    assert isinstance(row["d"]["results"][0]["Timestamp"], str)


def test_regular_and_bulk_paths_serve_every_entity(api: Api) -> None:
    for path, key in (("project/Projects", "ID"), ("bulk/Project/Projects", "ID"), ("salesinvoice/SalesInvoices", "InvoiceID"),
                      ("bulk/SalesInvoice/SalesInvoices", "InvoiceID"), ("financialtransaction/TransactionLines", "ID"),
                      ("bulk/Financial/TransactionLines", "ID"), ("logistics/Items", "ID"), ("bulk/Logistics/Items", "ID"),
                      ("financial/GLAccounts", "ID"), ("bulk/Financial/GLAccounts", "ID")):  # fmt: skip
        answer = api.get(
            path, {"$select": key, "$filter": f"{key} ne guid'00000000-0000-0000-0000-000000000000'"}
        )
        assert answer.status_code == 200, (path, answer.text)
        expected = 60 if not path.startswith("bulk/") else None
        results = answer.json()["d"]["results"]
        assert results and (expected is None or len(results) == expected)


def test_auth_failures_answer_401_with_a_bearer_challenge(sandbox: SandboxHandle, http: httpx.Client) -> None:
    url = f"{sandbox.base_url}/api/v1/{sandbox.divisions[0]}/system/Divisions"
    for headers, description in (({}, "access%20token%20missing"),
                                 ({"Authorization": "Bearer not-a-token"}, "Signed%20data%20extraction%20has%20failed")):  # fmt: skip
        answer = http.get(url, headers={**headers, "Accept": "application/json"})
        assert answer.status_code == 401
        assert (
            answer.headers["WWW-Authenticate"]
            == f'Bearer error="invalid_token",error_description="{description}"'
        )
        assert error_text(answer)


def test_divisions_outside_the_consent_are_forbidden(sandbox: SandboxHandle, http: httpx.Client) -> None:
    first, second = sandbox.divisions
    http.post(f"{sandbox.admin_url}/config", json={"consent_divisions": [second]})
    api = Api(sandbox, http, obtain_tokens(sandbox, http))
    answer = api.get("system/Divisions", division=first)
    assert answer.status_code == 403 and answer.headers["Reason"] == "NoDivisionAccess"
    assert api.me().json()["d"]["results"][0]["CurrentDivision"] == second
    assert api.get("system/Divisions", division=second).status_code == 200
    assert api.get("system/Divisions", division=424242).status_code == 403


def test_scope_violations_answer_403(api: Api) -> None:
    api.admin("POST", "config", {"scope_violation_endpoints": ["sync/Financial/"]})
    answer = api.get("sync/Financial/TransactionLines", {"$select": "ID", "$filter": "Timestamp gt 1L"})
    assert answer.status_code == 403 and error_text(answer) == "Forbidden - Application Scope Violated"
    assert api.get("sync/CRM/Accounts", {"$select": "ID", "$filter": "Timestamp gt 1L"}).status_code == 200


def test_api_faults(api: Api) -> None:
    api.admin("POST", "faults", {"api_5xx": 1, "api_html_error": 1})
    params = {"$select": "ID", "$filter": "Timestamp gt 1L"}
    first = api.get("sync/CRM/Accounts", params)
    assert first.status_code == 503 and error_text(first)
    second = api.get("sync/CRM/Accounts", params)
    assert second.status_code == 500 and second.headers["content-type"].startswith("text/html")
    assert api.get("sync/CRM/Accounts", params).status_code == 200
    api.admin("POST", "faults", {"api_dropped": 1})
    try:
        api.get("sync/CRM/Accounts", params)
        raise AssertionError("the connection should have been dropped")
    except httpx.TransportError:
        pass


def test_a_million_transaction_lines_are_served_lazily(sandbox_factory: Factory, http: httpx.Client) -> None:
    handle = sandbox_factory(row_counts={"TransactionLines": 1_000_000}, divisions=[7], limits=False)
    api = Api(handle, http, obtain_tokens(handle, http))
    first = api.get(
        "sync/Financial/TransactionLines",
        {"$select": "ID,Timestamp", "$top": "1", "$filter": "Timestamp gt 1L"},
    )
    start = first.json()["d"]["results"][0]["Timestamp"]
    near_end = api.get(
        "sync/Financial/TransactionLines",
        {"$select": "ID,Timestamp,EntryNumber,LineNumber", "$filter": f"Timestamp gt {start + 2_999_990}L"},
    )
    rows = near_end.json()["d"]["results"]
    assert 1 <= len(rows) <= 5 and "__next" not in near_end.json()["d"]
    # row 1,000,000 (index 999,999) is the first line of entry 333,333
    assert (rows[-1]["EntryNumber"], rows[-1]["LineNumber"]) == (24_000_001 + 333_333, 1)
    line = api.get(
        "bulk/Financial/TransactionLines",
        {"$select": "ID,LineNumber", "$filter": f"ID eq guid'{rows[-1]['ID']}'"},
    )
    assert [r["ID"] for r in line.json()["d"]["results"]] == [rows[-1]["ID"]]


def test_division_lists_and_blocked_divisions(api: Api) -> None:
    first, second = api.handle.divisions
    api.admin("POST", "config", {"consent_divisions": [first]})
    api.tokens = obtain_tokens(api.handle, api.http)
    assert [r["Code"] for r in api.get("system/Divisions").json()["d"]["results"]] == [first]
    assert [r["Code"] for r in api.get("hrm/Divisions").json()["d"]["results"]] == [first]
    assert [r["Code"] for r in api.get("system/AllDivisions").json()["d"]["results"]] == [first, second]
    api.admin("POST", "config", {"division_blocks": {str(first): "DivisionBlocked"}})
    blocked = api.get("system/Divisions")
    assert blocked.status_code == 403 and blocked.headers["Reason"] == "DivisionBlocked"
    bad = api.http.post(f"{api.handle.admin_url}/config", json={"division_blocks": {str(first): "Sleeping"}})
    assert bad.status_code == 400
