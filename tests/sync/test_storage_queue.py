"""The Storage load queue on Azurite: base64 as the Functions host reads it, delays, poison."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.clock import SystemClock
from shared.settings import Settings
from shared.sync.messages import make_step, parse_step
from shared.sync.queues import StorageQueue, make_queue

pytestmark = pytest.mark.azurite


@pytest.fixture
def settings(azurite: Any, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "EXACTSYNC_HOME": str(tmp_path),
            "EXACT_BASE_URL": "http://127.0.0.1:1",
            "AzureWebJobsStorage": azurite.connection_string,
            "LOAD_QUEUE": f"steps-{uuid.uuid4().hex[:12]}",
        }
    )


@pytest.fixture
def queue(settings: Settings) -> Iterator[StorageQueue]:
    made = make_queue(settings, clock=SystemClock())
    assert isinstance(made, StorageQueue)
    yield made


def _raw_client(settings: Settings, name: str) -> Any:
    """A queue client with no encoding policy: the bytes as they sit in the queue."""
    from azure.storage.queue import QueueClient

    assert settings.storage_connection_string
    return QueueClient.from_connection_string(settings.storage_connection_string, name)


def test_messages_are_base64_text_the_host_decodes_to_the_step(
    queue: StorageQueue, settings: Settings
) -> None:
    step = make_step(connection="acme-nl", division=42, entity="Accounts", mode="full")
    queue.send(step)
    [raw] = list(_raw_client(settings, settings.load_queue).peek_messages(max_messages=1))
    # What the Functions host does with messageEncoding "base64": decode, then hand over bytes.
    decoded = base64.b64decode(raw.content, validate=True)
    assert decoded == step.to_bytes()
    assert parse_step(decoded) == step
    # And our own receive gives back exactly the same bytes.
    delivery = queue.receive(visibility_timeout=30)
    assert delivery is not None and delivery.body == step.to_bytes() and delivery.dequeue_count == 1
    assert queue.complete(delivery) is True
    assert queue.complete(delivery) is False  # gone: a stale receipt is reported, not raised


def test_a_plain_text_writer_is_what_the_pitfall_looks_like(queue: StorageQueue, settings: Settings) -> None:
    """A message sent without the base64 policy is not what the host can decode."""
    step = make_step(connection="acme-nl", division=42, entity="Items")
    assert queue.stats().total == 0  # creates the queue
    _raw_client(settings, settings.load_queue).send_message(step.to_json())
    [raw] = list(_raw_client(settings, settings.load_queue).peek_messages(max_messages=1))
    with pytest.raises(ValueError):
        base64.b64decode(raw.content, validate=True)


def test_a_delayed_message_stays_invisible_until_its_time(queue: StorageQueue) -> None:
    queue.send(make_step(connection="c", division=1, entity="Items"), visibility_timeout=2)
    assert queue.receive(visibility_timeout=30) is None
    deadline = time.monotonic() + 10
    delivery = None
    while delivery is None and time.monotonic() < deadline:
        time.sleep(0.3)
        delivery = queue.receive(visibility_timeout=30)
    assert delivery is not None
    assert queue.stats().total >= 1


def test_abandoned_up_to_the_limit_it_lands_in_the_poison_queue(
    queue: StorageQueue, settings: Settings
) -> None:
    queue.send_text("not a load step")
    for attempt in range(1, 6):
        delivery = None
        deadline = time.monotonic() + 10
        while delivery is None and time.monotonic() < deadline:
            delivery = queue.receive(visibility_timeout=30)
        assert delivery is not None and delivery.dequeue_count == attempt
        queue.abandon(delivery)
    assert queue.receive(visibility_timeout=30) is None
    [poisoned] = queue.poisoned()
    assert poisoned.body == b"not a load step"
    # the poison queue speaks base64 too, like the host's own <queue>-poison
    [raw] = list(_raw_client(settings, f"{settings.load_queue}-poison").peek_messages(max_messages=1))
    assert base64.b64decode(raw.content) == b"not a load step"


def test_a_whole_sync_runs_through_the_storage_queue(
    azurite: Any, sandbox_factory: Any, tmp_path: Path
) -> None:
    """Planner -> Azurite queue (base64) -> loader -> continuations, with blob-lease step locks."""
    import io

    from shared.sync.runner import run_sync
    from tests.sync.support import assert_equal_to_sandbox, consented_runtime

    sandbox = sandbox_factory(row_counts={"TransactionLines": 3000})
    runtime = consented_runtime(
        sandbox,
        tmp_path,
        AzureWebJobsStorage=azurite.connection_string,
        LOAD_QUEUE=f"steps-{uuid.uuid4().hex[:12]}",
        STEP_TIME_BUDGET_SECONDS="10",
    )
    assert isinstance(runtime.queue, StorageQueue)
    planned, summary = run_sync(runtime, full=True, workers=1, stream=io.StringIO())
    assert not summary.failures and summary.steps == len(planned.steps)
    assert_equal_to_sandbox(runtime, sandbox, sorted(planned.divisions["acme"]))
    assert runtime.queue.stats().total == 0
