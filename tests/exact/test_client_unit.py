"""ExactClient rules at the transport boundary (httpx.MockTransport): what each answer leads to.

The sandbox tests (test_client_sandbox.py) prove the same rules over real HTTP; these pin down
the cases the sandbox cannot produce on demand (a 401 without ``invalid_token``, a 429 without
headers, a daily 429, redirects, foreign ``__next`` links, dropped connections).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import unquote

import httpx
import pytest

from shared.exact.client import ExactClient, TraceEvent
from shared.exact.errors import (
    DailyBudgetExhausted,
    ExactApiError,
    ExactForbidden,
    ExactNotFound,
    ExactRateLimited,
    ExactResponseError,
    ExactServerError,
    ExactTransportError,
    ExactUnauthorized,
)
from tests.doubles.clock import ManualClock
from tests.exact.doubles import CountingTokens

BASE = "https://start.exactonline.nl"
DIV = 4242

Answer = httpx.Response | Exception


class Scripted:
    """Answers requests from a queue of responses (or exceptions) and records every request."""

    def __init__(self, *answers: Answer | Callable[[httpx.Request], Answer]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            raise AssertionError(f"unexpected request {request.url}")
        answer = self.answers.pop(0)
        if callable(answer) and not isinstance(answer, httpx.Response | Exception):
            answer = answer(request)
        if isinstance(answer, Exception):
            raise answer
        return answer


def ok(rows: list[dict[str, object]], next_url: str | None = None, **headers: str) -> httpx.Response:
    d: dict[str, object] = {"results": [{"__metadata": {"type": "x"}, **row} for row in rows]}
    if next_url:
        d["__next"] = next_url
    return httpx.Response(200, json={"d": d}, headers=headers)


def odata_error(status: int, text: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": "", "message": {"lang": "", "value": text}}}, headers=headers
    )


def make(
    script: Scripted,
    *,
    tokens: CountingTokens | None = None,
    clock: ManualClock | None = None,
    **options: object,
) -> tuple[ExactClient, CountingTokens, ManualClock, list[TraceEvent]]:
    tokens = tokens or CountingTokens()
    clock = clock or ManualClock()
    traces: list[TraceEvent] = []
    client = ExactClient(
        BASE,
        tokens,
        connection="acme",
        clock=clock,
        transport=httpx.MockTransport(script),
        on_trace=traces.append,
        **options,  # type: ignore[arg-type]
    )
    return client, tokens, clock, traces


def test_sync_read_builds_the_query_follows_next_and_sends_accept_json() -> None:
    next_url = f"{BASE}/api/v1/{DIV}/sync/CRM/Accounts?$select=ID,Timestamp&$filter=Timestamp%20gt%201L&$skiptoken=5L"
    script = Scripted(
        ok([{"ID": "a", "Timestamp": 3}, {"ID": "b", "Timestamp": "5"}], next_url),
        ok([{"ID": "c", "Timestamp": 9}]),
    )
    client, tokens, _clock, _ = make(script)
    pages = list(client.read_since(DIV, "Accounts", None))
    assert [row["ID"] for page in pages for row in page.rows] == ["a", "b", "c"]
    assert all("__metadata" not in row for page in pages for row in page.rows)
    assert pages[0].max_timestamp() == 5
    assert pages[0].calls == 1
    first, second = script.requests
    assert first.url.path == f"/api/v1/{DIV}/sync/CRM/Accounts"
    query = unquote(first.url.query.decode())
    assert "$filter=Timestamp gt 1L" in query
    assert "$select=ID,Timestamp,Code,Name," in query
    assert str(second.url) == next_url
    for request in script.requests:
        assert request.headers["Accept"] == "application/json"
        assert request.headers["Authorization"] == f"Bearer {tokens.current}"


def test_read_since_uses_the_given_timestamp_and_refuses_non_sync_entities() -> None:
    script = Scripted(ok([]))
    client, *_ = make(script)
    assert list(client.read_since(DIV, "Items", 123456789)) != []
    assert "Timestamp gt 123456789L" in unquote(script.requests[0].url.query.decode())
    with pytest.raises(ValueError, match="no sync endpoint"):
        client.read_since(DIV, "Divisions", 5)


def test_me_is_not_governed_and_returns_the_one_object() -> None:
    script = Scripted(httpx.Response(200, json={"d": {"results": [{"CurrentDivision": DIV, "UserID": "u"}]}}))
    client, *_ = make(script)
    assert client.me()["CurrentDivision"] == DIV
    assert script.requests[0].url.path == "/api/v1/current/Me"
    assert client.governor.stats().calls == 0


def test_401_invalid_token_refreshes_once_and_retries_once() -> None:
    challenge = 'Bearer error="invalid_token",error_description="access%20token%20expired"'
    script = Scripted(httpx.Response(401, headers={"WWW-Authenticate": challenge}), ok([{"ID": "a"}]))
    client, tokens, _, traces = make(script)
    page = client.get_page(DIV, "crm/Accounts", select="ID")
    assert page.calls == 2
    assert tokens.rejections == ["token-1-abcdefghijklmnop"]
    assert [r.headers["Authorization"] for r in script.requests] == [
        "Bearer token-1-abcdefghijklmnop",
        "Bearer token-2-abcdefghijklmnop",
    ]
    assert [t.status for t in traces] == [401, 200]


def test_second_401_is_raised_not_looped() -> None:
    challenge = 'Bearer error="invalid_token",error_description="Signed%20data%20extraction%20has%20failed"'
    script = Scripted(
        httpx.Response(401, headers={"WWW-Authenticate": challenge}),
        httpx.Response(401, headers={"WWW-Authenticate": challenge}),
    )
    client, tokens, *_ = make(script)
    with pytest.raises(ExactUnauthorized) as caught:
        client.get_page(DIV, "crm/Accounts", select="ID")
    assert len(script.requests) == 2
    assert len(tokens.rejections) == 1
    assert caught.value.status == 401
    assert "Signed data extraction has failed" in str(caught.value)
    assert "token-" not in str(caught.value)


def test_401_without_invalid_token_is_not_refreshed() -> None:
    script = Scripted(odata_error(401, "Unauthorized"))
    client, tokens, *_ = make(script)
    with pytest.raises(ExactUnauthorized):
        client.get_page(DIV, "crm/Accounts", select="ID")
    assert tokens.rejections == []
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    ("status", "reason", "error_type"),
    [
        (400, None, ExactApiError),
        (403, "NoDivisionAccess", ExactForbidden),
        (403, "BlockedUser", ExactForbidden),
        (404, None, ExactNotFound),
        (405, None, ExactApiError),
    ],
)
def test_4xx_is_raised_at_once_with_message_and_reason(
    status: int, reason: str | None, error_type: type[ExactApiError]
) -> None:
    headers = {"Reason": reason} if reason else {}
    script = Scripted(
        odata_error(status, "Please add a $select or a $top=1 statement to the query string.", **headers)
    )
    client, *_ = make(script)
    with pytest.raises(error_type) as caught:
        client.get_page(DIV, "crm/Accounts")
    assert len(script.requests) == 1
    error = caught.value
    assert type(error) is error_type
    assert (error.status, error.reason) == (status, reason)
    assert error.endpoint == f"GET /api/v1/{DIV}/crm/Accounts"
    assert "Please add a $select" in error.message
    if reason:
        assert f"Reason: {reason}" in str(error)


def test_5xx_is_retried_with_growing_jittered_backoff() -> None:
    script = Scripted(
        httpx.Response(503, text="busy"), httpx.Response(500, json={}), httpx.Response(502), ok([{"ID": "x"}])
    )
    client, _, clock, _ = make(script, backoff_base=1.0, backoff_max=30.0)
    page = client.get_page(DIV, "crm/Accounts", select="ID")
    assert page.rows == [{"ID": "x"}]
    assert page.calls == 4
    assert len(clock.slept) == 3
    for retry, delay in enumerate(clock.slept):
        assert 0.5 * 2**retry <= delay <= 2**retry


def test_5xx_gives_up_after_max_retries() -> None:
    script = Scripted(
        *[httpx.Response(503, text="<html><title>Down</title></html>", headers={"content-type": "text/html"})]
        * 3
    )
    client, _, _clock, _ = make(script, max_retries=2)
    with pytest.raises(ExactServerError) as caught:
        client.get_page(DIV, "crm/Accounts", select="ID")
    assert len(script.requests) == 3
    assert caught.value.status == 503
    assert "Down" in str(caught.value)
    assert caught.value.content_type == "text/html"


def test_transport_errors_are_retried_then_reported() -> None:
    request_error = httpx.ConnectError("connection refused")
    script = Scripted(request_error, httpx.ReadTimeout("slow"), ok([{"ID": 1}]))
    client, *_ = make(script)
    assert client.get_page(DIV, "crm/Accounts", select="ID").calls == 3
    script = Scripted(*[httpx.RemoteProtocolError("peer closed connection")] * 3)
    client, *_ = make(script, max_retries=2)
    with pytest.raises(ExactTransportError, match="after 3 attempt"):
        client.get_page(DIV, "crm/Accounts", select="ID")


def test_429_waits_for_its_reset_then_retries() -> None:
    clock = ManualClock(1_700_000_000.0)
    reset_ms = str(1_700_000_042_000)
    minutely = {
        "X-RateLimit-Minutely-Limit": "60",
        "X-RateLimit-Minutely-Remaining": "0",
        "X-RateLimit-Minutely-Reset": reset_ms,
    }
    sent_at: list[float] = []

    def answer_ok(request: httpx.Request) -> httpx.Response:
        sent_at.append(clock.now())
        return ok([{"ID": 1}])

    script = Scripted(httpx.Response(429, headers=minutely), answer_ok)
    client, *_ = make(script, clock=clock)
    page = client.get_page(DIV, "crm/Accounts", select="ID")
    assert page.calls == 2
    assert sent_at[0] >= 1_700_000_042.0
    assert client.governor.stats(DIV).throttled == 1


def test_429_without_reset_is_not_retried() -> None:
    script = Scripted(httpx.Response(429))
    client, *_ = make(script)
    with pytest.raises(ExactRateLimited, match="not retried") as caught:
        client.get_page(DIV, "crm/Accounts", select="ID")
    assert len(script.requests) == 1
    assert not caught.value.endpoint_blocked


def test_daily_429_is_reported_as_exhausted_budget() -> None:
    daily = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1700006400000"}
    script = Scripted(httpx.Response(429, headers=daily))
    client, *_ = make(script)
    with pytest.raises(DailyBudgetExhausted) as caught:
        client.get_page(DIV, "crm/Accounts", select="ID")
    assert caught.value.reset_at == 1_700_006_400.0
    assert len(script.requests) == 1


def test_redirect_is_not_followed() -> None:
    script = Scripted(httpx.Response(302, headers={"Location": "https://login.example.com/?return=x"}))
    client, *_ = make(script)
    with pytest.raises(ExactResponseError, match=r"redirect to login\.example\.com not followed"):
        client.get_page(DIV, "crm/Accounts", select="ID")
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example.com/api/v1/4242/crm/Accounts?$skiptoken=1",
        f"{BASE}/api/v1/9999/crm/Accounts?$skiptoken=1",
    ],
)
def test_next_link_elsewhere_is_refused_before_sending_the_token(next_url: str) -> None:
    script = Scripted(ok([{"ID": 1}], next_url))
    client, *_ = make(script)
    with pytest.raises(ExactResponseError, match="__next link points outside"):
        list(client.iter_pages(DIV, "crm/Accounts", select="ID"))
    assert len(script.requests) == 1


def test_token_source_failure_frees_the_governed_slot() -> None:
    from shared.errors import ExactSyncError

    tokens = CountingTokens(fail_with=ExactSyncError("connection acme needs consent"))
    script = Scripted()
    client, *_ = make(script, tokens=tokens)
    with pytest.raises(ExactSyncError, match="needs consent"):
        client.get_page(DIV, "crm/Accounts", select="ID")
    assert client.governor.stats(DIV).calls == 0
    assert client.governor.delay_before_call(DIV) == 0


def test_no_token_in_errors_traces_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    challenge = 'Bearer error="invalid_token"'
    script = Scripted(
        httpx.ConnectError("refused"),
        httpx.Response(500),
        httpx.Response(401, headers={"WWW-Authenticate": challenge}),
        httpx.Response(401, headers={"WWW-Authenticate": challenge}),
    )
    client, _tokens, _, traces = make(script)
    with pytest.raises(ExactUnauthorized) as caught:
        client.get_page(DIV, "crm/Accounts", select="ID")
    texts = [str(caught.value), caplog.text, *(str(t) for t in traces), *(repr(t) for t in traces)]
    for text in texts:
        assert "token-1" not in text
        assert "token-2" not in text
        assert "Bearer token" not in text
    assert len(traces) == 4


def test_options_and_urls_are_validated() -> None:
    client, *_ = make(Scripted())
    with pytest.raises(ValueError, match="__next URL already carries"):
        client.get_page(DIV, f"{BASE}/api/v1/{DIV}/crm/Accounts?$skiptoken=1", select="ID")
    with pytest.raises(ValueError, match="at most 6000"):
        client.get_page(DIV, "crm/Accounts", select=",".join(["Field"] * 1200))
    with pytest.raises(TypeError, match="division must be an int"):
        client.get_page("4242", "crm/Accounts")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="unknown entity"):
        client.entity_url(DIV, "Nope")
