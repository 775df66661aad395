"""``rotate_all`` as the timer runs it: the runtime's own keeper, store, lock and nonce store,
against the sandbox over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from shared.oauth.rotation import rotate_all
from shared.oauth.token_endpoint import TokenEndpoint
from shared.runtime import Runtime
from shared.sandbox.server import SandboxHandle
from shared.settings import Settings
from shared.tokens import TokenStatus
from tests.oauth.sandbox_support import advance, authorize, counters, sandbox_clock

AMS = ZoneInfo("Europe/Amsterdam")


def test_timer_keeps_an_idle_chain_alive_outside_the_quiet_hour(
    sandbox_factory: Callable[..., SandboxHandle], tmp_path: Path
) -> None:
    handle = sandbox_factory(limits=False)
    settings = Settings.from_env(
        {
            "EXACTSYNC_HOME": str(tmp_path),
            "EXACT_BASE_URL": handle.base_url,
            "EXACT_CLIENT_ID": handle.client_id,
            "EXACT_CLIENT_SECRET": handle.app.client_secret,
            "EXACT_REDIRECT_URI": handle.redirect_uri,
            "KEEPALIVE_AFTER_HOURS": "72",
        }
    )
    clock = sandbox_clock(handle)
    runtime = Runtime(settings=settings, clock=clock)
    with httpx.Client(timeout=30) as browser:
        code = authorize(handle, browser)
    grant = TokenEndpoint(runtime.providers.get("exact"), http=runtime.oauth_http, clock=clock).exchange_code(
        code
    )
    runtime.keeper.adopt_consent("acme", "exact", grant)

    report = rotate_all(runtime)
    assert [(c.connection, c.action, c.health) for c in report.connections] == [("acme", "none", "ok")]

    # four days later, at 01:10 Amsterdam time: old enough, but the quiet hour forbids it
    local = datetime.fromtimestamp(clock.now(), AMS) + timedelta(days=4)
    target = local.replace(hour=1, minute=10, second=0, microsecond=0).timestamp()
    advance(handle, clock, target - clock.now())
    report = rotate_all(runtime)
    assert report.quiet_hours and report.connections[0].action == "not_allowed"
    assert counters(handle)["refreshes"] == 0

    advance(handle, clock, 3600)  # 02:10
    report = rotate_all(runtime)
    assert report.connections[0].action == "refreshed" and not report.quiet_hours
    record = runtime.token_store.load("acme")
    assert record is not None and record.status is TokenStatus.OK and record.refresh_age(clock.now()) < 5
    data = counters(handle)
    assert data["refreshes"] == 1 and data["too_early_refreshes"] == 0 and data["refresh_token_reuse"] == 0
