"""Reference: "Rate limits" table and "Errors" section, one test per row."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from tests.conformance.support import (
    ALL_RATE_HEADERS,
    DAILY_HEADERS,
    MINUTELY_HEADERS,
    Exact,
    SandboxFactory,
    odata_error_text,
    start,
    utc,
)

SELECT = {"$select": "ID,Timestamp", "$filter": "Timestamp gt 1L"}
ENDPOINT = "sync/CRM/Accounts"


def session(factory: SandboxFactory, **options: Any) -> tuple[Exact, str, int]:
    driver = Exact(start(factory, **options))
    token = driver.tokens()["access_token"]
    return driver, token, driver.handle.divisions[0]


def good(driver: Exact, token: str, division: int, endpoint: str = ENDPOINT) -> httpx.Response:
    return driver.api(f"{division}/{endpoint}", token, SELECT)


def bad(driver: Exact, token: str, division: int, endpoint: str = ENDPOINT) -> httpx.Response:
    """A 400: no ``$select`` on a sync endpoint."""
    return driver.api(f"{division}/{endpoint}", token, {"$filter": "Timestamp gt 1L"})


def rate_headers(answer: httpx.Response) -> set[str]:
    return {name for name in ALL_RATE_HEADERS if name in answer.headers}


# -- headers --------------------------------------------------------------------------------------


def test_division_urls_carry_all_six_headers_with_resets_in_epoch_ms(sandbox_factory: SandboxFactory) -> None:
    """Row "headers": six ``X-RateLimit-*`` headers, resets in epoch **milliseconds**; daily resets
    at 00:00 UTC, minutely at the next calendar minute."""
    driver, token, division = session(sandbox_factory, at="2025-01-15T10:00:10")
    answer = good(driver, token, division)
    now = driver.now()
    assert rate_headers(answer) == set(ALL_RATE_HEADERS)
    assert int(answer.headers["X-RateLimit-Limit"]) == 5000
    assert int(answer.headers["X-RateLimit-Remaining"]) == 4999
    assert int(answer.headers["X-RateLimit-Minutely-Limit"]) == 60
    assert int(answer.headers["X-RateLimit-Minutely-Remaining"]) == 59
    assert int(answer.headers["X-RateLimit-Minutely-Reset"]) == (math.floor(now / 60) + 1) * 60_000
    assert int(answer.headers["X-RateLimit-Reset"]) == int(utc("2025-01-16T00:00:00") * 1000)
    driver.close()


def test_urls_without_a_division_carry_no_rate_headers_and_do_not_count_daily(
    sandbox_factory: SandboxFactory,
) -> None:
    """Rows "headers (only on URLs with a division)" and "Calls without a division (current/Me) do not
    count toward the daily limit"."""
    driver, token, division = session(sandbox_factory)
    driver.admin("limits", {"daily": 5})
    for _ in range(8):
        me = driver.api("current/Me", token)
        assert me.status_code == 200
        assert rate_headers(me) == set()
    answer = good(driver, token, division)
    assert answer.status_code == 200
    assert int(answer.headers["X-RateLimit-Remaining"]) == 4
    driver.close()


# -- minutely -------------------------------------------------------------------------------------


def test_the_61st_call_in_a_calendar_minute_is_429_with_empty_body_and_minutely_headers_only(
    sandbox_factory: SandboxFactory,
) -> None:
    """Rows "minutely" and "429": 60 per division per calendar minute; the 61st is a 429 with an
    EMPTY body and only the minutely headers."""
    driver, token, division = session(sandbox_factory, at="2025-01-15T10:00:02")
    for n in range(60):
        answer = good(driver, token, division)
        assert answer.status_code == 200, (n, answer.status_code)
    limited = good(driver, token, division)
    assert limited.status_code == 429
    assert limited.content == b""
    assert rate_headers(limited) == set(MINUTELY_HEADERS)
    assert int(limited.headers["X-RateLimit-Minutely-Remaining"]) == 0
    assert int(limited.headers["X-RateLimit-Minutely-Reset"]) == int(utc("2025-01-15T10:01:00") * 1000)
    assert "retry-after" not in limited.headers  # "Retry-After: unconfirmed, do not rely on it"
    driver.close()


def test_the_minute_is_a_calendar_minute_not_a_sliding_window(sandbox_factory: SandboxFactory) -> None:
    """Row "minutely": per **calendar minute**: 60 calls at hh:mm:59 do not take from hh:mm+1."""
    driver, token, division = session(sandbox_factory, at="2025-01-15T10:00:30")
    driver.jump_to(utc("2025-01-15T10:00:58"))
    for _ in range(60):
        assert good(driver, token, division).status_code == 200
    assert good(driver, token, division).status_code == 429
    driver.jump_to(utc("2025-01-15T10:01:00.5"))
    fresh = good(driver, token, division)
    assert fresh.status_code == 200
    assert int(fresh.headers["X-RateLimit-Minutely-Remaining"]) == 59
    driver.close()


def test_divisions_have_separate_budgets(sandbox_factory: SandboxFactory) -> None:
    """Row "minutely"/"daily": per app per company (division)."""
    driver, token, division = session(sandbox_factory, at="2025-01-15T10:00:02")
    other = driver.handle.divisions[1]
    for _ in range(60):
        good(driver, token, division)
    assert good(driver, token, division).status_code == 429
    answer = good(driver, token, other)
    assert answer.status_code == 200
    assert int(answer.headers["X-RateLimit-Minutely-Remaining"]) == 59
    assert int(answer.headers["X-RateLimit-Remaining"]) == 4999
    driver.close()


def test_the_daily_limit_is_5000(sandbox_factory: SandboxFactory) -> None:
    """Row "daily": 5,000 calls per app per company (the 5001st of a UTC day is refused)."""
    driver, token, division = session(sandbox_factory, at="2025-01-15T01:00:00")
    for n in range(5000):
        if n % 60 == 0 and n:
            driver.advance(60)
            token = driver.tokens()["access_token"] if n % 540 == 0 else token
        answer = driver.api(f"{division}/system/Divisions", token, {"$select": "Code"})
        assert answer.status_code == 200, (n, answer.status_code)
    assert int(answer.headers["X-RateLimit-Remaining"]) == 0
    driver.advance(60)
    token = driver.tokens()["access_token"]
    assert driver.api(f"{division}/system/Divisions", token, {"$select": "Code"}).status_code == 429
    driver.close()


# -- daily ----------------------------------------------------------------------------------------


def test_daily_budget_resets_at_midnight_utc_not_amsterdam(sandbox_factory: SandboxFactory) -> None:
    """Row "daily": reset at 00:00 UTC (Amsterdam midnight, an hour earlier in winter, is not it)."""
    driver, token, division = session(sandbox_factory, at="2025-01-15T22:30:00")
    driver.admin("limits", {"daily": 3})
    for _ in range(3):
        assert good(driver, token, division).status_code == 200
    limited = good(driver, token, division)
    assert limited.status_code == 429
    assert limited.content == b""
    assert int(limited.headers.get("X-RateLimit-Reset", str(int(utc("2025-01-16T00:00:00") * 1000)))) == int(
        utc("2025-01-16T00:00:00") * 1000
    )
    driver.jump_to(utc("2025-01-15T23:30:00"))  # 00:30 in Amsterdam, still the same UTC day
    token = driver.tokens()["access_token"]
    assert good(driver, token, division).status_code == 429
    driver.jump_to(utc("2025-01-16T00:00:30"))
    token = driver.tokens()["access_token"]
    answer = good(driver, token, division)
    assert answer.status_code == 200
    assert int(answer.headers["X-RateLimit-Remaining"]) == 2
    driver.close()


# -- error block ----------------------------------------------------------------------------------


def test_nine_errors_do_not_block_and_429s_are_not_errors(sandbox_factory: SandboxFactory) -> None:
    """Row "errors": it takes 10 error answers, and only 400/401/403/404 count (not 429)."""
    driver, token, division = session(sandbox_factory, at="2025-01-15T10:00:02")
    for _ in range(60):
        good(driver, token, division)
    for _ in range(15):
        assert good(driver, token, division).status_code == 429
    driver.advance(60)
    for _ in range(9):
        assert bad(driver, token, division).status_code == 400
    assert good(driver, token, division).status_code == 200
    driver.close()


def test_ten_errors_block_the_endpoint_for_an_hour_and_only_that_endpoint(
    sandbox_factory: SandboxFactory,
) -> None:
    """Row "errors": 10 error answers (400/401/403/404) per key, user, company, endpoint and hour block
    that endpoint for an hour: the 11th call is refused even when valid; another endpoint and another
    division are not blocked."""
    driver, token, division = session(sandbox_factory, at="2025-01-15T10:00:02")
    for _ in range(10):
        assert bad(driver, token, division).status_code == 400
    blocked = good(driver, token, division)
    assert blocked.status_code != 200, "the 11th call went through"
    assert 400 <= blocked.status_code < 500
    assert good(driver, token, division, "sync/Logistics/Items").status_code == 200
    other = driver.handle.divisions[1]
    assert good(driver, token, other).status_code == 200
    driver.advance(30 * 60)
    token = driver.tokens()["access_token"]
    assert good(driver, token, division).status_code != 200
    driver.advance(31 * 60)
    token = driver.tokens()["access_token"]
    assert good(driver, token, division).status_code == 200
    driver.close()


def test_a_repeated_block_lasts_longer(sandbox_factory: SandboxFactory) -> None:
    """Row "errors": "for an hour (longer on repeat)"."""
    driver, token, division = session(sandbox_factory, at="2025-01-15T10:00:02")
    for _ in range(10):
        bad(driver, token, division)
    driver.advance(3601)
    token = driver.tokens()["access_token"]
    assert good(driver, token, division).status_code == 200
    for _ in range(10):
        bad(driver, token, division)
    driver.advance(3601)
    token = driver.tokens()["access_token"]
    assert good(driver, token, division).status_code != 200
    driver.close()


@pytest.mark.parametrize("status", [401, 403, 404])
def test_every_error_status_counts_toward_the_block(sandbox_factory: SandboxFactory, status: int) -> None:
    """Row "errors": 400, 401, 403 and 404 all count."""
    driver, token, division = session(sandbox_factory, at="2025-01-15T10:00:02")
    if status == 403:
        driver.admin("config", {"scope_violation_endpoints": ["crm/"]})
        endpoint = "crm/Accounts"
        params = {"$select": "ID", "$filter": "Blocked eq false"}
        valid_config: dict[str, Any] = {"scope_violation_endpoints": []}
    elif status == 404:
        endpoint = "crm/Accounts(guid'00000000-0000-0000-0000-000000000001')"
        params = {"$select": "ID"}
        valid_config = {}
    else:
        endpoint = "crm/Accounts"
        params = {"$select": "ID", "$filter": "Blocked eq false"}
        valid_config = {}
    caller = token
    if status == 401:  # an expired token of the same user: the sandbox knows whose it is
        driver.advance(601)
        token = driver.tokens()["access_token"]
    for n in range(10):
        answer = driver.api(f"{division}/{endpoint}", caller, params)
        assert answer.status_code == status, (n, answer.status_code, answer.text)
    if valid_config:
        driver.admin("config", valid_config)
    valid = driver.api(f"{division}/crm/Accounts", token, {"$select": "ID", "$filter": "Blocked eq false"})
    assert valid.status_code != 200, f"ten {status}s did not block the endpoint"
    driver.close()


# -- errors ---------------------------------------------------------------------------------------


def test_odata_error_body_shape(sandbox_factory: SandboxFactory) -> None:
    """Errors: ``{"error":{"code":"","message":{"lang":"","value":"<text>"}}}``."""
    driver, token, division = session(sandbox_factory)
    answer = bad(driver, token, division)
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("application/json")
    assert odata_error_text(answer)
    driver.close()


def test_scope_violation_is_403_application_scope_violated(sandbox_factory: SandboxFactory) -> None:
    """Row "scopes / divisions": a scope violation is 403 "Forbidden - Application Scope Violated"."""
    driver, token, division = session(sandbox_factory)
    driver.admin("config", {"scope_violation_endpoints": ["crm/"]})
    answer = driver.api(f"{division}/crm/Accounts", token, {"$select": "ID", "$filter": "Blocked eq false"})
    assert answer.status_code == 403
    assert "Forbidden - Application Scope Violated" in odata_error_text(answer)
    driver.close()


def test_a_division_outside_the_consent_is_403(sandbox_factory: SandboxFactory) -> None:
    """Row "scopes / divisions": the consenting user picks the divisions the app may read (403 reason
    ``NoDivisionAccess`` for the others)."""
    driver = Exact(start(sandbox_factory))
    first, second = driver.handle.divisions[:2]
    driver.admin("config", {"consent_divisions": [first]})
    token = driver.tokens()["access_token"]
    assert good(driver, token, first).status_code == 200
    refused = good(driver, token, second)
    assert refused.status_code == 403
    assert refused.headers.get("reason") in {
        "BlockedUser",
        "InactiveUser",
        "BlockedCustomer",
        "LicenseExpired",
        "DivisionBlocked",
        "NoDivisionAccess",
    }
    odata_error_text(refused)
    driver.close()


@pytest.mark.parametrize("reason", ["DivisionBlocked", "LicenseExpired"])
def test_blocked_division_is_403_with_its_reason(sandbox_factory: SandboxFactory, reason: str) -> None:
    """Errors: 403 reasons (``Reason`` header) include DivisionBlocked and LicenseExpired."""
    driver, token, division = session(sandbox_factory)
    driver.admin("config", {"division_blocks": {str(division): reason}})
    answer = good(driver, token, division)
    assert answer.status_code == 403
    assert answer.headers.get("reason") == reason
    odata_error_text(answer)
    driver.close()


def test_daily_429_has_an_empty_body(sandbox_factory: SandboxFactory) -> None:
    """Row "429": empty body (also on a daily 429)."""
    driver, token, division = session(sandbox_factory)
    driver.admin("limits", {"daily": 1})
    good(driver, token, division)
    limited = good(driver, token, division)
    assert limited.status_code == 429
    assert limited.content == b""
    assert rate_headers(limited) >= set(DAILY_HEADERS) or rate_headers(limited) == set()
    driver.close()
