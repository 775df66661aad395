"""The keeper storing into Key Vault through the REAL ``SecretClient`` pipeline (the Key Vault
transport double answers like the service: versions, 404, 429 + Retry-After, 5xx, lost answers),
with the sandbox as token endpoint. Faults are armed the moment the token endpoint has answered,
so they hit exactly the write that must never be lost: the new token set."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.clock import ScaledClock
from shared.oauth.keeper import TokenKeeper
from shared.sandbox.server import SandboxHandle
from shared.stores.keyvault import KeyVaultTokenStore
from shared.tokens import TokenRecord, TokenStatus
from tests.doubles.keyvault import FakeTokenCredential, KeyVaultDouble
from tests.oauth.sandbox_support import advance, consent, counters, keeper_for, sandbox_clock

SECRET = "exactsync-conn-acme"


class Rig:
    def __init__(self, handle: SandboxHandle, home: Path, *, retry_total: int = 5) -> None:
        self.handle = handle
        self.vault = KeyVaultDouble("https://kv-keeper-test.vault.azure.net")
        self.clock: ScaledClock = sandbox_clock(handle)
        self.store = KeyVaultTokenStore(
            self.vault.vault_url,
            FakeTokenCredential(),
            transport=self.vault,
            clock=self.clock,
            retry_total=retry_total,
        )
        self.on_answer: Callable[[KeyVaultDouble], None] | None = None
        http = httpx.Client(event_hooks={"response": [self._answered]})
        self.keeper: TokenKeeper = keeper_for(
            handle, self.clock, home, http=http, store=self.store, store_retry_delays=(0.05,) * 5
        )
        consent(handle, self.keeper, self.clock)

    def _answered(self, response: httpx.Response) -> None:
        is_refresh = b"grant_type=refresh_token" in response.request.content
        if is_refresh and response.status_code == 200 and self.on_answer is not None:
            arm, self.on_answer = self.on_answer, None
            arm(self.vault)

    def stored(self) -> TokenRecord:
        latest = self.vault.latest(SECRET)
        assert latest is not None
        return TokenRecord.from_json(latest.value)

    def next_window(self) -> None:
        advance(self.handle, self.clock, 580)


@pytest.fixture
def rig(sandbox_factory: Callable[..., SandboxHandle], tmp_path: Path) -> Iterator[Rig]:
    yield Rig(sandbox_factory(limits=False), tmp_path)


def test_two_versions_per_refresh_none_per_read(rig: Rig) -> None:
    assert rig.vault.version_count(SECRET) == 1  # the consent
    for _ in range(3):
        for _ in range(20):
            rig.keeper.get_access_token("acme")
        rig.next_window()
        rig.keeper.get_access_token("acme")
    # intent + result per refresh; reads never write (Key Vault keeps every version forever)
    assert rig.vault.version_count(SECRET) == 1 + 2 * 3
    statuses = [TokenRecord.from_json(v.value).status.value for v in rig.vault.versions(SECRET)]
    assert statuses == ["ok", "refreshing", "ok", "refreshing", "ok", "refreshing", "ok"]
    tags = rig.vault.versions(SECRET)[-1].tags or {}
    assert tags["status"] == "ok" and tags["generation"] == "4"


def test_throttled_result_write_honours_retry_after_and_lands(rig: Rig) -> None:
    rig.next_window()
    rig.on_answer = lambda vault: vault.throttle_next(3, retry_after=4)
    token = rig.keeper.get_access_token("acme")
    assert not rig.keeper.has_pending("acme")
    stored = rig.stored()
    assert stored.status is TokenStatus.OK and stored.access_token == token
    assert rig.vault.slept.count(4) == 3 and rig.vault.early_retries == 0
    rig.next_window()
    rig.keeper.get_access_token("acme")  # the stored refresh token is the live one
    assert counters(rig.handle)["refresh_token_reuse"] == 0


def test_errors_beyond_the_sdk_retries_are_retried_by_the_keeper(rig: Rig) -> None:
    rig.next_window()
    rig.on_answer = lambda vault: vault.fail_next(8, status=503)  # > one SDK call's 6 attempts
    token = rig.keeper.get_access_token("acme")
    assert not rig.keeper.has_pending("acme")
    assert rig.stored().access_token == token and rig.stored().status is TokenStatus.OK


def test_a_lost_write_answer_costs_one_version_and_nothing_else(rig: Rig) -> None:
    rig.next_window()
    rig.on_answer = lambda vault: vault.lose_next_responses(1)
    token = rig.keeper.get_access_token("acme")
    assert rig.stored().access_token == token
    assert rig.vault.version_count(SECRET) == 1 + 2 + 1


def test_vault_down_tokens_kept_in_memory_then_written(rig: Rig) -> None:
    rig.next_window()
    rig.on_answer = lambda vault: vault.fail_next(10_000, status=503)
    token = rig.keeper.get_access_token("acme")  # served from memory
    assert rig.keeper.has_pending("acme")
    assert rig.stored().status is TokenStatus.REFRESHING  # the intent, nothing newer
    assert rig.keeper.get_access_token("acme") == token
    status: dict[str, Any] | None = rig.keeper.status("acme")
    assert status is not None and status["pending_store_write"] is True
    rig.vault.clear_faults()
    advance(rig.handle, rig.clock, 60)
    assert rig.keeper.get_access_token("acme") == token  # the next call writes them first
    assert not rig.keeper.has_pending("acme")
    assert rig.stored().access_token == token and rig.stored().status is TokenStatus.OK
    rig.next_window()
    rig.keeper.get_access_token("acme")
    data = counters(rig.handle)
    assert data["refresh_token_reuse"] == 0 and data["refreshes"] == 2
