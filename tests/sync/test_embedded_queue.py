"""The embedded load queue: at-least-once delivery across processes, visibility, poison."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from shared.clock import ScaledClock
from shared.sync.messages import make_step, parse_step
from shared.sync.queues import MAX_VISIBILITY_SECONDS, EmbeddedQueue


def _queue(tmp_path: Path, clock: ScaledClock | None = None) -> EmbeddedQueue:
    return EmbeddedQueue(tmp_path / "queue.sqlite3", "load-steps", clock=clock or ScaledClock.starting_now())


def _step(division: int = 1, entity: str = "Accounts") -> bytes:
    return make_step(connection="c", division=division, entity=entity, run_id=f"r{division}").to_bytes()


def test_a_received_message_is_hidden_until_its_visibility_runs_out(tmp_path: Path) -> None:
    clock = ScaledClock.starting_now()
    queue = _queue(tmp_path, clock)
    queue.send(parse_step(_step()))
    first = queue.receive(visibility_timeout=30)
    assert first is not None and first.dequeue_count == 1
    assert parse_step(first.body).division == 1
    assert queue.receive(visibility_timeout=30) is None
    assert queue.stats().in_flight == 1
    clock.advance(31)
    second = queue.receive(visibility_timeout=30)
    assert second is not None and second.id == first.id and second.dequeue_count == 2
    # the first receiver lost the message: its receipt no longer completes it
    assert queue.complete(first) is False
    assert queue.complete(second) is True
    assert queue.stats().total == 0


def test_a_delayed_message_appears_at_its_time(tmp_path: Path) -> None:
    clock = ScaledClock.starting_now()
    queue = _queue(tmp_path, clock)
    queue.send(parse_step(_step()), visibility_timeout=60)
    stats = queue.stats()
    assert (stats.visible, stats.delayed) == (0, 1)
    assert stats.next_visible_at == pytest.approx(clock.now() + 60, abs=1)
    assert queue.receive(visibility_timeout=5) is None
    clock.advance(61)
    assert queue.receive(visibility_timeout=5) is not None


def test_delays_are_capped_at_seven_days(tmp_path: Path) -> None:
    clock = ScaledClock.starting_now()
    queue = _queue(tmp_path, clock)
    queue.send(parse_step(_step()), visibility_timeout=30 * 86_400)
    assert queue.stats().next_visible_at == pytest.approx(clock.now() + MAX_VISIBILITY_SECONDS, abs=1)


def test_abandoned_five_times_it_moves_to_the_poison_table(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    queue.send_text("not a load step")
    for attempt in range(1, 6):
        delivery = queue.receive(visibility_timeout=30)
        assert delivery is not None and delivery.dequeue_count == attempt
        queue.abandon(delivery)
    assert queue.receive(visibility_timeout=30) is None
    [poisoned] = queue.poisoned()
    assert poisoned.body == b"not a load step" and poisoned.dequeue_count == 5
    assert queue.stats().poisoned == 1 and queue.stats().total == 0


def test_a_message_whose_receivers_all_died_is_poisoned_not_delivered_a_sixth_time(tmp_path: Path) -> None:
    clock = ScaledClock.starting_now()
    queue = _queue(tmp_path, clock)
    queue.send(parse_step(_step()))
    for _ in range(5):
        assert queue.receive(visibility_timeout=10) is not None  # never completed
        clock.advance(11)
    assert queue.receive(visibility_timeout=10) is None
    assert len(queue.poisoned()) == 1


def test_divisions_route_to_their_worker(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    for division in (1, 2, 3):
        queue.send(parse_step(_step(division)))
    queue.send_text("raw")  # no known division: whoever asks
    got = queue.receive(visibility_timeout=30, divisions=[2])
    assert got is not None and parse_step(got.body).division == 2
    assert queue.stats(divisions=[2]).visible == 1  # the raw one
    assert queue.stats(divisions=[1, 3]).visible == 3
    assert queue.receive(visibility_timeout=30, divisions=[]) is None


def _drain(path: str, out: multiprocessing.Queue[tuple[int, str, int]], go: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    queue = EmbeddedQueue(Path(path), "load-steps")
    go.wait(30)  # type: ignore[attr-defined]
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 1.0:
        delivery = queue.receive(visibility_timeout=120)
        if delivery is None:
            time.sleep(0.01)
            continue
        idle_since = time.monotonic()
        out.put((os.getpid(), parse_step(delivery.body).run_id, delivery.dequeue_count))
        time.sleep(0.002)  # some work, so that the others get their turn
        assert queue.complete(delivery)


@pytest.mark.slow
def test_worker_processes_share_the_queue_and_each_message_is_delivered_once(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    sent = set()
    for n in range(300):
        step = make_step(connection="c", division=1 + n % 4, entity="Items", run_id=f"m{n}")
        queue.send(step)
        sent.add(step.run_id)
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[tuple[int, str, int]] = ctx.Queue()
    go = ctx.Event()
    workers = [ctx.Process(target=_drain, args=(str(queue.path), results, go)) for _ in range(3)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # let every worker reach the start line
    go.set()
    seen: list[tuple[int, str, int]] = []
    deadline = time.monotonic() + 60
    while len(seen) < len(sent) and time.monotonic() < deadline:
        try:
            seen.append(results.get(timeout=1))
        except Exception:  # queue.Empty
            continue
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    run_ids = [run_id for _pid, run_id, _count in seen]
    assert sorted(run_ids) == sorted(sent)  # every message once, none twice
    assert {count for *_rest, count in seen} == {1}
    assert len({pid for pid, *_rest in seen}) > 1  # really shared between processes
    assert queue.stats().total == 0


def _hold_and_hang(path: str, ready: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    queue = EmbeddedQueue(Path(path), "load-steps")
    assert queue.receive(visibility_timeout=3600) is not None
    ready.set()  # type: ignore[attr-defined]
    time.sleep(600)


def test_a_killed_workers_message_is_reclaimed_not_lost(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    queue.send(parse_step(_step()))
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    worker = ctx.Process(target=_hold_and_hang, args=(str(queue.path), ready))
    worker.start()
    assert ready.wait(30)
    assert queue.receive(visibility_timeout=30) is None  # held for an hour
    assert queue.reclaim_orphans() == 0  # its holder is alive
    os.kill(worker.pid or 0, signal.SIGKILL)
    worker.join(10)
    assert queue.reclaim_orphans() == 1
    delivery = queue.receive(visibility_timeout=30)
    assert delivery is not None and delivery.dequeue_count == 2
