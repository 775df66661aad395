"""Converted rows (the forms ``shared.exact.convert`` produces) for warehouse tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.exact.catalog import DELETED, Entity, entity
from shared.warehouse.base import Cursor

ACCOUNTS = entity("Accounts")
DIVISIONS = entity("Divisions")
TRANSACTION_LINES = entity("TransactionLines")
ITEMS = entity("Items")
BASE = datetime(2024, 3, 31, 0, 30, 15, 123000, tzinfo=UTC)


def guid(n: int) -> str:
    return str(uuid.UUID(int=n))


def account(n: int, timestamp: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ID": guid(n),
        "Timestamp": timestamp,
        "Code": f"{n:>18}",
        "Name": f"Account {n} — Ünïcødé 北京 😀",
        "Status": "C",
        "Blocked": n % 2 == 0,
        "IsSales": True,
        "IsSupplier": False,
        "Email": None,
        "Country": "NL",
        "Created": BASE + timedelta(days=n, milliseconds=n),
        "Modified": BASE + timedelta(seconds=timestamp),
    }
    row.update(changes)
    return row


def line(n: int, timestamp: int) -> dict[str, Any]:
    return {
        "ID": guid(10**6 + n),
        "Timestamp": timestamp,
        "EntryID": guid(2 * 10**6 + n // 10),
        "EntryNumber": n // 10,
        "LineNumber": n % 10,
        "Date": BASE + timedelta(days=n % 365),
        "FinancialYear": 2024,
        "FinancialPeriod": 1 + n % 12,
        "GLAccount": guid(3 * 10**6 + n % 50),
        "GLAccountCode": f"{8000 + n % 50}",
        "AmountDC": round(n * 1.37 - 500, 2),
        "AmountFC": 1e-05 * n,
        "Account": guid(n % 100),
        "Project": None,
        "Status": 20,
        "Type": 20,
        "Description": f"line {n}",
        "Modified": BASE,
    }


def division_row(code: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "Code": code,
        "Description": f"Division {code}",
        "Current": code == 1,
        "Customer": guid(code),
        "CustomerName": "Klant B.V.",
        "Country": "NL",
        "Currency": "EUR",
        "Status": 1,
        "BlockingStatus": 0,
    }
    row.update(changes)
    return row


def deleted(target: Entity, key: str, timestamp: int, *, division: int = 1, n: int = 0) -> dict[str, Any]:
    """A ``sync/Deleted`` record for ``target``'s ``key``."""
    return {
        "ID": guid(9 * 10**6 + timestamp * 1000 + n),
        "Timestamp": timestamp,
        "DeletedBy": guid(42),
        "DeletedDate": BASE + timedelta(hours=timestamp),
        "Division": division,
        "EntityKey": key,
        "EntityType": target.deleted_entity_type,
    }


def cursor(
    target: Entity, timestamp: int | None, *, division: int = 1, connection: str = "acme", **kw: Any
) -> Cursor:
    return Cursor(
        connection=connection,
        division=division,
        entity=target.name,
        timestamp=timestamp,
        next_url=kw.get("next_url"),
        complete=kw.get("complete", False),
        run_id=kw.get("run_id", "run-1"),
        updated_at=kw.get("updated_at", BASE),
    )


def deleted_cursor(timestamp: int, *, division: int = 1) -> Cursor:
    return cursor(DELETED, timestamp, division=division)
