"""The Azure SQL warehouse at the pyodbc boundary: what it connects with, sends, commits and retries."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from azure.core.credentials import AccessToken

from shared.errors import ConfigError
from shared.exact.catalog import DELETED
from shared.settings import Settings
from shared.warehouse import tsql
from shared.warehouse.azure_sql import (
    DEFAULT_DRIVER,
    DEFAULT_RETRY_DELAYS,
    SQL_SCOPE,
    AzureSqlWarehouse,
    bundled_driver,
    connection_string,
    resolve_driver,
    token_struct,
)
from shared.warehouse.base import Cursor, InvalidPage, PageResult, WarehouseError, WarehouseUnavailable
from shared.warehouse.factory import make_warehouse
from shared.warehouse.schema import ENTITIES, all_tables, entity_table
from shared.warehouse.sqlite import SqliteWarehouse
from tests.doubles.clock import ManualClock
from tests.warehouse.fake_odbc import FakeOdbc, odbc_error
from tests.warehouse.rows import (
    ACCOUNTS,
    BASE,
    TRANSACTION_LINES,
    account,
    cursor,
    deleted,
    deleted_cursor,
    guid,
    line,
)

NOW = 1_750_000_000.0


class Tokens:
    """An azure-identity-shaped credential issuing numbered tokens that live ``lifetime`` seconds."""

    def __init__(self, clock: ManualClock, lifetime: float = 3600) -> None:
        self.clock, self.lifetime = clock, lifetime
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(
            f"eyJ0eXAiOiJKV1Qi.token-{len(self.scopes)}", int(self.clock.now() + self.lifetime)
        )


def warehouse(
    odbc: FakeOdbc, clock: ManualClock | None = None, **kw: Any
) -> tuple[AzureSqlWarehouse, ManualClock, Tokens]:
    clock = clock or ManualClock(NOW)
    tokens = kw.pop("credential", None) or Tokens(clock)
    wh = AzureSqlWarehouse(
        server="exactsync-sql.database.windows.net",
        database="exactsync",
        credential=tokens,
        clock=clock,
        connect=odbc.connect,
        jitter=lambda: 1.0,
        **kw,
    )
    return wh, clock, tokens


def test_token_struct_is_a_little_endian_length_then_utf16le() -> None:
    token = "eyJhbGciOi.ü€"
    packed = token_struct(token)
    raw = token.encode("utf-16-le")
    assert packed == struct.pack("<I", len(raw)) + raw
    assert packed[:4] == (2 * len(token)).to_bytes(4, "little")
    assert packed[4:].decode("utf-16-le") == token


def test_connects_with_the_token_and_a_password_free_connection_string() -> None:
    odbc = FakeOdbc()
    wh, _, tokens = warehouse(odbc)
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 5)], cursor=cursor(ACCOUNTS, 5))
    (cnx,) = odbc.connections
    assert cnx.conn_str == (
        "Driver={ODBC Driver 18 for SQL Server};Server=tcp:exactsync-sql.database.windows.net,1433;"
        "Database=exactsync;Encrypt=yes;TrustServerCertificate=no;"
    )
    for forbidden in ("UID", "PWD", "Authentication", "Trusted_Connection"):
        assert forbidden.lower() not in cnx.conn_str.lower()
    assert tokens.scopes == [(SQL_SCOPE,)]
    assert cnx.attrs_before == {1256: token_struct("eyJ0eXAiOiJKV1Qi.token-1")}
    assert cnx.autocommit is False
    assert cnx.timeout == 30


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("tcp:x.database.windows.net,1433", "Server=tcp:x.database.windows.net,1433;"),
        ("x.database.windows.net,14330", "Server=tcp:x.database.windows.net,14330;"),
        ("127.0.0.1", "Server=tcp:127.0.0.1,1433;"),
    ],
)
def test_server_forms(server: str, expected: str) -> None:
    assert expected in connection_string(server, "db")


@pytest.mark.parametrize("server", ["x;UID=sa", "x,14a", "", "x.net;Authentication=ActiveDirectoryMsi"])
def test_a_server_that_would_inject_attributes_is_refused(server: str) -> None:
    with pytest.raises(ConfigError, match="SQL_SERVER"):
        connection_string(server, "db")


def test_a_database_name_with_separators_is_brace_quoted() -> None:
    assert "Database={we;ird}}db};" in connection_string("x.net", "we;ird}db")
    assert "Driver={/opt/lib/libmsodbcsql-18.so};" in connection_string(
        "x.net", "db", "/opt/lib/libmsodbcsql-18.so"
    )


def test_a_page_is_one_round_trip_and_one_commit() -> None:
    odbc = FakeOdbc()
    wh, _, _ = warehouse(odbc)
    rows = [account(1, 7, Name="new"), account(2, 3), account(1, 5, Name="old")]
    result = wh.commit_page(entity=ACCOUNTS, division=12, rows=rows, cursor=cursor(ACCOUNTS, 7, division=12))
    assert result == PageResult(upserted=2, deleted=0, skipped_stale=1)
    (cnx,) = odbc.connections
    assert cnx.executes == 1 and cnx.commits == 1 and cnx.rollbacks == 0
    assert odbc.events == ["connect", "commit"]
    sql, params = odbc.executes[0]
    assert sql == tsql.page_batch(ACCOUNTS, (), "hard")
    assert sqlglot.parse(sql, read="tsql")
    division, rows_json, deletions_json, now, cursor_json = params
    assert division == 12
    sent = json.loads(rows_json)
    assert [(r["ID"], r["Name"]) for r in sent] == [(guid(1), "new"), (guid(2), account(2, 3)["Name"])]
    assert sent[0]["Created"] == "2024-04-01T00:30:15.124"  # naive UTC, milliseconds
    assert sent[0]["Blocked"] is False and sent[0]["Email"] is None and sent[0]["Timestamp"] == 7
    assert "Division" not in sent[0]
    assert json.loads(deletions_json) == []
    assert now == datetime.fromtimestamp(NOW, UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")
    assert json.loads(cursor_json) == {
        "connection": "acme",
        "entity": "Accounts",
        "timestamp": 7,
        "next_url": None,
        "complete": False,
        "run_id": "run-1",
        "updated_at": BASE.replace(tzinfo=None).isoformat(timespec="milliseconds"),
    }
    # a second page reuses the connection
    wh.commit_page(
        entity=ACCOUNTS, division=12, rows=[account(3, 9)], cursor=cursor(ACCOUNTS, 9, division=12)
    )
    assert len(odbc.connections) == 1 and cnx.commits == 2


def test_numbers_keep_their_double_value() -> None:
    odbc = FakeOdbc()
    wh, _, _ = warehouse(odbc)
    rows = [line(n, n) for n in (1, 3, 7)]
    wh.commit_page(entity=TRANSACTION_LINES, division=1, rows=rows, cursor=cursor(TRANSACTION_LINES, 7))
    sent = json.loads(odbc.executes[0][1][1])
    assert [(r["AmountDC"], r["AmountFC"]) for r in sent] == [(r["AmountDC"], r["AmountFC"]) for r in rows]
    assert 7.000000000000001e-05 in [r["AmountFC"] for r in sent]  # FLOAT: the exact double, no rounding


def test_deletions_travel_with_their_own_timestamps_in_the_same_batch() -> None:
    odbc = FakeOdbc(answer=lambda sql, params: [(1, 2)])
    wh, _, _ = warehouse(odbc, delete_mode="soft")
    records = [deleted(ACCOUNTS, guid(1), 20), deleted(ACCOUNTS, guid(2), 25, n=1)]
    result = wh.commit_page(
        entity=DELETED,
        division=1,
        rows=records,
        deletions=[(ACCOUNTS, guid(1).upper()), (ACCOUNTS, guid(2))],
        cursor=deleted_cursor(25),
    )
    assert result == PageResult(upserted=1, deleted=2, skipped_stale=1)
    sql, params = odbc.executes[0]
    assert sql == tsql.page_batch(DELETED, (ACCOUNTS,), "soft")
    assert json.loads(params[2]) == [
        {"entity": "Accounts", "key": guid(1), "timestamp": 20, "deleted_date": "2024-03-31T20:30:15.123"},
        {"entity": "Accounts", "key": guid(2), "timestamp": 25, "deleted_date": "2024-04-01T01:30:15.123"},
    ]
    assert len(odbc.executes) == 1 and odbc.connections[0].commits == 1


def test_a_non_transient_error_rolls_back_and_is_raised_at_once() -> None:
    odbc = FakeOdbc(
        execute_failures=[
            odbc_error(2627, "Violation of PRIMARY KEY constraint 'PK_exact_accounts'.", sqlstate="23000")
        ]
    )
    wh, clock, _ = warehouse(odbc)
    with pytest.raises(WarehouseError, match="2627") as caught:
        wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 5)], cursor=cursor(ACCOUNTS, 5))
    assert not isinstance(caught.value, WarehouseUnavailable)
    assert "commit_page Accounts division 1" in str(caught.value) and "SQLSTATE 23000" in str(caught.value)
    (cnx,) = odbc.connections
    assert (cnx.executes, cnx.commits, cnx.rollbacks) == (1, 0, 1)
    assert clock.slept == []


@pytest.mark.parametrize(
    ("native", "sqlstate", "reconnects"),
    [
        (40613, "42000", True),  # database unavailable (serverless resume)
        (40501, "42000", False),  # service busy
        (1205, "40001", False),  # deadlock victim: same connection, rerun the transaction
        (49918, "42000", False),
        (10928, "42000", False),
        (10054, "08S01", True),  # transport: connection reset
    ],
)
def test_a_transient_error_reruns_the_whole_transaction(native: int, sqlstate: str, reconnects: bool) -> None:
    odbc = FakeOdbc(execute_failures=[odbc_error(native, "transient", sqlstate=sqlstate)])
    wh, clock, _ = warehouse(odbc)
    result = wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 5)], cursor=cursor(ACCOUNTS, 5))
    assert result.upserted == 1
    assert clock.slept == [DEFAULT_RETRY_DELAYS[0]]
    assert len(odbc.executes) == 2 and odbc.executes[0] == odbc.executes[1]  # the same batch again
    assert sum(c.commits for c in odbc.connections) == 1
    if reconnects:
        assert odbc.events == ["connect", "close", "connect", "commit"]
    else:
        assert odbc.events == ["connect", "rollback", "commit"]


def test_a_database_that_is_resuming_is_waited_for_at_connect() -> None:
    resuming = odbc_error(
        40613,
        "Database 'exactsync' on server 'exactsync-sql' is not currently available. Please retry the connection later.",
        sqlstate="HY000",
        function="SQLDriverConnect",
    )
    odbc = FakeOdbc(connect_failures=[resuming, resuming], answer=lambda sql, params: [])
    wh, clock, _ = warehouse(odbc)
    assert wh.read_cursor("acme", 1, "Accounts") is None
    assert clock.slept == [5.0, 10.0]
    assert odbc.events == ["connect", "connect", "connect", "rollback"]  # a read ends its transaction


def test_retries_are_bounded() -> None:
    odbc = FakeOdbc(execute_failures=[odbc_error(40501, "busy")] * 10)
    wh, clock, _ = warehouse(odbc, retry_delays=(1.0, 2.0, 4.0))
    with pytest.raises(WarehouseUnavailable, match="after 4 attempts"):
        wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 5)], cursor=cursor(ACCOUNTS, 5))
    assert clock.slept == [1.0, 2.0, 4.0]
    assert len(odbc.executes) == 4 and sum(c.commits for c in odbc.connections) == 0


@pytest.mark.parametrize(
    ("native", "sqlstate"),
    [(18456, "28000"), (40544, "42000"), (208, "42S02"), (40552, "42000")],
)
def test_errors_that_would_fail_again_are_not_retried(native: int, sqlstate: str) -> None:
    odbc = FakeOdbc(execute_failures=[odbc_error(native, "no", sqlstate=sqlstate)])
    wh, clock, _ = warehouse(odbc)
    with pytest.raises(WarehouseError) as caught:
        wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 5)], cursor=cursor(ACCOUNTS, 5))
    assert not isinstance(caught.value, WarehouseUnavailable)
    assert len(odbc.executes) == 1 and clock.slept == []
    if native == 208:
        assert "exactsync migrate" in str(caught.value)


def test_a_new_connection_with_a_fresh_token_before_the_token_expires() -> None:
    odbc = FakeOdbc()
    clock = ManualClock(NOW)
    wh, _, tokens = warehouse(odbc, clock, credential=Tokens(clock, lifetime=3600))
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 5)], cursor=cursor(ACCOUNTS, 5))
    clock.advance(3000)  # 600 s left: still beyond the 300 s margin
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 6)], cursor=cursor(ACCOUNTS, 6))
    assert len(odbc.connections) == 1
    clock.advance(400)  # 200 s left
    wh.commit_page(entity=ACCOUNTS, division=1, rows=[account(1, 7)], cursor=cursor(ACCOUNTS, 7))
    first, second = odbc.connections
    assert first.closed and not second.closed
    assert second.attrs_before[1256] == token_struct("eyJ0eXAiOiJKV1Qi.token-2")
    assert len(tokens.scopes) == 2


def test_a_credential_failure_is_a_clear_error() -> None:
    class Broken:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            from azure.core.exceptions import ClientAuthenticationError

            raise ClientAuthenticationError("ManagedIdentityCredential authentication unavailable")

    odbc = FakeOdbc()
    wh, _, _ = warehouse(odbc, credential=Broken())
    with pytest.raises(WarehouseError, match=r"access token for Azure SQL .*ManagedIdentityCredential"):
        wh.read_cursor("acme", 1, "Accounts")
    assert odbc.connections == []


def test_a_bad_page_never_reaches_the_database() -> None:
    odbc = FakeOdbc()
    wh, _, _ = warehouse(odbc)
    with pytest.raises(InvalidPage):
        wh.commit_page(
            entity=ACCOUNTS,
            division=1,
            rows=[{**account(1, 5), "Modified": datetime(2024, 1, 1)}],
            cursor=cursor(ACCOUNTS, 5),
        )
    assert odbc.events == []


def test_migrate_creates_what_is_missing_in_one_transaction() -> None:
    tables = all_tables(ENTITIES)
    state = tables[0]
    existing = [(state.name, c.name) for c in state.columns if c.name != "run_id"]
    existing += [("exact_accounts", c) for c in ("Division", "ID")]
    odbc = FakeOdbc(answer=lambda sql, params: existing if "INFORMATION_SCHEMA" in sql else [])
    wh, _, _ = warehouse(odbc)
    applied = wh.migrate()
    assert odbc.executes[0] == (tsql.existing_columns(), ("dbo",))
    assert [sql for sql, _ in odbc.executes[1:]] == applied
    assert applied[0].startswith("IF COL_LENGTH(N'[dbo].[exactsync_state]', N'run_id') IS NULL ALTER TABLE")
    assert sum("CREATE TABLE [dbo].[exact_accounts]" in s for s in applied) == 0
    assert (
        sum("ALTER TABLE [dbo].[exact_accounts]" in s for s in applied)
        == len(entity_table(ACCOUNTS).columns) - 2
    )
    assert sum("CREATE TABLE" in s for s in applied) == len(tables) - 2
    for statement in applied:
        assert sqlglot.parse(statement, read="tsql")
    assert [c.commits for c in odbc.connections] == [1]


def test_rows_and_cursor_are_decoded_from_pyodbc_types() -> None:
    stored = [
        (
            guid(2).upper(),
            9,
            "B",
            "Name B",
            "C",
            True,
            False,
            False,
            None,
            "NL",
            datetime(2024, 1, 2, 3, 4, 5, 6000),
            datetime(2024, 1, 2),
        ),
        (
            guid(1).upper(),
            8,
            "A",
            "Name A",
            "C",
            False,
            True,
            True,
            "a@b",
            "BE",
            datetime(2024, 1, 1),
            datetime(2024, 1, 1),
        ),
    ]
    state = [("acme", 1, "Accounts", 9, None, True, "r", datetime(2025, 1, 1, 0, 0, 0, 500000))]

    def answer(sql: str, params: tuple[Any, ...]) -> list[Any]:
        return state if "exactsync_state" in sql else stored

    odbc = FakeOdbc(answer=answer)
    wh, _, _ = warehouse(odbc)
    rows = wh.read_rows(ACCOUNTS, 1)
    assert [r["ID"] for r in rows] == [guid(1), guid(2)]
    assert rows[1]["Created"] == datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    assert rows[0]["Blocked"] is False and rows[0]["Email"] == "a@b" and "Division" not in rows[0]
    assert wh.read_cursor("acme", 1, "Accounts") == Cursor(
        "acme", 1, "Accounts", 9, None, True, "r", datetime(2025, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    )


# --- driver and factory -------------------------------------------------------------------


def test_resolve_driver(tmp_path: Path) -> None:
    assert (
        resolve_driver(DEFAULT_DRIVER, installed=lambda: ["ODBC Driver 18 for SQL Server"]) == DEFAULT_DRIVER
    )
    library = tmp_path / "libmsodbcsql-18.6.so.2.1"
    library.write_bytes(b"\x7fELF")
    assert resolve_driver(str(library)) == str(library)
    with pytest.raises(ConfigError, match="SQL_DRIVER is the path"):
        resolve_driver(str(tmp_path / "missing.so"))
    with pytest.raises(ConfigError, match=r"ODBC Driver 17 for SQL Server.*SQL_DRIVER.*not installed"):
        resolve_driver("ODBC Driver 17 for SQL Server", installed=lambda: ["FreeTDS"])
    # the default name, unregistered: the driver bundled with mssql-python-odbc (a dev dependency here)
    bundled = bundled_driver()
    assert bundled is not None and Path(bundled).is_file() and "libmsodbcsql-18" in bundled
    assert resolve_driver(DEFAULT_DRIVER, installed=lambda: []) == bundled


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"EXACTSYNC_HOME": str(tmp_path), "EXACT_BASE_URL": "http://127.0.0.1:9", **env})


def test_factory_picks_azure_sql_when_configured(tmp_path: Path) -> None:
    odbc = FakeOdbc()
    clock = ManualClock(NOW)
    wh = make_warehouse(
        settings(tmp_path, SQL_SERVER="s.database.windows.net", SQL_DATABASE="d", DELETE_MODE="soft"),
        credential=Tokens(clock),
        connect=odbc.connect,
        clock=clock,
    )
    assert isinstance(wh, AzureSqlWarehouse) and wh.dialect == "azure_sql" and wh.delete_mode == "soft"
    assert "Server=tcp:s.database.windows.net,1433;Database=d;" in wh.connection_string
    assert odbc.events == []  # nothing connects before the first operation


def test_factory_checks_the_driver_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SQL_DRIVER"):
        make_warehouse(
            settings(
                tmp_path,
                SQL_SERVER="s.database.windows.net",
                SQL_DATABASE="d",
                SQL_DRIVER="/nowhere/libmsodbcsql.so",
            ),
            credential=Tokens(ManualClock(NOW)),
        )


def test_factory_defaults_to_a_migrated_sqlite_file(tmp_path: Path) -> None:
    wh = make_warehouse(settings(tmp_path))
    assert isinstance(wh, SqliteWarehouse) and wh.dialect == "sqlite"
    assert Path(wh.path) == tmp_path / "warehouse.sqlite3"
    assert wh.migrate() == []
    wh.close()


def test_importing_the_warehouse_loads_neither_pyodbc_nor_azure_identity() -> None:
    code = (
        "import sys, shared.warehouse, shared.warehouse.factory, shared.warehouse.sqlite, shared.warehouse.tsql;"
        "print(sorted(m for m in ('pyodbc', 'azure.identity', 'orjson') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert out.stdout.strip() == "[]"
