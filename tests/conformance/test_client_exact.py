"""CLIENT conformance of ``shared/exact`` to the reference: what our ExactClient sends to Exact.

Expectations come from the reference ("Always send Accept: application/json", "page sequentially
by following __next", "never retry a 4xx blindly", "429 ... never retried before its reset",
"Dates ... Europe/Amsterdam", "Accept Timestamp as a number or a string", the webhook signature).
Counts are taken at the transport boundary and from the sandbox's counters.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import itertools
import json
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from shared.clock import ScaledClock
from shared.exact.catalog import CATALOG, DELETED
from shared.exact.client import ExactClient
from shared.exact.convert import parse_exact_date
from shared.exact.errors import ExactError, InvalidSignature
from shared.exact.webhooks import verify_delivery
from shared.oauth.errors import OAuthError
from shared.oauth.keeper import RefreshResult
from tests.conformance.client_rig import CONNECTION, rig
from tests.conformance.support import EARLIEST_REFRESH, SandboxFactory, receiver, start, utc

SECRET = "conformance-webhook-secret"


def test_client_sends_accept_json_and_pages_by_following_next(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """ "Without Accept: application/json the answer is Atom XML. Always send it." and "Page
    sequentially by following __next"; a first load is ``sync/…`` from ``Timestamp gt 1L``."""
    handle = start(sandbox_factory, row_counts={"Accounts": 2500})
    with rig(handle, tmp_path) as r:
        pages = list(r.client.read_full(r.division, "Accounts"))
        sent = r.api.to("/CRM/Accounts")
        assert [e.url for e in sent[1:]] == [p.next_url for p in pages[:-1]]
        assert all(e.headers.get("accept") == "application/json" for e in r.api.exchanges)
        first = parse_qs(urlsplit(sent[0].url).query)
        assert urlsplit(sent[0].url).path == f"/api/v1/{r.division}/sync/CRM/Accounts"
        assert first["$filter"] == ["Timestamp gt 1L"]
        assert first["$select"]
        keys = [row["ID"] for page in pages for row in page.rows]
        assert sorted(keys) == sorted(row["ID"] for row in r.driver.dump(r.division, "Accounts"))
        assert len(keys) == len(set(keys))
        assert len(sent) == len(pages) <= 4  # ceil(2500 / 1000) plus a possibly empty last page


@pytest.mark.parametrize("name", [e.name for e in CATALOG] + ["Deleted"])
def test_client_reads_every_catalog_entity_without_a_single_error(
    sandbox_factory: SandboxFactory, tmp_path: Path, name: str
) -> None:
    """REST: ``$select`` on bulk/sync, ``$filter`` on the regular/bulk form of entities with a sync
    twin (so read those through ``sync/…`` from ``Timestamp gt 1L``), 60/1000 a page: a full read
    earns no 4xx and returns the live data set."""
    handle = start(sandbox_factory)
    with rig(handle, tmp_path) as r:
        entity = DELETED if name == "Deleted" else name
        pages = list(r.client.read_full(r.division, entity))
        assert all(e.status == 200 for e in r.api.exchanges), [(e.url, e.status) for e in r.api.exchanges]
        rows = [row for page in pages for row in page.rows]
        live = r.driver.dump(r.division, name)
        key = DELETED.key if name == "Deleted" else next(e.key for e in CATALOG if e.name == name)
        assert sorted(str(row[key]) for row in rows) == sorted(str(row[key]) for row in live)


def test_client_never_sends_a_url_over_6000_characters(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Size limits: "URL up to 6000 characters": a longer one is refused before it is sent."""
    handle = start(sandbox_factory)
    with rig(handle, tmp_path) as r:
        long_filter = "Timestamp gt 1L" + " and ID ne guid'00000000-0000-0000-0000-000000000000'" * 120
        with pytest.raises((ValueError, ExactError)):
            r.client.get_page(r.division, "sync/CRM/Accounts", select="ID,Timestamp", filter=long_filter)
        assert r.api.exchanges == []


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_never_retries_a_4xx(sandbox_factory: SandboxFactory, tmp_path: Path, status: int) -> None:
    """Rate limits "errors": "never retry a 4xx blindly" (10 of them block the endpoint an hour)."""
    handle = start(sandbox_factory)
    with rig(handle, tmp_path) as r:
        select: str | None = "ID"
        row_filter: str | None = "Blocked eq false"
        if status == 400:
            path, select, row_filter = "sync/CRM/Accounts", None, "Timestamp gt 1L"  # no $select
        elif status == 403:
            r.driver.admin("config", {"scope_violation_endpoints": ["crm/"]})
            path = "crm/Accounts"
        else:
            path, row_filter = "crm/Accounts(guid'00000000-0000-0000-0000-000000000001')", None
        with pytest.raises(ExactError):
            r.client.get_page(r.division, path, select=select, filter=row_filter)
        assert [e.status for e in r.api.exchanges] == [status]


def test_client_does_not_retry_a_blocked_endpoint(sandbox_factory: SandboxFactory, tmp_path: Path) -> None:
    """Rate limits "errors": once blocked, calling again only extends the damage."""
    handle = start(sandbox_factory)
    with rig(handle, tmp_path) as r:
        token = r.driver.tokens()["access_token"]
        for _ in range(10):
            r.driver.api(f"{r.division}/sync/CRM/Accounts", token, {"$filter": "Timestamp gt 1L"})
        with pytest.raises(ExactError):
            r.client.get_page(
                r.division, "sync/CRM/Accounts", select="ID,Timestamp", filter="Timestamp gt 1L"
            )
        assert len(r.api.exchanges) == 1


def test_client_waits_for_the_minutely_reset_after_a_429(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Rows "minutely" and "429": a 429 is never retried before the reset it announced."""
    clock = ScaledClock.starting_now(scale=10.0, sim_start=utc("2025-01-15T10:00:40"))
    handle = sandbox_factory(clock=clock)
    with rig(handle, tmp_path) as r:
        token = r.driver.tokens()["access_token"]
        spent = 0
        while r.driver.api(f"{r.division}/system/Divisions", token, {"$select": "Code"}).status_code == 200:
            spent += 1
        assert spent <= 60
        page = r.client.get_page(
            r.division, "sync/CRM/Accounts", select="ID,Timestamp", filter="Timestamp gt 1L"
        )
        assert page.rows
        statuses = [e.status for e in r.api.exchanges]
        assert statuses[0] == 429 and statuses[-1] == 200 and statuses.count(429) == 1, statuses
        reset = int(r.api.exchanges[0].response_headers["x-ratelimit-minutely-reset"]) / 1000
        assert r.api.exchanges[1].sent_at >= reset


def test_client_does_not_retry_a_daily_429(sandbox_factory: SandboxFactory, tmp_path: Path) -> None:
    """Row "daily": the day's budget is spent until 00:00 UTC; retrying only burns errors."""
    handle = start(sandbox_factory)
    with rig(handle, tmp_path) as r:
        r.driver.admin("limits", {"daily": 2})
        token = r.driver.tokens()["access_token"]
        for _ in range(2):
            r.driver.api(f"{r.division}/system/Divisions", token, {"$select": "Code"})
        with pytest.raises(ExactError):
            r.client.get_page(
                r.division, "sync/CRM/Accounts", select="ID,Timestamp", filter="Timestamp gt 1L"
            )
        assert [e.status for e in r.api.exchanges] == [429]


def test_client_stops_before_the_call_once_the_daily_budget_is_known_spent(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Rows "daily"/"headers": the headers say what is left; a call the day cannot afford is not made."""
    handle = start(sandbox_factory)
    with rig(handle, tmp_path) as r:
        r.driver.admin("limits", {"daily": 2})
        for _ in range(2):
            r.client.get_page(
                r.division, "sync/CRM/Accounts", select="ID,Timestamp", filter="Timestamp gt 1L"
            )
        with pytest.raises(ExactError):
            r.client.get_page(
                r.division, "sync/CRM/Accounts", select="ID,Timestamp", filter="Timestamp gt 1L"
            )
        assert [e.status for e in r.api.exchanges] == [200, 200]


def test_client_answers_a_401_with_at_most_one_refresh_and_never_too_early(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Errors "401 from the API" + OAuth "too early": a rejected token inside the 570 s window may
    not be refreshed (that would be a too-early refresh), and the API is not called again."""
    handle = start(sandbox_factory)
    with rig(handle, tmp_path) as r:
        r.driver.admin("chains/revoke", {"chain": None})  # a person revoked the app
        with pytest.raises((ExactError, OAuthError)):
            r.client.get_page(
                r.division, "sync/CRM/Accounts", select="ID,Timestamp", filter="Timestamp gt 1L"
            )
        assert [e.status for e in r.api.exchanges] == [401]
        assert r.counters()["too_early_refreshes"] == 0
        assert r.token_calls() <= 1  # the consent's exchange was made on the rig's own client


def test_client_recovers_from_a_rotation_by_another_worker_without_touching_the_chain(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Rows "rotation" and "401 from the API": another worker rotated (the old access token may be
    dead at once); our client gets a 401, takes the stored new token and retries once. No second
    refresh, no reuse of a refresh token."""
    handle = start(sandbox_factory)
    with rig(handle, tmp_path) as r:
        r.client.get_page(r.division, "sync/CRM/Accounts", select="ID,Timestamp", filter="Timestamp gt 1L")
        r.driver.advance(EARLIEST_REFRESH + 5)  # our cached token still has 25 s, so it is used
        other = r.new_keeper()
        assert other.refresh_now(CONNECTION) is RefreshResult.REFRESHED
        page = r.client.get_page(
            r.division, "sync/CRM/Accounts", select="ID,Timestamp", filter="Timestamp gt 1L"
        )
        assert page.rows
        counters = r.counters()
        assert counters["refresh_token_reuse"] == 0
        assert counters["too_early_refreshes"] == 0
        assert counters["refreshes"] == 1
        statuses = [e.status for e in r.api.exchanges]
        assert statuses in ([200, 401, 200], [200, 200]), statuses


def test_client_never_retries_a_429_before_the_servers_reset_even_with_clock_skew(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Rows "429"/"headers": resets are Exact's epoch milliseconds, i.e. Exact's clock. A client whose
    clock runs 1.5 s ahead must still not send before the announced reset (the governor's guard
    is documented to absorb up to 2 s of skew)."""
    clock = ScaledClock.starting_now(scale=2.0, sim_start=utc("2025-01-15T10:00:53"))
    handle = sandbox_factory(clock=clock)
    with rig(handle, tmp_path) as r:
        ahead = ScaledClock(anchor_real=clock.anchor_real, anchor_sim=clock.anchor_sim, scale=2.0, offset=1.5)
        client = ExactClient(
            handle.base_url, r.keeper, connection=CONNECTION, clock=ahead, transport=r.api, max_retries=1
        )
        token = r.driver.tokens()["access_token"]
        while r.driver.api(f"{r.division}/system/Divisions", token, {"$select": "Code"}).status_code == 200:
            pass
        with contextlib.suppress(ExactError):
            client.get_page(r.division, "sync/CRM/Accounts", select="ID,Timestamp", filter="Timestamp gt 1L")
        client.close()
        exchanges = r.api.exchanges
        assert exchanges[0].status == 429
        for previous, following in itertools.pairwise(exchanges):
            if previous.status == 429:
                reset = int(previous.response_headers["x-ratelimit-minutely-reset"]) / 1000
                assert following.sent_at >= reset, (following.sent_at, reset)
        assert exchanges[-1].status == 200


def test_client_accepts_timestamp_as_a_string(sandbox_factory: SandboxFactory, tmp_path: Path) -> None:
    """Sync: "Accept Timestamp as a number or a string"."""
    handle = start(sandbox_factory)
    with rig(handle, tmp_path) as r:
        r.driver.admin("config", {"timestamp_as_string": True})
        pages = list(r.client.read_since(r.division, "Accounts", None))
        rows = [row for page in pages for row in page.rows]
        assert rows and isinstance(rows[0]["Timestamp"], str)
        top = max(page.max_timestamp() or 0 for page in pages)
        assert top == max(int(row["Timestamp"]) for row in r.driver.dump(r.division, "Accounts"))
        again = list(r.client.read_since(r.division, "Accounts", top))
        assert [row for page in again for row in page.rows] == []


@pytest.mark.parametrize("instant", ["2025-01-15T10:00:10", "2025-07-15T10:00:10"], ids=["winter", "summer"])
def test_client_reads_dates_as_amsterdam_local_time(
    sandbox_factory: SandboxFactory, tmp_path: Path, instant: str
) -> None:
    """Dates: ``/Date(ms)/`` is Europe/Amsterdam wall-clock time: converted, it is the UTC instant of
    the change."""
    handle = start(sandbox_factory, at=instant)
    with rig(handle, tmp_path) as r:
        moment = r.driver.now()
        key = r.driver.mutate(r.division, "Accounts", update=1)["updated"][0]
        page = r.client.get_page(
            r.division, "crm/Accounts", select="ID,Modified", filter=f"ID eq guid'{key}'"
        )
        modified = parse_exact_date(page.rows[0]["Modified"])
        assert modified.tzinfo is not None
        expected = dt.datetime.fromtimestamp(moment, tz=dt.UTC)
        assert abs((modified - expected).total_seconds()) < 5, (modified, expected)


def test_client_verifies_a_real_delivery_on_its_raw_content(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Webhooks "Signature": verified on the raw Content text; a changed byte fails."""
    handle = start(sandbox_factory, webhook_secret=SECRET)
    with rig(handle, tmp_path) as r, receiver(200) as hook:
        token = r.driver.tokens()["access_token"]
        created = r.driver.http.post(
            r.driver.url(f"{r.division}/webhooks/WebhookSubscriptions"),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            json={"CallbackURL": hook.url, "Topic": "Accounts"},
        )
        assert created.status_code < 300
        key = r.driver.mutate(r.division, "Accounts", update=1)["updated"][0]
        body = hook.wait_for(2)[1].body
        event = verify_delivery(body, SECRET)
        assert event.key == key.lower() and event.division == r.division and event.topic == "Accounts"
        tampered = body.replace(b'"Update"', b'"Delete"')
        assert tampered != body
        with pytest.raises(InvalidSignature):
            verify_delivery(tampered, SECRET)
        with pytest.raises(InvalidSignature):
            verify_delivery(body, SECRET + "x")


def test_client_verifies_on_the_bytes_as_sent_not_a_reserialisation() -> None:
    """Webhooks "Signature": "the raw JSON text of the Content value exactly as sent"."""
    content = (
        '{ "Topic" : "Accounts",\n "ClientId":"c", "Division" : 123, "Action":"Update",'
        ' "Key":"6F1D2B9A-0C5E-4C1B-9D1E-2A3B4C5D6E7F", "Name":"Caf\\u00e9 \\/ x",'
        ' "ExactOnlineEndpoint":"https://start.exactonline.nl/api/v1/123/crm/Accounts(guid\'6f1d2b9a-0c5e-4c1b-9d1e-2a3b4c5d6e7f\')",'
        ' "EventCreatedOn":"2025-01-16T01:20:00.000" }'
    )
    assert json.dumps(json.loads(content)) != content
    signature = hmac.new(SECRET.encode(), content.encode(), hashlib.sha256).hexdigest().upper()
    body = ('{"Content":' + content + ', "HashCode" : "' + signature + '"}').encode()
    event = verify_delivery(body, SECRET)
    assert event.division == 123 and event.action == "Update"
    assert unquote(event.endpoint or "").endswith("crm/Accounts(guid'6f1d2b9a-0c5e-4c1b-9d1e-2a3b4c5d6e7f')")
