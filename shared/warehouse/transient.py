"""Which SQL Server / Azure SQL errors are worth retrying, read from a pyodbc error.

Sources (union; numbers, not message texts, decide):

- Microsoft Learn, "Troubleshoot connectivity issues and other errors with Azure SQL Database",
  table "List of transient fault error codes": 615, 926, 4060, 4221, 40197, 40501, 40613,
  49918, 49919, 49920; and the codes that 40197 embeds (40020, 40143, 40166, 40540).
  Same page, "Resource governance errors": 10928, 10929 (and 10936, the elastic-pool form of
  10928) — worker/request limits, retried after a pause. A serverless database answers 40613
  while it resumes.
- Microsoft.Data.SqlClient ``SqlConfigurableRetryFactory`` baseline list: adds 233, 997, 1204,
  1205 (deadlock victim), 1222 (lock timeout), 10053, 10054, 10060 (TCP/transport errors).
- EF Core ``SqlServerTransientExceptionDetector``: adds 64, 121, 20 (connection drops) and the
  In-Memory OLTP conflict errors 41301, 41302, 41305, 41325, 41839.

Deliberately NOT retried: 40544 (database size quota reached), 40549/40550/40551/40552/40553
(a transaction too long, too many locks, too much tempdb/log/memory: the same transaction would
fail again), 18456 (login failed: a missing database user or a wrong identity), and every error
of our own statements (2627 duplicate key, 208 missing table, 245 conversion...).

pyodbc's ``Error.args`` is ``(sqlstate, text)``, the text being the driver's diagnostic record(s)
formatted ``"[SQLSTATE] message (native error) (SQLFunction)"`` and, for further records,
``"; [SQLSTATE] message (native error)"``. Connection-level SQLSTATEs (08xxx, HYT00/HYT01) are
transient too: the link dropped or the login timed out; a new connection may well succeed.
Re-running a whole page transaction after any of these is safe: the page's writes are
idempotent and monotonic, and nothing was committed unless ``commit`` returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TRANSIENT_ERROR_NUMBERS: frozenset[int] = frozenset(
    {
        # Microsoft Learn: list of transient fault error codes (Azure SQL Database)
        615, 926, 4060, 4221, 40197, 40501, 40613, 49918, 49919, 49920,
        # codes embedded in 40197, raised on their own by older gateways
        40020, 40143, 40166, 40540,
        # resource governance: worker/request limits reached
        10928, 10929, 10936,
        # SqlClient baseline: transport, login-phase and lock errors
        233, 997, 1204, 1205, 1222, 10053, 10054, 10060,
        # EF Core: connection drops and In-Memory OLTP conflicts
        20, 64, 121, 41301, 41302, 41305, 41325, 41839,
    }
)  # fmt: skip

#: Errors that mean the connection itself is gone (reconnect before retrying).
CONNECTION_ERROR_NUMBERS: frozenset[int] = frozenset(
    {20, 64, 121, 233, 615, 926, 997, 4060, 4221, 10053, 10054, 10060, 40143, 40197, 40540, 40613}
)
CONNECTION_SQLSTATES: frozenset[str] = frozenset(
    {"08001", "08002", "08003", "08004", "08007", "08S01", "HYT00", "HYT01"}
)

_NATIVE = re.compile(r"\((-?\d+)\)\s*(?:\(SQL\w+\)|;|$)")


@dataclass(frozen=True)
class SqlError:
    """What a pyodbc error says, in the parts retry decisions need."""

    sqlstate: str
    numbers: tuple[int, ...]
    text: str

    @property
    def transient(self) -> bool:
        return self.sqlstate in CONNECTION_SQLSTATES or any(
            n in TRANSIENT_ERROR_NUMBERS for n in self.numbers
        )

    @property
    def connection_lost(self) -> bool:
        return (
            self.sqlstate in CONNECTION_SQLSTATES
            or self.sqlstate.startswith("08")
            or any(n in CONNECTION_ERROR_NUMBERS for n in self.numbers)
        )


def describe(exc: BaseException) -> SqlError:
    """Read SQLSTATE and native error numbers from a pyodbc error (or anything shaped like one)."""
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    sqlstate = ""
    text = str(exc)
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        sqlstate, text = args[0], args[1]
    elif len(args) == 1 and isinstance(args[0], str):
        text = args[0]
        match = re.match(r"\[([0-9A-Z]{5})\]", text)
        sqlstate = match.group(1) if match else ""
    numbers = tuple(int(n) for n in _NATIVE.findall(text))
    return SqlError(sqlstate=sqlstate.upper(), numbers=numbers, text=text)
