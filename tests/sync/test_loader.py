"""The loader's rules, each against the sandbox over real HTTP with SQLite and the embedded queue:
rejection of malformed messages, one step per key, hand-overs, failures and redeliveries."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.exact.catalog import entity
from shared.runtime import Runtime, install
from shared.settings import LOCAL_CLIENT_SECRET
from shared.sync.loader import (
    BUSY_DELAY_SECONDS,
    LoadContext,
    run_message,
    run_step,
    run_step_message,
    step_lock_name,
)
from shared.sync.messages import StepCursor, make_step, parse_step
from shared.sync.queues import EmbeddedQueue
from shared.warehouse.sqlite import SqliteWarehouse
from tests.sync.support import (
    CONNECTION,
    admin,
    api_calls,
    consented_runtime,
    fresh_minute,
    live_rows,
    warehouse_rows,
)

DIVISION = 1_001_001


def _queue(runtime: Runtime) -> EmbeddedQueue:
    queue = runtime.queue
    assert isinstance(queue, EmbeddedQueue)
    return queue


def _failed(runtime: Runtime) -> list[Any]:
    warehouse = runtime.warehouse
    assert isinstance(warehouse, SqliteWarehouse)
    return warehouse.read_failed_steps()


def _step(name: str = "TransactionLines", **kwargs: Any) -> Any:
    kwargs.setdefault("mode", "full")
    return make_step(connection=CONNECTION, division=DIVISION, entity=name, **kwargs)


@pytest.fixture
def runtime(sandbox_factory: Callable[..., Any], tmp_path: Path) -> Runtime:
    sandbox = sandbox_factory(time_scale=20.0, row_counts={"TransactionLines": 4500})
    rt = consented_runtime(sandbox, tmp_path, STEP_TIME_BUDGET_SECONDS="10")
    rt.sandbox = sandbox  # type: ignore[attr-defined]
    return rt


def test_a_malformed_message_is_recorded_and_not_retried(runtime: Runtime) -> None:
    body = json.dumps({"schema_version": 1, "refresh_token": "rt-123", "note": LOCAL_CLIENT_SECRET}).encode()
    report = run_step_message(runtime, body, dequeue_count=1)
    assert report.outcome == "rejected" and "unknown field(s): 'note', 'refresh_token'" in (
        report.reason or ""
    )
    [failed] = _failed(runtime)
    assert failed.reason.startswith("rejected: unknown field(s)")
    assert "rt-123" not in failed.message and LOCAL_CLIENT_SECRET not in failed.message
    assert _queue(runtime).stats().total == 0  # nothing re-enqueued


def test_the_queue_trigger_completes_a_malformed_message_and_runs_a_good_one(runtime: Runtime) -> None:
    """function_app.load_step, called as the host calls it (the host decodes base64 first)."""
    from azure.functions.queue import QueueMessage

    import function_app

    install(runtime)
    try:
        function_app.load_step(QueueMessage(body=b"\x00not json", dequeue_count=1))  # type: ignore[no-untyped-call]
        assert "rejected" in _failed(runtime)[0].reason
        step = _step("Items", mode="incremental")
        function_app.load_step(QueueMessage(body=step.to_bytes(), dequeue_count=1))  # type: ignore[no-untyped-call]
    finally:
        install(None)
    sandbox = runtime.sandbox  # type: ignore[attr-defined]
    assert warehouse_rows(runtime, DIVISION, entity("Items")) == live_rows(sandbox, DIVISION, entity("Items"))


def test_a_step_whose_key_is_busy_comes_back_later(runtime: Runtime) -> None:
    step = _step()
    ctx = LoadContext.from_runtime(runtime)
    with runtime.lock.hold(step_lock_name(step.connection, step.division, step.entity), timeout=5):
        report = run_step(ctx, step)
    assert report.outcome == "busy" and report.calls == 0
    stats = _queue(runtime).stats()
    assert (stats.visible, stats.delayed) == (0, 1)
    assert stats.next_visible_at == pytest.approx(runtime.clock.now() + BUSY_DELAY_SECONDS, abs=2)
    assert parse_step(_queue(runtime).peek_all()[0][0]) == step


def test_the_time_budget_hands_over_to_a_continuation(runtime: Runtime) -> None:
    sandbox = runtime.sandbox  # type: ignore[attr-defined]
    admin(sandbox, "POST", "limits", json={"enabled": False})
    admin(sandbox, "POST", "faults", json={"api_latency": 0.3})  # 6 s of the sandbox clock a page
    step = _step()
    report = run_step(LoadContext.from_runtime(runtime), step)
    assert report.outcome == "continued" and report.reason == "step time budget spent"
    assert 1 <= report.pages < 5
    [(body, _visible, _count)] = _queue(runtime).peek_all()
    continuation = parse_step(body)
    assert continuation.run_id == step.run_id and continuation.cursor is not None
    stored = runtime.warehouse.read_cursor(CONNECTION, DIVISION, "TransactionLines")
    assert stored is not None and not stored.complete
    assert continuation.cursor == StepCursor(stored.timestamp, stored.next_url)


def test_a_spent_minute_hands_over_to_the_minutes_reset(runtime: Runtime) -> None:
    sandbox = runtime.sandbox  # type: ignore[attr-defined]
    admin(sandbox, "POST", "limits", json={"minutely": 2})
    reset = fresh_minute(sandbox) + 60
    report = run_step(LoadContext.from_runtime(runtime), _step())
    assert report.outcome == "continued" and "minutely" in (report.reason or "")
    assert report.calls == 2 and report.pages == 2 and report.throttled == 0
    stats = _queue(runtime).stats()
    assert stats.delayed == 1 and reset <= (stats.next_visible_at or 0) <= reset + 3


def test_a_4xx_is_recorded_and_not_retried(runtime: Runtime) -> None:
    sandbox = runtime.sandbox  # type: ignore[attr-defined]
    admin(sandbox, "POST", "config", json={"scope_violation_endpoints": ["sync/Financial/"]})
    admin(sandbox, "POST", "counters/reset")
    report = run_step_message(runtime, _step().to_bytes(), dequeue_count=1)
    assert report.outcome == "failed" and "403" in (report.reason or "")
    assert api_calls(sandbox) == {f"{DIVISION} sync/Financial/TransactionLines": 1}
    assert "HTTP 403" in _failed(runtime)[0].reason
    assert _queue(runtime).stats().total == 0


def test_a_connection_without_consent_is_recorded_and_stopped(runtime: Runtime) -> None:
    step = make_step(connection="ghost", division=DIVISION, entity="Accounts")
    report = run_step_message(runtime, step.to_bytes(), dequeue_count=1)
    assert report.outcome == "failed" and "needs a new consent" in (report.reason or "")
    assert "ghost" in _failed(runtime)[0].reason
    assert _queue(runtime).stats().total == 0


def test_server_errors_are_retried_by_the_host_and_recorded_on_the_last_attempt(runtime: Runtime) -> None:
    sandbox = runtime.sandbox  # type: ignore[attr-defined]
    admin(sandbox, "POST", "faults", json={"api_5xx": 100})
    body = _step("Items").to_bytes()
    with pytest.raises(Exception, match="503"):
        run_step_message(runtime, body, dequeue_count=1)
    assert _failed(runtime) == []  # not yet: the host will deliver it again
    with pytest.raises(Exception, match="503"):
        run_step_message(runtime, body, dequeue_count=5)
    assert "gave up after 5 attempts" in _failed(runtime)[0].reason


def test_redelivered_and_duplicated_messages_change_nothing(runtime: Runtime) -> None:
    sandbox = runtime.sandbox  # type: ignore[attr-defined]
    ctx = LoadContext.from_runtime(runtime)
    step = _step("Accounts")
    assert run_step(ctx, step).outcome == "done"
    admin(sandbox, "POST", "counters/reset")
    # the same first step delivered again: it continues from the stored cursor (nothing new)
    again = run_message(ctx, step.to_bytes())
    assert (again.outcome, again.calls, again.rows) == ("done", 1, 0)
    # a stale continuation of that run: nothing to do, no call
    late = run_step(ctx, step.continued(StepCursor(timestamp=5)))
    assert late.outcome == "current" and late.calls == 0
    # a continuation of a run another run took over
    other = make_step(connection=CONNECTION, division=DIVISION, entity="TransactionLines", mode="full")
    admin(sandbox, "POST", "limits", json={"minutely": 1})
    fresh_minute(sandbox)  # a minute with one call in it
    first = run_step(ctx, other)
    assert first.outcome == "continued" and first.pages == 1
    fresh_minute(sandbox)
    takeover = run_step(ctx, make_step(connection=CONNECTION, division=DIVISION, entity="TransactionLines"))
    assert takeover.outcome == "continued" and takeover.pages == 1
    orphan = run_step(ctx, other.continued(StepCursor(timestamp=1)))
    assert orphan.outcome == "current" and "taken this load over" in (orphan.reason or "")
    assert warehouse_rows(runtime, DIVISION, entity("Accounts")) == live_rows(
        sandbox, DIVISION, entity("Accounts")
    )


def test_a_blocked_endpoint_is_left_alone_for_an_hour(runtime: Runtime) -> None:
    import httpx

    sandbox = runtime.sandbox  # type: ignore[attr-defined]
    token = runtime.keeper.get_access_token(CONNECTION)
    url = f"{sandbox.base_url}/api/v1/{DIVISION}/sync/Financial/TransactionLines"
    with httpx.Client(headers={"Accept": "application/json", "Authorization": f"Bearer {token}"}) as http:
        for _ in range(10):  # ten 400s: Exact blocks the endpoint for an hour
            assert http.get(url, params={"$select": "NoSuchField"}).status_code == 400
    now = runtime.clock.now()
    report = run_step(LoadContext.from_runtime(runtime), _step())
    assert report.outcome == "continued" and report.pages == 0
    assert report.continue_at is not None and report.continue_at >= now + 3600
    stats = _queue(runtime).stats()
    assert stats.delayed == 1 and (stats.next_visible_at or 0) >= now + 3600
