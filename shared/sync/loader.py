"""The queue-triggered loader: run one load step, page by page, and hand over.

Exactly once from at-least-once delivery rests on three rules:

1. **The warehouse holds the truth.** A step reads the cursor from the warehouse, never from
   its message, and commits each page together with the advanced cursor in one transaction.
   A redelivered, duplicated or stale message therefore starts where the data really stands.
2. **Monotonic writes.** The warehouse writes a row only over an older ``Timestamp`` and keeps
   tombstones, so re-reading a page, or reading a row before its deletion and committing it
   after, changes nothing.
3. **One step per (connection, division, entity) at a time.** A step takes a lock named for its
   key (a blob lease in Azure, ``flock`` locally; see ``step_lock_name``); a step that finds it
   taken re-enqueues itself ``BUSY_DELAY_SECONDS`` later instead of waiting.

Where a load starts: a run's first step in ``full`` mode starts from the beginning
(``Timestamp gt 1L`` on a sync endpoint, the first page elsewhere) unless the warehouse cursor
already belongs to the same run (a redelivery); every other step continues from the warehouse
cursor: its ``__next`` link while a read is under way, else ``Timestamp gt <last>``, else (an
entity without a sync twin, such as Divisions, whose read has finished) from the beginning.

When a step stops: at the end of the data; when ``STEP_TIME_BUDGET_SECONDS`` is spent; when the
division's minutely budget is spent and its reset is more than ``INLINE_WAIT_SECONDS`` away
(continuation delayed to the reset); at the daily reserve (continuation delayed to the daily
reset, see ``budget``). The continuation is enqueued after the step's lock is released.

Failures: a malformed message is recorded in the failed-steps table with its reason and then
*completed*, not retried: the same bytes can never become valid, and five deliveries would only
record it five times (the host's ``<queue>-poison`` still catches anything that keeps raising).
``NeedsReauth`` and 4xx answers are recorded and stop the step without a retry (only a person
can fix them; Exact blocks endpoints that keep getting 4xx). Transient trouble (5xx after the
client's retries, the network, the token lock, a busy database) raises, so the host retries
with its visibility timeout and finally poisons the message; the last attempt is recorded.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from shared.clock import Clock
from shared.exact.catalog import CATALOG, DELETED, Entity
from shared.exact.catalog import entity as catalog_entity
from shared.locks.base import ConnectionLock, LockTimeout
from shared.sync.budget import BackfillPause, reserve_for, resume_time
from shared.sync.messages import (
    DELETED_ENTITY,
    InvalidStep,
    LoadStep,
    StepCursor,
    parse_step,
    redacted_excerpt,
)
from shared.sync.queues import MAX_DEQUEUE_COUNT, Queue

if TYPE_CHECKING:
    from shared.exact.client import ExactClient
    from shared.runtime import Runtime
    from shared.settings import Settings
    from shared.warehouse.base import Cursor, Warehouse

log = logging.getLogger("exactsync.loader")

#: A step whose key is being loaded by another step comes back this much later.
BUSY_DELAY_SECONDS = 30.0
#: Waiting this long for the minutely reset inside a step is cheaper than a hand-over.
INLINE_WAIT_SECONDS = 3.0

#: How much later than a request a finished read must have started to answer it (clock skew
#: between the instance that took the request and the one that loaded).
COALESCE_MARGIN_SECONDS = 5.0

Outcome = Literal["done", "continued", "paused", "busy", "current", "rejected", "failed"]


@dataclass(frozen=True)
class PageEvent:
    """One committed page, for progress displays."""

    step: LoadStep
    rows: int
    upserted: int
    deleted: int
    calls: int
    complete: bool
    at: float


@dataclass(kw_only=True)
class StepCounts:
    """What steps count: one step's in a ``StepReport``, summed by the local runner."""

    rows: int = 0
    upserted: int = 0
    deleted: int = 0
    skipped_stale: int = 0
    pages: int = 0
    calls: int = 0
    rate_waits: int = 0
    rate_wait_seconds: float = 0.0
    throttled: int = 0

    def add_counts(self, other: StepCounts) -> None:
        for counter in fields(StepCounts):
            setattr(self, counter.name, getattr(self, counter.name) + getattr(other, counter.name))


@dataclass
class StepReport(StepCounts):
    """What one step did; summed by the local runner, logged by the trigger."""

    step: LoadStep | None
    outcome: Outcome
    #: seconds the continuation waits for the minutely reset (a rate-limit hand-over)
    handover_wait: float = 0.0
    #: when the continuation (or the re-enqueued step) becomes visible, clock seconds
    continue_at: float | None = None
    continuation: LoadStep | None = None
    pause: BackfillPause | None = None
    reason: str | None = None
    elapsed: float = 0.0

    def describe(self) -> str:
        what = self.step.describe() if self.step else "message"
        text = f"{what}: {self.outcome}, {self.rows} rows in {self.pages} pages, {self.calls} calls"
        if self.reason:
            text += f" ({self.reason})"
        return text


@dataclass
class LoadContext:
    """Everything a step needs, injected (``from_runtime`` in production)."""

    settings: Settings
    clock: Clock
    warehouse: Warehouse
    queue: Queue
    lock: ConnectionLock
    clients: Callable[[str], ExactClient]
    on_page: Callable[[PageEvent], None] | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_runtime(
        cls, runtime: Runtime, *, on_page: Callable[[PageEvent], None] | None = None
    ) -> LoadContext:
        from shared.settings import secret_values

        return cls(
            settings=runtime.settings,
            clock=runtime.clock,
            warehouse=runtime.warehouse,
            queue=runtime.queue,
            lock=runtime.lock,
            clients=runtime.exact_client,
            on_page=on_page,
            secrets=secret_values(runtime.settings),
        )


def step_lock_name(connection: str, division: int, entity: str) -> str:
    """A lock name for a step key that follows the connection-name rule of the lock stores
    (lowercase, digits, '-', at most 40): readable prefix, hashed full key."""
    digest = hashlib.sha256(f"{connection}\0{division}\0{entity}".encode()).hexdigest()[:8]
    return f"step-{division}-{entity.lower()}"[:31] + "-" + digest


def step_lease(settings: Settings) -> float:
    """How long a received step stays invisible to other receivers: its time budget plus room
    to commit the last page and hand over."""
    return float(settings.step_time_budget_seconds) + 120.0


def resolve_entity(name: str) -> Entity:
    return DELETED if name == DELETED_ENTITY else catalog_entity(name)


_BY_DELETED_TYPE = {e.deleted_entity_type: e for e in CATALOG if e.deleted_entity_type is not None}


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# --- the trigger's entry point ------------------------------------------------------------


def run_step_message(runtime: Runtime, body: bytes, *, dequeue_count: int) -> StepReport:
    """The ``load_step`` queue trigger: validate, run, hand over. See the module docstring."""
    return run_message(LoadContext.from_runtime(runtime), body, dequeue_count=dequeue_count)


def run_message(ctx: LoadContext, body: bytes, *, dequeue_count: int = 1) -> StepReport:
    try:
        step = parse_step(body)
    except InvalidStep as exc:
        log.error("load-step message rejected: %s", exc.reason)
        ctx.warehouse.record_failed_step(
            message=redacted_excerpt(body, ctx.secrets),
            reason=f"rejected: {exc.reason}",
            at=_utc(ctx.clock.now()),
        )
        return StepReport(None, "rejected", reason=exc.reason)
    return run_step(ctx, step, dequeue_count=dequeue_count)


def run_step(ctx: LoadContext, step: LoadStep, *, dequeue_count: int = 1) -> StepReport:
    """Run one step (validated) and enqueue what follows it."""
    report = StepReport(step, "done")
    started = time.perf_counter()
    stack = ExitStack()
    hold = ctx.lock.hold(step_lock_name(step.connection, step.division, step.entity), timeout=0)
    try:
        stack.enter_context(hold)
    except LockTimeout:
        report.outcome = "busy"
        report.reason = "another step is loading this connection, division and entity"
        report.continue_at = ctx.clock.now() + BUSY_DELAY_SECONDS
        ctx.queue.send(step, visibility_timeout=BUSY_DELAY_SECONDS)
        return report
    with stack:
        try:
            _Pager(ctx, step, report, hold).run()
        except Exception as exc:
            report.elapsed = time.perf_counter() - started
            if not _settle_failure(ctx, step, report, exc, dequeue_count):
                raise
    report.elapsed = time.perf_counter() - started
    if report.continuation is not None:
        delay = max(0.0, (report.continue_at or 0.0) - ctx.clock.now())
        ctx.queue.send(report.continuation, visibility_timeout=delay)
    log.info("%s", report.describe())
    return report


def _settle_failure(
    ctx: LoadContext, step: LoadStep, report: StepReport, exc: Exception, attempt: int
) -> bool:
    """Record a failure. True: the step ends here (message completes); False: re-raise so the
    host retries it (and, after the last attempt, poisons it)."""
    from shared.exact.errors import ConversionError, ExactApiError, ExactRateLimited, ExactServerError
    from shared.oauth.errors import NeedsReauth
    from shared.warehouse.base import InvalidPage

    permanent = isinstance(exc, NeedsReauth | ConversionError | InvalidPage) or (
        isinstance(exc, ExactApiError)
        and not isinstance(exc, ExactServerError | ExactRateLimited)
        and 400 <= exc.status < 500
    )
    if not permanent and attempt < MAX_DEQUEUE_COUNT:
        log.warning("%s failed (attempt %d, will be retried): %s", step.describe(), attempt, _text(exc))
        return False
    reason = _text(exc) if permanent else f"gave up after {attempt} attempts: {_text(exc)}"
    ctx.warehouse.record_failed_step(message=step.to_json(), reason=reason, at=_utc(ctx.clock.now()))
    log.error("%s failed: %s", step.describe(), reason)
    report.outcome = "failed"
    report.reason = reason
    report.continuation = None
    return permanent


def _text(exc: BaseException) -> str:
    from shared.errors import ExactSyncError

    if isinstance(exc, ExactSyncError):
        return str(exc)
    # Not ours: the type and the first line only (library messages may quote request data).
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first[:200]}"


# --- the page loop ------------------------------------------------------------------------


#: How long Exact blocks an endpoint after 10 error answers within an hour.
ENDPOINT_BLOCK_SECONDS = 3600.0


class _Pager:
    def __init__(self, ctx: LoadContext, step: LoadStep, report: StepReport, hold: object) -> None:
        self.last: Cursor | None = None
        self.ctx = ctx
        self.step = step
        self.report = report
        self.hold = hold
        self.entity = resolve_entity(step.entity)
        self.started = ctx.clock.now()

    def run(self) -> None:
        from shared.exact.errors import DailyBudgetExhausted, ExactRateLimited, MinutelyBudgetSpent

        ctx, step, report = self.ctx, self.step, self.report
        stored = ctx.warehouse.read_cursor(step.connection, step.division, step.entity)
        start = self._start(stored)
        if start is None:
            return
        url, timestamp, catch_up = start
        reserve = reserve_for(catch_up=catch_up, configured_reserve=ctx.settings.daily_call_reserve)
        client = ctx.clients(step.connection)
        before = client.governor.stats(step.division)
        try:
            self._pages(client, url, timestamp, reserve)
        except MinutelyBudgetSpent as exc:
            report.handover_wait = max(0.0, exc.reset_at - ctx.clock.now())
            self._hand_over("minutely call budget spent; continuing at its reset", exc.reset_at)
        except ExactRateLimited as exc:
            # A 429 the client could not wait out (another process spent the minute): hand over.
            # A blocked endpoint (10 errors within the hour) stays blocked for an hour at least:
            # coming back at the next minute would only extend Exact's block.
            now = ctx.clock.now()
            self._hand_over(
                str(exc),
                now + ENDPOINT_BLOCK_SECONDS
                if exc.endpoint_blocked
                else resume_time(now, exc.reset_at, daily=False),
            )
        except DailyBudgetExhausted as exc:
            now = ctx.clock.now()
            report.outcome = "paused"
            report.continue_at = resume_time(now, exc.reset_at, daily=True)
            report.continuation = self._continuation()
            report.pause = BackfillPause(
                connection=step.connection,
                division=step.division,
                entity=step.entity,
                rows_loaded=report.rows,
                resumes_at=report.continue_at,
                reserve=reserve,
                daily_remaining=exc.remaining,
                daily_limit=client.governor.snapshot(step.division).daily_limit,
                page_size=self.entity.page_size,
            )
            report.reason = report.pause.describe()
        finally:
            after = client.governor.stats(step.division)
            report.calls = after.calls - before.calls
            report.rate_waits = after.waits - before.waits
            report.rate_wait_seconds = after.waited_seconds - before.waited_seconds
            report.throttled = after.throttled - before.throttled

    def _start(self, stored: Cursor | None) -> tuple[str, int | None, bool] | None:
        """(first URL, last committed Timestamp, catch-up?) or None when there is nothing to do."""
        step, entity = self.step, self.entity
        client = self.ctx.clients(step.connection)
        fresh_full = step.mode == "full" and not step.is_continuation
        if stored is None or (fresh_full and stored.run_id != step.run_id):
            return client.entity_url(step.division, entity), None, False
        skip = self._nothing_to_do(stored)
        if skip is not None:
            self.report.outcome = "current"
            self.report.reason = skip
            return None
        catch_up = stored.complete and not step.is_continuation
        if stored.next_url and not stored.complete:
            return stored.next_url, stored.timestamp, catch_up
        if entity.incremental:
            return (
                client.entity_url(step.division, entity, since=stored.timestamp),
                stored.timestamp,
                catch_up,
            )
        return client.entity_url(step.division, entity), None, catch_up

    def _nothing_to_do(self, stored: Cursor) -> str | None:
        """Why this step has nothing to load, or None."""
        step = self.step
        if step.is_continuation:
            if stored.complete:
                return "the load this continuation belongs to has finished"
            if stored.run_id != step.run_id:
                # A newer step took the load over (it continues from the same cursor): one
                # chain of continuations per key survives, duplicates die out here.
                return f"run {stored.run_id} has taken this load over"
            return None
        if (
            stored.complete
            and self.entity.incremental
            and step.requested_at > 0
            and stored.updated_at is not None
            and stored.updated_at.timestamp() >= step.requested_at + COALESCE_MARGIN_SECONDS
        ):
            # A read that started after this request reached the end: what it asks for is in
            # (coalesces bursts of webhook deliveries).
            return "a sync that started after this request already read to the end"
        return None

    def _pages(self, client: ExactClient, url: str, timestamp: int | None, reserve: int) -> None:
        from shared.exact.convert import row_converter
        from shared.warehouse.base import Cursor

        ctx, step, report, entity = self.ctx, self.step, self.report, self.entity
        convert = row_converter(entity)
        budget = float(ctx.settings.step_time_budget_seconds)
        while True:
            now = ctx.clock.now()
            if report.pages and now - self.started >= budget:
                self._hand_over("step time budget spent", now)
                return
            if getattr(self.hold, "lost", False):
                self._hand_over("step lock lost", now)
                return
            remaining = budget - (now - self.started)
            page = client.get_page(
                step.division,
                url,
                daily_reserve=reserve,
                max_wait=max(0.0, min(INLINE_WAIT_SECONDS, remaining)),
            )
            rows = [convert(raw) for raw in page.rows]
            if entity.incremental and rows:
                highest = max(int(r["Timestamp"]) for r in rows)
                timestamp = highest if timestamp is None else max(timestamp, highest)
            deletions = self._deletions(rows) if entity is DELETED else []
            cursor = Cursor(
                connection=step.connection,
                division=step.division,
                entity=step.entity,
                timestamp=timestamp,
                next_url=page.next_url,
                complete=page.next_url is None,
                run_id=step.run_id,
                updated_at=_utc(now),
            )
            result = ctx.warehouse.commit_page(
                entity=entity, division=step.division, rows=rows, deletions=deletions, cursor=cursor
            )
            self.last = cursor
            report.pages += 1
            report.rows += len(rows)
            report.upserted += result.upserted
            report.deleted += result.deleted
            report.skipped_stale += result.skipped_stale
            if ctx.on_page is not None:
                ctx.on_page(
                    PageEvent(
                        step,
                        len(rows),
                        result.upserted,
                        result.deleted,
                        page.calls,
                        cursor.complete,
                        ctx.clock.now(),
                    )
                )
            if page.next_url is None:
                report.outcome = "done"
                return
            url = page.next_url

    def _deletions(self, rows: list[dict[str, Any]]) -> list[tuple[Entity, str]]:
        out = []
        for row in rows:
            target = _BY_DELETED_TYPE.get(row.get("EntityType"))  # type: ignore[arg-type]
            key = row.get("EntityKey")
            if target is not None and key:
                out.append((target, str(key)))
        return out

    def _hand_over(self, reason: str, at: float) -> None:
        """End the step here; a continuation picks the load up at clock time ``at``."""
        report = self.report
        report.outcome = "continued"
        report.reason = reason
        report.continue_at = at
        report.continuation = self._continuation()

    def _continuation(self) -> LoadStep:
        last = self.last
        if last is None or (last.timestamp is None and last.next_url is None):
            return self.step  # nothing committed (or nothing to continue from): the same step again
        return self.step.continued(StepCursor(timestamp=last.timestamp, next_url=last.next_url))
