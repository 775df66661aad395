"""The composition root: builds the objects every trigger and command shares, once per process.

Nothing is built at import. ``current()`` creates the process's ``Runtime`` from the environment
on first use; each component is a cached property, so a timer that only rotates tokens never
loads pyodbc, and a loader never loads the OAuth consent code. Tests and ``exactsync serve``
build a ``Runtime`` themselves (own settings, clock, transports) and ``install`` it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from shared.clock import Clock, SystemClock
from shared.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)

    # --- OAuth area (shared/oauth, shared/stores, shared/locks) ------------------------------

    # --- load area (shared/exact, shared/warehouse, shared/sync) -----------------------------


_installed: dict[str, Runtime] = {}
_guard = threading.Lock()


def current() -> Runtime:
    """The process-wide runtime, built from the environment on first call."""
    with _guard:
        if "runtime" not in _installed:
            _installed["runtime"] = Runtime(settings=Settings.from_env())
        return _installed["runtime"]


def install(runtime: Runtime | None) -> None:
    """Replace (or with ``None`` forget) the process-wide runtime."""
    with _guard:
        _installed.pop("runtime", None)
        if runtime is not None:
            _installed["runtime"] = runtime
