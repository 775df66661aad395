"""Choosing and building the warehouse from settings (the composition root calls this once).

Azure SQL when ``SQL_SERVER``/``SQL_DATABASE`` are set, else the embedded SQLite file under
``EXACTSYNC_HOME``. Heavy imports (pyodbc, azure.identity) happen only on the Azure SQL path,
and only here, at first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.clock import Clock
from shared.settings import Settings
from shared.warehouse.base import Warehouse, check_delete_mode

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.warehouse.azure_sql import Connect


def make_warehouse(
    settings: Settings,
    *,
    credential: TokenCredential | None = None,
    connect: Connect | None = None,
    clock: Clock | None = None,
) -> Warehouse:
    """The configured warehouse. ``credential``/``connect`` replace azure-identity/pyodbc in tests.

    On the Azure SQL path the ODBC driver is checked here, at start-up, unless ``connect`` is
    given (then the caller stands in for pyodbc and the driver). SQLite creates and updates its
    tables on open (it is its own deployment); Azure SQL relies on ``exactsync migrate``.
    """
    delete_mode = check_delete_mode(settings.delete_mode)
    if settings.sql_server and settings.sql_database:
        from shared.credentials import app_credential
        from shared.warehouse.azure_sql import AzureSqlWarehouse, resolve_driver

        driver = settings.sql_driver if connect is not None else resolve_driver(settings.sql_driver)
        return AzureSqlWarehouse(
            server=settings.sql_server,
            database=settings.sql_database,
            driver=driver,
            credential=credential or app_credential(settings.azure_client_id),
            delete_mode=delete_mode,
            clock=clock,
            connect=connect,
        )
    from shared.warehouse.sqlite import SqliteWarehouse

    return SqliteWarehouse(settings.sqlite_path, delete_mode=delete_mode, clock=clock, auto_migrate=True)
