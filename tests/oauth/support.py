"""Test helpers for the OAuth core: an Exact-like token server behind
``httpx.MockTransport`` (the provider is the one thing we cannot run for real in unit tests; the
sandbox covers it over real HTTP in the integration tests), and a store wrapper that injects
failures into the REAL file store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

from shared.locks.file_lock import FileLock
from shared.oauth.alerts import Alerts
from shared.oauth.keeper import TokenKeeper
from shared.oauth.providers import Provider, Providers, exact_provider
from shared.oauth.token_endpoint import TokenEndpoint, TokenGrant
from shared.stores.base import TokenStoreError
from shared.stores.local_file import LocalFileTokenStore
from shared.tokens import TokenRecord
from tests.doubles.clock import ManualClock

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "planted-client-secret-7f3a9c"
REDIRECT_URI = "https://app.example.com/api/oauth/callback"
BASE_URL = "https://start.exactonline.nl"
START = 1_750_000_000.0  # a Sunday afternoon, far from 01:00 Amsterdam


def provider() -> Provider:
    return exact_provider(
        BASE_URL, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=REDIRECT_URI
    )


@dataclass
class FakeExactTokenServer:
    """Exact's token endpoint rules, per chain: 600 s access tokens, rotation on every refresh,
    the old refresh token dead at once ("Old refresh token used."), 400 + ``Reason:
    TooEarlyToRefreshTokens`` before 570 s. Faults for the next refreshes: ``lose_after_rotate``
    (rotates, then 500), ``fail_5xx`` (500 without rotating), ``answers`` (canned responses).
    Setting ``current_refresh`` rotates the latest chain behind our back."""

    clock: ManualClock
    issued_at: float = 0.0
    serial: int = 0
    calls: list[dict[str, str]] = field(default_factory=list)
    refreshes: int = 0
    reuse: int = 0
    too_early: int = 0
    lose_after_rotate: int = 0
    fail_5xx: int = 0
    answers: list[httpx.Response] = field(default_factory=list)
    on_request: Callable[[], None] | None = None
    codes: dict[str, bool] = field(default_factory=dict)
    #: live refresh token -> its issue time; used ones go to ``used``
    live: dict[str, float] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    latest: str | None = None

    @property
    def current_refresh(self) -> str | None:
        return self.latest

    @current_refresh.setter
    def current_refresh(self, token: str | None) -> None:
        if self.latest is not None:
            self.live.pop(self.latest, None)
            self.used.add(self.latest)
        self.latest = token
        if token is not None:
            self.live[token] = self.clock.now()

    def new_code(self) -> str:
        self.serial += 1
        code = f"code!{self.serial:04d}-abcdef"
        self.codes[code] = False
        return code

    def _issue(self, previous: str | None = None) -> dict[str, Any]:
        self.serial += 1
        token = f"refresh!{self.serial:06d}-" + "r" * 40
        if previous is not None:
            self.live.pop(previous, None)
            self.used.add(previous)
        self.live[token] = self.issued_at = self.clock.now()
        self.latest = token
        return {
            "access_token": f"access-{self.serial:06d}-" + "a" * 40,
            "token_type": "bearer",
            "expires_in": "600",
            "refresh_token": token,
        }

    def handler(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.calls.append(form)
        if self.on_request is not None:
            self.on_request()
        if self.answers:
            return self.answers.pop(0)
        if form.get("client_secret") != CLIENT_SECRET:
            return httpx.Response(401, json={"error": "invalid_client", "error_description": "bad client"})
        if form.get("grant_type") == "authorization_code":
            return self._exchange(form)
        return self._refresh(form)

    def _exchange(self, form: dict[str, str]) -> httpx.Response:
        code = form.get("code", "")
        if code not in self.codes or self.codes[code]:
            return httpx.Response(400, json={"error": "invalid_grant", "error_description": "code used"})
        self.codes[code] = True
        return httpx.Response(200, json=self._issue())

    def _refresh(self, form: dict[str, str]) -> httpx.Response:
        presented = form.get("refresh_token", "")
        if presented not in self.live:
            self.reuse += presented in self.used
            return httpx.Response(
                401, json={"error": "unauthorized_client", "error_description": "Old refresh token used."}
            )
        if self.fail_5xx:
            self.fail_5xx -= 1
            return httpx.Response(
                500, text="<html>Internal error</html>", headers={"content-type": "text/html"}
            )
        if self.clock.now() - self.live[presented] < 570:
            self.too_early += 1
            return httpx.Response(
                400,
                json={
                    "error": "access_denied",
                    "error_description": "Rate limit exceeded: access_token not expired",
                },
                headers={"Reason": "TooEarlyToRefreshTokens"},
            )
        body = self._issue(previous=presented)
        self.refreshes += 1
        if self.lose_after_rotate:
            self.lose_after_rotate -= 1
            return httpx.Response(500, text="Internal error")
        return httpx.Response(200, json=body)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))


class FlakyStore:
    """The real file store with injected failures: ``fail_saves`` transient errors (optionally
    with ``retry_after``), or ``fail_when(record)`` deciding per save."""

    def __init__(self, inner: LocalFileTokenStore) -> None:
        self.inner = inner
        self.fail_saves = 0
        self.retry_after: float | None = None
        self.fail_when: Callable[[TokenRecord], bool] | None = None
        self.saves: list[TokenRecord] = []
        self.loads = 0

    def load(self, connection: str) -> TokenRecord | None:
        self.loads += 1
        return self.inner.load(connection)

    def save(self, record: TokenRecord) -> None:
        if self.fail_saves > 0 or (self.fail_when is not None and self.fail_when(record)):
            if self.fail_saves > 0:
                self.fail_saves -= 1
            raise TokenStoreError(
                record.connection, "injected: store unavailable", transient=True, retry_after=self.retry_after
            )
        self.saves.append(record)
        self.inner.save(record)

    def list_connections(self) -> list[str]:
        return self.inner.list_connections()

    def delete(self, connection: str) -> None:
        self.inner.delete(connection)


def make_keeper(
    tmp_path: Path,
    clock: Any,
    http: httpx.Client,
    *,
    store: Any = None,
    alerts: Alerts | None = None,
    providers: Providers | None = None,
    **options: Any,
) -> TokenKeeper:
    store = store if store is not None else FlakyStore(LocalFileTokenStore(tmp_path / "tokens"))
    return TokenKeeper(
        providers=providers or Providers([provider()]),
        store=store,
        lock=FileLock(tmp_path / "locks"),
        endpoint_factory=lambda p: TokenEndpoint(p, http=http, clock=clock),
        clock=clock,
        alerts=alerts or Alerts(),
        store_retry_delays=options.pop("store_retry_delays", (0.1, 0.2, 0.4)),
        **options,
    )


def consent(
    keeper: TokenKeeper, server: FakeExactTokenServer, http: httpx.Client, connection: str = "acme"
) -> TokenGrant:
    endpoint = TokenEndpoint(provider(), http=http, clock=server.clock)
    grant = endpoint.exchange_code(server.new_code(), redirect_uri=REDIRECT_URI)
    keeper.adopt_consent(connection, "exact", grant)
    return grant


def recorder(posted: list[httpx.Request]) -> httpx.Client:
    """An HTTP client whose every request is kept in ``posted`` and answered 200 (a webhook)."""

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(200)

    return httpx.Client(transport=httpx.MockTransport(answer))
