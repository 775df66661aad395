"""Functions run in separate OS processes (multiprocessing 'spawn') by the lock tests."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from shared.locks.base import ConnectionLock


def build_lock(kind: str, location: dict[str, Any]) -> ConnectionLock | None:
    if kind == "file":
        from shared.locks.file_lock import FileLock

        return FileLock(location["directory"])
    if kind == "blob":
        from azure.storage.blob import ContainerClient

        from shared.locks.blob_lease import BlobLeaseLock

        container = ContainerClient.from_connection_string(
            location["connection_string"], location["container"]
        )
        return BlobLeaseLock(container, lease_seconds=int(location.get("lease_seconds", 15)))
    return None  # "none": the control run without any lock


def critical_sections(
    *,
    kind: str,
    location: dict[str, Any],
    connection: str,
    iterations: int,
    hold_seconds: float,
    counter: str,
    out: str,
    barrier: Any,
) -> None:
    """Enter the critical section ``iterations`` times; record each (start, end) on the monotonic
    clock (system-wide on Linux) and do a read-sleep-write increment of a shared counter file."""
    lock = build_lock(kind, location)
    intervals: list[tuple[float, float]] = []
    barrier.wait(timeout=60)
    for _ in range(iterations):
        guard = lock.hold(connection, timeout=60) if lock is not None else contextlib.nullcontext()
        with guard:
            start = time.monotonic()
            value = int(Path(counter).read_text() or "0")
            time.sleep(hold_seconds)
            Path(counter).write_text(str(value + 1))
            end = time.monotonic()
        intervals.append((start, end))
    Path(out).write_text(json.dumps(intervals))


def hold_until_killed(kind: str, location: dict[str, Any], connection: str, ready: str) -> None:
    """Take the lock, say so (with the time), then hold it until the parent kills this process."""
    lock = build_lock(kind, location)
    assert lock is not None
    with lock.hold(connection, timeout=60):
        Path(ready).write_text(json.dumps({"at": time.monotonic()}))
        while True:
            time.sleep(1)


def count_overlaps(intervals: list[tuple[float, float]]) -> int:
    """How many critical sections started before an earlier one had ended."""
    overlaps = 0
    latest_end = float("-inf")
    for start, end in sorted(intervals):
        if start < latest_end:
            overlaps += 1
        latest_end = max(latest_end, end)
    return overlaps


def run_contenders(
    tmp_path: Path,
    kind: str,
    location: dict[str, Any],
    *,
    processes: int,
    iterations: int,
    hold_seconds: float,
) -> tuple[int, int]:
    """Run ``processes`` contenders at once; return (overlapping sections, final counter)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    counter = tmp_path / f"counter-{kind}"
    counter.write_text("0")
    barrier = ctx.Barrier(processes)
    outs = [tmp_path / f"{kind}-{i}.json" for i in range(processes)]
    procs = [
        ctx.Process(
            target=critical_sections,
            kwargs={
                "kind": kind,
                "location": location,
                "connection": "acme-nl",
                "iterations": iterations,
                "hold_seconds": hold_seconds,
                "counter": str(counter),
                "out": str(out),
                "barrier": barrier,
            },
        )
        for out in outs
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [p.exitcode for p in procs] == [0] * processes
    intervals = [(float(a), float(b)) for out in outs for a, b in json.loads(out.read_text())]
    return count_overlaps(intervals), int(counter.read_text())
