"""Our real client parts (TokenEndpoint, TokenKeeper, ExactClient) wired to a sandbox, with every
HTTP exchange recorded at the transport boundary so tests can count and inspect what was sent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from shared.clock import ScaledClock
from shared.exact.client import ExactClient
from shared.locks.file_lock import FileLock
from shared.oauth.alerts import Alerts
from shared.oauth.keeper import TokenKeeper
from shared.oauth.providers import Provider, Providers, exact_provider
from shared.oauth.token_endpoint import TokenEndpoint
from shared.sandbox.server import SandboxHandle
from shared.stores.local_file import LocalFileTokenStore
from tests.conformance.support import Exact, RecordingTransport

CONNECTION = "conformance"


def provider_for(handle: SandboxHandle) -> Provider:
    return exact_provider(
        handle.base_url,
        client_id=handle.client_id,
        client_secret=str(handle.app.client_secret),
        redirect_uri=handle.redirect_uri,
    )


@dataclass
class Rig:
    handle: SandboxHandle
    driver: Exact
    clock: ScaledClock
    home: Path
    oauth: RecordingTransport
    api: RecordingTransport
    oauth_http: httpx.Client
    keeper: TokenKeeper
    client: ExactClient

    @property
    def division(self) -> int:
        return self.handle.divisions[0]

    def new_keeper(self) -> TokenKeeper:
        """Another keeper over the same store and lock: what another process would run."""
        return TokenKeeper(
            providers=Providers([provider_for(self.handle)]),
            store=LocalFileTokenStore(self.home / "tokens"),
            lock=FileLock(self.home / "locks"),
            endpoint_factory=lambda p: TokenEndpoint(p, http=self.oauth_http, clock=self.clock),
            clock=self.clock,
            alerts=Alerts(),
        )

    def endpoint(self) -> TokenEndpoint:
        return TokenEndpoint(provider_for(self.handle), http=self.oauth_http, clock=self.clock)

    def consent(self) -> None:
        grant = self.endpoint().exchange_code(self.driver.code(), redirect_uri=self.handle.redirect_uri)
        self.keeper.adopt_consent(CONNECTION, "exact", grant)

    def token_calls(self) -> int:
        return len(self.oauth.to("/api/oauth2/token"))

    def counters(self) -> dict[str, Any]:
        return self.driver.counters()


@contextmanager
def rig(handle: SandboxHandle, home: Path, *, consent: bool = True, **client_options: Any) -> Iterator[Rig]:
    clock = handle.clock  # the sandbox's own clock object: admin advances move both
    oauth = RecordingTransport(clock)
    api = RecordingTransport(clock)
    oauth_http = httpx.Client(transport=oauth, follow_redirects=False)
    driver = Exact(handle)
    keeper = TokenKeeper(
        providers=Providers([provider_for(handle)]),
        store=LocalFileTokenStore(home / "tokens"),
        lock=FileLock(home / "locks"),
        endpoint_factory=lambda p: TokenEndpoint(p, http=oauth_http, clock=clock),
        clock=clock,
        alerts=Alerts(),
    )
    client_options.setdefault("backoff_base", 0.05)
    client_options.setdefault("backoff_max", 0.2)
    client = ExactClient(
        handle.base_url, keeper, connection=CONNECTION, clock=clock, transport=api, **client_options
    )
    built = Rig(handle, driver, clock, home, oauth, api, oauth_http, keeper, client)
    try:
        if consent:
            built.consent()
        yield built
    finally:
        client.close()
        oauth_http.close()
        driver.close()
