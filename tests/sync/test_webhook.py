"""Webhooks end to end: the sandbox subscribes our real route (its empty validation POST gets a
200), a change is delivered signed, one incremental step is enqueued and loads the change; a
wrong signature gets 401 and enqueues nothing."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.exact.catalog import entity
from shared.exact.webhooks import sign_content
from shared.runtime import Runtime, install
from shared.serve import LocalHost, functions_of, route_prefix
from shared.settings import LOCAL_WEBHOOK_SECRET
from shared.sync.demo import mutate
from shared.sync.messages import parse_step
from shared.sync.queues import EmbeddedQueue, Queue
from shared.sync.runner import drain, run_sync
from tests.sync.support import CONNECTION, admin, consented_runtime, counters

DIVISION = 1_001_001


@pytest.fixture
def served(sandbox_factory: Callable[..., Any], tmp_path: Path) -> Iterator[tuple[Any, Runtime, LocalHost]]:
    import function_app

    sandbox = sandbox_factory()
    runtime = consented_runtime(sandbox, tmp_path)
    install(runtime)
    host = LocalHost(functions_of(function_app.app), port=0, prefix=route_prefix()).start()
    try:
        yield sandbox, runtime, host
    finally:
        host.stop()
        install(None)


def _subscribe(sandbox: Any, runtime: Runtime, callback: str, topic: str) -> httpx.Response:
    token = runtime.keeper.get_access_token(CONNECTION)
    return httpx.post(
        f"{sandbox.base_url}/api/v1/{DIVISION}/webhooks/WebhookSubscriptions",
        json={"CallbackURL": callback, "Topic": topic},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        timeout=30,
    )


def _queued(queue: Queue, count: int, timeout: float = 15.0) -> list[Any]:
    assert isinstance(queue, EmbeddedQueue)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = queue.peek_all()
        if len(waiting) >= count:
            return [parse_step(body) for body, _visible, _count in waiting]
        time.sleep(0.05)
    raise AssertionError(f"expected {count} queued step(s), found {len(queue.peek_all())}")


def test_a_signed_delivery_enqueues_one_incremental_step_that_loads_the_change(
    served: tuple[Any, Runtime, LocalHost],
) -> None:
    sandbox, runtime, host = served
    run_sync(runtime, divisions=[DIVISION], workers=1, stream=io.StringIO())
    queue = runtime.queue
    assert isinstance(queue, EmbeddedQueue) and queue.stats().total == 0

    callback = f"{host.base_url}/api/webhooks/exact?connection={CONNECTION}"
    answer = _subscribe(sandbox, runtime, callback, "Accounts")
    assert answer.status_code in (200, 201), answer.text  # our route answered the empty POST with 2xx
    assert counters(sandbox)["webhook_validations"] == 1
    assert queue.stats().total == 0  # the validation POST enqueues nothing

    changed = mutate(sandbox, DIVISION, "Accounts", update=1)["updated"]
    [step] = _queued(queue, 1)
    assert (step.connection, step.division, step.entity, step.mode) == (
        CONNECTION,
        DIVISION,
        "Accounts",
        "incremental",
    )
    assert step.cursor is None

    summary = drain(runtime, divisions=[DIVISION])
    assert not summary.failures and summary.calls == 1
    stored = {r["ID"]: r for r in runtime.warehouse.read_rows(entity("Accounts"), DIVISION)}
    dumped = admin(sandbox, "GET", "dump", params={"division": DIVISION, "entity": "Accounts"})["rows"]
    [fresh] = [row for row in dumped if row["ID"] == changed[0]]
    assert stored[changed[0]]["Timestamp"] == int(fresh["Timestamp"])

    # A deletion also brings the division's sync/Deleted step.
    mutate(sandbox, DIVISION, "Accounts", delete=1)
    steps = _queued(queue, 2)
    assert sorted(s.entity for s in steps) == ["Accounts", "Deleted"]


def test_a_wrong_signature_gets_401_and_enqueues_nothing(served: tuple[Any, Runtime, LocalHost]) -> None:
    _sandbox, runtime, host = served
    url = f"{host.base_url}/api/webhooks/exact"
    content = json.dumps(
        {"Topic": "Accounts", "ClientId": "x", "Division": DIVISION, "Action": "Update",
         "Key": "3fa85f64-5717-4562-b3fc-2c963f66afa6"}
    )  # fmt: skip
    forged = sign_content(content.encode(), "not-the-webhook-secret")
    answer = httpx.post(url, content=f'{{"Content":{content},"HashCode":"{forged}"}}', timeout=30)
    assert answer.status_code == 401
    assert LOCAL_WEBHOOK_SECRET not in answer.text
    # tampered content under a genuine signature of other content
    genuine = sign_content(content.encode(), LOCAL_WEBHOOK_SECRET)
    tampered = content.replace("Update", "Delete")
    answer = httpx.post(url, content=f'{{"Content":{tampered},"HashCode":"{genuine}"}}', timeout=30)
    assert answer.status_code == 401
    assert httpx.post(url, content=b'{"Content": 5}', timeout=30).status_code == 400
    assert runtime.queue.stats().total == 0

    # the same delivery correctly signed is accepted (the check above was the signature)
    answer = httpx.post(url, content=f'{{"Content":{content},"HashCode":"{genuine}"}}', timeout=30)
    assert answer.status_code == 200 and answer.json()["enqueued"] == 1
    assert runtime.queue.stats().total == 1


def test_the_validation_post_and_unsynced_topics_get_200(served: tuple[Any, Runtime, LocalHost]) -> None:
    _sandbox, runtime, host = served
    url = f"{host.base_url}/api/webhooks/exact"
    assert httpx.post(url, content=b"", timeout=30).status_code == 200
    content = json.dumps(
        {"Topic": "Quotations", "ClientId": "x", "Division": DIVISION, "Action": "Update",
         "Key": "3fa85f64-5717-4562-b3fc-2c963f66afa6"}
    )  # fmt: skip
    signed = sign_content(content.encode(), LOCAL_WEBHOOK_SECRET)
    answer = httpx.post(url, content=f'{{"Content":{content},"HashCode":"{signed}"}}', timeout=30)
    assert (
        answer.status_code == 200
        and answer.json()["enqueued"] == 0
        and "not synced" in answer.json()["ignored"]
    )
    assert runtime.queue.stats().total == 0


def test_a_burst_of_deliveries_costs_one_call(served: tuple[Any, Runtime, LocalHost]) -> None:
    """Ten deliveries for one entity: the first step reads the changes, the rest see that a read
    started after they were requested already reached the end and make no call."""
    sandbox, runtime, host = served
    run_sync(runtime, divisions=[DIVISION], workers=1, stream=io.StringIO())
    assert _subscribe(sandbox, runtime, f"{host.base_url}/api/webhooks/exact", "Items").status_code in (
        200,
        201,
    )
    for _ in range(10):
        mutate(sandbox, DIVISION, "Items", update=1)
    _queued(runtime.queue, 10)
    sandbox.clock.advance(10)  # the burst lies in the past when the steps run
    admin(sandbox, "POST", "counters/reset")
    summary = drain(runtime, divisions=[DIVISION])
    assert not summary.failures and summary.steps == 10
    assert counters(sandbox)["api_calls"] == {f"{DIVISION} sync/Logistics/Items": 1}
