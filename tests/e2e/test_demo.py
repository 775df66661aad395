"""The README's first command, as a person runs it: `exactsync demo` with nothing configured."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _clean_env(home: Path) -> dict[str, str]:
    """No exactsync or Azure settings at all: the demo must run on embedded defaults."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EXACT", "SQL_", "AzureWebJobs", "SYNC_", "KEY_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    env["HOME"] = str(home)
    return env


@pytest.mark.slow
def test_exactsync_demo_runs_the_whole_job_in_well_under_a_minute(tmp_path: Path) -> None:
    real = tmp_path / ".exactsync" / "tokens" / "default.json"  # someone's real local setup
    real.parent.mkdir(parents=True)
    real.write_text('{"untouched": true}')
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "demo"],
        check=False,
        cwd=tmp_path,  # its state lands in ./.exactsync/demo of wherever it is run
        env=_clean_env(tmp_path),
        capture_output=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, out + err
    assert elapsed < 45, elapsed
    for step in ("1. Exact Online sandbox running", "2. consent given", "3. SQLite warehouse ready",
                 "4. full sync", "5. changed the sandbox", "6. incremental sync",
                 "7. check: the SQLite tables equal the sandbox's data row for row"):  # fmt: skip
        assert step in out, out
    # per entity and division: inserted, updated, deleted, calls
    accounts = [line.split() for line in out.splitlines() if line.strip().startswith("Accounts ")]
    assert len(accounts) == 2 and all(row[2:] == ["3", "2", "1", "1"] for row in accounts), accounts
    assert (tmp_path / ".exactsync" / "demo" / "warehouse.sqlite3").exists()
    assert real.read_text() == '{"untouched": true}' and len(list(real.parent.iterdir())) == 1
    assert "division" in err  # progress went to stderr

    # Running it again starts afresh (its own folder is wiped, nothing else).
    again = subprocess.run(
        [sys.executable, "-m", "shared.cli", "demo"], check=False, cwd=tmp_path, env=_clean_env(tmp_path),
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout.decode() + again.stderr.decode()


def test_the_demo_refuses_to_wipe_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "tokens.json").write_text("{}")
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "demo", "--home", str(precious)],
        check=False,
        cwd=tmp_path, env=_clean_env(tmp_path), capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "is not a demo folder" in done.stderr.decode()
    assert (precious / "tokens.json").exists()
