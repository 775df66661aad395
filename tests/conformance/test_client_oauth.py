"""CLIENT conformance of ``shared/oauth`` (token endpoint, keeper) to the reference's OAuth rows.

Expectations from the reference: the token request's exact form fields; ``expires_in`` a string;
one request per refresh and no blind retry ("never time out a token request early"); refreshes
never earlier than 570 s after the last issue; a used refresh token never presented again.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from shared.clock import ScaledClock
from shared.oauth.errors import OAuthError, TokenInDoubt, TooEarlyToRefresh
from shared.oauth.keeper import RefreshResult
from shared.oauth.providers import exact_provider
from shared.oauth.token_endpoint import TokenEndpoint
from shared.stores.local_file import LocalFileTokenStore
from tests.conformance.client_rig import CONNECTION, provider_for, rig
from tests.conformance.support import EARLIEST_REFRESH, SandboxFactory, receiver, start, utc


def test_authorize_url_carries_exactly_the_reference_parameters(sandbox_factory: SandboxFactory) -> None:
    """Row "authorize": client_id, redirect_uri, response_type=code, force_login=0, state; PKCE is
    unconfirmed for Exact ("send it only where a provider is known to support it")."""
    handle = start(sandbox_factory)
    url = provider_for(handle).authorization_url("st-1")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{handle.base_url}/api/oauth2/auth"
    query = parse_qs(parts.query)
    assert query == {
        "client_id": [handle.client_id],
        "redirect_uri": [handle.redirect_uri],
        "response_type": ["code"],
        "force_login": ["0"],
        "state": ["st-1"],
    }


@pytest.mark.parametrize("country", ["nl", "be", "de", "fr", "es", "co.uk", "com"])
def test_every_country_host_has_its_own_oauth_endpoints(country: str) -> None:
    """Row "hosts (one per country)": authorize and token live on the connection's own host."""
    host = f"https://start.exactonline.{country}"
    provider = exact_provider(
        host, client_id="c", client_secret="s", redirect_uri="https://app.example.com/cb"
    )
    assert provider.authorization_url("x").startswith(f"{host}/api/oauth2/auth?")
    assert provider.token_url == f"{host}/api/oauth2/token"


def test_token_requests_carry_exactly_the_reference_form(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Row "token": form-urlencoded; code exchange grant_type, code, redirect_uri, client_id,
    client_secret; refresh grant_type, refresh_token, client_id, client_secret. Row "token
    response": ``expires_in`` is the string "600"."""
    handle = start(sandbox_factory)
    with rig(handle, tmp_path, consent=False) as r:
        code = r.driver.code()
        grant = r.endpoint().exchange_code(code, redirect_uri=handle.redirect_uri)
        assert grant.expires_in == 600
        assert grant.token_type.lower() == "bearer"
        exchange = r.oauth.exchanges[-1]
        assert exchange.method == "POST"
        assert exchange.headers["content-type"].startswith("application/x-www-form-urlencoded")
        assert set(exchange.form) == {"grant_type", "code", "redirect_uri", "client_id", "client_secret"}
        assert exchange.form["code"] == [code]  # decoded once, sent as is
        assert "authorization" not in exchange.headers
        r.driver.advance(EARLIEST_REFRESH + 1)
        assert grant.refresh_token is not None
        again = r.endpoint().refresh(grant.refresh_token)
        assert again.expires_in == 600
        refresh = r.oauth.exchanges[-1]
        assert set(refresh.form) == {"grant_type", "refresh_token", "client_id", "client_secret"}
        assert refresh.form["grant_type"] == ["refresh_token"]


@pytest.mark.parametrize(
    ("token_type", "expires_in"), [("bearer", '"600"'), ("Bearer", '"600"'), ("BEARER", "600")]
)
def test_token_answers_are_read_as_exact_sends_them(token_type: str, expires_in: str) -> None:
    """Row "token response": ``expires_in`` is a **string**; compare ``token_type``
    case-insensitively (a scripted endpoint gives the variants the sandbox never sends)."""
    body = (
        f'{{"access_token":"at-1","token_type":"{token_type}","expires_in":{expires_in},'
        '"refresh_token":"rt!2"}'
    ).encode()
    with receiver(200, body) as endpoint, httpx.Client(timeout=30) as http:
        provider = exact_provider(
            endpoint.url.removesuffix("/hook"),
            client_id="c",
            client_secret="s",
            redirect_uri="https://a.example/cb",
        )
        clock = ScaledClock.starting_now()
        grant = TokenEndpoint(provider, http=http, clock=clock).refresh("rt!1")
        assert grant.expires_in == 600
        assert grant.access_token == "at-1"
        assert grant.refresh_token == "rt!2"
        assert len(endpoint.requests) == 1


def test_token_requests_are_not_timed_out_early(sandbox_factory: SandboxFactory, tmp_path: Path) -> None:
    """Row "other token errors": "never time out a token request early" (the server may already
    have rotated): the read timeout is at least a minute, and a slow answer is waited for."""
    handle = start(sandbox_factory)
    with rig(handle, tmp_path) as r:
        r.driver.advance(EARLIEST_REFRESH + 1)
        r.driver.admin("faults", {"token_latency": 2.0})
        try:
            token = r.keeper.get_access_token(CONNECTION, min_validity=60)
        finally:
            r.driver.admin("faults", {"token_latency": 0})
        assert token
        timeouts = [e.read_timeout for e in r.oauth.exchanges]
        assert all(t is None or t >= 60 for t in timeouts), timeouts
        assert r.counters()["refresh_token_reuse"] == 0


@pytest.mark.parametrize("fault", ["token_5xx", "token_lost_after_rotate", "too_early"])
def test_one_request_per_refresh_and_no_blind_retry(
    sandbox_factory: SandboxFactory, tmp_path: Path, fault: str
) -> None:
    """Rows "too early" and "other token errors": a failed refresh is one request, never repeated
    by the token endpoint client itself."""
    handle = start(sandbox_factory)
    with rig(handle, tmp_path) as r:
        record = LocalFileTokenStore(tmp_path / "tokens").load(CONNECTION)
        assert record is not None
        refresh_token = record.refresh_token
        before = r.token_calls()
        if fault == "too_early":
            with pytest.raises(TooEarlyToRefresh):
                r.endpoint().refresh(refresh_token)
        else:
            r.driver.advance(EARLIEST_REFRESH + 1)
            r.driver.admin("faults", {fault: 1})
            with pytest.raises(TokenInDoubt):
                r.endpoint().refresh(refresh_token)
        assert r.token_calls() - before == 1


def test_keeper_never_refreshes_inside_the_570_second_window(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Row "too early": a refresh earlier than 570 s after the last issue is refused; the keeper
    never sends one, whatever a caller asks for (more validity, a 401, the keep-alive timer)."""
    handle = start(sandbox_factory)
    with rig(handle, tmp_path) as r:
        consented = r.token_calls()
        token = r.keeper.get_access_token(CONNECTION)
        r.driver.advance(100)
        assert r.keeper.get_access_token(CONNECTION, min_validity=590) == token
        assert r.keeper.refresh_now(CONNECTION) is RefreshResult.TOO_EARLY
        with contextlib.suppress(OAuthError):  # refusing is fine; calling the endpoint is not
            r.keeper.refresh_after_rejection(CONNECTION, token)
        assert r.token_calls() == consented
        counters = r.counters()
        assert counters["too_early_refreshes"] == 0
        assert counters["refreshes"] == 0


def test_keeper_settles_an_unrotated_5xx_without_a_reuse(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Row "other token errors": a 500 that happened before rotation leaves the chain alive; the
    next attempt presents the same refresh token once and the chain goes on."""
    handle = start(sandbox_factory)
    with rig(handle, tmp_path) as r:
        r.driver.advance(EARLIEST_REFRESH + 31)
        r.driver.admin("faults", {"token_5xx": 1})
        with pytest.raises(TokenInDoubt):
            r.keeper.get_access_token(CONNECTION)
        r.driver.advance(3600)  # past any backoff
        token = r.keeper.get_access_token(CONNECTION)
        assert r.driver.api("current/Me", token).status_code == 200
        counters = r.counters()
        assert counters["refresh_token_reuse"] == 0
        assert counters["too_early_refreshes"] == 0


def test_competing_keepers_never_reuse_a_refresh_token_nor_refresh_early(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Rows "rotation" and "too early", under the lessons' number-one cause of lost chains: several
    workers (separate keepers sharing only the store and the lock) asking for tokens through four
    simulated token lifetimes. The sandbox counts no reuse, no too-early refresh, every rotation at
    least 570 s after the previous issue, and every token handed out is accepted by the API."""
    clock = ScaledClock.starting_now(scale=300.0, sim_start=utc("2025-01-15T10:00:00"))
    handle = sandbox_factory(clock=clock)
    with rig(handle, tmp_path) as r:
        keepers = [r.new_keeper() for _ in range(4)]
        stop = time.monotonic() + 8.0  # 8 real s = 2400 simulated s: four lifetimes
        refused: list[int] = []
        failures: list[str] = []

        def work(index: int) -> None:
            keeper = keepers[index]
            while time.monotonic() < stop:
                try:
                    # asks for 60 s: a token handed out is used long before a rotation revokes it
                    token = keeper.get_access_token(CONNECTION, min_validity=60)
                except Exception as exc:  # reported below
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return
                status = r.driver.http.get(
                    f"{handle.base_url}/api/v1/current/Me",
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                ).status_code
                if status != 200:
                    refused.append(status)
                time.sleep(0.02)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(keepers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert failures == []
        counters = r.counters()
        assert counters["refresh_token_reuse"] == 0
        assert counters["too_early_refreshes"] == 0
        rotations = sorted(e["at"] for e in counters["refresh_log"] if e["outcome"] == "rotated")
        issues = sorted([e["at"] for e in counters["exchange_log"]][-1:] + rotations)
        assert len(rotations) >= 3
        assert all(b - a >= EARLIEST_REFRESH for a, b in itertools.pairwise(issues)), issues
        assert {e["outcome"] for e in counters["refresh_log"]} == {"rotated"}
        assert refused == []
