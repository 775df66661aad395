"""The rate governor: spends each division's Exact Online call budget fully, never over it.

Exact counts calls per app per company (division): 60 per *calendar minute* and 5,000 per day
(reset 00:00 UTC). Every answer on a division URL reports the state in six headers
(``X-RateLimit-[Minutely-]{Limit,Remaining,Reset}``, resets in epoch *milliseconds*). The
governor keeps the latest state per division and, before each call:

- when the minutely budget is spent, waits (``clock.sleep``) until the minutely reset plus a
  small guard instead of earning a 429, so a long backfill makes 60 calls, sleeps to the minute's
  end and goes on (no pacing, no caution beyond the guard: the budget is used, not rationed);
- when the daily remaining has fallen to the reserve (kept for incremental syncs), raises
  ``DailyBudgetExhausted`` without making the call: the budget is reported, not burned;
- when a caller cannot afford to block (``max_wait``), raises ``MinutelyBudgetSpent`` with the
  reset time, so a queue step can hand over to a continuation delayed to that moment.

Calls still in flight are counted against the known remaining budget, so threads sharing a
division never overrun it together. A 429 sets the remaining minutely budget to zero (the next
call waits for the reset the 429 announced) and doubles the guard up to ``max_guard``: a 429 we
did not expect means our clock runs ahead of Exact's (or another process spends the same
budget), and the guard absorbs that skew. A 429 without minutely headers (a daily 429, or an
endpoint blocked for errors) leaves the minute alone: the client reports it instead.

Thread-safe. One governor should serve every client of a process (two connections reading the
same division share its budget); across processes the headers keep each governor honest.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace

from shared.clock import Clock
from shared.exact.errors import DailyBudgetExhausted, MinutelyBudgetSpent

_DAY = 86_400.0
_MINUTE = 60.0


@dataclass(frozen=True)
class RateSnapshot:
    """A division's budget as last reported by Exact (``None``: not reported yet). Times in epoch s."""

    division: int
    minutely_limit: int | None
    minutely_remaining: int | None
    minutely_reset_at: float | None
    daily_limit: int | None
    daily_remaining: int | None
    daily_reset_at: float | None
    observed_at: float

    def seconds_to_minutely_reset(self, now: float) -> float:
        return max(0.0, (self.minutely_reset_at or now) - now)


@dataclass
class GovernorStats:
    #: calls let through (each HTTP request on a division URL, retries included)
    calls: int = 0
    #: times a call waited for the minutely reset, and the total (clock) seconds waited
    waits: int = 0
    waited_seconds: float = 0.0
    #: 429 answers received
    throttled: int = 0
    #: calls refused because the daily budget was down to the reserve
    daily_stops: int = 0

    def add(self, other: GovernorStats) -> None:
        self.calls += other.calls
        self.waits += other.waits
        self.waited_seconds += other.waited_seconds
        self.throttled += other.throttled
        self.daily_stops += other.daily_stops


@dataclass
class _Division:
    division: int
    minutely_limit: int | None = None
    #: remaining in the window ending at ``minutely_reset`` as reported (min over that window)
    minutely_remaining: int | None = None
    minutely_reset: float | None = None
    daily_limit: int | None = None
    daily_remaining: int | None = None
    daily_reset: float | None = None
    observed_at: float = 0.0
    in_flight: int = 0
    guard: float = 0.0

    def __post_init__(self) -> None:
        self.stats = GovernorStats()


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None


def _next_minute(now: float) -> float:
    return (math.floor(now / _MINUTE) + 1) * _MINUTE


def _next_utc_midnight(now: float) -> float:
    return (math.floor(now / _DAY) + 1) * _DAY


class RateGovernor:
    def __init__(
        self,
        clock: Clock,
        *,
        daily_reserve: int = 0,
        guard: float = 0.25,
        max_guard: float = 2.0,
    ) -> None:
        if daily_reserve < 0:
            raise ValueError("daily_reserve must be >= 0")
        self.clock = clock
        self.daily_reserve = daily_reserve
        self.guard = guard
        self.max_guard = max(max_guard, guard)
        self._lock = threading.Condition()
        self._divisions: dict[int, _Division] = {}

    def _state(self, division: int) -> _Division:
        state = self._divisions.get(division)
        if state is None:
            state = self._divisions[division] = _Division(division, guard=self.guard)
        return state

    def _roll(self, state: _Division, now: float) -> None:
        """Forget budgets whose reset has passed: a new minute (day) starts with its full limit."""
        if state.minutely_reset is not None and now >= state.minutely_reset + state.guard:
            state.minutely_remaining = None
            state.minutely_reset = None
        if state.daily_reset is not None and now >= state.daily_reset:
            state.daily_remaining = None
            state.daily_reset = None

    def _minutely_available(self, state: _Division) -> int | None:
        known = state.minutely_remaining
        if known is None:
            if state.minutely_limit is None:
                return None
            known = state.minutely_limit
        return known - state.in_flight

    def _minutely_wait(self, state: _Division, now: float) -> float:
        """Seconds until a call may go (0: now). Caller holds the lock and has rolled the state."""
        available = self._minutely_available(state)
        if available is None or available > 0:
            return 0.0
        if state.minutely_remaining is None:
            # Budget held by calls in flight in a fresh window: their answers will tell.
            return -1.0
        reset = state.minutely_reset if state.minutely_reset is not None else _next_minute(now)
        return max(reset + state.guard - now, 0.0) or 1e-3

    def acquire(
        self, division: int, *, daily_reserve: int | None = None, max_wait: float | None = None
    ) -> None:
        """Block until a call on ``division`` may go, and count it as in flight.

        Raises ``DailyBudgetExhausted`` (daily remaining at or below the reserve) or
        ``MinutelyBudgetSpent`` (the wait would exceed ``max_wait``). Pair with ``record``.
        """
        reserve = self.daily_reserve if daily_reserve is None else daily_reserve
        while True:
            with self._lock:
                state = self._state(division)
                now = self.clock.now()
                self._roll(state, now)
                if state.daily_remaining is not None and state.daily_remaining - state.in_flight <= reserve:
                    state.stats.daily_stops += 1
                    raise DailyBudgetExhausted(
                        division, state.daily_reset, state.daily_remaining - state.in_flight, reserve
                    )
                delay = self._minutely_wait(state, now)
                if delay == 0.0:
                    state.in_flight += 1
                    state.stats.calls += 1
                    return
                if delay < 0:
                    self._lock.wait(0.05)
                    continue
                if max_wait is not None and delay > max_wait:
                    raise MinutelyBudgetSpent(division, now + delay, delay)
                state.stats.waits += 1
                state.stats.waited_seconds += delay
            self.clock.sleep(delay)

    def record(self, division: int, headers: Mapping[str, str], status: int) -> RateSnapshot:
        """Take an answer's rate headers into account and end the call's in-flight count.

        ``headers`` must look names up case-insensitively (httpx ``Headers`` do).
        """
        with self._lock:
            state = self._state(division)
            now = self.clock.now()
            state.in_flight = max(0, state.in_flight - 1)
            self._update(state, headers, now)
            if status == 429:
                state.stats.throttled += 1
                if _int_header(headers, "X-RateLimit-Minutely-Reset") is not None:
                    # A minutely 429: nothing left until the reset it announced (when that reset
                    # is already past on our clock, until our next calendar minute).
                    state.minutely_remaining = 0
                    if state.minutely_reset is None or state.minutely_reset <= now:
                        state.minutely_reset = _next_minute(now)
                    state.guard = min(self.max_guard, max(state.guard * 2, 0.5))
            self._lock.notify_all()
            return self._snapshot(state)

    def release(self, division: int, *, spent: bool = True) -> None:
        """End a call that got no answer. ``spent``: the request may have reached Exact (a
        transport error), so it counts against the known budget; else it was never sent."""
        with self._lock:
            state = self._state(division)
            state.in_flight = max(0, state.in_flight - 1)
            if not spent:
                state.stats.calls -= 1
            elif state.minutely_remaining is not None:
                state.minutely_remaining = max(0, state.minutely_remaining - 1)
            if spent and state.daily_remaining is not None:
                state.daily_remaining = max(0, state.daily_remaining - 1)
            self._lock.notify_all()

    def _update(self, state: _Division, headers: Mapping[str, str], now: float) -> None:
        m_limit = _int_header(headers, "X-RateLimit-Minutely-Limit")
        m_remaining = _int_header(headers, "X-RateLimit-Minutely-Remaining")
        m_reset_ms = _int_header(headers, "X-RateLimit-Minutely-Reset")
        d_limit = _int_header(headers, "X-RateLimit-Limit")
        d_remaining = _int_header(headers, "X-RateLimit-Remaining")
        d_reset_ms = _int_header(headers, "X-RateLimit-Reset")
        if any(v is not None for v in (m_limit, m_remaining, m_reset_ms, d_limit, d_remaining, d_reset_ms)):
            state.observed_at = now
        if m_limit is not None:
            state.minutely_limit = m_limit
        if m_remaining is not None:
            # Without a reset header: the limit is per calendar minute, so this one's end.
            m_reset = m_reset_ms / 1000.0 if m_reset_ms is not None else _next_minute(now)
            if m_reset <= now:
                pass  # a late answer about a window that is over: nothing left to learn
            elif state.minutely_reset is None or m_reset > state.minutely_reset:
                state.minutely_remaining = m_remaining
                state.minutely_reset = m_reset
            elif m_reset == state.minutely_reset:
                previous = state.minutely_remaining
                state.minutely_remaining = m_remaining if previous is None else min(previous, m_remaining)
        if d_limit is not None:
            state.daily_limit = d_limit
        if d_remaining is not None:
            d_reset = d_reset_ms / 1000.0 if d_reset_ms is not None else _next_utc_midnight(now)
            if state.daily_reset is None or d_reset > state.daily_reset:
                state.daily_remaining = d_remaining
                state.daily_reset = d_reset
            elif d_reset == state.daily_reset:
                previous = state.daily_remaining
                state.daily_remaining = d_remaining if previous is None else min(previous, d_remaining)

    def _snapshot(self, state: _Division) -> RateSnapshot:
        return RateSnapshot(
            division=state.division,
            minutely_limit=state.minutely_limit,
            minutely_remaining=state.minutely_remaining,
            minutely_reset_at=state.minutely_reset,
            daily_limit=state.daily_limit,
            daily_remaining=state.daily_remaining,
            daily_reset_at=state.daily_reset,
            observed_at=state.observed_at,
        )

    def snapshot(self, division: int) -> RateSnapshot:
        """The division's budget as last reported (fields ``None`` until Exact reported them)."""
        with self._lock:
            state = self._state(division)
            self._roll(state, self.clock.now())
            return self._snapshot(state)

    def delay_before_call(self, division: int, *, daily_reserve: int | None = None) -> float:
        """Seconds a call on ``division`` would wait now (0: go); ``math.inf`` when the daily
        budget is down to the reserve. Does not reserve anything: for planning hand-overs."""
        reserve = self.daily_reserve if daily_reserve is None else daily_reserve
        with self._lock:
            state = self._state(division)
            now = self.clock.now()
            self._roll(state, now)
            if state.daily_remaining is not None and state.daily_remaining - state.in_flight <= reserve:
                return math.inf
            return max(self._minutely_wait(state, now), 0.0)

    def stats(self, division: int | None = None) -> GovernorStats:
        """A copy of one division's counters, or the sum over all divisions."""
        with self._lock:
            if division is not None:
                return replace(self._state(division).stats)
            total = GovernorStats()
            for state in self._divisions.values():
                total.add(state.stats)
            return total
