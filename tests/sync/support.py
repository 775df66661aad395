"""Shared helpers for the load tests: a runtime against a sandbox, consent, the data set."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from shared.exact.catalog import CATALOG, Entity
from shared.exact.convert import convert_row
from shared.runtime import Runtime
from shared.sandbox.server import SandboxHandle
from shared.settings import Settings
from shared.sync.demo import consent_with_sandbox
from shared.warehouse.base import Warehouse

CONNECTION = "acme"


@dataclass(frozen=True)
class WarehouseBackend:
    """Where a test runtime loads: ``dialect`` is what its warehouse must report; ``build`` makes
    the warehouse from the runtime (its settings and clock), or is None for the one the settings
    name (the SQLite file under ``EXACTSYNC_HOME``, through the production factory)."""

    dialect: str
    build: Callable[[Runtime], Warehouse] | None = None


SQLITE = WarehouseBackend("sqlite")


def settings_for(sandbox: SandboxHandle, home: Path, **env: str) -> Settings:
    return Settings.from_env({"EXACTSYNC_HOME": str(home), "EXACT_BASE_URL": sandbox.base_url, **env})


def consented_runtime(
    sandbox: SandboxHandle,
    home: Path,
    connection: str = CONNECTION,
    *,
    backend: WarehouseBackend = SQLITE,
    **env: str,
) -> Runtime:
    """A runtime on the sandbox's clock with a connection consented through the real flow,
    loading into ``backend``'s warehouse (migrated)."""
    runtime = Runtime(settings=settings_for(sandbox, home, **env), clock=sandbox.clock)
    if backend.build is not None:
        runtime.use_warehouse(backend.build(runtime))
    consent_with_sandbox(runtime, connection)
    runtime.warehouse.migrate()
    assert runtime.warehouse.dialect == backend.dialect, "the runtime loads into another warehouse"
    return runtime


def admin(sandbox: SandboxHandle, method: str, name: str, **kwargs: Any) -> Any:
    answer = httpx.request(method, f"{sandbox.base_url}/_sandbox/{name}", timeout=120, **kwargs)
    assert answer.status_code == 200, answer.text
    return answer.json()


def counters(sandbox: SandboxHandle) -> dict[str, Any]:
    result: dict[str, Any] = admin(sandbox, "GET", "counters")
    return result


def current_division(runtime: Runtime, connection: str = CONNECTION) -> int:
    """The consenting user's current division (what ``current/Me`` says; not rate-counted)."""
    return int(runtime.exact_client(connection).me()["CurrentDivision"])


def live_rows(
    sandbox: SandboxHandle, division: int, entity: Entity, current: int | None = None
) -> dict[Any, dict[str, Any]]:
    """The sandbox's live data set of one entity and division, converted like the loader does.

    The dump has no user, while ``system/Divisions`` answers ``Current`` for the consenting user
    (true for the user's current division): that one field is filled in here the same way.
    """
    rows = admin(sandbox, "GET", "dump", params={"division": division, "entity": entity.name})["rows"]
    converted = [convert_row(entity, raw) for raw in rows]
    if entity.name == "Divisions":
        for row in converted:
            row["Current"] = row["Code"] == current
    return {row[entity.key]: row for row in converted}


def warehouse_rows(runtime: Runtime, division: int, entity: Entity) -> dict[Any, dict[str, Any]]:
    rows = runtime.warehouse.read_rows(entity, division)
    keyed = {row[entity.key]: row for row in rows}
    assert len(keyed) == len(rows), f"duplicate keys in {entity.table}"
    return keyed


def typed(row: Mapping[str, Any]) -> dict[str, tuple[str, Any, Any]]:
    """Each value with its type and, for a datetime, its UTC offset. Plain ``==`` lets ``True``
    equal ``1`` and ``1`` equal ``1.0``, so a dialect handing back another form would pass; every
    dialect must return exactly the loader's forms (``bool``, ``float``, aware UTC ``datetime``)."""
    return {
        name: (type(value).__name__, value.utcoffset() if isinstance(value, datetime) else None, value)
        for name, value in row.items()
    }


_UTC = timedelta(0)


def assert_equal_to_sandbox(
    runtime: Runtime, sandbox: SandboxHandle, divisions: list[int], entities: tuple[Entity, ...] = CATALOG
) -> int:
    """Row for row, value for value; returns how many rows were compared."""
    compared = 0
    current = current_division(runtime)
    for entity in entities:
        for division in divisions:
            want = live_rows(sandbox, division, entity, current)
            have = warehouse_rows(runtime, division, entity)
            missing = sorted(map(str, want.keys() - have.keys()))[:5]
            extra = sorted(map(str, have.keys() - want.keys()))[:5]
            assert not missing and not extra, f"{entity.name}/{division}: missing {missing}, extra {extra}"
            for key, row in want.items():
                got, expected = typed(have[key]), typed(row)
                differ = {
                    name: (got.get(name), expected.get(name))
                    for name in got.keys() | expected.keys()
                    if got.get(name) != expected.get(name)
                }
                assert not differ, f"{entity.name}/{division} {key}: (warehouse, sandbox) {differ}"
                naive = [n for n, (kind, offset, _v) in got.items() if kind == "datetime" and offset != _UTC]
                assert not naive, f"{entity.name}/{division} {key}: not UTC-aware: {naive}"
            compared += len(want)
    return compared


def api_calls(sandbox: SandboxHandle) -> dict[str, int]:
    calls: dict[str, int] = counters(sandbox)["api_calls"]
    return calls


def calls_for(calls: dict[str, int], division: int, entity: Entity) -> int:
    return calls.get(f"{division} {entity.read_path}", 0)


def pages_needed(rows: int, page_size: int) -> int:
    return max(1, math.ceil(rows / page_size))


def fresh_minute(sandbox: SandboxHandle, into: float = 0.5) -> float:
    """Move the sandbox clock to ``into`` seconds after the next calendar minute starts (rate
    limits count per calendar minute); returns that minute's start."""
    start = (math.floor(sandbox.clock.now() / 60) + 1) * 60
    admin(sandbox, "POST", "clock", json={"to": start + into})
    return float(start)
