"""Faults on demand: latency, 5xx answers, token answers lost after the server rotated.

Counts mean "the next n calls"; latencies are real seconds (they exist to trip client
timeouts, which run on real time) and stay until set back to 0.
"""

from __future__ import annotations

import threading
from typing import Any

COUNTS = (
    "token_5xx",  # the token endpoint answers 500 before doing anything
    "token_lost_after_rotate",  # the server rotates (or issues), then answers 500
    "token_dropped_after_rotate",  # the server rotates, then closes the connection unanswered
    "api_5xx",  # an API call answers 503 with an OData error
    "api_html_error",  # an API call answers 500 with an HTML page (a proxy's error)
    "api_dropped",  # an API call's connection closes unanswered
)
DELAYS = ("token_latency", "api_latency")
FLAGS = ("deny_consent",)


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(COUNTS, 0)
        self.delays = dict.fromkeys(DELAYS, 0.0)
        self.flags = dict.fromkeys(FLAGS, False)

    def configure(self, changes: dict[str, Any]) -> None:
        """Validate everything first so a bad request changes nothing."""
        for name, value in changes.items():
            if name in COUNTS:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{name} must be a whole number >= 0")
            elif name in DELAYS:
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 600:
                    raise ValueError(f"{name} must be seconds between 0 and 600")
            elif name in FLAGS:
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
            else:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join((*COUNTS, *DELAYS, *FLAGS))}")
        with self._lock:
            for name, value in changes.items():
                if name in COUNTS:
                    self.counts[name] = int(value)
                elif name in DELAYS:
                    self.delays[name] = float(value)
                else:
                    self.flags[name] = bool(value)

    def take(self, name: str) -> bool:
        """True (and one fewer left) when the named fault is armed."""
        with self._lock:
            if self.counts[name] > 0:
                self.counts[name] -= 1
                return True
            return False

    def delay(self, name: str) -> float:
        return self.delays[name]

    def flag(self, name: str) -> bool:
        return self.flags[name]

    def reset(self) -> None:
        with self._lock:
            self.counts = dict.fromkeys(COUNTS, 0)
            self.delays = dict.fromkeys(DELAYS, 0.0)
            self.flags = dict.fromkeys(FLAGS, False)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counts, **self.delays, **self.flags}
