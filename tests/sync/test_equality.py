"""EQUALITY: over real HTTP, every catalog entity of two divisions ends equal to the sandbox's
live data set, after a full sync and after inserts, updates and deletes + incremental syncs.

Each test runs per ``warehouse_backend``: the embedded SQLite warehouse always, and Azure SQL
(marked ``sqlserver``) on a scratch schema of the real SQL Server or Azure SQL database named by
``SQL_TEST_SERVER`` (skipped when it is not set; see docs/operations.md, "Testing against a real
SQL Server"). The comparison is the same for both: ``read_rows`` must hand back every value in
the loader's form and type.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from shared.exact.catalog import CATALOG
from shared.runtime import Runtime
from shared.sync.demo import mutate
from shared.sync.runner import run_sync
from shared.warehouse.base import DeleteMode, Warehouse
from tests.fixtures.sqlserver import ScratchSchema, sqlserver_param
from tests.sync.support import (
    CONNECTION,
    SQLITE,
    WarehouseBackend,
    assert_equal_to_sandbox,
    consented_runtime,
)


@pytest.fixture(params=["sqlite", sqlserver_param("azure_sql")])
def warehouse_backend(request: pytest.FixtureRequest) -> WarehouseBackend:
    """The warehouse the test's runtime loads into, built like the runtime's own (its clock and
    ``DELETE_MODE``)."""
    if request.param == "sqlite":
        return SQLITE
    scratch: ScratchSchema = request.getfixturevalue("sqlserver_schema")

    def build(runtime: Runtime) -> Warehouse:
        return scratch.warehouse(cast(DeleteMode, runtime.settings.delete_mode), clock=runtime.clock)

    return WarehouseBackend("azure_sql", build)


def test_full_and_incremental_syncs_equal_the_sandbox_row_for_row(
    sandbox_factory: Callable[..., Any], tmp_path: Path, warehouse_backend: WarehouseBackend
) -> None:
    # 2,500 transaction lines and 1,100 accounts: several 1000-row pages per division.
    sandbox = sandbox_factory(row_counts={"TransactionLines": 2500, "Accounts": 1100})
    runtime = consented_runtime(sandbox, tmp_path, backend=warehouse_backend)

    planned, summary = run_sync(runtime, full=True, workers=1, stream=io.StringIO())
    divisions = sorted(planned.divisions[CONNECTION])
    assert len(divisions) == 2
    assert not summary.failures and summary.throttled == 0
    assert {name for _division, name in summary.per_entity} == {e.name for e in CATALOG} | {"Deleted"}
    assert assert_equal_to_sandbox(runtime, sandbox, divisions) > 2 * (2500 + 1100)

    # Every kind of change in every entity that can change, in both divisions.
    for division in divisions:
        for entity in (e for e in CATALOG if e.incremental):
            mutate(sandbox, division, entity.name, insert=4, update=3, delete=2)
    _planned, summary = run_sync(runtime, workers=1, stream=io.StringIO())
    assert not summary.failures
    assert summary.deleted > 0  # (a row inserted and deleted in one mutation never reached us)
    assert_equal_to_sandbox(runtime, sandbox, divisions)

    # A row inserted and deleted between two syncs, one updated twice, one updated then deleted.
    division = divisions[0]
    fresh = mutate(sandbox, division, "Accounts", insert=2)["inserted"]
    mutate(sandbox, division, "Accounts", delete_keys=[fresh[0]], update_keys=[fresh[1]])
    twice = mutate(sandbox, division, "Items", update=1)["updated"]
    mutate(sandbox, division, "Items", update_keys=twice)
    doomed = mutate(sandbox, division, "TransactionLines", update=1)["updated"]
    mutate(sandbox, division, "TransactionLines", delete_keys=doomed)
    _planned, summary = run_sync(runtime, workers=1, stream=io.StringIO())
    assert not summary.failures
    assert_equal_to_sandbox(runtime, sandbox, divisions)


@pytest.mark.parametrize("delete_mode", ["hard", "soft"])
def test_a_full_resync_after_changes_still_equals_the_sandbox(
    sandbox_factory: Callable[..., Any], tmp_path: Path, delete_mode: str, warehouse_backend: WarehouseBackend
) -> None:
    """``--full`` re-reads from Timestamp 1 over existing data; deletions stay applied."""
    sandbox = sandbox_factory()
    runtime = consented_runtime(sandbox, tmp_path, backend=warehouse_backend, DELETE_MODE=delete_mode)
    assert getattr(runtime.warehouse, "delete_mode", None) == delete_mode  # the backend honours DELETE_MODE
    planned, _summary = run_sync(runtime, full=True, workers=1, stream=io.StringIO())
    divisions = sorted(planned.divisions[CONNECTION])
    for division in divisions:
        mutate(sandbox, division, "SalesInvoices", insert=2, update=2, delete=3)
    _planned, summary = run_sync(runtime, workers=1, stream=io.StringIO())
    assert not summary.failures and summary.deleted > 0
    assert_equal_to_sandbox(runtime, sandbox, divisions)
    _planned, summary = run_sync(runtime, full=True, workers=1, stream=io.StringIO())
    assert not summary.failures
    assert_equal_to_sandbox(runtime, sandbox, divisions)
