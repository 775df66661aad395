"""A stand-in for ``pyodbc.connect`` (Azure SQL cannot run here): records what the warehouse sends.

It raises real ``pyodbc`` exception classes with the driver's message layout
(``"[SQLSTATE] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]text (native) (SQLFunction)"``),
so the warehouse's error handling reads exactly what it would read from the real driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyodbc


def odbc_error(
    native: int, text: str = "error", *, sqlstate: str = "42000", function: str = "SQLExecDirectW"
) -> pyodbc.Error:
    cls = pyodbc.OperationalError if sqlstate.startswith(("08", "HY")) else pyodbc.ProgrammingError
    message = (
        f"[{sqlstate}] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]{text} ({native}) ({function})"
    )
    return cls(sqlstate, message)


@dataclass
class FakeCursor:
    connection: FakeConnection
    results: list[Any] = field(default_factory=list)

    def execute(self, sql: str, *params: Any) -> FakeCursor:
        odbc = self.connection.odbc
        args = params[0] if len(params) == 1 and isinstance(params[0], tuple | list) else params
        odbc.executes.append((sql, tuple(args)))
        self.connection.executes += 1
        if odbc.execute_failures:
            failure = odbc.execute_failures.pop(0)
            if failure is not None:
                raise failure
        self.results = list(odbc.answer(sql, tuple(args)))
        return self

    def fetchone(self) -> Any:
        return self.results.pop(0) if self.results else None

    def fetchall(self) -> list[Any]:
        out, self.results = self.results, []
        return out


@dataclass
class FakeConnection:
    odbc: FakeOdbc
    conn_str: str
    attrs_before: dict[int, bytes]
    autocommit: bool
    timeout: int
    commits: int = 0
    rollbacks: int = 0
    closed: bool = False
    executes: int = 0

    def cursor(self) -> FakeCursor:
        if self.closed:
            raise pyodbc.ProgrammingError("Attempt to use a closed connection.")
        return FakeCursor(self)

    def commit(self) -> None:
        self.commits += 1
        self.odbc.events.append("commit")

    def rollback(self) -> None:
        self.rollbacks += 1
        self.odbc.events.append("rollback")

    def close(self) -> None:
        self.closed = True
        self.odbc.events.append("close")


@dataclass
class FakeOdbc:
    """``connect`` records connections; ``answer(sql, params)`` scripts result rows."""

    answer: Callable[[str, tuple[Any, ...]], list[Any]] = lambda sql, params: [(len_rows(params), 0)]
    connect_failures: list[Exception | None] = field(default_factory=list)
    execute_failures: list[Exception | None] = field(default_factory=list)
    connections: list[FakeConnection] = field(default_factory=list)
    executes: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def connect(
        self, conn_str: str, *, attrs_before: dict[int, bytes], autocommit: bool, timeout: int
    ) -> FakeConnection:
        self.events.append("connect")
        if self.connect_failures:
            failure = self.connect_failures.pop(0)
            if failure is not None:
                raise failure
        cnx = FakeConnection(self, conn_str, dict(attrs_before), autocommit, timeout)
        self.connections.append(cnx)
        return cnx


def len_rows(params: tuple[Any, ...]) -> int:
    """The default answer to a page batch: every row written."""
    import json

    if len(params) >= 2 and isinstance(params[1], str) and params[1].startswith("["):
        return len(json.loads(params[1]))
    return 0
