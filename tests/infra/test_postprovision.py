"""infra/hooks/postprovision.sh, run for real by bash with stand-ins for the tools that need Azure.

`az`, `sqlcmd`, `curl` and `exactsync` are small programs on PATH that record how they were
called (and can be told to fail); everything else is the real script. The assertions are about
what reaches Azure: the firewall opened for one address and always closed again, the exact SQL
for the app identity's user, `exactsync migrate` run with the deployer's credentials.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep import ROOT

HOOK = ROOT / "infra" / "hooks" / "postprovision.sh"
PRINCIPAL = "6f1c2b3a-0d4e-4f5a-9b8c-7d6e5f4a3b2c"
AZD_ENV = {
    "AZURE_SUBSCRIPTION_ID": "00000000-1111-2222-3333-444444444444",
    "AZURE_RESOURCE_GROUP": "rg-test",
    "SQL_SERVER_NAME": "sql-abc123",
    "SQL_SERVER": "sql-abc123.database.windows.net",
    "SQL_DATABASE": "exactsync",
    "AZURE_MANAGED_IDENTITY_NAME": "id-abc123",
    "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID": PRINCIPAL,
}

STUB = """#!{python}
import json, os, sys
tool = os.path.basename(sys.argv[0])
args = sys.argv[1:]
if tool == "sqlcmd" and args == ["--help"]:
    print(os.environ.get("STUB_SQLCMD_HELP", "  --authentication-method string   ActiveDirectoryDefault, ..."))
    sys.exit(0)
seen = {{k: os.environ.get(k) for k in ("SQL_SERVER", "SQL_DATABASE", "AZURE_CLIENT_ID")}}
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps({{"tool": tool, "args": args, "env": seen}}) + "\\n")
if tool == "curl":
    print("203.0.113.7")
elif tool == "az" and args[:3] == ["sql", "server", "show"]:
    print(os.environ.get("STUB_SQL_ACCESS", "Disabled"))
elif tool == "sqlcmd":
    counter = os.environ["STUB_LOG"] + ".sqlcmd-failures"
    left = int(open(counter).read()) if os.path.exists(counter) else int(os.environ.get("STUB_SQLCMD_FAILS", "0"))
    if left > 0:
        open(counter, "w").write(str(left - 1))
        print("Login failed: Cannot open server (firewall)", file=sys.stderr)
        sys.exit(1)
elif tool == "exactsync":
    sys.exit(int(os.environ.get("STUB_MIGRATE_RC", "0")))
"""


def _run(
    tmp_path: Path, **overrides: str | None
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("az", "sqlcmd", "curl", "exactsync"):
        stub = bin_dir / tool
        stub.write_text(STUB.format(python=sys.executable), encoding="utf-8")
        stub.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(tmp_path),
        "STUB_LOG": str(log),
        "EXACTSYNC_BIN": str(bin_dir / "exactsync"),
        "SQL_RETRY_SECONDS": "0",
        # The deployer's shell may carry AZURE_CLIENT_ID: migrate must not see it.
        "AZURE_CLIENT_ID": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        **AZD_ENV,
    }
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    done = subprocess.run(["bash", str(HOOK)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done, calls


def _az(calls: list[dict[str, Any]]) -> list[list[str]]:
    return [c["args"] for c in calls if c["tool"] == "az"]


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_creates_the_database_user_and_migrates_through_a_temporary_opening(tmp_path: Path) -> None:
    done, calls = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    order = [c["tool"] for c in calls]
    assert order.index("curl") < order.index("sqlcmd") < order.index("exactsync")

    az = _az(calls)
    assert all(_option(a, "--subscription") == AZD_ENV["AZURE_SUBSCRIPTION_ID"] for a in az if a[0] == "sql")
    updates = [a for a in az if a[:3] == ["sql", "server", "update"]]
    assert [_option(a, "--enable-public-network") for a in updates] == ["true", "false"]
    create = next(a for a in az if a[:4] == ["sql", "server", "firewall-rule", "create"])
    delete = next(a for a in az if a[:4] == ["sql", "server", "firewall-rule", "delete"])
    assert _option(create, "--start-ip-address") == _option(create, "--end-ip-address") == "203.0.113.7"
    assert _option(create, "--name") == _option(delete, "--name")
    assert _option(create, "--server") == "sql-abc123"
    # Closed again after the database work, in reverse order of opening.
    assert az.index(delete) > az.index(create) and az.index(updates[1]) > az.index(delete)

    (sql_call,) = [c["args"] for c in calls if c["tool"] == "sqlcmd"]
    assert _option(sql_call, "-S") == "sql-abc123.database.windows.net"
    assert _option(sql_call, "-d") == "exactsync"
    assert _option(sql_call, "--authentication-method") == "ActiveDirectoryDefault"
    assert "-b" in sql_call and "-C" not in sql_call  # stop on error; never trust any certificate
    query = _option(sql_call, "-Q")
    assert f"CREATE USER [id-abc123] FROM EXTERNAL PROVIDER WITH OBJECT_ID = '{PRINCIPAL}'" in query
    assert "IF DATABASE_PRINCIPAL_ID(N'id-abc123') IS NULL" in query  # re-runs are no-ops
    assert "ALTER ROLE db_datareader ADD MEMBER [id-abc123]" in query
    assert "ALTER ROLE db_datawriter ADD MEMBER [id-abc123]" in query
    for broad in ("db_owner", "db_ddladmin", "db_securityadmin", "GRANT"):
        assert broad not in query

    (migrate,) = [c for c in calls if c["tool"] == "exactsync"]
    assert migrate["args"] == ["migrate"]
    assert migrate["env"] == {
        "SQL_SERVER": AZD_ENV["SQL_SERVER"],
        "SQL_DATABASE": "exactsync",
        "AZURE_CLIENT_ID": None,
    }


def test_leaves_an_already_public_server_as_it_was(tmp_path: Path) -> None:
    done, calls = _run(tmp_path, STUB_SQL_ACCESS="Enabled", SQL_CLIENT_IP="198.51.100.4")
    assert done.returncode == 0, done.stderr
    az = _az(calls)
    assert not [a for a in az if a[:3] == ["sql", "server", "update"]]
    create = next(a for a in az if a[:4] == ["sql", "server", "firewall-rule", "create"])
    assert _option(create, "--start-ip-address") == "198.51.100.4"
    assert "curl" not in [c["tool"] for c in calls]
    assert any(a[:4] == ["sql", "server", "firewall-rule", "delete"] for a in az)


def test_closes_the_opening_when_migrate_fails(tmp_path: Path) -> None:
    done, calls = _run(tmp_path, STUB_MIGRATE_RC="3")
    assert done.returncode != 0
    assert "exactsync migrate failed" in done.stderr
    az = _az(calls)
    assert any(a[:4] == ["sql", "server", "firewall-rule", "delete"] for a in az)
    assert [_option(a, "--enable-public-network") for a in az if a[:3] == ["sql", "server", "update"]] == [
        "true",
        "false",
    ]


def test_waits_for_the_firewall_rule_and_a_paused_database(tmp_path: Path) -> None:
    done, calls = _run(tmp_path, STUB_SQLCMD_FAILS="2")
    assert done.returncode == 0, done.stderr
    assert [c["tool"] for c in calls].count("sqlcmd") == 3
    assert "retrying" in done.stderr


def test_gives_up_after_the_attempts_and_still_closes(tmp_path: Path) -> None:
    done, calls = _run(tmp_path, STUB_SQLCMD_FAILS="9", SQL_CONNECT_ATTEMPTS="3")
    assert done.returncode != 0
    assert "could not create the database user" in done.stderr
    assert [c["tool"] for c in calls].count("sqlcmd") == 3
    assert "exactsync" not in [c["tool"] for c in calls]
    assert any(a[:4] == ["sql", "server", "firewall-rule", "delete"] for a in _az(calls))


@pytest.mark.parametrize(
    "missing", ["SQL_SERVER_NAME", "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID", "AZURE_RESOURCE_GROUP"]
)
def test_refuses_to_start_without_the_azd_environment(tmp_path: Path, missing: str) -> None:
    done, calls = _run(tmp_path, **{missing: None})
    assert done.returncode != 0
    assert f"{missing} is not set" in done.stderr
    assert calls == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AZURE_MANAGED_IDENTITY_PRINCIPAL_ID", "x'; DROP USER dbo; --"),
        ("AZURE_MANAGED_IDENTITY_NAME", "id]; DROP TABLE t; --"),
        ("SQL_CLIENT_IP", "0.0.0.0/0"),
    ],
)
def test_refuses_values_that_are_not_what_they_claim(tmp_path: Path, name: str, value: str) -> None:
    done, calls = _run(tmp_path, **{name: value})
    assert done.returncode != 0
    assert name in done.stderr
    assert not [c for c in calls if c["tool"] in {"sqlcmd", "exactsync"}]
    assert not [a for a in _az(calls) if "firewall-rule" in a]


def test_refuses_the_old_odbc_sqlcmd(tmp_path: Path) -> None:
    done, calls = _run(tmp_path, STUB_SQLCMD_HELP="usage: sqlcmd [-U login id] [-P password]")
    assert done.returncode != 0
    assert "go-sqlcmd" in done.stderr
    assert not [a for a in _az(calls) if "firewall-rule" in a]
