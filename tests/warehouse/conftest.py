"""Warehouse fixtures: every behaviour test runs on SQLite, and on SQL Server when one is given.

Running the behaviour suite against a real SQL Server or Azure SQL database (marked
``sqlserver``; skipped unless ``SQL_TEST_SERVER`` is set)::

    # Azure SQL, signed in the way production signs in (an Entra token from azure-identity:
    # `az login`, or AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, or a managed identity).
    # The identity needs db_ddladmin (the tests create and drop a scratch schema) and read/write.
    SQL_TEST_SERVER=myserver.database.windows.net SQL_TEST_DATABASE=exactsync_test \
        .venv/bin/python -m pytest tests/warehouse -m sqlserver -q

    # A local SQL Server 2022 (e.g. the mcr.microsoft.com/mssql/server container) with a SQL
    # login: the fixture's connect() then adds UID/PWD instead of the token (test-only; the
    # warehouse itself only ever authenticates with a token). SQL_TEST_TRUST_CERT=1 accepts the
    # container's self-signed certificate.
    SQL_TEST_SERVER=127.0.0.1,1433 SQL_TEST_DATABASE=master SQL_TEST_USER=sa \
        SQL_TEST_PASSWORD=... SQL_TEST_TRUST_CERT=1 .venv/bin/python -m pytest tests/warehouse -m sqlserver -q

``SQL_TEST_DRIVER`` overrides the ODBC driver (a name or a libmsodbcsql path; by default the
registered "ODBC Driver 18 for SQL Server", else the one bundled in mssql-python-odbc). Each
test gets its own schema ``exactsync_test_<random>``, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from shared.exact.catalog import Entity
from shared.warehouse.base import DeleteMode, Warehouse
from shared.warehouse.schema import ENTITIES
from shared.warehouse.sqlite import SqliteWarehouse

MakeWarehouse = Callable[..., Warehouse]


class StaticToken:
    """A credential handing out one fixed token (tests; SQL-login runs ignore it)."""

    def __init__(self, token: str = "test-token", expires_on: int = 2**40) -> None:
        self.token, self.expires_on = token, expires_on

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, self.expires_on)


@pytest.fixture(params=["sqlite", pytest.param("sqlserver", marks=pytest.mark.sqlserver)])
def make_warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeWarehouse]:
    """``make_warehouse(delete_mode=, entities=, migrate=True)`` -> a warehouse on a fresh database.

    Several calls in one test share the database (the same file / schema), like several
    processes of one deployment.
    """
    made: list[Any] = []
    if request.param == "sqlite":

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

        yield make_sqlite
    else:
        yield from _sqlserver(made)
    for warehouse in made:
        warehouse.close()


def _sqlserver(made: list[Any]) -> Iterator[MakeWarehouse]:
    server = os.environ.get("SQL_TEST_SERVER", "").strip()
    if not server:
        pytest.skip("SQL_TEST_SERVER is not set (see tests/warehouse/conftest.py to run against SQL Server)")
    database = os.environ.get("SQL_TEST_DATABASE", "").strip()
    if not database:
        pytest.fail("SQL_TEST_SERVER is set but SQL_TEST_DATABASE is not")
    from shared.warehouse.azure_sql import (
        DEFAULT_DRIVER,
        SQL_COPT_SS_ACCESS_TOKEN,
        SQL_SCOPE,
        AzureSqlWarehouse,
        connection_string,
        resolve_driver,
        token_struct,
    )

    driver = resolve_driver(os.environ.get("SQL_TEST_DRIVER", "").strip() or DEFAULT_DRIVER)
    user = os.environ.get("SQL_TEST_USER", "").strip()
    connect: Callable[..., Any] | None = None
    credential: Any
    if user:
        import pyodbc

        password = os.environ.get("SQL_TEST_PASSWORD", "")
        trust = os.environ.get("SQL_TEST_TRUST_CERT", "") == "1"

        def sql_login(conn_str: str, *, attrs_before: Any = None, autocommit: bool, timeout: int) -> Any:
            if trust:
                conn_str = conn_str.replace("TrustServerCertificate=no;", "TrustServerCertificate=yes;")
            return pyodbc.connect(
                conn_str + f"UID={user};PWD={{{password}}};", autocommit=autocommit, timeout=timeout
            )

        connect = sql_login
        credential = StaticToken()
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()

    def raw() -> Any:
        import pyodbc

        conn_str = connection_string(server, database, driver)
        token = token_struct(credential.get_token(SQL_SCOPE).token)
        if connect is not None:
            return connect(
                conn_str, attrs_before={SQL_COPT_SS_ACCESS_TOKEN: token}, autocommit=True, timeout=30
            )
        return pyodbc.connect(
            conn_str, attrs_before={SQL_COPT_SS_ACCESS_TOKEN: token}, autocommit=True, timeout=30
        )

    schema = f"exactsync_test_{uuid.uuid4().hex[:10]}"
    admin = raw()
    admin.cursor().execute(f"CREATE SCHEMA [{schema}]")

    def make_sql(
        delete_mode: DeleteMode = "hard", entities: Sequence[Entity] = ENTITIES, migrate: bool = True
    ) -> Warehouse:
        warehouse = AzureSqlWarehouse(
            server=server,
            database=database,
            credential=credential,
            driver=driver,
            delete_mode=delete_mode,
            connect=connect,
            schema=schema,
            entities=entities,
            retry_delays=(1.0, 2.0),
        )
        if migrate:
            warehouse.migrate()
        made.append(warehouse)
        return warehouse

    try:
        yield make_sql
    finally:
        for warehouse in made:
            warehouse.close()
        made.clear()
        cur = admin.cursor()
        tables = [
            r[0] for r in cur.execute("SELECT name FROM sys.tables WHERE schema_id = SCHEMA_ID(?)", schema)
        ]
        for table in tables:
            cur.execute(f"DROP TABLE [{schema}].[{table}]")
        cur.execute(f"DROP SCHEMA [{schema}]")
        admin.close()
