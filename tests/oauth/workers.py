"""Keeper workers run in separate OS processes (multiprocessing 'spawn') by the concurrency and
fault tests. Each builds its own keeper from a plain config: the sandbox's clock spec, the shared
token directory, and the lock (file lock, or a blob lease on Azurite)."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from shared.clock import ScaledClock
from shared.errors import ExactSyncError
from shared.locks.base import ConnectionLock
from shared.oauth.alerts import Alerts
from shared.oauth.keeper import TokenKeeper
from shared.oauth.providers import Providers, exact_provider
from shared.oauth.token_endpoint import TokenEndpoint
from shared.stores.base import TokenStore
from shared.stores.local_file import LocalFileTokenStore
from shared.tokens import TokenRecord, TokenStatus


def build_lock(cfg: dict[str, Any]) -> ConnectionLock:
    # The lock's clock only paces polling and measures the acquire timeout: 5x real time keeps
    # waiters responsive on a time-scaled sandbox without hammering Azurite.
    lock_clock = ScaledClock.starting_now(scale=5)
    spec = cfg["lock"]
    if spec["kind"] == "blob":
        from azure.storage.blob import ContainerClient

        from shared.locks.blob_lease import BlobLeaseLock

        container = ContainerClient.from_connection_string(spec["connection_string"], spec["container"])
        return BlobLeaseLock(container, lease_seconds=15, clock=lock_clock)
    from shared.locks.file_lock import FileLock

    return FileLock(Path(cfg["home"]) / "locks", clock=lock_clock)


def build_keeper(cfg: dict[str, Any], store: TokenStore | None = None) -> tuple[TokenKeeper, ScaledClock]:
    clock = ScaledClock.from_spec(cfg["clock"])
    provider = exact_provider(
        cfg["base_url"],
        client_id=cfg["client_id"],
        client_secret=cfg["client_secret"],
        redirect_uri=cfg["redirect_uri"],
    )
    http = httpx.Client()
    keeper = TokenKeeper(
        providers=Providers([provider]),
        store=store if store is not None else LocalFileTokenStore(Path(cfg["home"]) / "tokens"),
        lock=build_lock(cfg),
        endpoint_factory=lambda p: TokenEndpoint(p, http=http, clock=clock),
        clock=clock,
        alerts=Alerts(),
        lock_timeout=float(cfg.get("lock_timeout", 600)),
        max_window_wait_s=float(cfg.get("max_window_wait_s", 60)),
    )
    return keeper, clock


def serve_tokens(cfg: dict[str, Any], out: str, barrier: Any = None) -> None:
    """After every worker is ready (``barrier``), ask for access tokens for ``run_for`` simulated
    seconds, sending every ``api_every``-th one to the API to prove it works."""
    keeper, clock = build_keeper(cfg)
    if barrier is not None:
        barrier.wait(timeout=120)
    until = clock.now() + float(cfg["run_for"])
    connection = cfg["connection"]
    min_validity = float(cfg.get("min_validity", 0))
    api_every = int(cfg.get("api_every", 10))
    errors: Counter[str] = Counter()
    tokens: set[str] = set()
    asked = checked = rejected = 0
    first = clock.now()
    with httpx.Client(timeout=30) as http:
        while clock.now() < until:
            try:
                token = keeper.get_access_token(connection, min_validity=min_validity)
            except ExactSyncError as exc:
                errors[type(exc).__name__] += 1
                time.sleep(0.05)
                continue
            asked += 1
            tokens.add(token)
            if asked % api_every == 0:
                checked += 1
                answer = http.get(
                    f"{cfg['base_url']}/api/v1/current/Me",
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                )
                rejected += answer.status_code == 401
            time.sleep(random.uniform(0.005, 0.03))
    result = {
        "asked": asked,
        "tokens": len(tokens),
        "checked": checked,
        "rejected": rejected,
        "errors": dict(errors),
        "first": first,
        "last": clock.now(),
    }
    Path(out).write_text(json.dumps(result))


def one_token(cfg: dict[str, Any], out: str, start_real: float) -> None:
    """Wait for the common start, then ask once; report the token's fingerprint and the wait."""
    keeper, _ = build_keeper(cfg)
    time.sleep(max(0.0, start_real - time.time()))
    began = time.time()
    try:
        token = keeper.get_access_token(cfg["connection"])
        result: dict[str, Any] = {"token": _fingerprint(token), "waited": time.time() - began}
    except ExactSyncError as exc:
        result = {"error": type(exc).__name__, "waited": time.time() - began}
    Path(out).write_text(json.dumps(result))


class DieOnSave:
    """The real file store, except that the process exits hard (``os._exit``: no clean-up, no
    finally blocks, like a kill or an instance being recycled) at a chosen save:

    - ``die_on="ok"``: when the new token set is about to be written, i.e. after the token
      endpoint answered and before anything was stored;
    - ``die_on="refreshing"``: right after the intent was stored, before the token call.
    """

    def __init__(self, inner: LocalFileTokenStore, die_on: str) -> None:
        self.inner = inner
        self.die_on = TokenStatus(die_on)

    def load(self, connection: str) -> TokenRecord | None:
        return self.inner.load(connection)

    def save(self, record: TokenRecord) -> None:
        if record.status is TokenStatus.REFRESHING and self.die_on is TokenStatus.REFRESHING:
            self.inner.save(record)
            os._exit(17)
        if record.status is TokenStatus.OK and self.die_on is TokenStatus.OK:
            os._exit(17)
        self.inner.save(record)

    def list_connections(self) -> list[str]:
        return self.inner.list_connections()

    def delete(self, connection: str) -> None:
        self.inner.delete(connection)


def refresh_then_die(cfg: dict[str, Any], die_on: str) -> None:
    store = DieOnSave(LocalFileTokenStore(Path(cfg["home"]) / "tokens"), die_on)
    keeper, _ = build_keeper(cfg, store=store)
    keeper.get_access_token(cfg["connection"])
    os._exit(0)  # not reached when the store kills the process


def _fingerprint(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()[:16]
