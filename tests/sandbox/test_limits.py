"""Rate limits per division (calendar minute, UTC day) and the error block, as answered."""

from __future__ import annotations

import httpx

from shared.sandbox.server import SandboxHandle
from tests.fixtures.sandbox import obtain_tokens
from tests.sandbox.conftest import Api, Factory, error_text

SIX = {
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Minutely-Limit",
    "X-RateLimit-Minutely-Remaining",
    "X-RateLimit-Minutely-Reset",
}
MINUTELY = {"X-RateLimit-Minutely-Limit", "X-RateLimit-Minutely-Remaining", "X-RateLimit-Minutely-Reset"}


def rate_headers(answer: httpx.Response) -> dict[str, str]:
    return {name: answer.headers[name] for name in SIX if name in answer.headers}


def divisions(api: Api, division: int | None = None) -> httpx.Response:
    return api.get("system/Divisions", {"$select": "Code"}, division=division)


def start_of_a_minute(api: Api) -> float:
    """Move the clock to 1 s past the next calendar minute; return that moment."""
    now = api.admin("GET", "clock")["now"]
    return float(api.admin("POST", "clock", {"advance": 60 - now % 60 + 1})["now"])


def test_every_division_answer_carries_six_headers_with_millisecond_resets(api: Api) -> None:
    now = start_of_a_minute(api)
    first, second = divisions(api), divisions(api)
    headers = rate_headers(first)
    assert set(headers) == SIX
    assert headers["X-RateLimit-Limit"] == "5000" and headers["X-RateLimit-Minutely-Limit"] == "60"
    assert headers["X-RateLimit-Minutely-Remaining"] == "59" and headers["X-RateLimit-Remaining"] == "4999"
    assert rate_headers(second)["X-RateLimit-Minutely-Remaining"] == "58"
    assert int(headers["X-RateLimit-Minutely-Reset"]) == (int(now // 60) + 1) * 60_000
    assert int(headers["X-RateLimit-Reset"]) == (int(now // 86_400) + 1) * 86_400_000
    errors = api.get("sync/CRM/Accounts", {"$filter": "Timestamp gt 1L"})  # a 400 counts and carries them too
    assert errors.status_code == 400 and rate_headers(errors)["X-RateLimit-Minutely-Remaining"] == "57"


def test_current_me_counts_toward_nothing(api: Api) -> None:
    start_of_a_minute(api)
    for _ in range(70):
        answer = api.me()
        assert answer.status_code == 200 and not rate_headers(answer)
    assert rate_headers(divisions(api))["X-RateLimit-Remaining"] == "4999"


def test_the_61st_call_in_a_calendar_minute_is_refused_with_an_empty_429(api: Api) -> None:
    start_of_a_minute(api)
    for _ in range(60):
        assert divisions(api).status_code == 200
    refused = divisions(api)
    assert refused.status_code == 429
    assert refused.content == b""
    assert set(rate_headers(refused)) == MINUTELY
    assert refused.headers["X-RateLimit-Minutely-Remaining"] == "0"
    other = divisions(api, api.handle.divisions[1])  # each division has its own budget
    assert other.status_code == 200
    api.admin("POST", "clock", {"advance": 60})
    assert divisions(api).status_code == 200
    counters = api.admin("GET", "counters")
    assert counters["rate_limited_429"] == 1


def test_daily_limit_resets_at_midnight_utc(api: Api) -> None:
    api.admin("POST", "limits", {"daily": 5})
    start_of_a_minute(api)
    for n in range(5):
        assert rate_headers(divisions(api))["X-RateLimit-Remaining"] == str(4 - n)
    refused = divisions(api)
    assert refused.status_code == 429 and refused.content == b""
    assert set(rate_headers(refused)) == {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}
    reset_ms = int(refused.headers["X-RateLimit-Reset"])
    assert reset_ms % 86_400_000 == 0
    now = api.admin("GET", "clock")["now"]
    api.admin("POST", "clock", {"advance": reset_ms / 1000 - now + 1})
    api.tokens = obtain_tokens(api.handle, api.http)
    assert divisions(api).status_code == 200


def test_ten_errors_on_an_endpoint_within_an_hour_block_it_for_an_hour(api: Api) -> None:
    api.admin("POST", "limits", {"minutely": 1000})
    bad = {"$select": "Nope", "$filter": "Timestamp gt 1L"}
    for _ in range(10):
        assert api.get("sync/CRM/Accounts", bad).status_code == 400
    good = {"$select": "ID", "$filter": "Timestamp gt 1L"}
    blocked = api.get("sync/CRM/Accounts", good)
    assert blocked.status_code == 429 and "blocked" in error_text(blocked)
    assert blocked.headers["Reason"] == "ErrorLimitExceeded"
    assert not rate_headers(blocked)
    assert api.get("sync/Logistics/Items", good).status_code == 200  # other endpoints are not blocked
    assert divisions(api, api.handle.divisions[1]).status_code == 200
    api.admin("POST", "clock", {"advance": 3601})
    api.tokens = obtain_tokens(api.handle, api.http)
    assert api.get("sync/CRM/Accounts", good).status_code == 200
    # the second block lasts longer
    for _ in range(10):
        api.get("sync/CRM/Accounts", bad)
    api.admin("POST", "clock", {"advance": 3601})
    api.tokens = obtain_tokens(api.handle, api.http)
    assert api.get("sync/CRM/Accounts", good).status_code == 429
    assert api.admin("GET", "counters")["error_blocked"] == 2


def test_nine_errors_spread_over_more_than_an_hour_do_not_block(api: Api) -> None:
    for _ in range(9):
        assert api.get("crm/Accounts", {"$select": "ID"}).status_code == 400
    api.admin("POST", "clock", {"advance": 3601})
    api.tokens = obtain_tokens(api.handle, api.http)
    assert api.get("crm/Accounts", {"$select": "ID"}).status_code == 400
    assert api.get("crm/Accounts", {"$select": "ID", "$filter": "Blocked eq false"}).status_code == 200


def test_expired_tokens_count_toward_the_block(api: Api) -> None:
    api.admin("POST", "clock", {"advance": 601})
    for _ in range(10):
        assert divisions(api).status_code == 401
    api.tokens = obtain_tokens(api.handle, api.http)
    assert divisions(api).status_code == 429


def test_limits_off_means_no_headers_and_no_refusals(sandbox_factory: Factory, http: httpx.Client) -> None:
    handle: SandboxHandle = sandbox_factory(limits=False)
    api = Api(handle, http, obtain_tokens(handle, http))
    for _ in range(70):
        answer = divisions(api)
        assert answer.status_code == 200 and not rate_headers(answer)
    for _ in range(12):
        api.get("crm/Accounts", {"$select": "ID"})
    assert api.get("crm/Accounts", {"$select": "ID", "$filter": "Blocked eq false"}).status_code == 200
    assert api.admin("POST", "limits", {"enabled": True})["enabled"] is True
    assert set(rate_headers(divisions(api))) == SIX


def test_limits_can_be_changed(api: Api) -> None:
    answer = api.admin("POST", "limits", {"minutely": 2, "daily": 100, "errors_per_hour": 3})
    assert (answer["minutely"], answer["daily"], answer["errors_per_hour"]) == (2, 100, 3)
    start_of_a_minute(api)
    assert [divisions(api).status_code for _ in range(3)] == [200, 200, 429]
    bad = api.http.post(f"{api.handle.admin_url}/limits", json={"minutely": 0})
    assert bad.status_code == 400
