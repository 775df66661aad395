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
division never overrun it together. A 429 sets the remaining minutely budget to zero until the
reset it announced and doubles the guard up to ``max_guard`` (another process may be spending
the same budget). A 429 without minutely headers (a daily 429, or an endpoint blocked for errors)
leaves the minute alone: the client reports it instead.

Resets are instants on *Exact's* clock, and a 429 is never retried before its reset, so the
governor keeps an estimate of how far our clock runs ahead of Exact's (``_ClockSkew``) and
waits until ``reset + ahead + guard`` on our clock. Two kinds of evidence feed it:

- the ``Date`` header of every answer (RFC 9110 makes origin servers send it): Exact's clock
  said ``D`` (whole seconds, truncated) while ours was between the request's send time and
  now, so ``ahead <= now - D``. The smallest such bound over the last answers is used: never
  less than the true skew, at most a second or a round trip more (a little budget, never an
  early retry);
- a minutely 429 with reset ``R``: Exact's clock was before ``R`` when it answered, so
  ``ahead > sent - R``. Without ``Date`` headers this is all there is: each early 429 raises
  the estimate (by at least the guard, which doubles), so the retries converge on Exact's
  reset instead of jumping to our next calendar minute.

An announced reset is never dropped for "our next minute": a window is forgotten only once
``reset + ahead + guard`` has passed on our clock. The resets the governor's errors report are
translated to our clock the same way.

Thread-safe. One governor should serve every client of a process (two connections reading the
same division share its budget); across processes the headers keep each governor honest.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from email.utils import mktime_tz, parsedate_tz

from shared.clock import Clock
from shared.exact.errors import DailyBudgetExhausted, MinutelyBudgetSpent

_DAY = 86_400.0
_MINUTE = 60.0
#: The ``Date`` answers whose smallest skew bound is used: enough that one of them was dated
#: early in its second (a tight bound), few enough to follow a clock that changes.
_DATE_SAMPLES = 32
#: How fast (seconds per second) a 429's proof of skew fades: twice a cheap quartz clock's drift
#: (50 ppm), 6 ms a minute.
_SKEW_DRIFT = 0.0001


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
    #: how far our clock was estimated to run ahead of Exact's (negative: behind), in seconds
    clock_ahead: float = 0.0

    def seconds_to_minutely_reset(self, now: float) -> float:
        """Seconds on *our* clock (``now``) until Exact's minutely reset."""
        if self.minutely_reset_at is None:
            return 0.0
        return max(0.0, self.minutely_reset_at + self.clock_ahead - now)


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
    #: resets are instants on Exact's clock (epoch s), as the headers announced them
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


def _date_header(headers: Mapping[str, str]) -> float | None:
    """The answer's ``Date`` (RFC 9110 IMF-fixdate; the obsolete forms too) in epoch s, if any."""
    raw = headers.get("Date")
    if not raw:
        return None
    parsed = parsedate_tz(raw.strip())
    if parsed is None:
        return None
    try:
        return float(mktime_tz(parsed))
    except (OverflowError, ValueError):
        return None


def _next_minute(now: float) -> float:
    return (math.floor(now / _MINUTE) + 1) * _MINUTE


def _next_utc_midnight(now: float) -> float:
    return (math.floor(now / _DAY) + 1) * _DAY


class _ClockSkew:
    """How far our clock runs ahead of Exact's (negative: behind), as bounds from the answers.

    ``high`` (from ``Date`` headers) is never below the true skew: it is what the waits use, so
    a wait ends at or after Exact's reset. It is the smallest bound among the last
    ``_DATE_SAMPLES`` answers, so it follows a clock that drifts or is stepped back, and an idle
    night does not move it. ``low`` (from 429s) is proof that the skew is at least that much; when
    it exceeds ``high``, ``high`` is stale (a clock was stepped forward) and is rebuilt from the
    next answers. ``low`` fades by ``_SKEW_DRIFT`` per second since it was observed, so an old
    proof cannot hold forever against a clock that was corrected since. Not thread-safe: the
    governor holds its lock.
    """

    def __init__(self) -> None:
        self._dates: deque[float] = deque(maxlen=_DATE_SAMPLES)
        self._low: float | None = None
        self._low_at = 0.0

    def high(self) -> float | None:
        return min(self._dates) if self._dates else None

    def low(self, now: float) -> float | None:
        if self._low is None:
            return None
        return self._low - _SKEW_DRIFT * max(0.0, now - self._low_at)

    def ahead(self, now: float) -> float:
        """The skew to translate Exact's instants to ours: ``ours = exact + ahead``.

        With ``Date`` evidence: its upper bound (or the 429 proof, if larger). Without: assume
        the clocks agree until a 429 proves ours ahead (never assume ours behind unproven).
        """
        high, low = self.high(), self.low(now)
        if high is None:
            return max(0.0, low) if low is not None else 0.0
        return high if low is None else max(high, low)

    def saw_date(self, server_date: float, now: float) -> None:
        """An answer dated ``server_date`` (whole seconds, truncated) arrived at ``now``."""
        self._dates.append(now - server_date)

    def saw_429(self, reset: float, sent_at: float, now: float) -> None:
        """A minutely 429 for the window ending at ``reset``, for a request sent at ``sent_at``."""
        sample = sent_at - reset
        low = self.low(now)
        if low is None or sample > low:
            self._low, self._low_at = sample, now
        high = self.high()
        if high is not None and sample > high:
            self._dates.clear()  # proven too small: rebuild it from the next answers' Date


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
        self._skew = _ClockSkew()

    def _state(self, division: int) -> _Division:
        state = self._divisions.get(division)
        if state is None:
            state = self._divisions[division] = _Division(division, guard=self.guard)
        return state

    def _roll(self, state: _Division, now: float, ahead: float) -> None:
        """Forget budgets whose reset (on Exact's clock, ``ahead`` behind ours) has passed: a new
        minute (day) starts with its full limit."""
        if state.minutely_reset is not None and now >= state.minutely_reset + ahead + state.guard:
            state.minutely_remaining = None
            state.minutely_reset = None
        if state.daily_reset is not None and now >= state.daily_reset + ahead:
            state.daily_remaining = None
            state.daily_reset = None

    def _daily_available(self, state: _Division) -> int | None:
        """The day's calls left once the calls in flight land (``None``: not known yet)."""
        return None if state.daily_remaining is None else state.daily_remaining - state.in_flight

    def _minutely_available(self, state: _Division) -> int | None:
        known = state.minutely_remaining
        if known is None:
            if state.minutely_limit is None:
                return None
            known = state.minutely_limit
        return known - state.in_flight

    def _minutely_wait(self, state: _Division, now: float, ahead: float) -> float:
        """Seconds until a call may go (0: now). Caller holds the lock and has rolled the state."""
        available = self._minutely_available(state)
        if available is None or available > 0:
            return 0.0
        if state.minutely_remaining is None:
            # Budget held by calls in flight in a fresh window: their answers will tell.
            return -1.0
        reset = state.minutely_reset if state.minutely_reset is not None else _next_minute(now - ahead)
        return max(reset + ahead + state.guard - now, 0.0) or 1e-3

    def acquire(
        self, division: int, *, daily_reserve: int | None = None, max_wait: float | None = None
    ) -> None:
        """Block until a call on ``division`` may go, and count it as in flight.

        Raises ``DailyBudgetExhausted`` (daily remaining at or below the reserve) or
        ``MinutelyBudgetSpent`` (the wait would exceed ``max_wait``). Their ``reset_at`` is on
        *our* clock (Exact's reset plus the skew): a continuation scheduled for it finds the
        budget rolled over here. Pair with ``record``.
        """
        reserve = self.daily_reserve if daily_reserve is None else daily_reserve
        while True:
            with self._lock:
                state = self._state(division)
                now = self.clock.now()
                ahead = self._skew.ahead(now)
                self._roll(state, now, ahead)
                daily = self._daily_available(state)
                if daily is not None and daily <= reserve:
                    state.stats.daily_stops += 1
                    reset_at = state.daily_reset + ahead if state.daily_reset is not None else None
                    raise DailyBudgetExhausted(division, reset_at, daily, reserve)
                delay = self._minutely_wait(state, now, ahead)
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

    def record(
        self, division: int, headers: Mapping[str, str], status: int, *, sent_at: float | None = None
    ) -> RateSnapshot:
        """Take an answer's rate headers into account and end the call's in-flight count.

        ``headers`` must look names up case-insensitively (httpx ``Headers`` do). ``sent_at``
        is when (our clock) the request went out: a 429 proves our clock ahead of Exact's by at
        least ``sent_at - reset``. Without it the answer's arrival stands in, which counts the
        round trip as skew (waits a little longer, never less).
        """
        with self._lock:
            state = self._state(division)
            now = self.clock.now()
            state.in_flight = max(0, state.in_flight - 1)
            m_reset_ms = _int_header(headers, "X-RateLimit-Minutely-Reset")
            if status == 429 and m_reset_ms is not None:
                sent = now if sent_at is None else min(sent_at, now)
                self._skew.saw_429(m_reset_ms / 1000.0, sent, now)
            self._observe(headers, now)  # after the 429: its Date rebuilds a bound the 429 refuted
            ahead = self._skew.ahead(now)
            self._update(state, headers, now, ahead)
            if status == 429:
                state.stats.throttled += 1
                if m_reset_ms is not None:
                    # A minutely 429: nothing left until the reset it announced. That reset
                    # stands even when it looks past on our clock: then ours runs ahead, and
                    # the skew just learned moves the wait to Exact's reset.
                    reset = m_reset_ms / 1000.0
                    if state.minutely_reset is None or reset >= state.minutely_reset:
                        state.minutely_reset = reset
                        state.minutely_remaining = 0
                    state.guard = min(self.max_guard, max(state.guard * 2, 0.5))
            self._lock.notify_all()
            return self._snapshot(state, ahead)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn Exact's clock from an answer that ``record`` does not see (a call without a
        division, such as ``current/Me``)."""
        with self._lock:
            self._observe(headers, self.clock.now())

    def _observe(self, headers: Mapping[str, str], now: float) -> None:
        server_date = _date_header(headers)
        if server_date is not None:
            self._skew.saw_date(server_date, now)

    def clock_ahead(self) -> float:
        """Seconds our clock is taken to run ahead of Exact's (negative: behind; 0: unknown)."""
        with self._lock:
            return self._skew.ahead(self.clock.now())

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

    def _update(self, state: _Division, headers: Mapping[str, str], now: float, ahead: float) -> None:
        m_limit = _int_header(headers, "X-RateLimit-Minutely-Limit")
        m_remaining = _int_header(headers, "X-RateLimit-Minutely-Remaining")
        m_reset_ms = _int_header(headers, "X-RateLimit-Minutely-Reset")
        d_limit = _int_header(headers, "X-RateLimit-Limit")
        d_remaining = _int_header(headers, "X-RateLimit-Remaining")
        d_reset_ms = _int_header(headers, "X-RateLimit-Reset")
        if any(v is not None for v in (m_limit, m_remaining, m_reset_ms, d_limit, d_remaining, d_reset_ms)):
            state.observed_at = now
        exact_now = now - ahead
        if m_limit is not None:
            state.minutely_limit = m_limit
        if m_remaining is not None:
            # Without a reset header: the limit is per calendar minute (Exact's), so this one's end.
            m_reset = m_reset_ms / 1000.0 if m_reset_ms is not None else _next_minute(exact_now)
            if now >= m_reset + ahead + state.guard:
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
            d_reset = d_reset_ms / 1000.0 if d_reset_ms is not None else _next_utc_midnight(exact_now)
            if state.daily_reset is None or d_reset > state.daily_reset:
                state.daily_remaining = d_remaining
                state.daily_reset = d_reset
            elif d_reset == state.daily_reset:
                previous = state.daily_remaining
                state.daily_remaining = d_remaining if previous is None else min(previous, d_remaining)

    def _snapshot(self, state: _Division, ahead: float) -> RateSnapshot:
        return RateSnapshot(
            division=state.division,
            minutely_limit=state.minutely_limit,
            minutely_remaining=state.minutely_remaining,
            minutely_reset_at=state.minutely_reset,
            daily_limit=state.daily_limit,
            daily_remaining=state.daily_remaining,
            daily_reset_at=state.daily_reset,
            observed_at=state.observed_at,
            clock_ahead=ahead,
        )

    def snapshot(self, division: int) -> RateSnapshot:
        """The division's budget as last reported (fields ``None`` until Exact reported them)."""
        with self._lock:
            state = self._state(division)
            now = self.clock.now()
            ahead = self._skew.ahead(now)
            self._roll(state, now, ahead)
            return self._snapshot(state, ahead)

    def delay_before_call(self, division: int, *, daily_reserve: int | None = None) -> float:
        """Seconds a call on ``division`` would wait now (0: go); ``math.inf`` when the daily
        budget is down to the reserve. Does not reserve anything: for planning hand-overs."""
        reserve = self.daily_reserve if daily_reserve is None else daily_reserve
        with self._lock:
            state = self._state(division)
            now = self.clock.now()
            ahead = self._skew.ahead(now)
            self._roll(state, now, ahead)
            daily = self._daily_available(state)
            if daily is not None and daily <= reserve:
                return math.inf
            return max(self._minutely_wait(state, now, ahead), 0.0)

    def stats(self, division: int | None = None) -> GovernorStats:
        """A copy of one division's counters, or the sum over all divisions."""
        with self._lock:
            if division is not None:
                return replace(self._state(division).stats)
            total = GovernorStats()
            for state in self._divisions.values():
                total.add(state.stats)
            return total
