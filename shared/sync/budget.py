"""Spreading a backfill over days without starving incremental syncs.

Exact gives each division 5,000 calls a day (≈ 5 million rows on 1000-row sync pages). A
first load larger than that cannot finish today, and if it spent the whole budget every
incremental sync of that division would fail until midnight UTC. So:

- a *backfill* step (a full load, or any continuation of a load) stops when the division's
  daily remaining falls to ``DAILY_CALL_RESERVE``; its continuation waits for the daily reset;
- a *catch-up* step (an incremental sync that starts from a finished cursor: the few pages of
  changes since the last sync) may spend the reserve: that is what the reserve is for.

When a backfill pauses, ``BackfillPause`` says when it resumes and, when the remaining row
count is known, when it will be done: the calls still needed spread over days of
``limit - reserve`` calls each, at 60 calls a minute.

The rate governor (``shared.exact.rate``) enforces the reserve before each call; this module
decides which reserve applies and turns a budget stop into a continuation time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.sync.queues import MAX_VISIBILITY_SECONDS

DAY = 86_400.0
MINUTE = 60.0
#: Exact's documented daily and minutely limits, used when no answer reported them yet.
DEFAULT_DAILY_LIMIT = 5000
DEFAULT_MINUTELY_LIMIT = 60
#: Seconds added to a reset before the continuation becomes visible: our clock and Exact's are
#: not the same clock, and a call a moment before the reset earns a 429.
RESET_GUARD = 1.0


def reserve_for(*, catch_up: bool, configured_reserve: int) -> int:
    """The daily calls a step must leave untouched: none for a catch-up, else the reserve."""
    return 0 if catch_up else max(0, configured_reserve)


def next_utc_midnight(now: float) -> float:
    return (math.floor(now / DAY) + 1) * DAY


def resume_time(now: float, reset_at: float | None, *, daily: bool) -> float:
    """When a step stopped by a budget may run again: the announced reset plus a guard, else the
    next calendar minute (minutely) or 00:00 UTC (daily); never beyond the queue's 7 days."""
    if reset_at is None or reset_at <= now:
        reset_at = next_utc_midnight(now) if daily else (math.floor(now / MINUTE) + 1) * MINUTE
    return min(reset_at + RESET_GUARD, now + MAX_VISIBILITY_SECONDS)


def calls_needed(rows: int, page_size: int) -> int:
    """Calls a load of ``rows`` rows takes: one per page, and one for an empty answer."""
    return max(1, math.ceil(max(0, rows) / page_size))


def backfill_eta(
    *,
    remaining_rows: int,
    page_size: int,
    resumes_at: float,
    daily_limit: int | None,
    reserve: int,
    minutely_limit: int | None = None,
) -> float:
    """When a paused backfill of ``remaining_rows`` rows will be done, if it gets every call of
    each coming day except the reserve (the division's other entities share that budget, so
    this is the earliest finish, not a promise)."""
    per_day = max(1, (daily_limit or DEFAULT_DAILY_LIMIT) - reserve)
    per_minute = max(1, minutely_limit or DEFAULT_MINUTELY_LIMIT)
    needed = calls_needed(remaining_rows, page_size)
    more_days = (needed - 1) // per_day
    last_day_calls = needed - more_days * per_day
    return resumes_at + more_days * DAY + math.ceil(last_day_calls / per_minute) * MINUTE


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class BackfillPause:
    """A load stopped at the daily reserve; what to tell the person watching it."""

    connection: str
    division: int
    entity: str
    rows_loaded: int
    resumes_at: float
    reserve: int
    daily_remaining: int | None
    daily_limit: int | None = None
    page_size: int = 1000

    @property
    def rows_per_day(self) -> int:
        """Rows a day's budget (minus the reserve) loads at full pages."""
        return max(0, (self.daily_limit or DEFAULT_DAILY_LIMIT) - self.reserve) * self.page_size

    def eta(self, remaining_rows: int) -> float:
        """When the load is done if ``remaining_rows`` are left and it gets each day's budget."""
        return backfill_eta(
            remaining_rows=remaining_rows,
            page_size=self.page_size,
            resumes_at=self.resumes_at,
            daily_limit=self.daily_limit,
            reserve=self.reserve,
        )

    def describe(self) -> str:
        return (
            f"{self.entity} of division {self.division} ({self.connection}) paused at the daily reserve "
            f"of {self.reserve} calls after {self.rows_loaded:,} rows this step; resumes {_utc(self.resumes_at)} "
            f"and loads up to {self.rows_per_day:,} rows a day until done (done by "
            f"{_utc(self.eta(self.rows_per_day))} if at most {self.rows_per_day:,} rows are left; "
            "Exact's sync API does not tell the total)"
        )
