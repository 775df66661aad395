"""Local runs: drain the load queue to completion, in-process or with one worker per division.

``exactsync sync`` and ``exactsync demo`` enqueue a plan and then do what the Functions host
does in Azure: receive a message, run ``loader.run_message``, complete it (or abandon it for a
retry when it raised). Continuations go through the same queue, so a local sync exercises the
exact message path production uses.

Parallelism: divisions have separate rate budgets, so each worker process owns a set of
divisions (the embedded queue routes messages by division; a Storage queue cannot, and then
the step locks keep two workers off one key). One division, or ``--workers 1``, runs in this
process. Workers build their own ``Runtime`` from the settings and the clock's anchors.

A worker stops when nothing for its divisions is visible and nothing becomes visible within
``horizon`` seconds: a minute's rate-limit reset is waited for, a backfill paused until
tomorrow's budget is not (its continuation stays queued for the next run or ``exactsync
serve``; the summary says when it resumes).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from shared.clock import Clock, ScaledClock, clock_scale
from shared.sync.budget import BackfillPause
from shared.sync.loader import (
    LoadContext,
    Outcome,
    PageEvent,
    StepCounts,
    StepReport,
    run_message,
    step_lease,
)
from shared.sync.messages import LoadStep, Mode, parse_step
from shared.sync.queues import MAX_DEQUEUE_COUNT, RETRY_VISIBILITY_SECONDS, EmbeddedQueue, Queue

if TYPE_CHECKING:
    from shared.runtime import Runtime
    from shared.settings import Settings
    from shared.sync.planner import Plan

log = logging.getLogger("exactsync.runner")

#: How far ahead (clock seconds) a worker waits for delayed messages before it stops.
DEFAULT_HORIZON = 120.0
#: Longest real sleep between queue polls (also bounds reaction time on a Storage queue).
MAX_POLL = 1.0


@dataclass
class EntityTotals(StepCounts):
    done: bool = False


@dataclass
class SyncSummary(StepCounts):
    steps: int = 0
    elapsed: float = 0.0
    failures: list[str] = field(default_factory=list)
    pauses: list[BackfillPause] = field(default_factory=list)
    per_entity: dict[tuple[int, str], EntityTotals] = field(default_factory=dict)
    #: messages still queued for later (paused backfills), by when they resume
    deferred: int = 0

    def add(self, report: StepReport) -> None:
        self.steps += 1
        self.add_counts(report)
        if report.outcome == "continued" and report.reason and "minutely" in report.reason:
            self.rate_waits += 1
            self.rate_wait_seconds += report.handover_wait
        if report.step is not None:
            totals = self.per_entity.setdefault((report.step.division, report.step.entity), EntityTotals())
            totals.add_counts(report)
            totals.done = totals.done or report.outcome in ("done", "current")
        if report.outcome in ("failed", "rejected"):
            self.failures.append(report.describe())
        if report.pause is not None:
            self.pauses = [
                p
                for p in self.pauses
                if (p.division, p.entity) != (report.pause.division, report.pause.entity)
            ]
            self.pauses.append(report.pause)

    def render(self) -> str:
        lines = [
            f"synced {self.rows:,} rows ({self.upserted:,} written, {self.deleted:,} deleted, "
            f"{self.skipped_stale:,} already current) in {self.pages:,} pages and {self.steps:,} steps",
            f"  {self.calls:,} API calls, {self.rate_waits:,} rate-limit waits ({self.rate_wait_seconds:.1f} s), "
            f"{self.throttled} x 429, {self.elapsed:.1f} s",
        ]
        for pause in self.pauses:
            lines.append(f"  paused: {pause.describe()}")
        for failure in self.failures:
            lines.append(f"  FAILED: {failure}")
        return "\n".join(lines)


# --- progress on stderr ----------------------------------------------------------------------


class Progress:
    """One bar per division: entities finished out of planned, rows and calls so far."""

    def __init__(self, stream: TextIO | None, planned: dict[int, list[str]]) -> None:
        self.stream = stream
        self.planned = planned
        self.rows: dict[int, int] = dict.fromkeys(planned, 0)
        self.calls: dict[int, int] = dict.fromkeys(planned, 0)
        self.finished: dict[int, set[str]] = {d: set() for d in planned}
        self.current: dict[int, str] = {}
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self._drawn = 0
        self._last = 0.0

    def page(self, event: PageEvent) -> None:
        division = event.step.division
        self.rows[division] = self.rows.get(division, 0) + event.rows
        self.calls[division] = self.calls.get(division, 0) + event.calls
        self.current[division] = event.step.entity
        if event.complete:
            self.finished.setdefault(division, set()).add(event.step.entity)
        self.draw()

    def step(self, report: StepReport) -> None:
        if report.step is not None and report.outcome in ("done", "current", "failed"):
            self.finished.setdefault(report.step.division, set()).add(report.step.entity)
            if not self.tty and self.stream is not None:
                self.stream.write(
                    f"  division {report.step.division} {report.step.entity}: {report.outcome}, "
                    f"{report.rows:,} rows\n"
                )
        self.draw()

    def _bar(self, division: int) -> str:
        total = max(1, len(self.planned.get(division, [])))
        done = min(total, len(self.finished.get(division, set()) & set(self.planned.get(division, []))))
        width = 24
        filled = int(width * done / total)
        busy = self.current.get(division, "")
        return (
            f"division {division:<10} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} entities "
            f"{self.rows.get(division, 0):>10,} rows {self.calls.get(division, 0):>6,} calls  {busy}"
        )

    def draw(self, force: bool = False) -> None:
        if not self.tty or self.stream is None:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F")
        for division in self.planned:
            self.stream.write("\x1b[2K" + self._bar(division) + "\n")
        self._drawn = len(self.planned)
        self.stream.flush()

    def close(self) -> None:
        self.draw(force=True)


# --- the worker loop ---------------------------------------------------------------------------


def work(
    ctx: LoadContext,
    queue: Queue,
    *,
    divisions: Sequence[int] | None,
    horizon: float,
    on_report: Callable[[StepReport], None],
) -> None:
    """Receive and run steps until nothing for ``divisions`` is due within ``horizon``."""
    clock = ctx.clock
    lease = step_lease(ctx.settings)
    idle_since = time.monotonic()
    while True:
        delivery = queue.receive(visibility_timeout=lease, divisions=divisions)
        if delivery is None:
            stats = queue.stats(divisions=divisions)
            now = clock.now()
            if stats.visible:
                continue
            longest_sleep = MAX_POLL * clock_scale(clock)
            if isinstance(queue, EmbeddedQueue):
                if stats.next_visible_at is None or stats.next_visible_at - now > horizon:
                    return
                wait = stats.next_visible_at - now
            else:
                # Storage cannot tell when delayed messages appear: poll, up to the horizon.
                if stats.total == 0 or (time.monotonic() - idle_since) * clock_scale(clock) > horizon:
                    return
                wait = longest_sleep
            clock.sleep(max(0.0, min(wait, longest_sleep)) + 0.001)
            continue
        idle_since = time.monotonic()
        try:
            report = run_message(ctx, delivery.body, dequeue_count=delivery.dequeue_count)
        except Exception as exc:  # the host's behaviour: the message comes back later
            log.warning("step failed, will be retried: %s", exc)
            queue.abandon(delivery, visibility_timeout=RETRY_VISIBILITY_SECONDS)
            step = _step_or_none(delivery.body)
            outcome: Outcome = "failed" if delivery.dequeue_count >= MAX_DEQUEUE_COUNT else "continued"
            on_report(StepReport(step, outcome, reason=str(exc)))
            continue
        queue.complete(delivery)
        on_report(report)


def _step_or_none(body: bytes) -> LoadStep | None:
    try:
        return parse_step(body)
    except Exception:
        return None


# --- worker processes ------------------------------------------------------------------------


def _worker_main(
    *,
    settings: Settings,
    clock_spec: dict[str, float] | None,
    divisions: list[int],
    horizon: float,
    events: Any,
    log_level: int,
) -> None:
    """Entry point of a worker process (spawned: it builds its own runtime)."""
    from shared.clock import SystemClock
    from shared.runtime import Runtime, install

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    clock: Clock = ScaledClock.from_spec(clock_spec) if clock_spec else SystemClock()
    runtime = Runtime(settings=settings, clock=clock)
    install(runtime)
    ctx = LoadContext.from_runtime(runtime, on_page=lambda event: events.put(("page", event)))
    try:
        work(
            ctx,
            runtime.queue,
            divisions=divisions,
            horizon=horizon,
            on_report=lambda report: events.put(("step", report)),
        )
    finally:
        events.put(("exit", os.getpid()))


def _clock_spec(clock: Clock) -> dict[str, float] | None:
    return clock.spec() if isinstance(clock, ScaledClock) else None


def drain(
    runtime: Runtime,
    *,
    divisions: Sequence[int] | None,
    workers: int = 1,
    horizon: float = DEFAULT_HORIZON,
    progress: Progress | None = None,
    summary: SyncSummary | None = None,
    processes: bool | None = None,
    on_page: Callable[[PageEvent], None] | None = None,
) -> SyncSummary:
    """Run queued steps until none is due within ``horizon``; returns what they did.

    ``processes``: run the steps in worker processes (default: when there are several
    divisions and ``workers`` > 1); False runs them in this process.
    """
    summary = summary or SyncSummary()
    started = time.perf_counter()
    queue = runtime.queue
    if isinstance(queue, EmbeddedQueue):
        reclaimed = queue.reclaim_orphans()
        if reclaimed:
            log.warning("%d step(s) held by ended processes are queued again", reclaimed)

    def on_report(report: StepReport) -> None:
        summary.add(report)
        if progress is not None:
            progress.step(report)

    def page_seen(event: PageEvent) -> None:
        if progress is not None:
            progress.page(event)
        if on_page is not None:
            on_page(event)

    chosen = list(divisions) if divisions else None
    if processes is None:
        processes = workers > 1 and chosen is not None and len(chosen) > 1
    if not processes or chosen is None:
        ctx = LoadContext.from_runtime(runtime, on_page=page_seen)
        work(ctx, queue, divisions=chosen, horizon=horizon, on_report=on_report)
    else:
        _drain_in_processes(
            runtime,
            divisions=chosen,
            workers=workers,
            horizon=horizon,
            on_report=on_report,
            on_page=page_seen,
        )
    stats = queue.stats(divisions=chosen)
    summary.deferred = stats.total
    summary.elapsed += time.perf_counter() - started
    if progress is not None:
        progress.close()
    return summary


def _drain_in_processes(
    runtime: Runtime,
    *,
    divisions: list[int],
    workers: int,
    horizon: float,
    on_report: Callable[[StepReport], None],
    on_page: Callable[[PageEvent], None],
) -> None:
    import queue as queue_module

    count = min(workers, len(divisions))
    shares = [divisions[i::count] for i in range(count)]
    ctx = multiprocessing.get_context("spawn")
    events: Any = ctx.Queue()
    level = logging.getLogger().getEffectiveLevel()
    processes = [
        ctx.Process(
            target=_worker_main,
            kwargs={
                "settings": runtime.settings,
                "clock_spec": _clock_spec(runtime.clock),
                "divisions": share,
                "horizon": horizon,
                "events": events,
                "log_level": level,
            },
            name=f"exactsync-worker-{i}",
        )
        for i, share in enumerate(shares)
    ]
    for process in processes:
        process.start()
    running = {p.pid for p in processes}
    try:
        while running:
            try:
                kind, payload = events.get(timeout=0.5)
            except queue_module.Empty:
                for process in processes:
                    if process.pid in running and process.exitcode is not None:
                        running.discard(process.pid)  # died without saying goodbye
                continue
            if kind == "page":
                on_page(payload)
            elif kind == "step":
                on_report(payload)
            elif kind == "exit":
                running.discard(payload)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)


# --- a whole sync --------------------------------------------------------------------------------


def run_sync(
    runtime: Runtime,
    *,
    connections: Sequence[str] | None = None,
    divisions: Sequence[int] | None = None,
    entities: Sequence[str] | None = None,
    full: bool = False,
    workers: int | None = None,
    horizon: float = DEFAULT_HORIZON,
    stream: TextIO | None = None,
    processes: bool | None = None,
    on_page: Callable[[PageEvent], None] | None = None,
) -> tuple[Plan, SyncSummary]:
    """Plan, enqueue and run a sync to completion; progress on ``stream`` (stderr by default)."""
    from shared.sync.planner import enqueue, plan

    mode: Mode = "full" if full else "incremental"
    started = time.perf_counter()
    before = runtime.rate_governor.stats().calls
    planned = plan(runtime, connections=connections, divisions=divisions, entities=entities, mode=mode)
    enqueue(runtime, planned)
    summary = SyncSummary(calls=runtime.rate_governor.stats().calls - before)
    by_division: dict[int, list[str]] = {}
    for step in planned.steps:
        by_division.setdefault(step.division, []).append(step.entity)
    out = sys.stderr if stream is None else stream
    progress = Progress(out, by_division)
    chosen = sorted(by_division)
    count = workers if workers is not None else len(chosen)
    drain(
        runtime,
        divisions=chosen or None,
        workers=count,
        horizon=horizon,
        progress=progress,
        summary=summary,
        processes=processes,
        on_page=on_page,
    )
    summary.elapsed = time.perf_counter() - started
    return planned, summary


def resume_sync(
    runtime: Runtime,
    *,
    workers: int | None = None,
    horizon: float = DEFAULT_HORIZON,
    stream: TextIO | None = None,
) -> SyncSummary:
    """Run what is already queued (continuations of interrupted or paused loads, webhook steps)
    without planning anything new."""
    queue = runtime.queue
    divisions: list[int] = []
    if isinstance(queue, EmbeddedQueue):
        queue.reclaim_orphans()
        for body, _visible, _count in queue.peek_all():
            step = _step_or_none(body)
            if step is not None and step.division not in divisions:
                divisions.append(step.division)
    planned: dict[int, list[str]] = {division: [] for division in sorted(divisions)}
    progress = Progress(sys.stderr if stream is None else stream, planned)
    count = workers if workers is not None else max(1, len(divisions))
    return drain(
        runtime, divisions=sorted(divisions) or None, workers=count, horizon=horizon, progress=progress
    )
