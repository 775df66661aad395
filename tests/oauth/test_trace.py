"""``--trace``: what was sent and answered, secrets masked. Real exchanges with the sandbox."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import pytest

from shared.clock import SystemClock
from shared.oauth.errors import AuthorizationCodeRejected
from shared.oauth.providers import exact_provider
from shared.oauth.redact import MASK
from shared.oauth.token_endpoint import TokenEndpoint
from shared.oauth.trace import TracePrinter, attach
from shared.sandbox.server import SandboxHandle
from tests.fixtures.sandbox import authorize_code
from tests.oauth.consent_flow import CLIENT_ID, PLANTED_CLIENT_SECRET

REDIRECT = "https://app.example.test/api/oauth/callback"


@pytest.fixture
def sandbox(sandbox_factory: Callable[..., SandboxHandle]) -> SandboxHandle:
    return sandbox_factory(client_id=CLIENT_ID, client_secret=PLANTED_CLIENT_SECRET, redirect_uri=REDIRECT)


def _traced() -> tuple[httpx.Client, io.StringIO]:
    stream = io.StringIO()
    client = httpx.Client(timeout=30)
    attach(client, stream)
    return client, stream


def _endpoint(sandbox: SandboxHandle, client: httpx.Client) -> TokenEndpoint:
    provider = exact_provider(
        sandbox.base_url, client_id=CLIENT_ID, client_secret=PLANTED_CLIENT_SECRET, redirect_uri=REDIRECT
    )
    return TokenEndpoint(provider, http=client, clock=SystemClock())


def test_code_exchange_and_refresh_are_printed_with_secrets_masked(sandbox: SandboxHandle) -> None:
    client, stream = _traced()
    with client, httpx.Client() as plain:
        code = authorize_code(sandbox, plain)
        endpoint = _endpoint(sandbox, client)
        grant = endpoint.exchange_code(code, redirect_uri=REDIRECT)
        assert grant.refresh_token
        sandbox.sandbox.clock.advance(580)
        refreshed = endpoint.refresh(grant.refresh_token)
    out = stream.getvalue()

    assert f"--> POST {sandbox.base_url}/api/oauth2/token" in out
    assert f"<-- 200 OK POST {sandbox.base_url}/api/oauth2/token" in out
    assert "content-type: application/x-www-form-urlencoded" in out.lower()
    for line in (
        "form grant_type=authorization_code",
        f"form code={MASK}",
        f"form redirect_uri={REDIRECT}",
        f"form client_id={CLIENT_ID}",
        f"form client_secret={MASK}",
        "form grant_type=refresh_token",
        f"form refresh_token={MASK}",
    ):
        assert line in out, line
    assert f'"access_token": "{MASK}"' in out and f'"refresh_token": "{MASK}"' in out
    assert '"expires_in": "600"' in out and '"token_type": "bearer"' in out
    for secret in (
        code,
        PLANTED_CLIENT_SECRET,
        grant.access_token,
        grant.refresh_token,
        refreshed.access_token,
        refreshed.refresh_token,
    ):
        assert secret is not None and secret not in out
        # and not in a URL-encoded spelling either
        assert httpx.QueryParams({"x": secret}).get("x") == secret
        assert str(httpx.QueryParams({"x": secret}))[2:] not in out


def test_refused_exchange_shows_what_the_provider_said(sandbox: SandboxHandle) -> None:
    client, stream = _traced()
    with client, httpx.Client() as plain:
        code = authorize_code(sandbox, plain)
        endpoint = _endpoint(sandbox, client)
        endpoint.exchange_code(code, redirect_uri=REDIRECT)
        with pytest.raises(AuthorizationCodeRejected):
            endpoint.exchange_code(code, redirect_uri=REDIRECT)
    out = stream.getvalue()
    assert "<-- 400 Bad Request POST" in out
    assert '"error": "invalid_grant"' in out and "already been used" in out
    assert code not in out and PLANTED_CLIENT_SECRET not in out


def test_query_parameters_and_authorization_headers_are_masked(sandbox: SandboxHandle) -> None:
    client, stream = _traced()
    with client, httpx.Client() as plain:
        code = authorize_code(sandbox, plain)
        token = _endpoint(sandbox, plain).exchange_code(code, redirect_uri=REDIRECT).access_token
        client.get(
            f"{sandbox.base_url}/api/oauth2/auth",
            params={"client_id": CLIENT_ID, "state": "visible-state", "code": "a-secret-code-value!x"},
        )
        client.get(
            f"{sandbox.base_url}/api/v1/current/Me",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )
    out = stream.getvalue()
    assert "state=visible-state" in out and f"client_id={CLIENT_ID}" in out
    assert "a-secret-code-value" not in out and f"&code={MASK}" in out
    assert f"authorization: Bearer {MASK}" in out
    assert token not in out
    assert '"CurrentDivision"' in out  # a non-secret JSON answer is shown


def test_attach_is_idempotent_and_keeps_other_hooks() -> None:
    seen: list[str] = []
    client = httpx.Client(event_hooks={"request": [lambda r: seen.append(r.method)]})
    first = attach(client, io.StringIO())
    assert attach(client, io.StringIO()) is first
    assert len(client.event_hooks["request"]) == 2 and len(client.event_hooks["response"]) == 1
    assert isinstance(first, TracePrinter)
    client.close()
