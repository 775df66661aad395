"""The real ODBC Driver 18 loads here and our connection string + token attribute reach it.

No SQL Server runs here, so the driver is pointed at a closed local port: it must fail as a
*connection* failure from Microsoft's driver (not "can't open lib"), within the login timeout,
and the warehouse must report it as the database being unavailable.
"""

from __future__ import annotations

import ctypes.util
import socket
import time
from pathlib import Path

import pytest

from shared.warehouse.azure_sql import AzureSqlWarehouse, bundled_driver
from shared.warehouse.base import WarehouseError, WarehouseUnavailable
from tests.warehouse.conftest import StaticToken

pytestmark = pytest.mark.skipif(
    ctypes.util.find_library("odbc") is None,
    reason="unixODBC (libodbc.so.2) is not installed: apt-get install unixodbc",
)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_bundled_driver_connects_and_fails_on_the_network_not_on_loading() -> None:
    driver = bundled_driver()
    if driver is None:
        pytest.skip("mssql-python-odbc (the dev dependency shipping libmsodbcsql-18) is not installed")
    wh = AzureSqlWarehouse(
        server=f"127.0.0.1,{closed_port()}",
        database="exactsync",
        credential=StaticToken("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e30.sig"),
        driver=driver,
        retry_delays=(),
        login_timeout=2,
    )
    started = time.monotonic()
    with pytest.raises(WarehouseUnavailable) as caught:
        wh.read_cursor("acme", 1, "Accounts")
    assert time.monotonic() - started < 20
    text = str(caught.value)
    assert "[Microsoft][ODBC Driver 18 for SQL Server]" in text  # the driver itself answered
    assert "Can't open lib" not in text and "file not found" not in text
    assert "eyJ0eXAi" not in text  # the token never appears in errors
    wh.close()


def test_a_file_that_is_no_driver_fails_as_a_configuration_error(tmp_path: Path) -> None:
    fake = tmp_path / "libnotadriver.so"
    fake.write_text("not a shared library")
    wh = AzureSqlWarehouse(
        server="127.0.0.1,1",
        database="exactsync",
        credential=StaticToken(),
        driver=str(fake),
        retry_delays=(5.0,),
        login_timeout=2,
    )
    with pytest.raises(WarehouseError) as caught:
        wh.read_cursor("acme", 1, "Accounts")
    assert not isinstance(caught.value, WarehouseUnavailable)  # not retried: it would never work
    assert "Can't open lib" in str(caught.value)
