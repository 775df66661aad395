"""The token endpoint client: one request, long timeout, every answer mapped to what it means for
the chain, and no secret in any message. The provider is an ``httpx.MockTransport``."""

from __future__ import annotations

import base64
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import pytest

from shared.oauth.errors import (
    AuthorizationCodeRejected,
    RefreshTokenDead,
    TokenEndpointError,
    TokenEndpointUnavailable,
    TokenInDoubt,
    TooEarlyToRefresh,
)
from shared.oauth.providers import Provider
from shared.oauth.token_endpoint import READ_TIMEOUT, TokenEndpoint, parse_expires_in
from tests.doubles.clock import ManualClock
from tests.oauth.support import CLIENT_SECRET, REDIRECT_URI, START, provider

REFRESH = "planted-refresh!token-" + "x" * 30
CODE = "stampNL001.planted!code-" + "c" * 30


class Recorder:
    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    def form(self, index: int = -1) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.requests[index].content.decode()).items()}


def endpoint(
    answer: Callable[[httpx.Request], httpx.Response], p: Provider | None = None
) -> tuple[TokenEndpoint, Recorder]:
    recorder = Recorder(answer)
    client = httpx.Client(transport=httpx.MockTransport(recorder))
    return TokenEndpoint(p or provider(), http=client, clock=ManualClock(START)), recorder


def ok(**extra: object) -> Callable[[httpx.Request], httpx.Response]:
    body: dict[str, object] = {
        "access_token": "new-access",
        "token_type": "bearer",
        "expires_in": "600",
        "refresh_token": "new!refresh",
    }
    body.update(extra)
    return lambda request: httpx.Response(200, json=body)


def error(
    status: int, err: str, description: str, headers: dict[str, str] | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(
        status, json={"error": err, "error_description": description}, headers=headers
    )


def test_code_exchange_sends_the_form_exactly() -> None:
    ep, rec = endpoint(ok())
    grant = ep.exchange_code(CODE, redirect_uri=REDIRECT_URI)
    form = rec.form()
    assert form == {
        "grant_type": "authorization_code",
        "code": CODE,  # the "!" survives: encoded once by the form, decoded once by the server
        "redirect_uri": REDIRECT_URI,
        "client_id": "test-client-id",
        "client_secret": CLIENT_SECRET,
    }
    assert b"%21" in rec.requests[0].content
    assert rec.requests[0].headers["content-type"] == "application/x-www-form-urlencoded"
    assert grant.access_token == "new-access" and grant.refresh_token == "new!refresh"
    assert grant.expires_in == 600.0 and grant.access_expires_at == grant.sent_at + 600


def test_refresh_is_one_request_with_a_long_read_timeout() -> None:
    ep, rec = endpoint(ok())
    ep.refresh(REFRESH)
    assert len(rec.requests) == 1
    assert rec.form() == {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH,
        "client_id": "test-client-id",
        "client_secret": CLIENT_SECRET,
    }
    timeout = rec.requests[0].extensions["timeout"]
    assert timeout["read"] == READ_TIMEOUT >= 120


def test_basic_client_auth_keeps_the_secret_out_of_the_body() -> None:
    p = Provider(
        name="ms",
        authorize_url="https://login.example.com/authorize",
        token_url="https://login.example.com/token",
        client_id="id:with/odd chars",
        client_secret="s3cret&value",
        redirect_uri=REDIRECT_URI,
        scopes=("offline_access", "Files.Read"),
        client_auth="basic",
    )
    ep, rec = endpoint(ok(), p)
    ep.refresh(REFRESH)
    form = rec.form()
    assert "client_secret" not in form and "client_id" not in form
    assert form["scope"] == "offline_access Files.Read"
    scheme, _, value = rec.requests[0].headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(value).decode() == "id%3Awith%2Fodd+chars:s3cret%26value"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("600", 600.0),
        (600, 600.0),
        (3599.5, 3599.5),
        (" 600 ", 600.0),
        (None, 600.0),
        ("soon", 600.0),
        (0, 600.0),
        (True, 600.0),
    ],
)
def test_expires_in_string_or_number(value: object, expected: float) -> None:
    assert parse_expires_in(value, 600.0) == expected


@pytest.mark.parametrize("token_type", ["bearer", "Bearer", "BEARER", None])
def test_token_type_is_bearer_case_insensitively(token_type: str | None) -> None:
    ep, _ = endpoint(ok(token_type=token_type))
    assert ep.refresh(REFRESH).access_token == "new-access"


def test_a_non_bearer_token_is_refused_as_in_doubt() -> None:
    ep, _ = endpoint(ok(token_type="mac"))
    with pytest.raises(TokenInDoubt, match="not a bearer"):
        ep.refresh(REFRESH)


def test_long_refresh_tokens_round_trip() -> None:
    long_token = "0.A" + "Zx9-_" * 300  # Microsoft's are well over 1,000 characters
    ep, rec = endpoint(ok(refresh_token=long_token))
    grant = ep.refresh(long_token)
    assert grant.refresh_token == long_token and rec.form()["refresh_token"] == long_token


def test_too_early_by_reason_header() -> None:
    ep, _ = endpoint(
        error(
            400,
            "access_denied",
            "Rate limit exceeded: access_token not expired",
            {"Reason": "TooEarlyToRefreshTokens"},
        )
    )
    with pytest.raises(TooEarlyToRefresh) as err:
        ep.refresh(REFRESH)
    assert err.value.status == 400 and err.value.error == "access_denied"


def test_too_early_by_description_alone() -> None:
    ep, _ = endpoint(error(400, "access_denied", "Rate limit exceeded: access_token not expired"))
    with pytest.raises(TooEarlyToRefresh):
        ep.refresh(REFRESH)


@pytest.mark.parametrize(
    ("status", "err", "description"),
    [
        (401, "unauthorized_client", "Old refresh token used."),
        (400, "invalid_grant", "The refresh token has been revoked."),
        (400, "invalid_request", "The refresh token expired at 05/31/2024 10:00:00 (UTC)."),
    ],
)
def test_dead_chain(status: int, err: str, description: str) -> None:
    ep, _ = endpoint(error(status, err, description))
    with pytest.raises(RefreshTokenDead) as raised:
        ep.refresh(REFRESH)
    assert str(status) in str(raised.value) and description.split(maxsplit=1)[0] in str(raised.value)


@pytest.mark.parametrize(
    ("status", "err", "description", "hint"),
    [
        (401, "invalid_client", "The client credentials are invalid.", "client id"),
        (400, "invalid_request", "The redirect_uri does not match.", "redirect URI"),
    ],
)
def test_client_errors(status: int, err: str, description: str, hint: str) -> None:
    ep, _ = endpoint(error(status, err, description))
    with pytest.raises(TokenEndpointError) as raised:
        ep.refresh(REFRESH)
    assert not isinstance(raised.value, RefreshTokenDead | TokenInDoubt)
    assert hint in str(raised.value)


@pytest.mark.parametrize(
    "description", ["Signed data extraction has failed", "The authorization code has already been used."]
)
def test_code_rejected(description: str) -> None:
    ep, _ = endpoint(
        error(400, "invalid_request" if "Signed" in description else "invalid_grant", description)
    )
    with pytest.raises(AuthorizationCodeRejected):
        ep.exchange_code(CODE)


def test_rate_limited_is_unavailable_not_dead() -> None:
    ep, _ = endpoint(error(429, "access_denied", "Rate limit exceeded: too many token requests today."))
    with pytest.raises(TokenEndpointUnavailable, match="rate limited"):
        ep.refresh(REFRESH)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_in_doubt(status: int) -> None:
    ep, rec = endpoint(lambda request: httpx.Response(status, text="<html>Runtime Error</html>"))
    with pytest.raises(TokenInDoubt, match="may have been processed") as raised:
        ep.refresh(REFRESH)
    assert raised.value.status == status and len(rec.requests) == 1


def test_html_200_is_in_doubt_and_names_the_endpoint() -> None:
    ep, _ = endpoint(
        lambda request: httpx.Response(200, text="<html>login</html>", headers={"content-type": "text/html"})
    )
    with pytest.raises(TokenInDoubt) as raised:
        ep.refresh(REFRESH)
    assert "https://start.exactonline.nl/api/oauth2/token" in str(raised.value)
    assert "text/html" in str(raised.value)


def test_html_404_is_a_clear_endpoint_error() -> None:
    ep, _ = endpoint(
        lambda request: httpx.Response(404, text="<html>nope</html>", headers={"content-type": "text/html"})
    )
    with pytest.raises(TokenEndpointError, match=r"answered 404 with text/html instead of JSON") as raised:
        ep.refresh(REFRESH)
    assert "start.exactonline.nl/api/oauth2/token" in str(raised.value)


def test_redirect_is_not_followed() -> None:
    ep, rec = endpoint(lambda request: httpx.Response(302, headers={"location": "https://elsewhere/login"}))
    with pytest.raises(TokenEndpointError, match="redirect"):
        ep.refresh(REFRESH)
    assert len(rec.requests) == 1


def test_read_timeout_is_in_doubt_and_never_retried() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    ep, rec = endpoint(slow)
    with pytest.raises(TokenInDoubt, match="ReadTimeout"):
        ep.refresh(REFRESH)
    assert len(rec.requests) == 1


def test_dropped_connection_is_in_doubt() -> None:
    def dropped(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    ep, _ = endpoint(dropped)
    with pytest.raises(TokenInDoubt):
        ep.refresh(REFRESH)


def test_connect_failure_is_unavailable_nothing_sent() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    ep, _ = endpoint(refused)
    with pytest.raises(TokenEndpointUnavailable, match="nothing was sent"):
        ep.refresh(REFRESH)


def test_no_secret_in_any_error_message() -> None:
    """A provider that echoes the request back (ossobv's lesson) cannot leak it through us."""

    def echo(request: httpx.Request) -> httpx.Response:
        text = request.content.decode()
        return httpx.Response(
            400, json={"error": "invalid_request", "error_description": f"bad request: {text}"}
        )

    calls: list[Callable[[TokenEndpoint], object]] = [
        lambda ep: ep.refresh(REFRESH),
        lambda ep: ep.exchange_code(CODE, code_verifier="v" * 50),
    ]
    for call in calls:
        ep, _ = endpoint(echo)
        with pytest.raises(TokenEndpointError) as raised:
            call(ep)
        text = f"{raised.value} {raised.value.description} {raised.value!r}"
        for secret in (REFRESH, CODE, CLIENT_SECRET, "v" * 50):
            assert secret not in text
            assert secret.replace("!", "%21") not in text


def test_error_description_is_capped_and_printable() -> None:
    ep, _ = endpoint(error(400, "invalid_request", "line1\nline2\x00" + "word " * 200))
    with pytest.raises(TokenEndpointError) as raised:
        ep.refresh(REFRESH)
    description = raised.value.description or ""
    assert len(description) <= 300 and "\n" not in description and "\x00" not in description
