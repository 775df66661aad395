"""RATE LIMITS: a 200,000-row backfill under the sandbox's real limits (60 calls a calendar
minute, time-scaled) earns no 429 and keeps the minute's ceiling busy."""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.exact.catalog import entity
from shared.sync.loader import PageEvent
from shared.sync.runner import run_sync
from tests.sync.support import admin, consented_runtime, counters

ROWS = 200_000
DIVISION = 1_001_001
#: simulated seconds per real second: a minute of Exact's budget passes in 10 s (room for a busy machine)
SCALE = 6.0


@pytest.mark.slow
def test_a_200k_backfill_earns_no_429_and_keeps_the_minute_busy(
    sandbox_factory: Callable[..., Any], tmp_path: Path
) -> None:
    sandbox = sandbox_factory(time_scale=SCALE, divisions=(DIVISION,), row_counts={"TransactionLines": ROWS})
    runtime = consented_runtime(sandbox, tmp_path)
    admin(sandbox, "POST", "counters/reset")
    now = sandbox.clock.now()
    admin(sandbox, "POST", "clock", json={"to": math.floor(now / 60) * 60 + 60.5})  # start on a fresh minute

    calls_at: list[float] = []

    def seen(event: PageEvent) -> None:
        if event.step.entity == "TransactionLines":
            calls_at.extend([event.at] * event.calls)

    _planned, summary = run_sync(
        runtime,
        divisions=[DIVISION],
        entities=["TransactionLines"],
        full=True,
        workers=1,
        processes=True,  # the loader in its own process, as in Azure: the sandbox keeps this one
        stream=io.StringIO(),
        on_page=seen,
    )
    assert not summary.failures
    assert counters(sandbox)["rate_limited_429"] == 0
    assert summary.throttled == 0
    assert len(runtime.warehouse.read_rows(entity("TransactionLines"), DIVISION)) == ROWS

    per_minute = Counter(int(at // 60) for at in calls_at)
    minutes = sorted(per_minute)
    assert sum(per_minute.values()) >= ROWS // 1000
    # Every calendar minute between the first and the last is (nearly) full: the budget is used,
    # not rationed, and the hand-over at each minute's end costs little.
    inner = [per_minute[m] for m in range(minutes[0], minutes[-1])]
    assert all(count <= 60 for count in per_minute.values()), per_minute
    busy = sum(inner) / (60 * len(inner))
    assert busy >= 0.9, (busy, per_minute)
    assert len(minutes) <= math.ceil(len(calls_at) / 60) + 1
