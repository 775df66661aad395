"""Clocks, injected wherever time matters.

Token lifetimes (10 minutes), the 570 s refresh rule, calendar-minute rate limits and 30-day
refresh-token death all depend on time. Tests must live through hours of them in seconds, so
every component takes a ``Clock`` instead of calling ``time.time()``. ``ScaledClock`` runs
faster than real time and can be shared between processes by its anchors alone (two processes
with the same anchors and scale read the same simulated time), which is how the sandbox and the
client agree on "now" without talking to each other.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch (UTC), possibly simulated."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@dataclass
class ScaledClock:
    """Simulated time: ``anchor_sim + (real_now - anchor_real) * scale + offset``.

    ``advance`` moves this clock by hand (it changes ``offset``); another process sharing the
    anchors must be told the same offset (the sandbox exposes its clock over its admin API).
    """

    anchor_real: float
    anchor_sim: float
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError("scale must be positive")
        self._lock = threading.Lock()

    @classmethod
    def starting_now(cls, scale: float = 1.0, sim_start: float | None = None) -> ScaledClock:
        real = time.time()
        return cls(anchor_real=real, anchor_sim=real if sim_start is None else sim_start, scale=scale)

    def now(self) -> float:
        return self.anchor_sim + (time.time() - self.anchor_real) * self.scale + self.offset

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.scale)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.offset += seconds

    def spec(self) -> dict[str, float]:
        return {
            "anchor_real": self.anchor_real,
            "anchor_sim": self.anchor_sim,
            "scale": self.scale,
            "offset": self.offset,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, float]) -> ScaledClock:
        return cls(
            anchor_real=float(spec["anchor_real"]),
            anchor_sim=float(spec["anchor_sim"]),
            scale=float(spec.get("scale", 1.0)),
            offset=float(spec.get("offset", 0.0)),
        )


def clock_scale(clock: Clock) -> float:
    """Clock seconds per real second: a ``ScaledClock``'s scale, 1 for real time. Waits that the
    outside world counts in real seconds (queue visibility, polling) divide by it."""
    return float(getattr(clock, "scale", 1.0) or 1.0)
