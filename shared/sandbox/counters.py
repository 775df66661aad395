"""What the sandbox observed, for tests and demos (``GET /_sandbox/counters``).

Only observations live here; the limits themselves are enforced in ``limits.py`` and
``oauth.py``, so resetting counters never changes what the next call is answered.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.api_calls: Counter[str] = Counter()
            self.values: Counter[str] = Counter()
            self.status: Counter[int] = Counter()
            self.refresh_log: list[dict[str, Any]] = []
            self.exchange_log: list[dict[str, Any]] = []

    def api_call(self, key: str) -> None:
        with self._lock:
            self.api_calls[key] += 1
            self.values["api_calls_total"] += 1

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.values[name] += n

    def answered(self, status: int) -> None:
        with self._lock:
            self.status[status] += 1
            if 400 <= status < 500 and status != 429:  # 429s are counted as rate_limited_429
                self.values["errors_4xx"] += 1
            if status >= 500:
                self.values["errors_5xx"] += 1

    def log_refresh(self, at: float, outcome: str, chain: str | None) -> None:
        with self._lock:
            self.refresh_log.append({"at": at, "outcome": outcome, "chain": chain})

    def log_exchange(self, at: float, outcome: str, chain: str | None) -> None:
        with self._lock:
            self.exchange_log.append({"at": at, "outcome": outcome, "chain": chain})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {
                name: self.values.get(name, 0)
                for name in (
                    "api_calls_total", "token_calls", "refreshes", "refresh_token_reuse", "too_early_refreshes",
                    "rate_limited_429", "errors_4xx", "errors_5xx", "codes_issued", "codes_exchanged",
                    "error_blocked", "webhook_deliveries", "webhook_delivery_failures", "webhook_validations",
                    "faults_injected", "consents_denied",
                )
            }  # fmt: skip
            out["api_calls"] = dict(self.api_calls)
            out["status"] = {str(k): v for k, v in sorted(self.status.items())}
            out["refresh_log"] = list(self.refresh_log)
            out["exchange_log"] = list(self.exchange_log)
            return out
