"""Small injected parts for the client's unit tests: a manual clock and a counting token source.

These replace injected dependencies (the ``Clock`` and the ``TokenSource`` protocol), not our
code: the client, governor and parsers under test run unchanged.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


class ManualClock:
    """Time that moves only when someone sleeps (or ``advance``s): waits cost no real time."""

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


@dataclass
class CountingTokens:
    """A ``TokenSource`` handing out ``token-<n>``; a rejection moves to the next number."""

    generation: int = 1
    gets: int = 0
    rejections: list[str] = field(default_factory=list)
    fail_with: Exception | None = None

    @property
    def current(self) -> str:
        return f"token-{self.generation}-abcdefghijklmnop"

    def get_access_token(self, connection: str, *, min_validity: float = 0.0) -> str:
        self.gets += 1
        if self.fail_with is not None:
            raise self.fail_with
        return self.current

    def refresh_after_rejection(self, connection: str, rejected_token: str) -> str:
        self.rejections.append(rejected_token)
        if rejected_token == self.current:
            self.generation += 1
        return self.current
