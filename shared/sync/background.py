"""The Functions host's timers and queue trigger, for ``exactsync serve``.

``serve`` hosts the app's HTTP routes; these loops add what the host does besides: each timer
trigger (``rotate_tokens``, ``schedule_syncs``) fires on its NCRONTAB schedule (UTC, six fields,
seconds first, read from the app setting the ``%NAME%`` placeholder names), and the queue
trigger (``load_step``) receives messages from the load queue and hands each to the real
decorated function as an ``azure.functions`` ``QueueMessage``: completed when the function
returns, made visible again after host.json's ``visibilityTimeout`` when it raises, and moved to
the poison store after ``maxDequeueCount`` deliveries. What runs is the code Azure runs.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.clock import clock_scale
from shared.errors import ConfigError

if TYPE_CHECKING:
    from shared.runtime import Runtime
    from shared.sync.queues import Queue

log = logging.getLogger("exactsync.serve.loops")

#: how often an idle queue loop polls (host.json's maxPollingInterval is 5 s; locally faster)
POLL_SECONDS = 1.0

_FIELDS = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("weekday", 0, 6),
)


@dataclass(frozen=True)
class Schedule:
    """A parsed six-field NCRONTAB expression (``{second} {minute} {hour} {day} {month} {day-of-week}``)."""

    text: str
    second: frozenset[int]
    minute: frozenset[int]
    hour: frozenset[int]
    day: frozenset[int]
    month: frozenset[int]
    weekday: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Schedule:
        parts = text.split()
        if len(parts) != 6:
            raise ConfigError(
                f"schedule {text!r} must have six fields: second minute hour day month day-of-week"
            )
        values: dict[str, frozenset[int]] = {}
        for part, (name, low, high) in zip(parts, _FIELDS, strict=True):
            values[name] = _field(part, name, low, high, text)
        return cls(text, any_day=parts[3] == "*", any_weekday=parts[5] == "*", **values)

    def _day_matches(self, moment: datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7  # NCRONTAB: 0 = Sunday
        day_ok = moment.day in self.day
        weekday_ok = weekday in self.weekday
        if self.any_day or self.any_weekday:
            return day_ok and weekday_ok
        return day_ok or weekday_ok  # cron's rule when both are restricted

    def next_after(self, epoch: float) -> float:
        """The first matching second strictly after ``epoch`` (UTC)."""
        moment = datetime.fromtimestamp(int(epoch) + 1, UTC)
        limit = moment + timedelta(days=366 * 5)
        while moment < limit:
            if moment.month not in self.month:
                year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
                moment = datetime(year, month, 1, tzinfo=UTC)
                continue
            if not self._day_matches(moment):
                moment = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0)
                continue
            if moment.hour not in self.hour:
                moment = (moment + timedelta(hours=1)).replace(minute=0, second=0)
                continue
            if moment.minute not in self.minute:
                moment = (moment + timedelta(minutes=1)).replace(second=0)
                continue
            if moment.second not in self.second:
                moment += timedelta(seconds=1)
                continue
            return moment.timestamp()
        raise ConfigError(f"schedule {self.text!r} never fires")


def _field(part: str, name: str, low: int, high: int, text: str) -> frozenset[int]:
    out: set[int] = set()
    for item in part.split(","):
        match = re.fullmatch(r"(\*|\d+)(?:-(\d+))?(?:/(\d+))?", item)
        if match is None:
            raise ConfigError(f"schedule {text!r}: cannot read {name} field {part!r}")
        start_text, end_text, step_text = match.groups()
        if start_text == "*":
            start, end = low, high
        else:
            start = int(start_text)
            end = int(end_text) if end_text else (high if step_text else start)
        step = int(step_text) if step_text else 1
        if not low <= start <= end <= high or step < 1:
            raise ConfigError(f"schedule {text!r}: {name} must lie within {low}-{high}, got {item!r}")
        out.update(range(start, end + 1, step))
    return frozenset(out)


# --- loops -------------------------------------------------------------------------------------


def _resolve(setting: str, runtime: Runtime) -> str:
    """``%NAME%`` -> that app setting's value (what the host does with binding expressions)."""
    match = re.fullmatch(r"%([A-Za-z0-9_]+)%", setting)
    if match is None:
        return setting
    known = {
        "SYNC_SCHEDULE": runtime.settings.sync_schedule,
        "ROTATE_SCHEDULE": runtime.settings.rotate_schedule,
        "LOAD_QUEUE": runtime.settings.load_queue,
    }
    name = match.group(1)
    if name not in known:
        raise ConfigError(f"app setting {name} (named by {setting}) is not a known setting")
    return known[name]


class TimerLoop:
    """Calls a timer-triggered function at each occurrence of its schedule."""

    def __init__(
        self, name: str, schedule: Schedule, function: Callable[[Any], None], runtime: Runtime
    ) -> None:
        self.name = name
        self.schedule = schedule
        self.function = function
        self.runtime = runtime
        self.fired = 0

    def run(self, stop: threading.Event) -> None:
        from azure.functions.timer import TimerRequest

        clock = self.runtime.clock
        due = self.schedule.next_after(clock.now())
        while not stop.is_set():
            wait = due - clock.now()
            if wait > 0:
                stop.wait(min(wait / clock_scale(clock), POLL_SECONDS))
                continue
            past_due = clock.now() - due > 60
            try:
                self.function(TimerRequest(past_due=past_due))
            except Exception:
                log.exception("timer %s failed", self.name)
            self.fired += 1
            due = self.schedule.next_after(max(clock.now(), due))


class QueueLoop:
    """Receives load steps and runs them through the queue-triggered function, like the host."""

    def __init__(
        self,
        name: str,
        queue: Queue,
        function: Callable[[Any], None],
        runtime: Runtime,
        *,
        concurrency: int = 2,
    ) -> None:
        self.name = name
        self.queue = queue
        self.function = function
        self.runtime = runtime
        self.concurrency = max(1, concurrency)
        self.processed = 0
        self.failed = 0
        self._count_lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        from shared.sync.queues import EmbeddedQueue

        if isinstance(self.queue, EmbeddedQueue):
            self.queue.reclaim_orphans()
        threads = [
            threading.Thread(target=self._work, args=(stop,), name=f"{self.name}-{i}", daemon=True)
            for i in range(self.concurrency - 1)
        ]
        for thread in threads:
            thread.start()
        self._work(stop)
        for thread in threads:
            thread.join(timeout=30)

    def _work(self, stop: threading.Event) -> None:
        from azure.functions.queue import QueueMessage

        from shared.sync.loader import step_lease
        from shared.sync.queues import RETRY_VISIBILITY_SECONDS

        lease = step_lease(self.runtime.settings)
        while not stop.is_set():
            try:
                delivery = self.queue.receive(visibility_timeout=lease)
            except Exception:
                log.exception("receiving from the load queue failed")
                stop.wait(POLL_SECONDS * 5)
                continue
            if delivery is None:
                stop.wait(POLL_SECONDS)
                continue
            message = QueueMessage(  # type: ignore[no-untyped-call]
                id=delivery.id, body=delivery.body, dequeue_count=delivery.dequeue_count
            )
            try:
                self.function(message)
            except Exception:
                log.exception("load step failed (delivery %d); it comes back later", delivery.dequeue_count)
                self.queue.abandon(delivery, visibility_timeout=RETRY_VISIBILITY_SECONDS)
                with self._count_lock:
                    self.failed += 1
                continue
            self.queue.complete(delivery)
            with self._count_lock:
                self.processed += 1


def loops_for(
    runtime: Runtime, functions: Sequence[Any], *, concurrency: int = 2
) -> list[TimerLoop | QueueLoop]:
    """A loop per timer trigger and per queue trigger among the app's functions."""
    loops: list[TimerLoop | QueueLoop] = []
    for function in functions:
        trigger = function.get_trigger()
        kind = type(trigger).__name__
        name = function.get_function_name()
        if kind == "TimerTrigger":
            schedule = Schedule.parse(_resolve(str(trigger.schedule), runtime))
            loops.append(TimerLoop(name, schedule, function.get_user_function(), runtime))
        elif kind == "QueueTrigger":
            queue_name = _resolve(str(trigger.queue_name), runtime)
            if queue_name != runtime.settings.load_queue:
                raise ConfigError(
                    f"queue trigger {name} reads {queue_name!r}; only LOAD_QUEUE is served locally"
                )
            loops.append(
                QueueLoop(name, runtime.queue, function.get_user_function(), runtime, concurrency=concurrency)
            )
    return loops
