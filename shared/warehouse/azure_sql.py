"""The Azure SQL warehouse: pyodbc + ODBC Driver 18, signed in with an Entra access token.

Why a token and not ``Authentication=ActiveDirectoryMsi``: the token path works the same with
a managed identity in Azure and with ``az login`` or environment credentials elsewhere, and the
MSI keyword is reported to fail in Functions. The token goes in through
``SQL_COPT_SS_ACCESS_TOKEN`` (1256) as UTF-16-LE bytes behind a little-endian 4-byte length;
the connection string then carries no UID, PWD or Authentication (the driver refuses the mix).

Each page is one round trip (``tsql.page_batch``) in one transaction (autocommit off, one
commit). A transient error (``transient.py``) rolls back and re-runs the WHOLE transaction after
a backoff (Microsoft: first retry after 5 s, growing to at most 60 s); that is safe because
every write is idempotent and monotonic. Anything else is raised at once as ``WarehouseError``
naming the operation, the SQLSTATE and the native error numbers.

The connection lives as long as its token: shortly before the token expires (``token_margin``)
the next operation opens a new connection with a fresh token from the same credential (one
credential per process; azure-identity caches and renews its tokens).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from shared.clock import Clock, SystemClock
from shared.errors import ConfigError
from shared.exact.catalog import Entity, FieldType
from shared.warehouse import page as pages
from shared.warehouse import tsql
from shared.warehouse.base import (
    Cursor,
    DeleteMode,
    FailedStep,
    PageResult,
    WarehouseError,
    WarehouseUnavailable,
    check_delete_mode,
)
from shared.warehouse.schema import ENTITIES, all_tables, stored_fields, tsql_add_column, tsql_create
from shared.warehouse.transient import SqlError, describe

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)

SQL_SCOPE = "https://database.windows.net/.default"
SQL_COPT_SS_ACCESS_TOKEN = 1256
DEFAULT_DRIVER = "ODBC Driver 18 for SQL Server"
#: Microsoft's guidance: wait at least 5 s before the first retry, grow to at most 60 s.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0, 60.0, 60.0)

T = TypeVar("T")
Connect = Callable[..., Any]

_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def token_struct(token: str) -> bytes:
    """The ``SQL_COPT_SS_ACCESS_TOKEN`` value: 4-byte little-endian length, then UTF-16-LE."""
    raw = token.encode("utf-16-le")
    return struct.pack("<I", len(raw)) + raw


def _odbc_value(value: str) -> str:
    """An ODBC connection-string value, brace-quoted when it holds a separator."""
    if any(ch in value for ch in ";{}=") or value != value.strip():
        return "{" + value.replace("}", "}}") + "}"
    return value


def connection_string(server: str, database: str, driver: str = DEFAULT_DRIVER) -> str:
    """Driver, server and database only: the access token is the whole authentication."""
    host = server.strip()
    if host.lower().startswith("tcp:"):
        host = host[4:]
    port = "1433"
    if "," in host:
        host, _, port = host.rpartition(",")
    if not _HOST.fullmatch(host) or not port.isdigit():
        raise ConfigError(
            f"SQL_SERVER must be a host name like myserver.database.windows.net, got {server!r}"
        )
    if not database.strip():
        raise ConfigError("SQL_DATABASE is empty")
    return (
        f"Driver={{{driver.replace('}', '}}')}}};Server=tcp:{host},{port};Database={_odbc_value(database)};"
        "Encrypt=yes;TrustServerCertificate=no;"
    )


def bundled_driver() -> str | None:
    """The ODBC Driver 18 library shipped in the ``mssql-python-odbc`` wheel, if installed."""
    import importlib
    import platform

    try:
        package = importlib.import_module("mssql_python_odbc")
    except ImportError:
        return None
    libs = Path(package.get_libs_dir())
    machine = platform.machine().lower()
    arches = {machine, {"aarch64": "arm64", "amd64": "x86_64"}.get(machine, machine)}
    found = sorted(
        p
        for arch in arches
        for distro in ("debian_ubuntu", "rhel", "suse")
        for p in (libs / "linux" / distro / arch / "lib").glob("libmsodbcsql-18*.so*")
    )
    return str(found[0]) if found else None


def resolve_driver(driver: str, *, installed: Callable[[], Sequence[str]] | None = None) -> str:
    """Check at start-up that the ODBC driver can be loaded; return what ``Driver=`` should say.

    ``driver`` is a registered driver name or a path to ``libmsodbcsql-18.*.so``. When the
    default name is not registered but the ``mssql-python-odbc`` package is installed, its
    bundled driver is used by path. Otherwise a ``ConfigError`` names SQL_DRIVER and the fix.
    """
    if "/" in driver or "\\" in driver:
        if not os.path.isfile(driver):
            raise ConfigError(f"SQL_DRIVER is the path {driver!r}, but there is no file there")
        return driver
    if installed is None:
        installed = _pyodbc().drivers
    names = list(installed())
    if driver in names:
        return driver
    if driver == DEFAULT_DRIVER:
        path = bundled_driver()
        if path is not None:
            log.info("ODBC driver %r is not registered; using the bundled driver %s", driver, path)
            return path
    raise ConfigError(
        f"the ODBC driver {driver!r} (SQL_DRIVER) is not installed; installed drivers: "
        f"{', '.join(names) or 'none'}. Install Microsoft ODBC Driver 18 for SQL Server (msodbcsql18), or set "
        "SQL_DRIVER to the path of libmsodbcsql-18.*.so (the Python package mssql-python-odbc ships one)"
    )


def _pyodbc() -> Any:
    try:
        import pyodbc
    except ImportError as exc:
        raise ConfigError(
            f"pyodbc cannot be loaded ({exc}); it needs unixODBC (apt-get install unixodbc)"
        ) from exc
    return pyodbc


def _dumps(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


def _as_guid(value: Any) -> str:
    return str(value).lower()


def _as_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


_DECODERS: dict[FieldType, pages.Decoder] = {
    "guid": _as_guid,
    "str": str,
    "int": int,
    "int64": int,
    "decimal": float,
    "bool": bool,
    "datetime": _as_time,
}


class AzureSqlWarehouse:
    """The ``Warehouse`` on Azure SQL Database (or any SQL Server 2016+ reachable with a token)."""

    dialect = "azure_sql"

    def __init__(
        self,
        *,
        server: str,
        database: str,
        credential: TokenCredential,
        driver: str = DEFAULT_DRIVER,
        delete_mode: DeleteMode = "hard",
        clock: Clock | None = None,
        connect: Connect | None = None,
        schema: str = "dbo",
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        login_timeout: int = 30,
        token_margin: float = 300.0,
        entities: Sequence[Entity] = ENTITIES,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        self.delete_mode = check_delete_mode(delete_mode)
        self.connection_string = connection_string(server, database, driver)
        self.schema = schema
        self._credential = credential
        self._clock = clock or SystemClock()
        self._connect_fn = connect
        self._delays = tuple(retry_delays)
        self._login_timeout = login_timeout
        self._token_margin = token_margin
        self._entities = tuple(entities)
        self._jitter = jitter or (lambda: random.uniform(0.8, 1.2))  # noqa: S311 - backoff spread, not security
        self._lock = threading.RLock()
        self._cnx: Any = None
        self._token_expires_on = 0.0

    # --- connection and retries ---------------------------------------------------------------

    def _open(self) -> Any:
        connect = self._connect_fn or _pyodbc().connect
        try:
            token = self._credential.get_token(SQL_SCOPE)
        except Exception as exc:
            raise WarehouseError(
                f"cannot get an access token for Azure SQL ({type(exc).__name__}): {exc}"
            ) from exc
        cnx = connect(
            self.connection_string,
            attrs_before={SQL_COPT_SS_ACCESS_TOKEN: token_struct(token.token)},
            autocommit=False,
            timeout=self._login_timeout,
        )
        self._token_expires_on = float(token.expires_on)
        return cnx

    def _connection(self) -> Any:
        if self._cnx is not None and self._clock.now() >= self._token_expires_on - self._token_margin:
            log.info("Azure SQL access token expires soon: opening a new connection")
            self._discard()
        if self._cnx is None:
            self._cnx = self._open()
        return self._cnx

    def _discard(self) -> None:
        cnx, self._cnx = self._cnx, None
        if cnx is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close; dropped anyway
                cnx.close()

    def _rollback(self, info: SqlError | None) -> None:
        if self._cnx is None:
            return
        if info is not None and info.connection_lost:
            self._discard()
            return
        try:
            self._cnx.rollback()
        except Exception:
            self._discard()

    def _run(self, what: str, work: Callable[[Any], T], *, write: bool = True) -> T:
        """Run ``work(connection)`` as one transaction; re-run it after transient errors."""
        pyodbc = _pyodbc()
        with self._lock:
            attempt = 0
            while True:
                try:
                    cnx = self._connection()
                    result = work(cnx)
                    if write:
                        cnx.commit()
                    else:
                        cnx.rollback()  # end the read's implicit transaction
                    return result
                except pyodbc.Error as exc:
                    info = describe(exc)
                    self._rollback(info)
                    detail = (
                        f"SQLSTATE {info.sqlstate or '?'}, error {', '.join(map(str, info.numbers)) or '?'}"
                    )
                    if not info.transient:
                        hint = (
                            " (run `exactsync migrate`?)"
                            if 208 in info.numbers or 207 in info.numbers
                            else ""
                        )
                        raise WarehouseError(
                            f"Azure SQL {what} failed ({detail}): {info.text}{hint}"
                        ) from exc
                    if attempt >= len(self._delays):
                        raise WarehouseUnavailable(
                            f"Azure SQL {what} failed after {attempt + 1} attempts ({detail}): {info.text}"
                        ) from exc
                    delay = self._delays[attempt] * self._jitter()
                    attempt += 1
                    log.warning(
                        "Azure SQL %s: transient error (%s); retry %d of %d in %.1f s",
                        what,
                        detail,
                        attempt,
                        len(self._delays),
                        delay,
                    )
                    self._clock.sleep(delay)
                except BaseException:
                    self._rollback(None)
                    raise

    # --- Warehouse ------------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        tables = all_tables(self._entities)

        def work(cnx: Any) -> list[str]:
            cur = cnx.cursor()
            cur.execute(tsql.existing_columns(), (self.schema,))
            have: dict[str, set[str]] = {}
            for table_name, column_name in cur.fetchall():
                have.setdefault(str(table_name).lower(), set()).add(str(column_name).lower())
            applied: list[str] = []
            for table in tables:
                columns = have.get(table.name.lower())
                if columns is None:
                    statements = [tsql_create(table, self.schema)]
                else:
                    statements = [
                        tsql_add_column(table, c, self.schema)
                        for c in table.columns
                        if c.name.lower() not in columns
                    ]
                for statement in statements:
                    cur.execute(statement)
                    applied.append(statement)
            return applied

        return self._run("migrate", work)

    def read_cursor(self, connection: str, division: int, entity: str) -> Cursor | None:
        def work(cnx: Any) -> Any:
            cur = cnx.cursor()
            cur.execute(tsql.read_cursor(self.schema), (connection, division, entity))
            return cur.fetchone()

        row = self._run("read_cursor", work, write=False)
        if row is None:
            return None
        return Cursor(
            connection=str(row[0]),
            division=int(row[1]),
            entity=str(row[2]),
            timestamp=None if row[3] is None else int(row[3]),
            next_url=None if row[4] is None else str(row[4]),
            complete=bool(row[5]),
            run_id=None if row[6] is None else str(row[6]),
            updated_at=None if row[7] is None else _as_time(row[7]),
        )

    def page_parameters(
        self,
        *,
        entity: Entity,
        division: int,
        rows: Sequence[Mapping[str, Any]],
        deletions: Sequence[tuple[Entity, str]] = (),
        cursor: Cursor,
    ) -> tuple[str, tuple[Any, ...]]:
        """The batch text and its parameters for one page (validated; nothing sent)."""
        page = pages.prepare(entity=entity, division=division, rows=rows, deletions=deletions, cursor=cursor)
        names = stored_fields(entity)
        encoded = pages.encode_rows("json", entity, names, page)
        rows_json = _dumps([dict(zip(names, values, strict=True)) for values in encoded])
        deletions_json = _dumps(
            [
                {
                    "entity": d.entity.name,
                    "key": d.key_text,
                    "timestamp": d.timestamp,
                    "deleted_date": None if d.deleted_date is None else pages.json_time(d.deleted_date),
                }
                for d in page.deletions
            ]
        )
        now = datetime.fromtimestamp(self._clock.now(), UTC)
        cursor_json = _dumps(
            {
                "connection": cursor.connection,
                "entity": cursor.entity,
                "timestamp": cursor.timestamp,
                "next_url": cursor.next_url,
                "complete": bool(cursor.complete),
                "run_id": cursor.run_id,
                "updated_at": pages.json_time(pages.cursor_time(cursor, now)),
            }
        )
        targets = tuple(sorted({d.entity for d in page.deletions}, key=lambda e: e.name))
        sql = tsql.page_batch(entity, targets, self.delete_mode, self.schema)
        return sql, (division, rows_json, deletions_json, pages.json_time(now), cursor_json)

    def commit_page(
        self,
        *,
        entity: Entity,
        division: int,
        rows: Sequence[Mapping[str, Any]],
        deletions: Sequence[tuple[Entity, str]] = (),
        cursor: Cursor,
    ) -> PageResult:
        sql, params = self.page_parameters(
            entity=entity, division=division, rows=rows, deletions=deletions, cursor=cursor
        )

        def work(cnx: Any) -> PageResult:
            cur = cnx.cursor()
            cur.execute(sql, params)
            counts = cur.fetchone()
            if counts is None:
                raise WarehouseError(f"Azure SQL commit_page {entity.name}: the batch returned no counts")
            upserted, deleted = int(counts[0]), int(counts[1])
            return PageResult(upserted=upserted, deleted=deleted, skipped_stale=len(rows) - upserted)

        return self._run(f"commit_page {entity.name} division {division}", work)

    def record_failed_step(self, *, message: str, reason: str, at: datetime) -> None:
        when = pages.json_time(pages.checked_time(at, "record_failed_step: at"))

        def work(cnx: Any) -> None:
            cnx.cursor().execute(tsql.insert_failed_step(self.schema), (when, reason, message))

        self._run("record_failed_step", work)

    def read_failed_steps(self, limit: int = 100) -> list[FailedStep]:
        """The most recent failed steps, newest first (operations and tests)."""

        def work(cnx: Any) -> list[Any]:
            cur = cnx.cursor()
            cur.execute(tsql.read_failed_steps(self.schema), (limit,))
            return list(cur.fetchall())

        rows = self._run("read_failed_steps", work, write=False)
        return [FailedStep(at=_as_time(r[0]), reason=str(r[1]), message=str(r[2])) for r in rows]

    def read_rows(self, entity: Entity, division: int) -> list[dict[str, Any]]:
        def work(cnx: Any) -> list[Any]:
            cur = cnx.cursor()
            cur.execute(tsql.read_rows(entity, self.schema), (division,))
            return list(cur.fetchall())

        rows = self._run(f"read_rows {entity.name}", work, write=False)
        out = pages.decode_rows(entity, rows, _DECODERS)
        out.sort(key=lambda r: r[entity.key])
        return out

    def close(self) -> None:
        with self._lock:
            self._discard()
