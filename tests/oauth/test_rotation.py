"""The keep-alive timer's logic (``keep_alive``) on a manual clock, the real file store, file lock
and nonce store, against the Exact-like token server."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from shared.oauth.alerts import EVENT_NEEDS_REAUTH, Alerts
from shared.oauth.keeper import TokenKeeper
from shared.oauth.rotation import in_quiet_hours, keep_alive
from shared.stores.local_file import LocalFileTokenStore
from shared.stores.nonces import FileNonceStore
from shared.tokens import TokenStatus
from tests.doubles.clock import ManualClock
from tests.oauth.support import FakeExactTokenServer, FlakyStore, consent, make_keeper, recorder

AMS = ZoneInfo("Europe/Amsterdam")
HOUR = 3600.0
KEEPALIVE = 72 * HOUR


def at(*parts: int) -> float:
    """Epoch seconds of a wall-clock time in Amsterdam: at(2025, 1, 15, 1, 0, 0)."""
    iso = "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}".format(*parts)
    return datetime.fromisoformat(iso).replace(tzinfo=AMS).timestamp()


@pytest.mark.parametrize(
    ("local", "quiet"),
    [
        ((2025, 1, 15, 0, 59, 59), False),
        ((2025, 1, 15, 1, 0, 0), True),
        ((2025, 1, 15, 1, 59, 59), True),
        ((2025, 1, 15, 2, 0, 0), False),
        ((2025, 7, 15, 1, 30, 0), True),  # summer time (UTC+2): 23:30 UTC
        ((2025, 7, 14, 23, 30, 0), False),
        ((2025, 3, 30, 1, 30, 0), True),  # the night clocks go forward at 02:00
        ((2025, 10, 26, 1, 30, 0), True),  # the night clocks go back at 03:00
    ],
)
def test_quiet_hours_in_amsterdam_time(local: tuple[int, ...], quiet: bool) -> None:
    assert in_quiet_hours(at(*local)) is quiet


def test_quiet_hours_follow_daylight_saving() -> None:
    # 00:30 UTC is 01:30 in winter (quiet) and 02:30 in summer (not quiet)
    assert in_quiet_hours(datetime(2025, 1, 15, 0, 30, tzinfo=ZoneInfo("UTC")).timestamp())
    assert not in_quiet_hours(datetime(2025, 7, 15, 0, 30, tzinfo=ZoneInfo("UTC")).timestamp())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(at(2025, 6, 16, 14, 0, 0))


@pytest.fixture
def server(clock: ManualClock) -> FakeExactTokenServer:
    return FakeExactTokenServer(clock)


@pytest.fixture
def keeper(tmp_path: Path, clock: ManualClock, server: FakeExactTokenServer) -> TokenKeeper:
    http = server.client()
    k = make_keeper(tmp_path, clock, http)
    consent(k, server, http, "busy")
    consent(k, server, http, "idle")
    return k


def store_of(keeper: TokenKeeper) -> FlakyStore:
    store = keeper._store
    assert isinstance(store, FlakyStore)
    return store


def run(keeper: TokenKeeper, clock: ManualClock, **options: object) -> dict[str, tuple[str, str]]:
    report = keep_alive(keeper, store_of(keeper), clock, keepalive_after_s=KEEPALIVE, **options)  # type: ignore[arg-type]
    return {c.connection: (c.health, c.action) for c in report.connections}


def test_young_chains_need_nothing_and_nothing_is_written(keeper: TokenKeeper, clock: ManualClock) -> None:
    saves = len(store_of(keeper).saves)
    clock.advance(10 * HOUR)
    assert run(keeper, clock) == {"busy": ("ok", "none"), "idle": ("ok", "none")}
    assert len(store_of(keeper).saves) == saves


def test_idle_chain_older_than_the_setting_is_refreshed(
    keeper: TokenKeeper, clock: ManualClock, server: FakeExactTokenServer
) -> None:
    clock.advance(50 * HOUR)
    keeper.refresh_now("busy", unless_younger_than=0)  # the busy one was used recently
    clock.advance(23 * HOUR)  # idle: 73 h, busy: 23 h
    assert run(keeper, clock) == {"busy": ("ok", "none"), "idle": ("ok", "refreshed")}
    idle = store_of(keeper).inner.load("idle")
    assert idle is not None and idle.refresh_age(clock.now()) < 1
    assert server.too_early == 0 and server.reuse == 0


def test_never_inside_the_quiet_hour(
    keeper: TokenKeeper, clock: ManualClock, server: FakeExactTokenServer
) -> None:
    clock.t = at(2025, 6, 20, 1, 10, 0)  # 83 h later, 01:10 Amsterdam
    calls = len(server.calls)
    assert run(keeper, clock) == {"busy": ("ok", "not_allowed"), "idle": ("ok", "not_allowed")}
    assert len(server.calls) == calls
    clock.t = at(2025, 6, 20, 2, 0, 1)
    assert run(keeper, clock) == {"busy": ("ok", "refreshed"), "idle": ("ok", "refreshed")}


def test_the_quiet_rule_is_checked_again_right_before_the_call(
    keeper: TokenKeeper, clock: ManualClock, server: FakeExactTokenServer
) -> None:
    """The hour may begin while the run waits for a lock: the last check is under the lock."""
    clock.advance(KEEPALIVE + HOUR)
    answers = iter([False, True, False, True])  # outside at the first look, inside at the second
    calls = len(server.calls)
    result = run(keeper, clock, quiet=lambda now: next(answers))
    assert result == {"busy": ("ok", "not_allowed"), "idle": ("ok", "not_allowed")}
    assert len(server.calls) == calls


def test_in_doubt_is_settled_and_dead_chains_alert(
    keeper: TokenKeeper, clock: ManualClock, server: FakeExactTokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock.advance(600)
    server.lose_after_rotate = 1
    with pytest.raises(Exception, match="settles"):
        keeper.get_access_token("busy")
    server.fail_5xx = 1
    with pytest.raises(Exception, match="settles"):
        keeper.get_access_token("idle")
    clock.advance(60)
    with caplog.at_level(logging.ERROR, logger="exactsync.alerts"):
        result = run(keeper, clock)
    assert result == {"busy": ("needs_reauth", "needs_reauth"), "idle": ("ok", "settled")}
    assert [r.connection for r in caplog.records if EVENT_NEEDS_REAUTH in r.getMessage()] == ["busy"]  # type: ignore[attr-defined]


def test_needs_reauth_alerts_every_run_and_notifies_once_a_day(
    tmp_path: Path, clock: ManualClock, server: FakeExactTokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    posted: list[httpx.Request] = []
    alerts = Alerts(
        webhook_url="https://hooks.example.com/x",
        http=recorder(posted),
    )
    http = server.client()
    keeper = make_keeper(tmp_path, clock, http, alerts=alerts)
    consent(keeper, server, http, "gone")
    server.current_refresh = "rotated-elsewhere"
    clock.advance(600)
    with pytest.raises(Exception, match="new consent"):
        keeper.get_access_token("gone")
    assert len(posted) == 1  # the transition
    nonces = FileNonceStore(tmp_path / "nonces", clock=clock)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="exactsync.alerts"):
        for _ in range(6):  # every 5 minutes for half an hour
            clock.advance(300)
            assert run(keeper, clock, claim_reminder=nonces.claim) == {
                "gone": ("needs_reauth", "needs_reauth")
            }
    assert sum(EVENT_NEEDS_REAUTH in r.getMessage() for r in caplog.records) == 6
    assert len(posted) == 2  # one reminder today
    clock.advance(24 * HOUR)
    run(keeper, clock, claim_reminder=nonces.claim)
    assert len(posted) == 3  # and one the next day
    record = LocalFileTokenStore(tmp_path / "tokens").load("gone")
    assert record is not None and record.status is TokenStatus.NEEDS_REAUTH
