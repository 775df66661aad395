"""Backfills larger than a day's budget: they stop at the reserve, say when they resume, leave
the reserve to incremental catch-ups, and finish over the following days."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.exact.catalog import entity
from shared.sync.budget import DAY, RESET_GUARD, backfill_eta, calls_needed, reserve_for, resume_time
from shared.sync.demo import mutate
from shared.sync.queues import MAX_VISIBILITY_SECONDS, EmbeddedQueue
from shared.sync.runner import resume_sync, run_sync
from tests.sync.support import admin, api_calls, assert_equal_to_sandbox, consented_runtime, counters

DIVISION = 1_001_001
DAILY = 30
RESERVE = 10


def test_only_catch_ups_may_spend_the_reserve() -> None:
    assert reserve_for(catch_up=True, configured_reserve=500) == 0
    assert reserve_for(catch_up=False, configured_reserve=500) == 500


def test_resume_times() -> None:
    now = 10 * DAY + 3600.5
    assert resume_time(now, None, daily=True) == 11 * DAY + RESET_GUARD
    assert resume_time(now, 11 * DAY, daily=True) == 11 * DAY + RESET_GUARD
    assert resume_time(now, None, daily=False) == 10 * DAY + 3660 + RESET_GUARD
    assert resume_time(now, now + 30 * DAY, daily=True) == now + MAX_VISIBILITY_SECONDS  # the queue's limit


def test_eta_spreads_the_remaining_calls_over_days_of_limit_minus_reserve() -> None:
    assert calls_needed(0, 1000) == 1 and calls_needed(4_500_001, 1000) == 4501
    # 9,000 calls at 4,500 a day: the rest of tomorrow's budget and one more full day
    eta = backfill_eta(
        remaining_rows=9_000_000, page_size=1000, resumes_at=DAY, daily_limit=5000, reserve=500
    )
    assert eta == DAY + DAY + math.ceil(4500 / 60) * 60
    small = backfill_eta(
        remaining_rows=120_000, page_size=1000, resumes_at=DAY, daily_limit=5000, reserve=500
    )
    assert small == DAY + 120


@pytest.mark.slow
def test_a_backfill_pauses_at_the_reserve_and_finishes_over_the_next_days(
    sandbox_factory: Callable[..., Any], tmp_path: Path
) -> None:
    sandbox = sandbox_factory(divisions=(DIVISION,), row_counts={"TransactionLines": 45_000})
    runtime = consented_runtime(sandbox, tmp_path, DAILY_CALL_RESERVE=str(RESERVE))
    run_sync(runtime, divisions=[DIVISION], entities=["Accounts"], full=True, stream=io.StringIO())
    # A small daily budget, so that 45 pages of transaction lines take three days.
    admin(sandbox, "POST", "limits", json={"daily": DAILY, "reset": True})
    admin(sandbox, "POST", "counters/reset")

    _planned, summary = run_sync(
        runtime, divisions=[DIVISION], entities=["TransactionLines"], full=True, stream=io.StringIO()
    )
    assert not summary.failures and summary.throttled == 0
    assert sum(api_calls(sandbox).values()) == DAILY - RESERVE  # stopped at the reserve, not at zero
    # Both steps of the division wait for tomorrow: the lines and their sync/Deleted stream.
    assert sorted(p.entity for p in summary.pauses) == ["Deleted", "TransactionLines"]
    [pause] = [p for p in summary.pauses if p.entity == "TransactionLines"]
    midnight = (math.floor(sandbox.clock.now() / DAY) + 1) * DAY
    assert pause.rows_loaded == (DAILY - RESERVE) * 1000
    assert pause.resumes_at == pytest.approx(midnight + RESET_GUARD)
    assert pause.rows_per_day == (DAILY - RESERVE) * 1000
    assert pause.eta(45_000 - 20_000) == pytest.approx(midnight + RESET_GUARD + DAY + 60)  # 25 calls: 2 days
    text = summary.render()
    assert "paused" in text and "reserve of 10 calls" in text and "loads up to 20,000 rows a day" in text
    assert "resumes " + time.strftime("%Y-%m-%d 00:00 UTC", time.gmtime(midnight)) in text
    queue = runtime.queue
    assert isinstance(queue, EmbeddedQueue)
    assert queue.stats().next_visible_at == pytest.approx(midnight + RESET_GUARD, abs=1)

    # The reserve is there for catch-ups: an incremental Accounts sync still gets its call.
    mutate(sandbox, DIVISION, "Accounts", update=2)
    _planned, catch_up = run_sync(runtime, divisions=[DIVISION], entities=["Accounts"], stream=io.StringIO())
    assert not catch_up.failures and catch_up.upserted == 2 and not catch_up.pauses

    # Day two and day three: the continuation resumes after each daily reset.
    days = 0
    while queue.stats().total:
        days += 1
        admin(sandbox, "POST", "clock", json={"to": (math.floor(sandbox.clock.now() / DAY) + 1) * DAY + 5})
        resumed = resume_sync(runtime, stream=io.StringIO())
        assert not resumed.failures and resumed.throttled == 0
        assert days <= 3
    assert days == 2
    assert counters(sandbox)["rate_limited_429"] == 0
    assert_equal_to_sandbox(runtime, sandbox, [DIVISION], (entity("TransactionLines"), entity("Accounts")))
