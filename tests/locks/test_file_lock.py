"""FileLock with real OS processes: exclusion, timeout, and a killed holder."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from shared.errors import ExactSyncError
from shared.locks.base import LockTimeout
from shared.locks.file_lock import FileLock
from shared.stores.base import InvalidConnectionName
from tests.locks import workers


def _wait_for(path: Path, timeout: float = 30) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear")


@pytest.mark.slow
def test_mutual_exclusion_across_processes(tmp_path: Path) -> None:
    location = {"directory": str(tmp_path / "locks")}
    overlaps, counter = workers.run_contenders(
        tmp_path, "file", location, processes=4, iterations=10, hold_seconds=0.01
    )
    assert overlaps == 0
    assert counter == 40  # no lost update in the read-sleep-write critical section

    # The same harness without a lock does see overlaps: the measurement can fail.
    overlaps, counter = workers.run_contenders(
        tmp_path, "none", location, processes=4, iterations=10, hold_seconds=0.01
    )
    assert overlaps > 0 and counter < 40


@pytest.mark.slow
def test_timeout_then_a_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    location = {"directory": str(tmp_path / "locks")}
    ready = tmp_path / "ready"
    holder = ctx.Process(target=workers.hold_until_killed, args=("file", location, "acme-nl", str(ready)))
    holder.start()
    try:
        _wait_for(ready)
        lock = FileLock(tmp_path / "locks")
        started = time.monotonic()
        with pytest.raises(LockTimeout) as info, lock.hold("acme-nl", timeout=0.3):
            pass
        assert 0.3 <= time.monotonic() - started < 2
        assert "acme-nl" in str(info.value) and isinstance(info.value, ExactSyncError)

        with lock.hold("other-conn", timeout=0.3):  # other connections are not blocked
            pass

        holder.kill()  # SIGKILL: no clean-up code runs; the kernel drops the flock
        holder.join(10)
        started = time.monotonic()
        with lock.hold("acme-nl", timeout=5):
            assert time.monotonic() - started < 1
    finally:
        if holder.is_alive():
            holder.kill()
            holder.join(10)


def test_threads_of_one_process_exclude_each_other_too(tmp_path: Path) -> None:
    lock = FileLock(tmp_path)
    entered = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with lock.hold("acme-nl", timeout=1):
            entered.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert entered.wait(5)
        with pytest.raises(LockTimeout), lock.hold("acme-nl", timeout=0.2):
            pass
    finally:
        release.set()
        thread.join(5)
    with lock.hold("acme-nl", timeout=1) as held:  # free again after the holder left
        assert held is None


def test_hold_is_reusable_sequentially_and_never_lost(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "new" / "dir")
    hold = lock.hold("acme-nl", timeout=1)
    for _ in range(2):
        with hold:
            assert not hold.lost
            hold.check()
    assert (tmp_path / "new" / "dir" / "acme-nl.lock").exists()


def test_invalid_connection_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidConnectionName):
        FileLock(tmp_path).hold("../etc/passwd", timeout=1)
