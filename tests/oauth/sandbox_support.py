"""Driving the sandbox for keeper tests: a client clock that shares the sandbox's time, consent by
following the sandbox's ``/api/oauth2/auth`` redirect and exchanging the code with our own
``TokenEndpoint`` (the HTTP consent flow of function_app.py is tested separately), counters, faults."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from shared.clock import Clock, ScaledClock
from shared.locks.file_lock import FileLock
from shared.oauth.alerts import Alerts
from shared.oauth.keeper import TokenKeeper
from shared.oauth.providers import Provider, Providers, exact_provider
from shared.oauth.token_endpoint import TokenEndpoint, TokenGrant
from shared.sandbox.server import SandboxHandle
from shared.stores.base import TokenStore
from shared.stores.local_file import LocalFileTokenStore

EXACT_LIFETIME = 600.0
EARLIEST = 570.0


def sandbox_clock(handle: SandboxHandle) -> ScaledClock:
    """The sandbox's clock, rebuilt from its admin API as another process would."""
    spec = httpx.get(f"{handle.admin_url}/clock", timeout=10).json()
    return ScaledClock.from_spec(spec)


def advance(handle: SandboxHandle, clock: ScaledClock, seconds: float) -> None:
    """Move the sandbox's time and our copy of it together."""
    answer = httpx.post(f"{handle.admin_url}/clock", json={"advance": seconds}, timeout=10)
    answer.raise_for_status()
    clock.advance(seconds)


def counters(handle: SandboxHandle) -> dict[str, Any]:
    answer = httpx.get(f"{handle.admin_url}/counters", timeout=10)
    answer.raise_for_status()
    data: dict[str, Any] = answer.json()
    return data


def faults(handle: SandboxHandle, **changes: Any) -> None:
    httpx.post(f"{handle.admin_url}/faults", json=changes, timeout=10).raise_for_status()


def provider_for(handle: SandboxHandle) -> Provider:
    return exact_provider(
        handle.base_url,
        client_id=handle.client_id,
        client_secret=handle.app.client_secret,
        redirect_uri=handle.redirect_uri,
    )


def authorize(handle: SandboxHandle, http: httpx.Client, state: str = "keeper-test-state") -> str:
    """Open our own authorization URL; the sandbox consents at once and redirects with a code.
    The code is URL-decoded exactly once (by parse_qs), as the callback does."""
    answer = http.get(provider_for(handle).authorization_url(state), follow_redirects=False)
    assert answer.status_code == 302, answer.text
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["state"] == [state]
    return query["code"][0]


def consent(handle: SandboxHandle, keeper: TokenKeeper, clock: Clock, connection: str = "acme") -> TokenGrant:
    with httpx.Client(timeout=30) as http:
        code = authorize(handle, http)
        grant = TokenEndpoint(provider_for(handle), http=http, clock=clock).exchange_code(
            code, redirect_uri=handle.redirect_uri
        )
    keeper.adopt_consent(connection, "exact", grant)
    return grant


def keeper_for(
    handle: SandboxHandle,
    clock: ScaledClock,
    home: Path,
    *,
    http: httpx.Client | None = None,
    store: TokenStore | None = None,
    alerts: Alerts | None = None,
    **options: Any,
) -> TokenKeeper:
    client = http or httpx.Client()
    return TokenKeeper(
        providers=Providers([provider_for(handle)]),
        store=store if store is not None else LocalFileTokenStore(home / "tokens"),
        lock=FileLock(home / "locks"),
        endpoint_factory=lambda p: TokenEndpoint(p, http=client, clock=clock),
        clock=clock,
        alerts=alerts or Alerts(),
        **options,
    )


def api_me(handle: SandboxHandle, http: httpx.Client, token: str) -> int:
    answer = http.get(
        f"{handle.base_url}/api/v1/current/Me",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    return answer.status_code


def rotation_gaps(data: dict[str, Any]) -> list[float]:
    """Seconds between consecutive successful token issues (exchange, then rotations)."""
    issued = sorted(
        [e["at"] for e in data.get("exchange_log", []) if e.get("outcome") == "exchanged"]
        + [e["at"] for e in data.get("refresh_log", []) if e.get("outcome") == "rotated"]
    )
    return [b - a for a, b in itertools.pairwise(issued)]
