"""`exactsync serve` runs the timers and the queue trigger: NCRONTAB schedules, and the whole
local host (timer -> planner -> queue -> load_step -> warehouse) against the sandbox."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.errors import ConfigError
from shared.runtime import install
from shared.serve import host_for
from shared.sync.background import QueueLoop, Schedule, TimerLoop
from tests.sync.support import CONNECTION, assert_equal_to_sandbox, consented_runtime


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 */5 * * * *", "2026-03-01 10:02:07", "2026-03-01 10:05:00"),
        ("0 0 * * * *", "2026-03-01 10:00:00", "2026-03-01 11:00:00"),
        ("30 15 2 * * *", "2026-03-01 10:00:00", "2026-03-02 02:15:30"),
        ("0 0 9 * * 1-5", "2026-03-06 10:00:00", "2026-03-09 09:00:00"),  # Friday -> Monday
        ("0 0 0 1 1 *", "2026-03-01 00:00:00", "2027-01-01 00:00:00"),
        ("0 0 0 29 2 *", "2026-03-01 00:00:00", "2028-02-29 00:00:00"),
        ("*/20 * * * * *", "2026-03-01 10:00:59", "2026-03-01 10:01:00"),
        ("0 0,30 8-9 * * *", "2026-03-01 08:31:00", "2026-03-01 09:00:00"),
    ],
)
def test_ncrontab_next_occurrence(expression: str, after: str, expected: str) -> None:
    assert _iso(Schedule.parse(expression).next_after(_at(after))) == expected


@pytest.mark.parametrize("bad", ["* * * * *", "0 61 * * * *", "0 0 * * * MON", "x * * * * *", "0 0 0 31 2 *"])
def test_bad_schedules_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        Schedule.parse(bad).next_after(0)


def test_serve_runs_the_timer_and_the_queue_trigger(
    sandbox_factory: Callable[..., Any], tmp_path: Path
) -> None:
    sandbox = sandbox_factory()
    runtime = consented_runtime(
        sandbox, tmp_path, SYNC_SCHEDULE="*/2 * * * * *", ROTATE_SCHEDULE="0 0 0 1 1 *"
    )
    host = host_for(runtime, port=0)
    loops = {loop.name: loop for loop in host.loops}
    assert set(loops) == {"rotate_tokens", "schedule_syncs", "load_step"}
    timer, worker = loops["schedule_syncs"], loops["load_step"]
    assert isinstance(timer, TimerLoop) and isinstance(worker, QueueLoop)
    host.start()
    try:
        deadline = time.monotonic() + 60
        while (timer.fired < 1 or worker.processed < 16) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert timer.fired >= 1 and worker.processed >= 16 and worker.failed == 0
        # the HTTP side still answers beside the loops
        answer = httpx.post(f"{host.base_url}/api/sync", json={"entity": "Items"}, timeout=30)
        assert answer.status_code == 202
    finally:
        host.stop()
        install(None)
    divisions = sorted(
        int(d) for d in httpx.get(f"{sandbox.base_url}/_sandbox/", timeout=30).json()["divisions"]
    )
    assert_equal_to_sandbox(runtime, sandbox, divisions)
    assert runtime.token_store.load(CONNECTION) is not None
