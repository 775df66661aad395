"""ExactClient against the Exact Online sandbox over real HTTP on 127.0.0.1.

Tokens come from the OAuth area's real TokenKeeper after a real code exchange; the sandbox's
counters are the witness of how many calls reached "Exact".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from shared.clock import ScaledClock
from shared.exact.catalog import CATALOG, DELETED, Entity
from shared.exact.client import TraceEvent
from shared.exact.convert import convert_row
from shared.exact.errors import (
    DailyBudgetExhausted,
    ExactApiError,
    ExactForbidden,
    ExactNotFound,
    ExactRateLimited,
    ExactResponseError,
    ExactServerError,
    ExactUnauthorized,
)
from shared.exact.rate import RateGovernor
from shared.sandbox.server import SandboxHandle
from shared.settings import LOCAL_CLIENT_SECRET
from tests.exact.sandbox_support import (
    CONNECTION,
    EditingTransport,
    ScriptedTokens,
    admin,
    api_calls,
    client_for,
    consent,
    drop_accept,
    replace_body,
    revoked_token,
    sandbox_runtime,
)
from tests.fixtures.sandbox import obtain_tokens

Factory = Callable[..., SandboxHandle]


def keyed(item: Entity, rows: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    converted = [convert_row(item, row) for row in rows]
    return {row[item.key]: row for row in converted}


def test_every_catalog_entity_pages_through_next_and_equals_the_live_data(
    sandbox_factory: Factory, tmp_path: Path
) -> None:
    counts = {e.name: 2100 for e in CATALOG if e.name != "Divisions"}
    handle = sandbox_factory(row_counts=counts)
    division = handle.divisions[0]
    admin(handle, "POST", "mutate", {"division": division, "entity": "Items", "delete": 1100})
    runtime = sandbox_runtime(handle, tmp_path)
    consent(runtime, handle)
    client = client_for(handle, runtime.keeper)
    for item in (*(e for e in CATALOG if e.name != "Divisions"), DELETED):
        before = api_calls(handle, division, item.read_path)
        pages = list(client.read_full(division, item))
        used = api_calls(handle, division, item.read_path) - before
        rows = [row for page in pages for row in page.rows]
        live = admin(handle, "GET", "dump", division=division, entity=item.name)["rows"]
        assert len(pages) >= 2, item.name
        assert all(page.next_url for page in pages[:-1])
        assert all(len(page.rows) == 1000 for page in pages[:-1]), item.name
        assert len(rows) == len(live), item.name
        assert keyed(item, rows) == keyed(item, live), item.name
        # calls: ceil(rows / 1000) + 1 at most, and each page exactly one call
        assert used == len(pages) == sum(page.calls for page in pages)
        assert used <= math.ceil(len(rows) / 1000) + 1, item.name
        assert [p.rate.minutely_remaining for p in pages if p.rate] != []


def test_divisions_page_through_next_on_the_regular_endpoint(
    sandbox_factory: Factory, tmp_path: Path
) -> None:
    codes = tuple(range(3_000_001, 3_000_001 + 62))
    handle = sandbox_factory(divisions=codes)
    runtime = sandbox_runtime(handle, tmp_path)
    consent(runtime, handle)
    client = client_for(handle, runtime.keeper)
    rows = client.divisions(codes[0])
    assert sorted(int(r["Code"]) for r in rows) == list(codes)
    assert api_calls(handle, codes[0], "system/Divisions") == 2  # 60 + 2, sequentially via __next
    converted = [convert_row("Divisions", r) for r in rows]
    assert all(isinstance(r["Code"], int) and isinstance(r["Current"], bool) for r in converted)


def _read_modified(client: object, division: int, key: str, since: int) -> datetime:
    from shared.exact.client import ExactClient

    assert isinstance(client, ExactClient)
    for page in client.read_since(division, "Accounts", since):
        for row in page.rows:
            converted = convert_row("Accounts", row)
            if converted["ID"] == key:
                value = converted["Modified"]
                assert isinstance(value, datetime)
                return value
    raise AssertionError(f"row {key} not found")


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        # winter (CET) and summer (CEST)
        (datetime(2027, 1, 15, 9, 30, tzinfo=UTC), datetime(2027, 1, 15, 9, 30, tzinfo=UTC)),
        (datetime(2027, 7, 15, 9, 30, tzinfo=UTC), datetime(2027, 7, 15, 9, 30, tzinfo=UTC)),
        # spring forward 2027-03-28 01:00 UTC: just before (01:59 CET) and just after (03:00 CEST)
        (datetime(2027, 3, 28, 0, 59, 30, tzinfo=UTC), datetime(2027, 3, 28, 0, 59, 30, tzinfo=UTC)),
        (datetime(2027, 3, 28, 1, 0, 30, tzinfo=UTC), datetime(2027, 3, 28, 1, 0, 30, tzinfo=UTC)),
        # fall back 2027-10-31 01:00 UTC: 02:30 happens twice on the wall clock. The first (CEST)
        # round-trips; the second (CET) carries no offset in /Date(ms)/ and is read as the first,
        # one hour earlier: the documented, deterministic reading of an ambiguous wall time.
        (datetime(2027, 10, 31, 0, 30, tzinfo=UTC), datetime(2027, 10, 31, 0, 30, tzinfo=UTC)),
        (datetime(2027, 10, 31, 1, 30, tzinfo=UTC), datetime(2027, 10, 31, 0, 30, tzinfo=UTC)),
        (datetime(2027, 10, 31, 2, 30, tzinfo=UTC), datetime(2027, 10, 31, 2, 30, tzinfo=UTC)),
    ],
)
def test_amsterdam_dates_convert_to_utc_across_dst(
    sandbox_factory: Factory, tmp_path: Path, moment: datetime, expected: datetime
) -> None:
    handle = sandbox_factory(divisions=(5001,))
    admin(handle, "POST", "clock", {"to": moment.timestamp()})
    runtime = sandbox_runtime(handle, tmp_path)
    consent(runtime, handle)  # after the clock jump: a fresh chain in the new "now"
    client = client_for(handle, runtime.keeper)
    before = admin(handle, "GET", "dump", division=5001, entity="Accounts")["last_timestamp"]
    changed = admin(handle, "POST", "mutate", {"division": 5001, "entity": "Accounts", "insert": 1})
    key = changed["inserted"][0]
    got = _read_modified(client, 5001, key, before)
    assert got.tzinfo is UTC
    assert abs((got - expected).total_seconds()) < 5  # the sandbox clock ran on a little


def test_timestamp_as_string_is_accepted(sandbox: SandboxHandle, tmp_path: Path) -> None:
    admin(sandbox, "POST", "config", {"timestamp_as_string": True})
    runtime = sandbox_runtime(sandbox, tmp_path)
    consent(runtime, sandbox)
    client = client_for(sandbox, runtime.keeper)
    division = sandbox.divisions[0]
    pages = list(client.read_since(division, "Accounts"))
    raw = pages[0].rows[0]["Timestamp"]
    assert isinstance(raw, str)
    newest = max(p.max_timestamp() or 0 for p in pages)
    assert newest == int(max((r["Timestamp"] for p in pages for r in p.rows), key=int))
    assert isinstance(convert_row("Accounts", pages[0].rows[0])["Timestamp"], int)
    # an incremental read from the newest Timestamp: nothing new, one call
    before = api_calls(sandbox, division, "sync/CRM/Accounts")
    again = list(client.read_since(division, "Accounts", newest))
    assert [p.rows for p in again] == [[]]
    assert api_calls(sandbox, division, "sync/CRM/Accounts") - before == 1


def test_without_accept_json_exact_answers_atom_and_the_client_refuses_it(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    token = obtain_tokens(sandbox)["access_token"]
    division = sandbox.divisions[0]
    url = (
        f"{sandbox.base_url}/api/v1/{division}/sync/CRM/Accounts?$select=ID,Name&$filter=Timestamp%20gt%201L"
    )
    raw = httpx.get(url, headers={"Authorization": f"Bearer {token}"})  # no Accept header
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("application/atom+xml")
    assert raw.text.lstrip().startswith("<?xml")
    # The client always sends Accept: application/json; a proxy that drops it gets it this body.
    tokens = ScriptedTokens(token, [])
    client = client_for(sandbox, tokens, transport=EditingTransport(edit_request=drop_accept))
    with pytest.raises(ExactResponseError) as caught:
        client.get_page(division, "sync/CRM/Accounts", select="ID,Name", filter="Timestamp gt 1L")
    text = str(caught.value)
    assert f"GET /api/v1/{division}/sync/CRM/Accounts" in text
    assert "Atom/XML document where JSON was expected" in text
    assert "HTTP 200" in text
    assert "application/atom+xml" in text
    assert token not in text


def test_html_error_page_is_retried_as_5xx_then_reported(sandbox: SandboxHandle, tmp_path: Path) -> None:
    runtime = sandbox_runtime(sandbox, tmp_path)
    consent(runtime, sandbox)
    client = client_for(sandbox, runtime.keeper, max_retries=2)
    division = sandbox.divisions[0]
    admin(sandbox, "POST", "faults", {"api_html_error": 1})
    page = client.get_page(division, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")
    assert page.calls == 2
    assert api_calls(sandbox, division, "sync/CRM/Accounts") == 2
    admin(sandbox, "POST", "faults", {"api_html_error": 3})
    with pytest.raises(ExactServerError) as caught:
        client.get_page(division, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")
    assert caught.value.status == 500
    assert caught.value.content_type is not None
    assert caught.value.content_type.startswith("text/html")
    assert "Runtime Error" in str(caught.value)
    assert api_calls(sandbox, division, "sync/CRM/Accounts") == 5


@pytest.mark.parametrize(
    ("cut", "words"),
    [
        (lambda body: b"", "empty body where JSON was expected"),
        (lambda body: body[: len(body) // 2], "not valid JSON, truncated or malformed"),
        (lambda body: b"<!DOCTYPE html><html><head><title>Sign in</title></head></html>", "HTML page"),
    ],
)
def test_empty_truncated_or_html_success_bodies_are_clear_errors(
    sandbox: SandboxHandle, tmp_path: Path, cut: Callable[[bytes], bytes], words: str
) -> None:
    runtime = sandbox_runtime(sandbox, tmp_path)
    consent(runtime, sandbox)
    client = client_for(sandbox, runtime.keeper, transport=EditingTransport(edit_response=replace_body(cut)))
    division = sandbox.divisions[0]
    with pytest.raises(ExactResponseError) as caught:
        client.get_page(division, "sync/Financial/TransactionLines", select="ID", filter="Timestamp gt 1L")
    assert words in str(caught.value)
    assert f"GET /api/v1/{division}/sync/Financial/TransactionLines" in str(caught.value)
    assert api_calls(sandbox, division, "sync/Financial/TransactionLines") == 1  # not retried


def test_dropped_connection_is_retried(sandbox: SandboxHandle, tmp_path: Path) -> None:
    runtime = sandbox_runtime(sandbox, tmp_path)
    consent(runtime, sandbox)
    traces: list[TraceEvent] = []
    client = client_for(sandbox, runtime.keeper, traces=traces)
    division = sandbox.divisions[0]
    admin(sandbox, "POST", "faults", {"api_dropped": 1})
    page = client.get_page(division, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")
    assert page.rows
    assert page.calls == 2
    assert traces[0].status is None
    assert "no answer" in traces[0].outcome


def test_401_refreshes_once_and_retries_once(sandbox: SandboxHandle) -> None:
    dead = revoked_token(sandbox)
    live = obtain_tokens(sandbox)["access_token"]
    tokens = ScriptedTokens(dead, [live])
    traces: list[TraceEvent] = []
    client = client_for(sandbox, tokens, traces=traces)
    division = sandbox.divisions[0]
    page = client.get_page(division, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")
    assert page.rows
    assert page.calls == 2
    assert tokens.rejected == [dead]
    assert [t.status for t in traces] == [401, 200]
    assert api_calls(sandbox, division, "sync/CRM/Accounts") == 2


def test_second_401_is_raised_never_looped(sandbox: SandboxHandle) -> None:
    dead = revoked_token(sandbox)
    tokens = ScriptedTokens(dead, [dead, dead, dead])
    client = client_for(sandbox, tokens)
    division = sandbox.divisions[0]
    with pytest.raises(ExactUnauthorized) as caught:
        client.get_page(division, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")
    assert tokens.rejected == [dead]
    assert api_calls(sandbox, division, "sync/CRM/Accounts") == 2
    counters = admin(sandbox, "GET", "counters")
    assert counters["status"].get("401") == 2
    assert caught.value.status == 401
    assert dead not in str(caught.value)


def test_401_after_another_process_rotated_uses_its_token_without_refreshing(
    sandbox_factory: Factory, tmp_path: Path
) -> None:
    # Two processes share the token store. Process B's clock runs ~45 s ahead of A's: B refreshes
    # (the sandbox revokes the old access token on rotation) while A still trusts its cached
    # token. A's call gets 401 invalid_token; A's keeper re-reads the store, finds B's token and
    # A retries once with it. One refresh in all, by B.
    handle = sandbox_factory(divisions=(6001,))
    spec = handle.clock.spec()
    clock_a = ScaledClock.from_spec(spec)
    runtime_b = sandbox_runtime(handle, tmp_path)  # B lives on the sandbox's clock
    runtime_a = sandbox_runtime(handle, tmp_path, clock=clock_a)
    consent(runtime_b, handle)
    traces: list[TraceEvent] = []
    client_a = client_for(handle, runtime_a.keeper, clock=clock_a, traces=traces)
    client_a.get_page(6001, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")  # A caches the token
    admin(handle, "POST", "clock", {"advance": 575})  # the sandbox (and B) 575 s later
    clock_a.advance(530)  # A: 530 s later, the token still looks valid to A
    runtime_b.keeper.get_access_token(CONNECTION, min_validity=0)  # B refreshes (inside the last 30 s)
    assert admin(handle, "GET", "counters")["refreshes"] == 1
    traces.clear()
    page = client_a.get_page(6001, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")
    assert page.calls == 2
    assert [t.status for t in traces] == [401, 200]
    assert admin(handle, "GET", "counters")["refreshes"] == 1


@pytest.mark.parametrize(
    "case",
    [
        # no $select on a sync endpoint: Exact's 400
        ("sync/CRM/Accounts", None, 400, ExactApiError, "Please add a $select"),
        ("crm/NoSuchThing", "ID", 404, ExactNotFound, "Not found"),
    ],
)
def test_4xx_is_not_retried(
    sandbox: SandboxHandle, tmp_path: Path, case: tuple[str, str | None, int, type[ExactApiError], str]
) -> None:
    path, select, status, error_type, words = case
    runtime = sandbox_runtime(sandbox, tmp_path)
    consent(runtime, sandbox)
    client = client_for(sandbox, runtime.keeper)
    division = sandbox.divisions[0]
    with pytest.raises(error_type) as caught:
        client.get_page(division, path, select=select)
    assert caught.value.status == status
    assert words in caught.value.message
    assert api_calls(sandbox, division, path) == 1


def test_403_no_division_access_names_the_reason(sandbox: SandboxHandle, tmp_path: Path) -> None:
    first, second = sandbox.divisions
    admin(sandbox, "POST", "config", {"consent_divisions": [first]})
    runtime = sandbox_runtime(sandbox, tmp_path)
    consent(runtime, sandbox)
    client = client_for(sandbox, runtime.keeper)
    with pytest.raises(ExactForbidden) as caught:
        client.get_page(second, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")
    assert caught.value.reason == "NoDivisionAccess"
    assert "Reason: NoDivisionAccess" in str(caught.value)
    assert api_calls(sandbox, second, "sync/CRM/Accounts") == 1


def test_5xx_is_retried_with_backoff(sandbox: SandboxHandle, tmp_path: Path) -> None:
    runtime = sandbox_runtime(sandbox, tmp_path)
    consent(runtime, sandbox)
    traces: list[TraceEvent] = []
    client = client_for(sandbox, runtime.keeper, traces=traces, max_retries=3)
    division = sandbox.divisions[0]
    admin(sandbox, "POST", "faults", {"api_5xx": 2})
    page = client.get_page(division, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")
    assert page.rows
    assert [t.status for t in traces] == [503, 503, 200]
    assert api_calls(sandbox, division, "sync/CRM/Accounts") == 3
    assert traces[1].sent_at - traces[0].at >= 0.025  # backoff_base 0.05 with jitter in [0.5, 1]


def test_429_is_never_retried_before_its_reset(sandbox_factory: Factory, tmp_path: Path) -> None:
    handle = sandbox_factory(divisions=(7001,), time_scale=60.0)
    admin(handle, "POST", "limits", {"minutely": 3})
    runtime = sandbox_runtime(handle, tmp_path)
    consent(runtime, handle)
    # Another process (its own governor) spends the minute's budget behind our back.
    other = client_for(handle, runtime.keeper, governor=RateGovernor(handle.clock))
    traces: list[TraceEvent] = []
    ours = client_for(handle, runtime.keeper, traces=traces, governor=RateGovernor(handle.clock))
    admin(handle, "POST", "clock", {"to": (math.floor(handle.clock.now() / 60) + 1) * 60 + 1})
    ours.get_page(7001, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")  # ours learns: 2 left
    traces.clear()
    minute_of_ours = math.floor(handle.clock.now() / 60)
    for _ in range(2):
        other.get_page(7001, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")
    if math.floor(handle.clock.now() / 60) != minute_of_ours:
        pytest.skip("the simulated minute turned over mid-setup; the scenario needs one minute")
    page = ours.get_page(7001, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")
    assert page.rows
    statuses = [t.status for t in traces]
    assert statuses == [429, 200]
    reset = (math.floor(traces[0].sent_at / 60) + 1) * 60  # the sandbox's calendar-minute reset
    assert traces[1].sent_at >= reset
    assert ours.governor.stats(7001).throttled == 1
    assert admin(handle, "GET", "counters")["rate_limited_429"] == 1


@pytest.mark.parametrize("skew", [8.0, -8.0], ids=["ours-ahead", "ours-behind"])
def test_a_skewed_clock_waits_for_exacts_reset_on_exacts_clock(
    sandbox_factory: Factory, tmp_path: Path, skew: float
) -> None:
    """Our clock ``skew`` s off the sandbox's: the answers' ``Date`` tells the governor, so the call
    after a spent minute goes at Exact's reset plus little (ahead: not before it, no 429; behind:
    not ``skew`` seconds late, as waiting for the reset on our own clock would)."""
    handle = sandbox_factory(divisions=(7002,), time_scale=30.0)
    admin(handle, "POST", "limits", {"minutely": 2})
    runtime = sandbox_runtime(handle, tmp_path)
    consent(runtime, handle)
    sim = handle.clock
    admin(handle, "POST", "clock", {"to": (math.floor(sim.now() / 60) + 1) * 60 + 1})
    spec = admin(handle, "GET", "clock")
    ours = ScaledClock.from_spec({**spec, "offset": spec["offset"] + skew})
    traces: list[TraceEvent] = []
    client = client_for(handle, runtime.keeper, clock=ours, traces=traces, governor=RateGovernor(ours))
    for _ in range(3):
        client.get_page(7002, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")
    assert [t.status for t in traces] == [200, 200, 200]
    assert admin(handle, "GET", "counters")["rate_limited_429"] == 0
    sent_on_exacts_clock = [t.sent_at - skew for t in traces]
    reset = (math.floor(sent_on_exacts_clock[0] / 60) + 1) * 60
    assert sent_on_exacts_clock[1] < reset <= sent_on_exacts_clock[2] < reset + 5
    assert skew <= client.governor.clock_ahead() < skew + 5


def test_daily_budget_is_reported_not_burned(sandbox: SandboxHandle, tmp_path: Path) -> None:
    admin(sandbox, "POST", "limits", {"daily": 10})
    runtime = sandbox_runtime(sandbox, tmp_path)
    consent(runtime, sandbox)
    client = client_for(sandbox, runtime.keeper, daily_reserve=3)
    division = sandbox.divisions[0]
    made = 0
    with pytest.raises(DailyBudgetExhausted) as caught:
        for _ in range(20):
            client.get_page(division, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")
            made += 1
    assert made == 7  # 10 - reserve 3
    assert api_calls(sandbox, division, "sync/CRM/Accounts") == 7
    next_midnight = (math.floor(sandbox.clock.now() / 86400) + 1) * 86400
    # Exact's midnight on our clock: plus the skew bound from the answers' Date (same clock here)
    assert caught.value.reset_at is not None
    assert next_midnight <= caught.value.reset_at < next_midnight + 1.5
    assert caught.value.reset_at == pytest.approx(next_midnight + client.governor.clock_ahead(), abs=1e-6)
    assert caught.value.division == division
    # the reserve is there for incremental syncs
    client.get_page(division, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L", daily_reserve=0)
    assert api_calls(sandbox, division, "sync/CRM/Accounts") == 8
    assert admin(sandbox, "GET", "counters")["rate_limited_429"] == 0


def test_runtime_builds_a_working_client(sandbox: SandboxHandle, tmp_path: Path) -> None:
    runtime = sandbox_runtime(sandbox, tmp_path)
    consent(runtime, sandbox)
    client = runtime.exact_client(CONNECTION)
    assert client is runtime.exact_client(CONNECTION)
    assert client.me()["CurrentDivision"] in sandbox.divisions
    codes = sorted(int(d["Code"]) for d in client.divisions(sandbox.divisions[0]))
    assert codes == sorted(sandbox.divisions)


def test_no_secret_reaches_errors_or_traces(
    sandbox: SandboxHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    runtime = sandbox_runtime(sandbox, tmp_path)
    consent(runtime, sandbox)
    traces: list[TraceEvent] = []
    client = client_for(sandbox, runtime.keeper, traces=traces, max_retries=1)
    token = runtime.keeper.get_access_token(CONNECTION)
    division = sandbox.divisions[0]
    admin(sandbox, "POST", "faults", {"api_5xx": 2})
    with pytest.raises(ExactServerError) as caught:
        client.get_page(division, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")
    with pytest.raises(ExactApiError) as bad:
        client.get_page(division, "sync/CRM/Accounts")
    for text in (str(caught.value), str(bad.value), caplog.text, *map(str, traces), *map(repr, traces)):
        assert token not in text
        assert LOCAL_CLIENT_SECRET not in text


@pytest.mark.slow
def test_governor_keeps_the_minute_busy_without_a_429_on_a_long_backfill(
    sandbox_factory: Factory, tmp_path: Path
) -> None:
    """~200 pages of TransactionLines under the sandbox's real limits (60 a minute), time-scaled.

    The scale is chosen from the sandbox's measured page time so that 60 pages take at most half
    a simulated minute: the figure under test is then the governor's, not this machine's speed.
    """
    rows = 200_000
    handle = sandbox_factory(divisions=(8001,), row_counts={"TransactionLines": rows})
    runtime = sandbox_runtime(handle, tmp_path)
    consent(runtime, handle)
    probe = client_for(handle, runtime.keeper, governor=RateGovernor(handle.clock))
    admin(handle, "POST", "limits", {"enabled": False})
    pages = probe.iter_pages(8001, probe.entity_url(8001, "TransactionLines"))
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        next(pages)
        timings.append(time.perf_counter() - started)
    latency = sorted(timings)[len(timings) // 2]
    scale = max(1.0, min(60.0, 0.5 / max(latency, 1e-3)))
    admin(handle, "POST", "limits", {"enabled": True, "minutely": 60, "daily": 5000, "reset": True})
    admin(handle, "POST", "counters/reset")
    admin(handle, "POST", "clock", {"scale": scale})
    admin(handle, "POST", "clock", {"to": (math.floor(handle.clock.now() / 60) + 1) * 60})

    traces: list[TraceEvent] = []
    client = client_for(handle, runtime.keeper, traces=traces, governor=RateGovernor(handle.clock))
    fetched = sum(len(page.rows) for page in client.read_full(8001, "TransactionLines"))

    counters = admin(handle, "GET", "counters")
    stats = client.governor.stats(8001)
    calls = [t for t in traces if t.status == 200]
    assert fetched == rows
    assert counters["rate_limited_429"] == 0
    assert stats.throttled == 0
    assert len(traces) == len(calls) == stats.calls
    assert len(calls) <= math.ceil(rows / 1000) + 1
    per_minute: dict[int, int] = {}
    for trace in calls:
        minute = math.floor(trace.sent_at / 60)
        per_minute[minute] = per_minute.get(minute, 0) + 1
    minutes = sorted(per_minute)
    full = minutes[:-1]  # the last minute is the remainder
    assert len(full) >= 3
    busy = sum(per_minute[m] for m in full) / (60 * len(full))
    print(
        f"scale {scale:.1f}, page {latency * 1000:.0f} ms, calls per minute {[per_minute[m] for m in minutes]}, "
        f"busy {busy:.1%}, waits {stats.waits} ({stats.waited_seconds:.1f} s simulated)"
    )
    assert minutes == list(range(minutes[0], minutes[-1] + 1))  # no idle minute
    assert all(per_minute[m] >= 54 for m in full), per_minute
    assert busy >= 0.9
    assert stats.waits >= len(full)


def test_endpoint_blocked_after_ten_errors_is_reported_not_retried(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    runtime = sandbox_runtime(sandbox, tmp_path)
    consent(runtime, sandbox)
    client = client_for(sandbox, runtime.keeper)
    division = sandbox.divisions[0]
    for _ in range(10):
        with pytest.raises(ExactApiError) as bad:
            client.get_page(division, "sync/CRM/Accounts")  # no $select: 400, each raised at once
        assert bad.value.status == 400
    assert api_calls(sandbox, division, "sync/CRM/Accounts") == 10
    with pytest.raises(ExactRateLimited) as blocked:
        client.get_page(division, "sync/CRM/Accounts", select="ID", filter="Timestamp gt 1L")
    assert blocked.value.reason == "ErrorLimitExceeded"
    assert blocked.value.endpoint_blocked
    assert "Too many errors" in str(blocked.value)
    assert api_calls(sandbox, division, "sync/CRM/Accounts") == 11
    # the division's minute budget is untouched: other endpoints go on at once
    assert client.governor.delay_before_call(division) == 0
    client.get_page(division, "sync/Logistics/Items", select="ID", filter="Timestamp gt 1L")
