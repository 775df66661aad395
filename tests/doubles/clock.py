"""A manual ``Clock`` for tests: an injected part (the ``Clock`` protocol), not our code.

Time moves only when someone sleeps (or ``advance``s), so waits cost no real time while ``slept``
still proves how long the code under test would have waited.
"""

from __future__ import annotations

import threading


class ManualClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            if seconds > 0:
                self.t += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds
