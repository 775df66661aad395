"""The rate governor: spend the minute's budget, wait exactly to its reset, keep the daily reserve."""

from __future__ import annotations

import math
import threading
from collections import Counter
from email.utils import formatdate

import pytest

from shared.clock import ScaledClock
from shared.exact.errors import DailyBudgetExhausted, MinutelyBudgetSpent
from shared.exact.rate import RateGovernor
from tests.doubles.clock import ManualClock

DIV = 101


def headers(
    *,
    m_remaining: int,
    m_reset: float,
    d_remaining: int | None = 4000,
    d_reset: float | None = None,
    limit: int = 60,
) -> dict[str, str]:
    out = {
        "X-RateLimit-Minutely-Limit": str(limit),
        "X-RateLimit-Minutely-Remaining": str(m_remaining),
        "X-RateLimit-Minutely-Reset": str(int(m_reset * 1000)),
    }
    if d_remaining is not None:
        out["X-RateLimit-Limit"] = "5000"
        out["X-RateLimit-Remaining"] = str(d_remaining)
        out["X-RateLimit-Reset"] = str(int((d_reset or 1_700_006_400.0) * 1000))
    return out


class MinuteServer:
    """Exact's counting, as a model: 60 a calendar minute, 5,000 a day, headers on every answer."""

    def __init__(self, clock: object, minutely: int = 60, daily: int = 5000) -> None:
        self.clock = clock
        self.minutely = minutely
        self.daily = daily
        self.per_minute: Counter[int] = Counter()
        self.per_day: Counter[int] = Counter()
        self.too_many = 0
        self.lock = threading.Lock()

    def call(self) -> tuple[int, dict[str, str]]:
        with self.lock:
            now = self.clock.now()  # type: ignore[attr-defined]
            minute, day = math.floor(now / 60), math.floor(now / 86400)
            m_reset, d_reset = (minute + 1) * 60.0, (day + 1) * 86400.0
            if self.per_minute[minute] >= self.minutely or self.per_day[day] >= self.daily:
                self.too_many += 1
                return 429, headers(m_remaining=0, m_reset=m_reset, d_remaining=None)
            self.per_minute[minute] += 1
            self.per_day[day] += 1
            return 200, headers(
                m_remaining=self.minutely - self.per_minute[minute],
                m_reset=m_reset,
                d_remaining=self.daily - self.per_day[day],
                d_reset=d_reset,
                limit=self.minutely,
            )


def test_first_call_goes_without_knowledge() -> None:
    governor = RateGovernor(ManualClock())
    governor.acquire(DIV)
    assert governor.stats(DIV).calls == 1
    assert governor.snapshot(DIV).minutely_remaining is None


def test_spent_minute_waits_exactly_to_the_reset_plus_guard() -> None:
    clock = ManualClock(1_700_000_010.0)
    governor = RateGovernor(clock, guard=0.25)
    governor.acquire(DIV)
    governor.record(DIV, headers(m_remaining=0, m_reset=1_700_000_040.0), 200)
    governor.acquire(DIV)
    assert clock.slept == [pytest.approx(30.25)]
    stats = governor.stats(DIV)
    assert (stats.calls, stats.waits, stats.throttled) == (2, 1, 0)
    assert stats.waited_seconds == pytest.approx(30.25)


def test_budget_left_means_no_wait() -> None:
    clock = ManualClock()
    governor = RateGovernor(clock)
    governor.acquire(DIV)
    governor.record(DIV, headers(m_remaining=1, m_reset=clock.now() + 30), 200)
    governor.acquire(DIV)  # the last one of the minute
    assert clock.slept == []
    assert governor.delay_before_call(DIV) == pytest.approx(30.25)  # in flight holds the last slot


def test_long_backfill_uses_the_whole_minute_and_never_earns_a_429() -> None:
    clock = ManualClock(1_700_000_007.3)
    server = MinuteServer(clock)
    governor = RateGovernor(clock)
    first = clock.now()
    for _ in range(400):
        governor.acquire(DIV)
        clock.advance(0.35)  # the page's own latency
        status, answer = server.call()
        governor.record(DIV, answer, status)
    assert server.too_many == 0
    full_minutes = [
        count
        for minute, count in server.per_minute.items()
        if minute not in (min(server.per_minute), max(server.per_minute))
    ]
    assert full_minutes and all(count == 60 for count in full_minutes)
    elapsed_minutes = (clock.now() - first) / 60
    assert 400 / elapsed_minutes >= 54  # >= 90 % of the ceiling, boundary minutes included
    assert governor.stats(DIV).waits == len(server.per_minute) - 1


def test_threads_sharing_a_division_never_overrun_it() -> None:
    clock = ScaledClock.starting_now(scale=300.0)
    server = MinuteServer(clock, minutely=20)
    governor = RateGovernor(clock, guard=0.5)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(30):
                governor.acquire(DIV)
                status, answer = server.call()
                governor.record(DIV, answer, status)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert server.too_many == 0
    assert sum(server.per_minute.values()) == 120
    assert max(server.per_minute.values()) <= 20


def test_daily_reserve_is_reported_not_burned() -> None:
    clock = ManualClock()
    governor = RateGovernor(clock, daily_reserve=10)
    governor.acquire(DIV)
    governor.record(
        DIV, headers(m_remaining=50, m_reset=clock.now() + 20, d_remaining=10, d_reset=1_700_006_400.0), 200
    )
    with pytest.raises(DailyBudgetExhausted) as caught:
        governor.acquire(DIV)
    assert caught.value.division == DIV
    assert caught.value.reset_at == 1_700_006_400.0
    assert "reserve 10" in str(caught.value)
    assert governor.stats(DIV).calls == 1
    assert governor.stats(DIV).daily_stops == 1
    assert governor.delay_before_call(DIV) == math.inf
    # An incremental sync may spend the reserve.
    governor.acquire(DIV, daily_reserve=0)
    assert governor.stats(DIV).calls == 2
    # After the daily reset the budget is back.
    clock.t = 1_700_006_400.5
    governor.acquire(DIV)


def test_daily_zero_stops_even_without_reserve() -> None:
    clock = ManualClock()
    governor = RateGovernor(clock)
    governor.acquire(DIV)
    governor.record(DIV, headers(m_remaining=50, m_reset=clock.now() + 20, d_remaining=0), 200)
    with pytest.raises(DailyBudgetExhausted):
        governor.acquire(DIV)


def test_max_wait_hands_over_instead_of_blocking() -> None:
    clock = ManualClock(1_700_000_000.0)
    governor = RateGovernor(clock)
    governor.acquire(DIV)
    governor.record(DIV, headers(m_remaining=0, m_reset=1_700_000_045.0), 200)
    with pytest.raises(MinutelyBudgetSpent) as caught:
        governor.acquire(DIV, max_wait=10)
    assert caught.value.reset_at == pytest.approx(1_700_000_045.25)
    assert clock.slept == []
    governor.acquire(DIV, max_wait=60)
    assert clock.slept == [pytest.approx(45.25)]


def test_429_zeroes_the_minute_and_the_retry_waits_for_its_reset() -> None:
    clock = ManualClock(1_700_000_000.0)
    governor = RateGovernor(clock, guard=0.25)
    governor.acquire(DIV)
    governor.record(DIV, headers(m_remaining=30, m_reset=1_700_000_060.0), 200)
    governor.acquire(DIV)
    governor.record(DIV, headers(m_remaining=0, m_reset=1_700_000_060.0, d_remaining=None), 429)
    assert governor.stats(DIV).throttled == 1
    governor.acquire(DIV)
    assert clock.now() >= 1_700_000_060.0
    assert clock.slept[-1] >= 60.0  # never before the announced reset (and the guard grew)


def test_late_answer_about_a_past_minute_is_ignored() -> None:
    clock = ManualClock(1_700_000_070.0)
    governor = RateGovernor(clock)
    governor.acquire(DIV)
    governor.record(DIV, headers(m_remaining=0, m_reset=1_700_000_060.0), 200)
    governor.acquire(DIV)
    assert clock.slept == []


def test_divisions_have_separate_budgets() -> None:
    clock = ManualClock()
    governor = RateGovernor(clock)
    governor.acquire(1)
    governor.record(1, headers(m_remaining=0, m_reset=clock.now() + 30), 200)
    governor.acquire(2)
    assert clock.slept == []
    assert governor.delay_before_call(1) > 29
    assert governor.stats().calls == 2


def test_headers_missing_or_malformed_change_nothing() -> None:
    clock = ManualClock()
    governor = RateGovernor(clock)
    governor.acquire(DIV)
    snapshot = governor.record(DIV, {"X-RateLimit-Minutely-Remaining": "many"}, 200)
    assert snapshot.minutely_remaining is None
    governor.acquire(DIV)
    assert clock.slept == []


def test_429_without_minutely_headers_leaves_the_minute_alone() -> None:
    clock = ManualClock()
    governor = RateGovernor(clock)
    governor.acquire(DIV)
    governor.record(DIV, headers(m_remaining=30, m_reset=clock.now() + 30), 200)
    governor.acquire(DIV)
    governor.record(DIV, {}, 429)  # e.g. an endpoint blocked for errors
    assert governor.stats(DIV).throttled == 1
    assert governor.delay_before_call(DIV) == 0


def test_remaining_without_reset_waits_for_the_calendar_minute_once() -> None:
    clock = ManualClock(1_700_000_010.0)  # 10 s into a minute
    governor = RateGovernor(clock, guard=0.25)
    governor.acquire(DIV)
    governor.record(DIV, {"X-RateLimit-Minutely-Remaining": "0", "X-RateLimit-Minutely-Limit": "60"}, 200)
    governor.acquire(DIV)
    governor.acquire(DIV)  # the new minute's budget: no second wait
    minute_end = (1_700_000_010 // 60 + 1) * 60
    assert clock.slept == [pytest.approx(minute_end + 0.25 - 1_700_000_010.0)]


def test_429_with_a_reset_already_past_on_our_clock_waits_for_that_reset_on_exacts_clock() -> None:
    """A 429 for a window that looks over on our clock proves our clock ahead (by at least the send
    time minus the reset): the retry waits for that reset plus the guard on Exact's clock, never
    for our next calendar minute (which would throw away a whole minute of budget)."""
    clock = ManualClock(1_700_000_061.0)  # Exact still counts the minute ending at ...040
    governor = RateGovernor(clock, guard=0.25)
    governor.acquire(DIV)
    sent = clock.now()
    clock.advance(0.1)
    governor.record(DIV, headers(m_remaining=0, m_reset=1_700_000_040.0, d_remaining=None), 429, sent_at=sent)
    assert governor.clock_ahead() == pytest.approx(21.0)
    assert governor.snapshot(DIV).minutely_reset_at == pytest.approx(1_700_000_040.0)  # not dropped
    governor.acquire(DIV)
    assert clock.slept == [pytest.approx(1_700_000_040.0 + 21.0 + 0.5 - 1_700_000_061.1)]
    governor.acquire(DIV)  # Exact's new minute: its full budget
    assert len(clock.slept) == 1


class ExactClockServer(MinuteServer):
    """The model server on Exact's own clock, ``skew`` seconds behind ours, with a ``Date`` header
    (whole seconds, truncated, as servers send it) on every answer unless ``dates`` is off.

    ``early`` counts calls that arrived before the reset of the 429 answered just before them."""

    def __init__(self, ours: ManualClock, skew: float, *, dates: bool = True) -> None:
        super().__init__(self)
        self.ours = ours
        self.skew = skew
        self.dates = dates
        self.early = 0
        self.refused_until: float | None = None

    def now(self) -> float:
        return self.ours.now() - self.skew

    def call(self) -> tuple[int, dict[str, str]]:
        now = self.now()
        if self.refused_until is not None and now < self.refused_until:
            self.early += 1
        status, answer = super().call()
        if status == 429:
            self.refused_until = int(answer["X-RateLimit-Minutely-Reset"]) / 1000
        if self.dates:
            answer["Date"] = formatdate(now, usegmt=True)
        return status, answer


def backfill(governor: RateGovernor, clock: ManualClock, server: ExactClockServer, calls: int) -> None:
    """``calls`` requests, one at a time, each taking 0.35 s (Exact answers half-way through)."""
    for _ in range(calls):
        governor.acquire(DIV)
        sent = clock.now()
        clock.advance(0.15)
        status, answer = server.call()
        clock.advance(0.2)
        governor.record(DIV, answer, status, sent_at=sent)


def full_minutes(server: MinuteServer) -> list[int]:
    return [
        count
        for minute, count in server.per_minute.items()
        if minute not in (min(server.per_minute), max(server.per_minute))
    ]


@pytest.mark.parametrize("skew", [1.5, 7.25, 0.0, -3.0, -41.6])
def test_with_date_headers_a_skewed_clock_earns_no_429_and_keeps_the_minute_busy(skew: float) -> None:
    """Exact's ``Date`` bounds the skew from the first answer on: waits end at Exact's reset plus
    the guard whether our clock runs ahead (no early call) or behind (no idle seconds)."""
    clock = ManualClock(1_700_000_007.3)
    server = ExactClockServer(clock, skew)
    governor = RateGovernor(clock)
    first = clock.now()
    backfill(governor, clock, server, 400)
    assert server.too_many == 0
    assert server.early == 0
    assert governor.stats(DIV).throttled == 0
    assert skew <= governor.clock_ahead() <= skew + 1.0 + 0.35
    minutes = full_minutes(server)
    assert minutes and all(count == 60 for count in minutes)
    assert 400 / ((clock.now() - first) / 60) >= 54  # >= 90 % of the ceiling
    for slept in clock.slept:
        assert slept < 60  # never a whole minute lost


def test_without_date_headers_early_429s_teach_the_skew_and_never_cost_a_minute() -> None:
    """No ``Date``: our clock 1.5 s ahead makes the first wait end before Exact's reset. Each such
    429 proves more skew (and doubles the guard); the retries converge on Exact's reset within
    the same minute, and later minutes earn no 429 at all."""
    clock = ManualClock(1_700_000_007.3)
    server = ExactClockServer(clock, 1.5, dates=False)
    governor = RateGovernor(clock)
    backfill(governor, clock, server, 400)
    assert 1 <= server.too_many <= 2
    first_refusal_minute = min(server.per_minute) + 1
    assert all(count == 60 for count in full_minutes(server))
    assert 0.5 <= governor.clock_ahead() <= 1.5  # a lower bound: the doubled guard covers the rest
    assert server.per_minute[first_refusal_minute] == 60  # the refused minute still got its budget
    assert governor.stats(DIV).throttled == server.too_many


def test_a_clock_stepped_forward_costs_one_429_then_the_date_rebuilds_the_skew() -> None:
    """NTP steps our clock 2.3 s forward mid-backfill: the skew learned before is now too small;
    the one 429 it earns refutes it, that answer's ``Date`` gives the new bound, no more 429s."""
    clock = ManualClock(1_700_000_007.3)
    server = ExactClockServer(clock, 0.2)
    governor = RateGovernor(clock)
    backfill(governor, clock, server, 100)
    assert server.too_many == 0
    clock.advance(2.3)
    server.skew += 2.3  # Exact's clock did not move
    backfill(governor, clock, server, 300)
    assert server.too_many <= 1
    assert server.early == 0
    assert 2.5 <= governor.clock_ahead() <= 2.5 + 1.35
    assert all(count == 60 for count in full_minutes(server))


def test_unparseable_date_headers_are_ignored() -> None:
    clock = ManualClock()
    governor = RateGovernor(clock)
    for value in ("yesterday", "", "Mon, 99 Foo 2025 99:99:99 GMT"):
        governor.observe({"Date": value})
    assert governor.clock_ahead() == 0.0
    governor.observe({"Date": formatdate(clock.now() - 4.6, usegmt=True)})
    assert governor.clock_ahead() == pytest.approx(5.0)


def test_the_daily_stop_reports_exacts_midnight_on_our_clock_and_rolls_over_then() -> None:
    """A continuation scheduled for ``reset_at`` must find the new day here: with our clock 30 s
    ahead, Exact's 00:00 UTC is 00:00:30 on ours, and the budget is not forgotten before it."""
    midnight = 1_700_006_400.0
    clock = ManualClock(midnight - 100)
    server = ExactClockServer(clock, 30.0, dates=True)
    server.daily = 3
    governor = RateGovernor(clock)
    backfill(governor, clock, server, 3)
    with pytest.raises(DailyBudgetExhausted) as caught:
        governor.acquire(DIV)
    assert caught.value.reset_at is not None
    assert midnight + 30 <= caught.value.reset_at <= midnight + 30 + 1.35
    clock.t = midnight + 29.0  # our midnight has passed, Exact's has not
    with pytest.raises(DailyBudgetExhausted):
        governor.acquire(DIV)
    clock.t = caught.value.reset_at
    governor.acquire(DIV)
