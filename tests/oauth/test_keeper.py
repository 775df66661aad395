"""TokenKeeper protocol, step by step, against an Exact-like token server (MockTransport), the
real file store and the real file lock, on a manual clock."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from shared.oauth.alerts import EVENT_NEEDS_REAUTH
from shared.oauth.errors import (
    NeedsReauth,
    RefreshDeferred,
    TokenEndpointError,
    TokenInDoubt,
    TokenStoreUnavailable,
)
from shared.oauth.keeper import RefreshResult, TokenKeeper
from shared.stores.local_file import LocalFileTokenStore
from shared.tokens import TokenRecord, TokenStatus
from tests.doubles.clock import ManualClock
from tests.oauth.support import START, FakeExactTokenServer, FlakyStore, consent, make_keeper


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def server(clock: ManualClock) -> FakeExactTokenServer:
    return FakeExactTokenServer(clock)


@pytest.fixture
def http(server: FakeExactTokenServer) -> httpx.Client:
    return server.client()


@pytest.fixture
def keeper(tmp_path: Path, clock: ManualClock, http: httpx.Client) -> TokenKeeper:
    return make_keeper(tmp_path, clock, http)


def store_of(keeper: TokenKeeper) -> FlakyStore:
    store = keeper._store
    assert isinstance(store, FlakyStore)
    return store


def test_no_consent_yet_needs_reauth(keeper: TokenKeeper) -> None:
    with pytest.raises(NeedsReauth, match="no consent yet"):
        keeper.get_access_token("acme")


def test_consent_then_cached_reads_never_write(
    keeper: TokenKeeper, server: FakeExactTokenServer, http: httpx.Client, clock: ManualClock
) -> None:
    grant = consent(keeper, server, http)
    store = store_of(keeper)
    saves = len(store.saves)
    for _ in range(50):
        assert keeper.get_access_token("acme") == grant.access_token
        clock.advance(5)
    assert len(store.saves) == saves  # reads never write (Key Vault versions)
    assert server.refreshes == 0


def test_refresh_inside_the_window_only(
    keeper: TokenKeeper, server: FakeExactTokenServer, http: httpx.Client, clock: ManualClock
) -> None:
    consent(keeper, server, http)
    tokens = set()
    # 40 lifetimes, asking every 7 s
    for _ in range(int(40 * 600 / 7)):
        tokens.add(keeper.get_access_token("acme"))
        clock.advance(7)
    assert server.too_early == 0 and server.reuse == 0
    assert 38 <= server.refreshes <= 42
    assert len(tokens) == server.refreshes + 1
    record = store_of(keeper).inner.load("acme")
    assert record is not None and record.status is TokenStatus.OK
    assert record.generation == 1 + server.refreshes  # consent, then +1 per refresh


def test_intent_is_written_before_the_call_and_result_after(
    keeper: TokenKeeper, server: FakeExactTokenServer, http: httpx.Client, clock: ManualClock
) -> None:
    consent(keeper, server, http)
    store = store_of(keeper)
    seen: list[str] = []
    server.on_request = lambda: seen.append(store.inner.load("acme").status.value)  # type: ignore[union-attr]
    clock.advance(575)
    keeper.get_access_token("acme")
    assert seen == ["refreshing"]
    statuses = [r.status.value for r in store.saves[-2:]]
    assert statuses == ["refreshing", "ok"]
    assert store.saves[-1].generation == store.saves[-2].generation == 2


def test_too_early_waits_for_the_window_instead_of_calling(
    keeper: TokenKeeper, server: FakeExactTokenServer, http: httpx.Client, clock: ManualClock
) -> None:
    consent(keeper, server, http)
    clock.advance(540)  # 60 s valid: fine for min_validity 0, not for 45
    first = keeper.get_access_token("acme")
    before = clock.now()
    token = keeper.get_access_token("acme", min_validity=45)
    assert token != first
    assert clock.now() - before == pytest.approx(30, abs=0.01)  # waited to 570, then refreshed
    assert server.too_early == 0 and server.refreshes == 1


def test_far_from_window_serves_current_token(
    keeper: TokenKeeper, server: FakeExactTokenServer, http: httpx.Client, clock: ManualClock
) -> None:
    grant = consent(keeper, server, http)
    clock.advance(100)
    # asks for more than can be had before the window opens in 470 s: current token, no call
    assert keeper.get_access_token("acme", min_validity=490) == grant.access_token
    assert server.refreshes == 0 and len(server.calls) == 1


def test_another_process_refreshed_meanwhile(
    tmp_path: Path, server: FakeExactTokenServer, http: httpx.Client, clock: ManualClock
) -> None:
    one = make_keeper(tmp_path, clock, http)
    two = make_keeper(tmp_path, clock, http)
    consent(one, server, http)
    assert one.get_access_token("acme") == two.get_access_token("acme")
    clock.advance(580)
    fresh = one.get_access_token("acme")
    assert two.get_access_token("acme") == fresh  # re-read, no second refresh
    assert server.refreshes == 1 and server.reuse == 0


def test_dead_chain_needs_reauth_alert_and_no_more_calls(
    keeper: TokenKeeper,
    server: FakeExactTokenServer,
    http: httpx.Client,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    consent(keeper, server, http)
    server.current_refresh = "someone-else-rotated"  # the chain moved on without us
    clock.advance(600)
    with caplog.at_level(logging.ERROR, logger="exactsync.alerts"), pytest.raises(NeedsReauth) as err:
        keeper.get_access_token("acme")
    assert "Old refresh token used" in str(err.value)
    alerts = [r for r in caplog.records if EVENT_NEEDS_REAUTH in r.getMessage()]
    assert len(alerts) == 1 and alerts[0].levelno == logging.ERROR
    assert alerts[0].connection == "acme"  # type: ignore[attr-defined]
    record = store_of(keeper).inner.load("acme")
    assert record is not None and record.status is TokenStatus.NEEDS_REAUTH
    assert "Old refresh token used" in (record.last_error or "")
    calls = len(server.calls)
    for _ in range(5):
        with pytest.raises(NeedsReauth):
            keeper.get_access_token("acme")
    assert len(server.calls) == calls  # a dead chain is not a retry loop


def test_consent_repairs_a_dead_chain_and_generation_continues(
    keeper: TokenKeeper, server: FakeExactTokenServer, http: httpx.Client, clock: ManualClock
) -> None:
    consent(keeper, server, http)
    server.current_refresh = "gone"
    clock.advance(600)
    with pytest.raises(NeedsReauth):
        keeper.get_access_token("acme")
    dead = store_of(keeper).inner.load("acme")
    assert dead is not None
    grant = consent(keeper, server, http)
    record = store_of(keeper).inner.load("acme")
    assert record is not None and record.status is TokenStatus.OK
    assert record.generation == dead.generation + 1
    assert record.consented_at == clock.now()
    assert keeper.get_access_token("acme") == grant.access_token


def test_lost_answer_in_doubt_then_settled_dead(
    keeper: TokenKeeper,
    server: FakeExactTokenServer,
    http: httpx.Client,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    consent(keeper, server, http)
    server.lose_after_rotate = 1
    clock.advance(580)
    with pytest.raises(TokenInDoubt, match="settles"):
        keeper.get_access_token("acme")
    record = store_of(keeper).inner.load("acme")
    assert record is not None and record.status is TokenStatus.IN_DOUBT and record.failures == 1
    # within the back-off: no call, still in doubt
    calls = len(server.calls)
    with pytest.raises(TokenInDoubt):
        keeper.get_access_token("acme")
    assert len(server.calls) == calls
    clock.advance(31)
    with caplog.at_level(logging.ERROR, logger="exactsync.alerts"), pytest.raises(NeedsReauth):
        keeper.get_access_token("acme")
    assert len(server.calls) == calls + 1  # the same refresh token presented exactly once more
    assert server.reuse == 1
    assert any(EVENT_NEEDS_REAUTH in r.getMessage() for r in caplog.records)
    record = store_of(keeper).inner.load("acme")
    assert record is not None and record.status is TokenStatus.NEEDS_REAUTH


def test_5xx_without_rotation_is_settled_ok(
    keeper: TokenKeeper, server: FakeExactTokenServer, http: httpx.Client, clock: ManualClock
) -> None:
    consent(keeper, server, http)
    server.fail_5xx = 1
    clock.advance(580)
    with pytest.raises(TokenInDoubt):
        keeper.get_access_token("acme")
    clock.advance(31)
    token = keeper.get_access_token("acme")
    record = store_of(keeper).inner.load("acme")
    assert record is not None and record.status is TokenStatus.OK and record.failures == 0
    assert record.access_token == token and server.reuse == 0


def test_client_error_restores_ok_and_backs_off(
    keeper: TokenKeeper, server: FakeExactTokenServer, http: httpx.Client, clock: ManualClock
) -> None:
    consent(keeper, server, http)
    clock.advance(580)
    server.answers.append(httpx.Response(401, json={"error": "invalid_client", "error_description": "bad"}))
    with pytest.raises(TokenEndpointError, match="invalid_client"):
        keeper.get_access_token("acme")
    record = store_of(keeper).inner.load("acme")
    assert record is not None and record.status is TokenStatus.OK and record.failures == 1
    clock.advance(25)  # access token expired (605 s), back-off (30 s) not over
    calls = len(server.calls)
    with pytest.raises(RefreshDeferred, match="next attempt"):
        keeper.get_access_token("acme")
    assert len(server.calls) == calls
    clock.advance(10)
    keeper.get_access_token("acme")
    assert server.refreshes == 1


def test_intent_not_stored_means_no_call(
    keeper: TokenKeeper, server: FakeExactTokenServer, http: httpx.Client, clock: ManualClock
) -> None:
    consent(keeper, server, http)
    store_of(keeper).fail_saves = 10
    clock.advance(580)
    calls = len(server.calls)
    with pytest.raises(TokenStoreUnavailable, match="not called"):
        keeper.get_access_token("acme")
    assert len(server.calls) == calls


def test_store_down_after_rotation_keeps_tokens_and_retries(
    keeper: TokenKeeper, server: FakeExactTokenServer, http: httpx.Client, clock: ManualClock
) -> None:
    consent(keeper, server, http)
    store = store_of(keeper)
    clock.advance(580)
    store.fail_when = lambda record: record.status is TokenStatus.OK  # the result write fails
    token = keeper.get_access_token("acme")  # served from memory
    assert keeper.has_pending("acme")
    on_disk = store.inner.load("acme")
    assert on_disk is not None and on_disk.status is TokenStatus.REFRESHING
    assert keeper.get_access_token("acme") == token
    status = keeper.status("acme")
    assert status is not None and status["pending_store_write"] is True
    store.fail_when = None
    clock.advance(600)  # the next call flushes first, then refreshes with the NEW refresh token
    keeper.get_access_token("acme")
    assert not keeper.has_pending("acme")
    assert server.reuse == 0 and server.refreshes == 2
    on_disk = store.inner.load("acme")
    assert on_disk is not None and on_disk.status is TokenStatus.OK
    assert on_disk.refresh_token == server.current_refresh


def test_transient_store_errors_are_retried_with_retry_after(
    keeper: TokenKeeper, server: FakeExactTokenServer, http: httpx.Client, clock: ManualClock
) -> None:
    consent(keeper, server, http)
    store = store_of(keeper)
    clock.advance(580)
    store.fail_when = None
    store.retry_after = 3.0
    # the intent goes through; the result write fails twice (throttled), then lands
    results: list[int] = []

    def fail_twice(record: TokenRecord) -> bool:
        if record.status is TokenStatus.OK and len(results) < 2:
            results.append(1)
            return True
        return False

    store.fail_when = fail_twice
    clock.slept.clear()
    keeper.get_access_token("acme")
    assert not keeper.has_pending("acme")
    assert clock.slept[:2] == [3.0, 3.0]  # Retry-After honoured over the shorter back-off
    record = store.inner.load("acme")
    assert record is not None and record.refresh_token == server.current_refresh


def test_stale_refreshing_from_dead_process_is_settled_once(
    server: FakeExactTokenServer, http: httpx.Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = server.clock
    consent(make_keeper(tmp_path, clock, http), server, http)
    inner = LocalFileTokenStore(tmp_path / "tokens")
    record = inner.load("acme")
    assert record is not None
    # what a process killed after the server rotated leaves behind
    clock.advance(580)
    inner.save(record.with_changes(status=TokenStatus.REFRESHING, generation=2, attempted_at=clock.now()))
    server.current_refresh = "rotated-answer-lost-with-the-process"
    other = make_keeper(tmp_path, clock, http)
    clock.advance(30)
    with pytest.raises(TokenInDoubt, match="another process"):
        other.get_access_token("acme")  # the writer may still be alive: no call
    assert server.reuse == 0
    clock.advance(300)
    with caplog.at_level(logging.ERROR, logger="exactsync.alerts"), pytest.raises(NeedsReauth):
        other.get_access_token("acme")
    assert server.reuse == 1
    assert any(EVENT_NEEDS_REAUTH in r.getMessage() for r in caplog.records)


def test_refresh_after_rejection_only_when_still_the_rejected_token(
    tmp_path: Path, server: FakeExactTokenServer, http: httpx.Client, clock: ManualClock
) -> None:
    one = make_keeper(tmp_path, clock, http)
    two = make_keeper(tmp_path, clock, http)
    consent(one, server, http)
    clock.advance(580)
    old = two._store.load("acme").access_token  # type: ignore[union-attr]
    fresh = one.get_access_token("acme")
    # two's API call with the old token got a 401: the store already has a new one
    assert two.refresh_after_rejection("acme", old) == fresh
    assert server.refreshes == 1
    # the fresh token itself rejected (after the window): refreshed once
    clock.advance(580)
    newer = two.refresh_after_rejection("acme", fresh)
    assert newer != fresh and server.refreshes == 2 and server.too_early == 0


def test_keepalive_refresh_now_rules(
    keeper: TokenKeeper, server: FakeExactTokenServer, http: httpx.Client, clock: ManualClock
) -> None:
    consent(keeper, server, http)
    assert keeper.refresh_now("acme", unless_younger_than=3600) is RefreshResult.NOT_NEEDED
    assert keeper.refresh_now("acme", unless_younger_than=0) is RefreshResult.TOO_EARLY
    clock.advance(4000)
    assert keeper.refresh_now("acme", unless_younger_than=3600, may_call=lambda now: False) is (
        RefreshResult.NOT_ALLOWED
    )
    assert server.refreshes == 0
    assert keeper.refresh_now("acme", unless_younger_than=3600) is RefreshResult.REFRESHED
    assert server.refreshes == 1


def test_status_views_hold_no_secrets(
    keeper: TokenKeeper, server: FakeExactTokenServer, http: httpx.Client
) -> None:
    grant = consent(keeper, server, http)
    views = keeper.list_status()
    assert [v["connection"] for v in views] == ["acme"]
    text = repr(views)
    assert grant.access_token not in text and (grant.refresh_token or "x") not in text
    assert views[0]["status"] == "ok" and views[0]["refresh_expires_at"] is not None
