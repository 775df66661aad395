"""Reading SQLSTATE and native error numbers the way pyodbc reports them, and the retry list."""

from __future__ import annotations

import pyodbc
import pytest

from shared.warehouse.transient import TRANSIENT_ERROR_NUMBERS, describe


def test_native_numbers_are_read_from_every_diagnostic_record() -> None:
    exc = pyodbc.ProgrammingError(
        "42000",
        "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Transaction (Process ID 63) was deadlocked "
        "on lock resources with another process and has been chosen as the deadlock victim. Rerun the "
        "transaction. (1205) (SQLExecDirectW); [42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]"
        "The statement has been terminated. (3621)",
    )
    info = describe(exc)
    assert info.sqlstate == "42000" and info.numbers == (1205, 3621)
    assert info.transient and not info.connection_lost


def test_numbers_inside_the_message_text_are_not_native_errors() -> None:
    exc = pyodbc.Error(
        "HY000",
        "[HY000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]The service has encountered an error "
        "processing your request. Please try again. Error code 40143 (1). (40197) (SQLExecDirectW)",
    )
    info = describe(exc)
    assert info.numbers == (40197,)
    assert info.transient and info.connection_lost


@pytest.mark.parametrize(
    ("sqlstate", "text", "transient"),
    [
        (
            "08S01",
            "[08S01] [Microsoft][ODBC Driver 18 for SQL Server]TCP Provider: Error code 0x68 (104) (SQLExecDirectW)",
            True,
        ),
        (
            "HYT00",
            "[HYT00] [Microsoft][ODBC Driver 18 for SQL Server]Login timeout expired (0) (SQLDriverConnect)",
            True,
        ),
        (
            "28000",
            "[28000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login failed for user '<token-identified principal>'. (18456) (SQLDriverConnect)",
            False,
        ),
        (
            "42000",
            "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]The database 'x' has reached its size quota. (40544) (SQLExecDirectW)",
            False,
        ),
        (
            "23000",
            "[23000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Violation of PRIMARY KEY constraint. (2627) (SQLExecDirectW)",
            False,
        ),
        (
            "01000",
            "[01000] [unixODBC][Driver Manager]Can't open lib 'x' : file not found (0) (SQLDriverConnect)",
            False,
        ),
    ],
)
def test_transient_or_not(sqlstate: str, text: str, transient: bool) -> None:
    assert describe(pyodbc.Error(sqlstate, text)).transient is transient


def test_the_list_holds_microsofts_transient_codes_and_not_the_quota_errors() -> None:
    documented = {615, 926, 4060, 4221, 40197, 40501, 40613, 49918, 49919, 49920, 10928, 10929}
    assert documented <= TRANSIENT_ERROR_NUMBERS
    assert {1205, 1222, 10053, 10054, 10060, 233} <= TRANSIENT_ERROR_NUMBERS
    assert not {40544, 40549, 40550, 40551, 40552, 40553, 18456, 2627, 208} & TRANSIENT_ERROR_NUMBERS
