"""The composition root: builds the objects every trigger and command shares, once per process.

Nothing is built at import. ``current()`` creates the process's ``Runtime`` from the environment
on first use; each component is a cached property, so a timer that only rotates tokens never
loads pyodbc, and a loader never loads the OAuth consent code. Tests and ``exactsync serve``
build a ``Runtime`` themselves (own settings, clock, transports) and ``install`` it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from shared.clock import Clock, SystemClock
from shared.settings import Settings

if TYPE_CHECKING:  # the real imports happen inside the properties (cold start)
    import httpx

    from shared.exact.client import ExactClient
    from shared.exact.rate import RateGovernor
    from shared.locks.base import ConnectionLock
    from shared.oauth.keeper import TokenKeeper
    from shared.oauth.providers import Providers
    from shared.stores.base import TokenStore
    from shared.stores.nonces import NonceStore
    from shared.sync.queues import Queue
    from shared.warehouse.base import Warehouse


@dataclass
class Runtime:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)

    # --- OAuth area (shared/oauth, shared/stores, shared/locks) ------------------------------
    @cached_property
    def providers(self) -> Providers:
        """Exact Online plus ``OAUTH_PROVIDERS``; registers every configured secret for redaction."""
        from shared.oauth import redact
        from shared.oauth.providers import Providers
        from shared.settings import secret_values

        for value in secret_values(self.settings):
            redact.DEFAULT.pin(value)
        redact.install()
        return Providers.from_settings(self.settings)

    @cached_property
    def token_store(self) -> TokenStore:
        from shared.stores.factory import make_token_store

        return make_token_store(self.settings, self.clock)

    @cached_property
    def lock(self) -> ConnectionLock:
        """Lock timeouts run on real time: leases and ``flock`` are real-world waits."""
        from shared.locks.factory import make_lock

        return make_lock(self.settings)

    @cached_property
    def nonces(self) -> NonceStore:
        from shared.stores.nonces import make_nonce_store

        return make_nonce_store(self.settings, self.clock)

    @cached_property
    def oauth_http(self) -> httpx.Client:
        """The HTTP client for token endpoints (and the alert webhook): long read timeout, no
        redirects followed, no retries. ``--trace`` adds event hooks to it."""
        import httpx

        from shared.oauth.token_endpoint import CONNECT_TIMEOUT, POOL_TIMEOUT, READ_TIMEOUT, WRITE_TIMEOUT

        timeout = httpx.Timeout(
            connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, write=WRITE_TIMEOUT, pool=POOL_TIMEOUT
        )
        return httpx.Client(timeout=timeout, follow_redirects=False)

    @cached_property
    def keeper(self) -> TokenKeeper:
        from shared.oauth.alerts import Alerts
        from shared.oauth.keeper import TokenKeeper
        from shared.oauth.providers import Provider
        from shared.oauth.token_endpoint import TokenEndpoint

        def endpoint(provider: Provider) -> TokenEndpoint:
            return TokenEndpoint(provider, http=self.oauth_http, clock=self.clock)

        return TokenKeeper(
            providers=self.providers,
            store=self.token_store,
            lock=self.lock,
            endpoint_factory=endpoint,
            clock=self.clock,
            alerts=Alerts.from_settings(self.settings, http=lambda: self.oauth_http),
        )

    # --- load area (shared/exact, shared/warehouse, shared/sync) -----------------------------

    @cached_property
    def queue(self) -> Queue:
        """The load queue: Storage (Azure, Azurite) when configured, else embedded SQLite."""
        from shared.sync.queues import make_queue

        return make_queue(self.settings, self.clock)

    @cached_property
    def warehouse(self) -> Warehouse:
        from shared.warehouse.factory import make_warehouse

        return make_warehouse(self.settings, clock=self.clock)

    def use_warehouse(self, warehouse: Warehouse) -> None:
        """Load into ``warehouse`` instead of the one the settings name (a test's scratch schema
        on a real SQL Server, which no setting can name). Only before ``warehouse`` is first used:
        swapping it later would split one run's data over two databases."""
        if "warehouse" in self.__dict__:
            raise RuntimeError("this runtime's warehouse is already in use; hand one over before that")
        self.__dict__["warehouse"] = warehouse

    @cached_property
    def rate_governor(self) -> RateGovernor:
        """One per process: Exact's budgets are per app and division, whatever the connection."""
        from shared.exact.rate import RateGovernor

        return RateGovernor(self.clock, daily_reserve=self.settings.daily_call_reserve)

    @cached_property
    def _exact_clients(self) -> tuple[threading.Lock, dict[str, ExactClient]]:
        return threading.Lock(), {}

    def exact_client(self, connection: str) -> ExactClient:
        """The connection's Exact client (one per connection and process, reused across steps)."""
        guard, clients = self._exact_clients
        with guard:
            client = clients.get(connection)
            if client is None:
                from shared.exact.client import ExactClient

                client = clients[connection] = ExactClient(
                    self.settings.exact_base_url,
                    self.keeper,
                    connection=connection,
                    clock=self.clock,
                    governor=self.rate_governor,
                )
            return client


_installed: dict[str, Runtime] = {}
_guard = threading.Lock()


def current() -> Runtime:
    """The process-wide runtime, built from the environment on first call."""
    with _guard:
        if "runtime" not in _installed:
            _installed["runtime"] = Runtime(settings=Settings.from_env())
        return _installed["runtime"]


def install(runtime: Runtime | None) -> None:
    """Replace (or with ``None`` forget) the process-wide runtime."""
    with _guard:
        _installed.pop("runtime", None)
        if runtime is not None:
            _installed["runtime"] = runtime
