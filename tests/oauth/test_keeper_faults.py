"""Faults against the sandbox over real HTTP: lost token answers, a slow token endpoint with real
processes waiting, a process killed between the token answer and the store write."""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.clock import ScaledClock
from shared.oauth.alerts import EVENT_NEEDS_REAUTH
from shared.oauth.errors import NeedsReauth, TokenInDoubt
from shared.sandbox.server import SandboxHandle
from shared.stores.local_file import LocalFileTokenStore
from shared.tokens import TokenStatus
from tests.oauth import workers
from tests.oauth.sandbox_support import advance, consent, counters, faults, keeper_for, sandbox_clock


@pytest.fixture
def handle(sandbox_factory: Callable[..., SandboxHandle]) -> SandboxHandle:
    return sandbox_factory(limits=False)


def alerts_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.connection for r in caplog.records if EVENT_NEEDS_REAUTH in r.getMessage()]  # type: ignore[attr-defined]


@pytest.mark.parametrize("fault", ["token_lost_after_rotate", "token_dropped_after_rotate"])
def test_answer_lost_after_rotation_in_doubt_then_needs_reauth(
    handle: SandboxHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    clock = sandbox_clock(handle)
    keeper = keeper_for(handle, clock, tmp_path)
    consent(handle, keeper, clock)
    advance(handle, clock, 580)
    faults(handle, **{fault: 1})
    with pytest.raises(TokenInDoubt):
        keeper.get_access_token("acme")
    record = LocalFileTokenStore(tmp_path / "tokens").load("acme")
    assert record is not None and record.status is TokenStatus.IN_DOUBT
    assert counters(handle)["refreshes"] == 1  # the server did rotate
    advance(handle, clock, 31)
    with caplog.at_level(logging.ERROR, logger="exactsync.alerts"), pytest.raises(NeedsReauth):
        keeper.get_access_token("acme")
    assert alerts_in(caplog) == ["acme"]
    data = counters(handle)
    assert data["refresh_token_reuse"] == 1  # presented once more, exactly once
    record = LocalFileTokenStore(tmp_path / "tokens").load("acme")
    assert record is not None and record.status is TokenStatus.NEEDS_REAUTH
    assert "Old refresh token used" in (record.last_error or "")


def test_5xx_before_rotation_in_doubt_then_ok(handle: SandboxHandle, tmp_path: Path) -> None:
    clock = sandbox_clock(handle)
    keeper = keeper_for(handle, clock, tmp_path)
    consent(handle, keeper, clock)
    advance(handle, clock, 580)
    faults(handle, token_5xx=1)
    with pytest.raises(TokenInDoubt):
        keeper.get_access_token("acme")
    advance(handle, clock, 31)
    keeper.get_access_token("acme")
    data = counters(handle)
    assert data["refreshes"] == 1 and data["refresh_token_reuse"] == 0
    record = LocalFileTokenStore(tmp_path / "tokens").load("acme")
    assert record is not None and record.status is TokenStatus.OK


def worker_config(handle: SandboxHandle, clock: ScaledClock, home: Path) -> dict[str, Any]:
    return {
        "base_url": handle.base_url,
        "client_id": handle.client_id,
        "client_secret": handle.app.client_secret,
        "redirect_uri": handle.redirect_uri,
        "clock": clock.spec(),
        "home": str(home),
        "lock": {"kind": "file"},
        "connection": "acme",
        "lock_timeout": 300,
    }


@pytest.mark.slow
def test_slow_token_answer_no_duplicate_refresh(handle: SandboxHandle, tmp_path: Path) -> None:
    """Four processes need a refresh at the same moment; the token endpoint takes 3 s. One
    refreshes, the others wait on the lock and then use its token."""
    clock = sandbox_clock(handle)
    keeper = keeper_for(handle, clock, tmp_path)
    consent(handle, keeper, clock)
    advance(handle, clock, 580)
    faults(handle, token_latency=3.0)
    cfg = worker_config(handle, clock, tmp_path)
    ctx = multiprocessing.get_context("spawn")
    start = time.time() + 6
    outs = [tmp_path / f"slow-{i}.json" for i in range(4)]
    processes = [ctx.Process(target=workers.one_token, args=(cfg, str(out), start)) for out in outs]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    faults(handle, token_latency=0)
    results = [json.loads(out.read_text()) for out in outs]
    assert all("token" in r for r in results), results
    assert len({r["token"] for r in results}) == 1  # everyone got the one new token
    # one waited for the slow answer, the three others for the lock (then re-read the store)
    assert sum(r["waited"] >= 2.5 for r in results) == 4
    data = counters(handle)
    assert data["refreshes"] == 1 and data["refresh_token_reuse"] == 0 and data["too_early_refreshes"] == 0


def run_and_die(cfg: dict[str, Any], die_on: str) -> int | None:
    process = multiprocessing.get_context("spawn").Process(
        target=workers.refresh_then_die, args=(cfg, die_on)
    )
    process.start()
    process.join(timeout=120)
    return process.exitcode


@pytest.mark.slow
def test_killed_between_token_answer_and_store_write(
    handle: SandboxHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The documented outcome: the answer dies with the process; the store says ``refreshing``;
    once that intent is stale, the next attempt presents the old refresh token once, Exact
    answers "Old refresh token used.", and the connection goes to ``needs_reauth`` with an alert."""
    clock = sandbox_clock(handle)
    keeper = keeper_for(handle, clock, tmp_path)
    consent(handle, keeper, clock)
    advance(handle, clock, 580)
    assert run_and_die(worker_config(handle, clock, tmp_path), "ok") == 17
    store = LocalFileTokenStore(tmp_path / "tokens")
    record = store.load("acme")
    assert record is not None and record.status is TokenStatus.REFRESHING
    assert counters(handle)["refreshes"] == 1  # the server rotated before the process died
    other = keeper_for(handle, clock, tmp_path)
    with pytest.raises(TokenInDoubt, match="another process"):
        other.get_access_token("acme")  # a young intent: its writer might be alive
    assert counters(handle)["refresh_token_reuse"] == 0
    advance(handle, clock, 300)
    with caplog.at_level(logging.ERROR, logger="exactsync.alerts"), pytest.raises(NeedsReauth):
        other.get_access_token("acme")
    assert alerts_in(caplog) == ["acme"]
    assert counters(handle)["refresh_token_reuse"] == 1
    record = store.load("acme")
    assert record is not None and record.status is TokenStatus.NEEDS_REAUTH


@pytest.mark.slow
def test_killed_after_the_intent_before_the_call_loses_nothing(handle: SandboxHandle, tmp_path: Path) -> None:
    clock = sandbox_clock(handle)
    keeper = keeper_for(handle, clock, tmp_path)
    consent(handle, keeper, clock)
    advance(handle, clock, 580)
    assert run_and_die(worker_config(handle, clock, tmp_path), "refreshing") == 17
    assert counters(handle)["refreshes"] == 0
    advance(handle, clock, 300)
    keeper_for(handle, clock, tmp_path).get_access_token("acme")
    data = counters(handle)
    assert data["refreshes"] == 1 and data["refresh_token_reuse"] == 0
    record = LocalFileTokenStore(tmp_path / "tokens").load("acme")
    assert record is not None and record.status is TokenStatus.OK
