"""Where Exact Online's data lands: one ``Warehouse`` interface, Azure SQL and SQLite behind it.

``base`` holds the contract; ``factory.make_warehouse(settings)`` picks the dialect. Importing
this package loads neither pyodbc nor azure-identity.
"""

from shared.warehouse.base import (
    Cursor,
    FailedStep,
    InvalidPage,
    PageResult,
    Warehouse,
    WarehouseError,
    WarehouseUnavailable,
)

__all__ = [
    "Cursor",
    "FailedStep",
    "InvalidPage",
    "PageResult",
    "Warehouse",
    "WarehouseError",
    "WarehouseUnavailable",
]
