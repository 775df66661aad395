"""Warehouse fixtures: every behaviour test runs on SQLite, and on SQL Server when one is given.

The SQL Server variant (marked ``sqlserver``) is skipped unless ``SQL_TEST_SERVER`` is set; its
connection and scratch schema come from the ``sqlserver_schema`` fixture in
tests/fixtures/sqlserver.py. How to run it: docs/operations.md, "Testing against a real SQL
Server".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from shared.exact.catalog import Entity
from shared.warehouse.base import DeleteMode, Warehouse
from shared.warehouse.schema import ENTITIES
from shared.warehouse.sqlite import SqliteWarehouse
from tests.fixtures.sqlserver import ScratchSchema, StaticToken, sqlserver_param

__all__ = ["MakeWarehouse", "StaticToken"]  # StaticToken: re-exported for test_real_driver

MakeWarehouse = Callable[..., Warehouse]


@pytest.fixture(params=["sqlite", sqlserver_param("sqlserver")])
def make_warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeWarehouse]:
    """``make_warehouse(delete_mode=, entities=, migrate=True)`` -> a warehouse on a fresh database.

    Several calls in one test share the database (the same file / schema), like several
    processes of one deployment.
    """
    if request.param == "sqlserver":
        scratch: ScratchSchema = request.getfixturevalue("sqlserver_schema")
        yield scratch.warehouse  # the fixture closes them and drops the schema
        return
    made: list[Any] = []

    def make_sqlite(
        delete_mode: DeleteMode = "hard", entities: Sequence[Entity] = ENTITIES, migrate: bool = True
    ) -> Warehouse:
        warehouse = SqliteWarehouse(
            tmp_path / "warehouse.sqlite3", delete_mode=delete_mode, entities=entities
        )
        if migrate:
            warehouse.migrate()
        made.append(warehouse)
        return warehouse

    try:
        yield make_sqlite
    finally:
        for warehouse in made:
            warehouse.close()
