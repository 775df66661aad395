"""Exact's API limits: calls per division per calendar minute and per UTC day, and the error block.

Windows are calendar windows of the sandbox clock (a minute starts at :00, a day at 00:00 UTC),
and resets are announced in epoch *milliseconds*. The error block follows Exact's published
rule: 10 answers with status 400, 401, 403 or 404 for one (app, user, division, endpoint) within
an hour block that endpoint for an hour, longer on repeat (the block doubles each time).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

ERROR_STATUSES = frozenset({400, 401, 403, 404})


@dataclass
class Decision:
    allowed: bool
    kind: str | None  # None, "minutely" or "daily" (which limit refused the call)
    headers: list[tuple[str, str]]


@dataclass
class _Window:
    minute: int = -1
    minute_calls: int = 0
    day: int = -1
    day_calls: int = 0


@dataclass
class _ErrorTrack:
    times: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0
    blocks: int = 0


class RateLimits:
    """Per (app, division) minute and day counters; thread-safe."""

    def __init__(self, *, enabled: bool = True, minutely: int = 60, daily: int = 5000) -> None:
        self.enabled = enabled
        self.minutely = minutely
        self.daily = daily
        self._windows: dict[tuple[str, int], _Window] = {}
        self._lock = threading.Lock()

    def configure(
        self, *, enabled: bool | None = None, minutely: int | None = None, daily: int | None = None
    ) -> None:
        with self._lock:
            if enabled is not None:
                self.enabled = enabled
            if minutely is not None:
                self.minutely = minutely
            if daily is not None:
                self.daily = daily

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()

    def check(self, app: str, division: int, now: float) -> Decision:
        """Count one call (unless refused) and give the headers for its answer."""
        if not self.enabled:
            return Decision(True, None, [])
        minute, day = int(now // 60), int(now // 86_400)
        minute_reset, day_reset = str((minute + 1) * 60_000), str((day + 1) * 86_400_000)
        with self._lock:
            window = self._windows.setdefault((app, division), _Window())
            if window.day != day:
                window.day, window.day_calls = day, 0
            if window.minute != minute:
                window.minute, window.minute_calls = minute, 0
            if window.day_calls >= self.daily:
                return Decision(False, "daily", [
                    ("X-RateLimit-Limit", str(self.daily)),
                    ("X-RateLimit-Remaining", "0"),
                    ("X-RateLimit-Reset", day_reset),
                ])  # fmt: skip
            if window.minute_calls >= self.minutely:
                return Decision(False, "minutely", [
                    ("X-RateLimit-Minutely-Limit", str(self.minutely)),
                    ("X-RateLimit-Minutely-Remaining", "0"),
                    ("X-RateLimit-Minutely-Reset", minute_reset),
                ])  # fmt: skip
            window.day_calls += 1
            window.minute_calls += 1
            return Decision(True, None, [
                ("X-RateLimit-Limit", str(self.daily)),
                ("X-RateLimit-Remaining", str(self.daily - window.day_calls)),
                ("X-RateLimit-Reset", day_reset),
                ("X-RateLimit-Minutely-Limit", str(self.minutely)),
                ("X-RateLimit-Minutely-Remaining", str(self.minutely - window.minute_calls)),
                ("X-RateLimit-Minutely-Reset", minute_reset),
            ])  # fmt: skip

    def usage(self, now: float) -> dict[str, dict[str, int]]:
        minute, day = int(now // 60), int(now // 86_400)
        with self._lock:
            return {
                f"{app} {division}": {
                    "minute_calls": w.minute_calls if w.minute == minute else 0,
                    "day_calls": w.day_calls if w.day == day else 0,
                }
                for (app, division), w in self._windows.items()
            }


class ErrorBlock:
    """10 error answers per (app, user, division, endpoint) within an hour block it for an hour."""

    def __init__(self, *, threshold: int = 10, window: float = 3600.0, block_seconds: float = 3600.0) -> None:
        self.threshold = threshold
        self.window = window
        self.block_seconds = block_seconds
        self._tracks: dict[tuple[str, str, int, str], _ErrorTrack] = {}
        self._lock = threading.Lock()

    def configure(self, *, threshold: int | None = None, block_seconds: float | None = None) -> None:
        with self._lock:
            if threshold is not None:
                self.threshold = threshold
            if block_seconds is not None:
                self.block_seconds = block_seconds

    def reset(self) -> None:
        with self._lock:
            self._tracks.clear()

    def blocked_until(self, key: tuple[str, str, int, str], now: float) -> float | None:
        if self.threshold <= 0:
            return None
        with self._lock:
            track = self._tracks.get(key)
            if track is not None and track.blocked_until > now:
                return track.blocked_until
            return None

    def record(self, key: tuple[str, str, int, str], status: int, now: float) -> None:
        if status not in ERROR_STATUSES or self.threshold <= 0:
            return
        with self._lock:
            track = self._tracks.setdefault(key, _ErrorTrack())
            track.times.append(now)
            while track.times and track.times[0] <= now - self.window:
                track.times.popleft()
            if len(track.times) >= self.threshold:
                track.blocks += 1
                track.blocked_until = now + self.block_seconds * 2 ** (track.blocks - 1)
                track.times.clear()

    def active(self, now: float) -> list[dict[str, object]]:
        with self._lock:
            return [
                {
                    "app": k[0],
                    "user": k[1],
                    "division": k[2],
                    "endpoint": k[3],
                    "blocked_until": t.blocked_until,
                }
                for k, t in self._tracks.items()
                if t.blocked_until > now
            ]
