"""`exactsync migrate` and `exactsync sync` as a person runs them, against a running sandbox."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.exact.catalog import CATALOG
from tests.sync.support import CONNECTION, assert_equal_to_sandbox, consented_runtime

ROOT = Path(__file__).resolve().parents[2]


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        check=False,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_migrate_then_sync_from_the_command_line(sandbox_factory: Callable[..., Any], tmp_path: Path) -> None:
    sandbox = sandbox_factory()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("EXACT", "SQL_", "AzureWebJobs", "SYNC_"))
    }
    env.update({"EXACTSYNC_HOME": str(tmp_path), "EXACT_BASE_URL": sandbox.base_url, "PYTHONPATH": str(ROOT)})

    migrated = _run(env, "migrate", "--print")
    assert migrated.returncode == 0 and "sqlite warehouse" in migrated.stdout, migrated.stderr
    with sqlite3.connect(tmp_path / "warehouse.sqlite3") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {e.table for e in CATALOG} <= tables
    assert "0 DDL statement(s) applied (up to date)" in _run(env, "migrate").stdout

    nothing = _run(env, "sync")
    assert nothing.returncode == 1 and "nothing to sync" in nothing.stderr

    runtime = consented_runtime(sandbox, tmp_path)  # the consent, through the real flow
    done = _run(env, "sync", "--full")
    assert done.returncode == 0, done.stderr
    assert "synced" in done.stdout and "API calls" in done.stdout and "0 x 429" in done.stdout
    assert "division 1001001" in done.stderr  # progress on stderr, one line per finished entity
    assert_equal_to_sandbox(runtime, sandbox, [1001001, 1001002])

    narrow = _run(env, "sync", "--division", "1001002", "--entity", "Items", "--workers", "1")
    assert narrow.returncode == 0 and "2 steps" in narrow.stdout  # Items + its sync/Deleted

    bad = _run(env, "sync", "--entity", "Contacts")
    assert bad.returncode == 2 and "unknown entity 'Contacts'" in bad.stderr
    assert CONNECTION in runtime.token_store.list_connections()
