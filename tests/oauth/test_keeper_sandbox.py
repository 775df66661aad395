"""The keeper against the sandbox over real HTTP, on the sandbox's (scaled) clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from shared.sandbox.server import SandboxHandle
from shared.tokens import TokenStatus
from tests.oauth.sandbox_support import (
    EARLIEST,
    EXACT_LIFETIME,
    api_me,
    consent,
    counters,
    keeper_for,
    rotation_gaps,
    sandbox_clock,
)

LIFETIMES = 31


@pytest.mark.slow
def test_access_tokens_for_thirty_lifetimes_every_refresh_inside_the_window(
    sandbox_factory: Callable[..., SandboxHandle], tmp_path: Path
) -> None:
    handle = sandbox_factory(time_scale=600, limits=False)
    clock = sandbox_clock(handle)
    keeper = keeper_for(handle, clock, tmp_path)
    consent(handle, keeper, clock)
    started = clock.now()
    end = started + LIFETIMES * EXACT_LIFETIME
    asked = checked = rejected = 0
    tokens: set[str] = set()
    with httpx.Client(timeout=30) as http:
        while clock.now() < end:
            token = keeper.get_access_token("acme", min_validity=30)
            tokens.add(token)
            asked += 1
            if asked % 10 == 0:
                checked += 1
                rejected += api_me(handle, http, token) != 200
            time.sleep(0.004)
    data = counters(handle)
    assert data["too_early_refreshes"] == 0
    assert data["refresh_token_reuse"] == 0
    assert rejected == 0 and checked > 100
    elapsed = clock.now() - started
    assert LIFETIMES - 1 <= data["refreshes"] <= elapsed / EARLIEST + 1
    assert min(rotation_gaps(data)) >= EARLIEST
    assert len(tokens) == data["refreshes"] + 1
    view = keeper.status("acme")
    assert view is not None and view["status"] == TokenStatus.OK.value
    assert view["generation"] == 1 + data["refreshes"]
