"""EXACTLY ONCE: real `exactsync sync` processes (and their workers) SIGKILLed at random points,
then resumed, end equal to the sandbox's data set: no missing, duplicate or stale row.

Each page takes a while (the sandbox's ``api_latency``), so kills land while a page is fetched,
converted, committed, or between the commit, the continuation and the message's completion.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.exact.catalog import CATALOG
from shared.sync.demo import mutate
from tests.sync.support import CONNECTION, admin, assert_equal_to_sandbox, consented_runtime

KILLS = 4
ROOT = Path(__file__).resolve().parents[2]


def _env(sandbox: Any, home: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("EXACT", "SQL_", "AzureWebJobs", "SYNC_"))
    }
    env.update({"EXACTSYNC_HOME": str(home), "EXACT_BASE_URL": sandbox.base_url, "PYTHONPATH": str(ROOT)})
    return env


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "sync", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes its workers too
    )


def _queued(home: Path) -> int:
    try:
        with sqlite3.connect(home / "queue.sqlite3", timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    except sqlite3.Error:
        return 0


def _last_commit(home: Path) -> str:
    try:
        with sqlite3.connect(home / "warehouse.sqlite3", timeout=5) as db:
            return str(db.execute("SELECT MAX(updated_at) FROM exactsync_state").fetchone()[0])
    except sqlite3.Error:
        return ""


def _kill_at_random(process: subprocess.Popen[bytes], rng: random.Random, home: Path) -> None:
    """Once this process has committed a page, wait a random moment (into the next page's fetch,
    conversion or commit, or the hand-over), then SIGKILL its whole process group."""
    seen = _last_commit(home)
    deadline = time.monotonic() + 60
    while _last_commit(home) == seen and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.4))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _finish(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "sync", *args],
        check=False,
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]


@pytest.mark.slow
def test_loads_killed_at_random_points_and_resumed_end_equal_to_the_data_set(
    sandbox_factory: Callable[..., Any], tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("EXACTLY_ONCE_SEED", "0")) or None)
    sandbox = sandbox_factory(limits=False, row_counts={"TransactionLines": 20_000, "Accounts": 2_500})
    runtime = consented_runtime(sandbox, tmp_path)  # the consent the processes will use
    divisions = list(admin(sandbox, "GET", "")["divisions"])
    admin(sandbox, "POST", "faults", json={"api_latency": 0.08})
    env = _env(sandbox, tmp_path)

    # A full load, killed several times and resumed from the queue each time.
    _kill_at_random(_start(env, "--full"), rng, tmp_path)
    for _ in range(KILLS - 1):
        _kill_at_random(_start(env, "--resume"), rng, tmp_path)
    assert _queued(tmp_path) > 0  # interrupted: there is work left to resume
    _finish(env, "--resume")
    assert _queued(tmp_path) == 0
    assert_equal_to_sandbox(runtime, sandbox, divisions)

    # Changes everywhere, then an incremental load killed and resumed the same way.
    for division in divisions:
        for entity in (e for e in CATALOG if e.incremental):
            mutate(sandbox, division, entity.name, insert=5, update=4, delete=3)
        mutate(sandbox, division, "TransactionLines", update=2500)  # several pages of changes
    _kill_at_random(_start(env), rng, tmp_path)
    for _ in range(KILLS - 1):
        _kill_at_random(_start(env, "--resume"), rng, tmp_path)
    _finish(env, "--resume")
    assert_equal_to_sandbox(runtime, sandbox, divisions)
    _finish(env)  # and an ordinary sync on top changes nothing
    assert_equal_to_sandbox(runtime, sandbox, divisions)
    assert CONNECTION in runtime.token_store.list_connections()
