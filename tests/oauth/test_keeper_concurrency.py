"""16 real OS processes ask for access tokens of one connection for 30 simulated token lifetimes,
once with the file lock and once with the blob lease on Azurite. The sandbox must count no
refresh-token reuse, no too-early refresh, and at most one refresh per lifetime."""

from __future__ import annotations

import json
import multiprocessing
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.sandbox.server import SandboxHandle
from tests.oauth import workers
from tests.oauth.sandbox_support import (
    EARLIEST,
    EXACT_LIFETIME,
    consent,
    counters,
    rotation_gaps,
    sandbox_clock,
)

SCALE = 300  # 30 lifetimes = 18,000 simulated seconds = 60 s
WORKERS = 16
LIFETIMES = 30
MIN_VALIDITY = 90  # simulated seconds a token must outlive its use (300 ms real at this scale)


def run(
    handle: SandboxHandle, tmp_path: Path, lock: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    clock = sandbox_clock(handle)
    cfg: dict[str, Any] = {
        "base_url": handle.base_url,
        "client_id": handle.client_id,
        "client_secret": handle.app.client_secret,
        "redirect_uri": handle.redirect_uri,
        "clock": clock.spec(),
        "home": str(tmp_path),
        "lock": lock,
        "connection": "acme",
        "min_validity": MIN_VALIDITY,
        "max_window_wait_s": MIN_VALIDITY + 30,
        "run_for": LIFETIMES * EXACT_LIFETIME + 60,
        "api_every": 8,
    }
    keeper, _ = workers.build_keeper(cfg)  # the consent takes the same lock as everyone
    consent(handle, keeper, clock)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    outs = [tmp_path / f"worker-{i}.json" for i in range(WORKERS)]
    processes = [
        ctx.Process(target=workers.serve_tokens, args=(cfg, str(out), barrier), daemon=True) for out in outs
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join(timeout=240)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    assert [p.exitcode for p in processes] == [0] * WORKERS
    return [json.loads(out.read_text()) for out in outs], counters(handle)


def check(results: list[dict[str, Any]], data: dict[str, Any]) -> None:
    assert data["refresh_token_reuse"] == 0
    assert data["too_early_refreshes"] == 0
    for result in results:
        assert result["errors"] == {}
        assert result["last"] - result["first"] >= LIFETIMES * EXACT_LIFETIME
        assert result["asked"] > 100 and result["rejected"] == 0
    gaps = rotation_gaps(data)
    assert min(gaps) >= EARLIEST  # at most one refresh per lifetime, never inside 570 s
    span = max(r["last"] for r in results) - min(r["first"] for r in results)
    assert LIFETIMES - 1 <= data["refreshes"] <= span / EARLIEST + 1
    assert sum(r["checked"] for r in results) > 500


@pytest.mark.slow
def test_sixteen_processes_with_the_file_lock(
    sandbox_factory: Callable[..., SandboxHandle], tmp_path: Path
) -> None:
    handle = sandbox_factory(time_scale=SCALE, limits=False)
    check(*run(handle, tmp_path, {"kind": "file"}))


@pytest.mark.slow
@pytest.mark.azurite
def test_sixteen_processes_with_the_blob_lease(
    sandbox_factory: Callable[..., SandboxHandle], tmp_path: Path, azurite: Any
) -> None:
    handle = sandbox_factory(time_scale=SCALE, limits=False)
    lock = {
        "kind": "blob",
        "connection_string": azurite.connection_string,
        "container": f"locks-{uuid.uuid4().hex[:12]}",
    }
    check(*run(handle, tmp_path, lock))
