"""Shared helpers for the load tests: a runtime against a sandbox, consent, the data set."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx

from shared.exact.catalog import CATALOG, Entity
from shared.exact.convert import convert_row
from shared.runtime import Runtime
from shared.sandbox.server import SandboxHandle
from shared.settings import Settings
from shared.sync.demo import consent_with_sandbox

CONNECTION = "acme"


def settings_for(sandbox: SandboxHandle, home: Path, **env: str) -> Settings:
    return Settings.from_env({"EXACTSYNC_HOME": str(home), "EXACT_BASE_URL": sandbox.base_url, **env})


def consented_runtime(
    sandbox: SandboxHandle, home: Path, connection: str = CONNECTION, **env: str
) -> Runtime:
    """A runtime on the sandbox's clock with a connection consented through the real flow."""
    runtime = Runtime(settings=settings_for(sandbox, home, **env), clock=sandbox.clock)
    consent_with_sandbox(runtime, connection)
    runtime.warehouse.migrate()
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
                assert have[key] == row, f"{entity.name}/{division} {key}: {have[key]} != {row}"
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
