"""CALLS, read from the sandbox's own counters: a full sync needs about one call per 1000 rows,
an incremental sync without changes one call per entity and division (plus sync/Deleted)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.exact.catalog import CATALOG, DELETED
from shared.sync.runner import run_sync
from tests.sync.support import admin, api_calls, calls_for, consented_runtime, pages_needed

#: calls a load may spend beyond one per page: the empty answer after an exactly full last page
CONSTANT = 1


def test_full_then_unchanged_incremental_call_counts(
    sandbox_factory: Callable[..., Any], tmp_path: Path
) -> None:
    sandbox = sandbox_factory(row_counts={"TransactionLines": 5000, "Accounts": 1500, "Items": 1000})
    runtime = consented_runtime(sandbox, tmp_path)
    divisions = list(admin(sandbox, "GET", "")["divisions"])
    entities = (*CATALOG, DELETED)

    admin(sandbox, "POST", "counters/reset")
    _planned, summary = run_sync(runtime, divisions=divisions, full=True, workers=1, stream=io.StringIO())
    assert not summary.failures
    calls = api_calls(sandbox)
    minimum = 0
    for division in divisions:
        for entity in entities:
            rows = admin(sandbox, "GET", "dump", params={"division": division, "entity": entity.name})[
                "count"
            ]
            needed = pages_needed(rows, entity.page_size)
            minimum += needed
            used = calls_for(calls, division, entity)
            assert needed <= used <= needed + CONSTANT, (division, entity.name, rows, used)
    assert sum(calls.values()) <= minimum + CONSTANT * len(divisions) * len(entities)
    assert summary.calls == sum(calls.values())  # our own count agrees with the server's

    admin(sandbox, "POST", "counters/reset")
    _planned, summary = run_sync(runtime, divisions=divisions, workers=1, stream=io.StringIO())
    assert not summary.failures and summary.upserted == len(divisions) * len(divisions)  # Divisions re-read
    assert api_calls(sandbox) == {f"{d} {e.read_path}": 1 for d in divisions for e in entities}
