"""End to end over real HTTP: /api/oauth/start -> sandbox consent -> /api/oauth/callback (served
by ``shared.serve`` from the real function_app.py) -> tokens in the store -> access tokens served
through 30+ simulated lifetimes, every refresh inside Exact's window (sandbox counters)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from shared.sandbox.server import SandboxHandle
from shared.tokens import TokenStatus
from tests.oauth.consent_flow import ConsentRig, consent_rig, query_of

LIFETIME = 600.0
EARLIEST = 570.0
LIFETIMES = 31


@pytest.fixture
def rig(sandbox_factory: Callable[..., SandboxHandle], tmp_path: Path) -> Iterator[ConsentRig]:
    with consent_rig(sandbox_factory, tmp_path / "home", limits=False) as rig:
        yield rig


def test_browser_consent_stores_tokens_and_status_route_shows_them(rig: ConsentRig) -> None:
    browser = rig.browser()
    started = rig.start(browser, "acme")
    assert started.status_code == 302
    location = started.headers["location"]
    assert location.startswith(f"{rig.sandbox.base_url}/api/oauth2/auth?")
    params = query_of(location)
    assert params["force_login"] == "0" and params["redirect_uri"] == rig.redirect_uri
    assert params["client_id"] == rig.sandbox.client_id and params["response_type"] == "code"
    set_cookie = started.headers["set-cookie"]
    assert (
        "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie and "Path=/api/oauth/callback" in set_cookie
    )
    assert rig.stored("acme") is None

    at_provider = browser.get(location)
    assert at_provider.status_code == 302
    callback_url = at_provider.headers["location"]
    assert "%21" in callback_url  # Exact-style code with '!' arrives URL-encoded

    page = browser.get(callback_url)
    assert page.status_code == 200, page.text
    assert "Connected" in page.text and "acme" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "Max-Age=0" in page.headers["set-cookie"]  # the binding cookie is cleared
    assert not any(c.name.startswith("exactsync_consent_") for c in browser.cookies.jar)

    record = rig.stored("acme")
    assert record is not None and record.status is TokenStatus.OK and record.provider == "exact"
    assert record.consented_at is not None
    assert rig.counters()["codes_exchanged"] == 1

    status = browser.get(f"{rig.base_url}/api/connections/acme")
    assert status.status_code == 200
    view = status.json()
    assert view["connection"] == "acme" and view["status"] == "ok"
    assert record.access_token not in status.text and record.refresh_token not in status.text
    assert 0 < view["access_valid_for_seconds"] <= LIFETIME

    # the token works against the API
    me = httpx.get(
        f"{rig.sandbox.base_url}/api/v1/current/Me",
        headers={"Authorization": f"Bearer {record.access_token}", "Accept": "application/json"},
    )
    assert me.status_code == 200


def test_status_route_for_unknown_and_invalid_names(rig: ConsentRig) -> None:
    browser = rig.browser()
    unknown = browser.get(f"{rig.base_url}/api/connections/nobody")
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_connection"
    invalid = browser.get(f"{rig.base_url}/api/connections/Bad_Name")
    assert invalid.status_code == 400 and invalid.json()["error"] == "invalid_connection_name"


def test_a_second_consent_replaces_the_chain(rig: ConsentRig) -> None:
    assert rig.consent(connection="acme").status_code == 200
    first = rig.stored("acme")
    assert rig.consent(connection="acme").status_code == 200
    second = rig.stored("acme")
    assert first is not None and second is not None
    assert second.refresh_token != first.refresh_token and second.generation == first.generation + 1


@pytest.mark.slow
def test_tokens_served_for_thirty_lifetimes_with_every_refresh_in_the_window(rig: ConsentRig) -> None:
    assert rig.consent(connection="acme").status_code == 200
    # Speed the world up; this process's clock is rebuilt from the sandbox's spec, as another
    # process (the Functions host) would build it.
    rig.admin("POST", "clock", {"scale": 1200.0})
    runtime = rig.use(rig.new_runtime())
    keeper, clock = runtime.keeper, runtime.clock
    start = clock.now()
    served: list[tuple[float, str]] = []
    while clock.now() < start + LIFETIMES * LIFETIME:
        token = keeper.get_access_token("acme")
        served.append((clock.now(), token))
        clock.sleep(5.0)  # 5 simulated seconds between calls: a busy connection

    counters = rig.counters()
    assert counters["refresh_token_reuse"] == 0
    assert counters["too_early_refreshes"] == 0
    rotated = [e["at"] for e in counters["refresh_log"] if e["outcome"] == "rotated"]
    assert [e["outcome"] for e in counters["refresh_log"]] == ["rotated"] * len(rotated)
    assert len(rotated) >= LIFETIMES - 1
    # at most one refresh per lifetime, and never before the 570 s rule allows it
    issued = [counters["exchange_log"][-1]["at"], *rotated]
    gaps = [b - a for a, b in itertools.pairwise(issued)]
    assert min(gaps) >= EARLIEST, gaps
    assert len(rotated) <= (clock.now() - issued[0]) / EARLIEST + 1

    # every token was valid (per the sandbox's own issue times) when it was served
    order: list[str] = []
    for _, token in served:
        if not order or order[-1] != token:
            order.append(token)
    assert len(order) == len(set(order))  # never an old token again
    generation_of = {token: issued[len(issued) - len(order) + i] for i, token in enumerate(order)}
    for at, token in served:
        born = generation_of[token]
        assert born <= at < born + LIFETIME, at - born
    record = rig.stored("acme")
    assert record is not None and record.status is TokenStatus.OK
