"""OAuth as the sandbox answers it: consent, code exchange, rotation and every refusal."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from shared.sandbox.server import SandboxHandle, start_sandbox
from tests.fixtures.sandbox import authorize_code, obtain_tokens

Factory = Callable[..., SandboxHandle]


def token_call(handle: SandboxHandle, http: httpx.Client, **form: str) -> httpx.Response:
    body = {"client_id": handle.client_id, "client_secret": handle.app.client_secret, **form}
    return http.post(f"{handle.base_url}/api/oauth2/token", data=body)


def refresh(handle: SandboxHandle, http: httpx.Client, refresh_token: str) -> httpx.Response:
    return token_call(handle, http, grant_type="refresh_token", refresh_token=refresh_token)


def advance(handle: SandboxHandle, http: httpx.Client, seconds: float) -> None:
    answer = http.post(f"{handle.admin_url}/clock", json={"advance": seconds})
    assert answer.status_code == 200


def me_status(handle: SandboxHandle, http: httpx.Client, access_token: str) -> int:
    answer = http.get(
        f"{handle.base_url}/api/v1/current/Me",
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
    )
    return answer.status_code


def auth_params(handle: SandboxHandle, **overrides: str) -> dict[str, str]:
    return {
        "client_id": handle.client_id,
        "redirect_uri": handle.redirect_uri,
        "response_type": "code",
        "force_login": "0",
        "state": "s-1",
        **overrides,
    }


# --- consent -------------------------------------------------------------------------------------


def test_authorize_redirects_back_with_a_code_containing_an_encoded_bang_and_the_state(
    sandbox: SandboxHandle, http: httpx.Client
) -> None:
    answer = http.get(f"{sandbox.base_url}/api/oauth2/auth", params=auth_params(sandbox, state="xyz 1/2"))
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(sandbox.redirect_uri + "?")
    raw_query = urlsplit(location).query
    assert "%21" in raw_query and "!" not in raw_query
    query = parse_qs(raw_query)
    assert query["state"] == ["xyz 1/2"]
    assert "!" in query["code"][0]


def test_authorize_refuses_unknown_clients_and_other_redirect_uris_without_redirecting(
    sandbox: SandboxHandle, http: httpx.Client
) -> None:
    url = f"{sandbox.base_url}/api/oauth2/auth"
    wrong_client = http.get(url, params=auth_params(sandbox, client_id="someone-else"))
    assert wrong_client.status_code == 400 and "location" not in wrong_client.headers
    for other in (
        sandbox.redirect_uri + "/",
        sandbox.redirect_uri.replace("127.0.0.1", "localhost"),
        "https://evil.example/cb",
    ):
        answer = http.get(url, params=auth_params(sandbox, redirect_uri=other))
        assert answer.status_code == 400 and "location" not in answer.headers


def test_authorize_denies_with_access_denied_when_told_to(sandbox: SandboxHandle, http: httpx.Client) -> None:
    http.post(f"{sandbox.admin_url}/faults", json={"deny_consent": True})
    answer = http.get(f"{sandbox.base_url}/api/oauth2/auth", params=auth_params(sandbox))
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query == {"error": ["access_denied"], "state": ["s-1"]}


def test_consent_page_when_auto_consent_is_off(sandbox_factory: Factory, http: httpx.Client) -> None:
    handle = sandbox_factory(auto_consent=False)
    page = http.get(f"{handle.base_url}/api/oauth2/auth", params=auth_params(handle))
    assert page.status_code == 200 and "<form" in page.text
    approve = http.post(
        f"{handle.base_url}/api/oauth2/auth", data={**auth_params(handle), "decision": "approve"}
    )
    assert approve.status_code == 302 and "code" in parse_qs(urlsplit(approve.headers["location"]).query)
    deny = http.post(f"{handle.base_url}/api/oauth2/auth", data={**auth_params(handle), "decision": "deny"})
    assert parse_qs(urlsplit(deny.headers["location"]).query)["error"] == ["access_denied"]


def implicit_fragment(answer: httpx.Response, handle: SandboxHandle) -> dict[str, str]:
    """The parameters of an implicit-grant redirect: in the fragment, none in the query."""
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(handle.redirect_uri + "#")
    parts = urlsplit(location)
    assert parts.query == ""
    values = parse_qs(parts.fragment, keep_blank_values=True)
    assert all(len(v) == 1 for v in values.values())
    return {k: v[0] for k, v in values.items()}


def test_the_implicit_grant_redirects_with_an_access_token_in_the_fragment(
    sandbox: SandboxHandle, http: httpx.Client
) -> None:
    """Exact supports the implicit grant: ``response_type=token`` answers
    ``redirect_uri#access_token=…&token_type=bearer&expires_in=600&state=…`` (RFC 6749 4.2.2),
    no refresh token, and that token works on the REST API like any other, for 600 s."""
    answer = http.get(
        f"{sandbox.base_url}/api/oauth2/auth",
        params=auth_params(sandbox, response_type="token", state="x y/1"),
    )
    fragment = implicit_fragment(answer, sandbox)
    assert set(fragment) == {"access_token", "token_type", "expires_in", "state"}
    assert fragment["token_type"] == "bearer"
    assert fragment["expires_in"] == "600"
    assert fragment["state"] == "x y/1"
    assert answer.headers["cache-control"] == "no-store"
    token = fragment["access_token"]
    assert me_status(sandbox, http, token) == 200
    divisions = http.get(
        f"{sandbox.base_url}/api/v1/{sandbox.divisions[0]}/system/Divisions",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    assert divisions.status_code == 200 and divisions.json()["d"]["results"]
    counters = http.get(f"{sandbox.admin_url}/counters").json()
    assert counters["token_calls"] == 0 and counters["codes_issued"] == 0  # no code, no token endpoint
    chains = http.get(f"{sandbox.admin_url}/chains").json()["chains"]
    assert [(c["grant"], c["refresh_expires_at"]) for c in chains] == [("implicit", None)]
    advance(sandbox, http, 599)
    assert me_status(sandbox, http, token) == 200
    advance(sandbox, http, 1)
    expired = http.get(
        f"{sandbox.base_url}/api/v1/current/Me",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    assert expired.status_code == 401
    assert 'error_description="access%20token%20expired"' in expired.headers["www-authenticate"]


def test_an_implicit_token_cannot_be_refreshed_and_dies_with_a_revocation(
    sandbox: SandboxHandle, http: httpx.Client
) -> None:
    url = f"{sandbox.base_url}/api/oauth2/auth"
    token = implicit_fragment(http.get(url, params=auth_params(sandbox, response_type="token")), sandbox)[
        "access_token"
    ]
    for attempt in (token, ""):
        refused = refresh(sandbox, http, attempt)
        assert refused.status_code == 400, refused.text
    assert me_status(sandbox, http, token) == 200
    assert http.post(f"{sandbox.admin_url}/chains/revoke", json={"chain": None}).json() == {"revoked": 1}
    assert me_status(sandbox, http, token) == 401


def test_implicit_consent_page_denial_and_errors_answer_in_the_fragment(
    sandbox_factory: Factory, http: httpx.Client
) -> None:
    handle = sandbox_factory(auto_consent=False)
    url = f"{handle.base_url}/api/oauth2/auth"
    params = auth_params(handle, response_type="token")
    page = http.get(url, params=params)
    assert page.status_code == 200 and 'name="response_type" value="token"' in page.text
    approved = implicit_fragment(http.post(url, data={**params, "decision": "approve"}), handle)
    assert approved["token_type"] == "bearer" and approved["state"] == "s-1"
    denied = implicit_fragment(http.post(url, data={**params, "decision": "deny"}), handle)
    assert denied == {"error": "access_denied", "state": "s-1"}
    pkce = implicit_fragment(http.get(url, params={**params, "code_challenge": "abc"}), handle)
    assert pkce["error"] == "invalid_request"


def test_loopback_http_redirect_uri_is_accepted_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    with start_sandbox(redirect_uri="http://127.0.0.1:9999/cb"):
        pass
    assert "Exact Online refuses" in capsys.readouterr().err
    with start_sandbox(redirect_uri="https://app.example.com/api/oauth/callback"):
        pass
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="https"):
        start_sandbox(redirect_uri="http://app.example.com/cb")


# --- code exchange -----------------------------------------------------------------------------------


def test_code_exchange_answers_exacts_token_shape(sandbox: SandboxHandle, http: httpx.Client) -> None:
    code = authorize_code(sandbox, http)
    answer = token_call(
        sandbox, http, grant_type="authorization_code", code=code, redirect_uri=sandbox.redirect_uri
    )
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["expires_in"] == "600"  # a string, as Exact sends it
    assert body["token_type"] == "bearer"
    assert "!" in body["refresh_token"]
    assert me_status(sandbox, http, body["access_token"]) == 200


def test_a_code_is_single_use_and_its_replay_kills_the_chain(
    sandbox: SandboxHandle, http: httpx.Client
) -> None:
    code = authorize_code(sandbox, http)
    first = token_call(
        sandbox, http, grant_type="authorization_code", code=code, redirect_uri=sandbox.redirect_uri
    )
    assert first.status_code == 200
    again = token_call(
        sandbox, http, grant_type="authorization_code", code=code, redirect_uri=sandbox.redirect_uri
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert me_status(sandbox, http, first.json()["access_token"]) == 401


def test_a_code_expires_after_three_minutes(sandbox: SandboxHandle, http: httpx.Client) -> None:
    code = authorize_code(sandbox, http)
    advance(sandbox, http, 181)
    answer = token_call(
        sandbox, http, grant_type="authorization_code", code=code, redirect_uri=sandbox.redirect_uri
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_grant",
        "error_description": "The authorization code has expired.",
    }


def test_a_code_just_inside_three_minutes_still_works(sandbox: SandboxHandle, http: httpx.Client) -> None:
    code = authorize_code(sandbox, http)
    advance(sandbox, http, 170)
    answer = token_call(
        sandbox, http, grant_type="authorization_code", code=code, redirect_uri=sandbox.redirect_uri
    )
    assert answer.status_code == 200


def test_exchange_refuses_a_double_decoded_or_garbled_code_and_a_different_redirect_uri(
    sandbox: SandboxHandle, http: httpx.Client
) -> None:
    code = authorize_code(sandbox, http)
    garbled = token_call(
        sandbox,
        http,
        grant_type="authorization_code",
        code=code.replace("!", "%21"),
        redirect_uri=sandbox.redirect_uri,
    )
    assert garbled.status_code == 400
    assert garbled.json()["error_description"] == "Signed data extraction has failed"
    other = token_call(
        sandbox, http, grant_type="authorization_code", code=code, redirect_uri=sandbox.redirect_uri + "x"
    )
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"


def test_client_credentials_only_in_the_form_body(sandbox: SandboxHandle, http: httpx.Client) -> None:
    code = authorize_code(sandbox, http)
    basic = http.post(
        f"{sandbox.base_url}/api/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": sandbox.redirect_uri},
        auth=(sandbox.client_id, sandbox.app.client_secret),
    )
    assert basic.status_code == 400 and basic.json()["error"] == "invalid_request"
    wrong = token_call(sandbox, http, grant_type="authorization_code", code=code, redirect_uri=sandbox.redirect_uri,
                       client_secret="nope")  # fmt: skip
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    as_json = http.post(f"{sandbox.base_url}/api/oauth2/token", json={"grant_type": "authorization_code"})
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    grant = token_call(sandbox, http, grant_type="client_credentials")
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
    # the code survived all of that: only a well-formed exchange uses it
    good = token_call(
        sandbox, http, grant_type="authorization_code", code=code, redirect_uri=sandbox.redirect_uri
    )
    assert good.status_code == 200
    assert "Cache-Control" in good.headers


# --- refresh ----------------------------------------------------------------------------------------


def test_refresh_before_570_seconds_is_refused_and_rotates_nothing(
    sandbox: SandboxHandle, http: httpx.Client
) -> None:
    tokens = obtain_tokens(sandbox, http)
    advance(sandbox, http, 560)
    early = refresh(sandbox, http, tokens["refresh_token"])
    assert early.status_code == 400
    assert early.json() == {
        "error": "access_denied",
        "error_description": "Rate limit exceeded: access_token not expired",
    }
    assert early.headers["Reason"].startswith("TooEarlyToRefreshTokens")
    assert me_status(sandbox, http, tokens["access_token"]) == 200
    advance(sandbox, http, 15)
    later = refresh(sandbox, http, tokens["refresh_token"])
    assert later.status_code == 200
    counters = http.get(f"{sandbox.admin_url}/counters").json()
    assert counters["too_early_refreshes"] == 1
    assert [entry["outcome"] for entry in counters["refresh_log"]] == ["too_early", "rotated"]


def test_refresh_rotates_and_the_old_refresh_token_kills_the_chain(
    sandbox: SandboxHandle, http: httpx.Client
) -> None:
    tokens = obtain_tokens(sandbox, http)
    advance(sandbox, http, 571)
    rotated = refresh(sandbox, http, tokens["refresh_token"])
    assert rotated.status_code == 200
    new = rotated.json()
    assert new["refresh_token"] != tokens["refresh_token"] and new["access_token"] != tokens["access_token"]
    assert new["expires_in"] == "600"
    assert (
        me_status(sandbox, http, tokens["access_token"]) == 401
    )  # the stricter reading: rotation revokes it
    assert me_status(sandbox, http, new["access_token"]) == 200
    advance(sandbox, http, 600)
    reuse = refresh(sandbox, http, tokens["refresh_token"])
    assert reuse.status_code == 401
    assert reuse.json() == {"error": "unauthorized_client", "error_description": "Old refresh token used."}
    # the chain is lost: the newest tokens are dead too, only a new consent helps
    assert refresh(sandbox, http, new["refresh_token"]).status_code == 400
    counters = http.get(f"{sandbox.admin_url}/counters").json()
    assert counters["refresh_token_reuse"] == 1 and counters["refreshes"] == 1


def test_access_tokens_live_600_seconds(sandbox: SandboxHandle, http: httpx.Client) -> None:
    tokens = obtain_tokens(sandbox, http)
    advance(sandbox, http, 599)
    assert me_status(sandbox, http, tokens["access_token"]) == 200
    advance(sandbox, http, 2)
    answer = http.get(
        f"{sandbox.base_url}/api/v1/current/Me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert answer.status_code == 401
    assert (
        answer.headers["WWW-Authenticate"]
        == 'Bearer error="invalid_token",error_description="access%20token%20expired"'
    )


def test_refresh_tokens_expire_after_30_days(sandbox: SandboxHandle, http: httpx.Client) -> None:
    tokens = obtain_tokens(sandbox, http)
    advance(sandbox, http, 30 * 86_400 + 1)
    answer = refresh(sandbox, http, tokens["refresh_token"])
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    assert answer.json()["error_description"].startswith("The refresh token expired at ")


def test_each_consent_is_an_independent_chain(sandbox: SandboxHandle, http: httpx.Client) -> None:
    first, second = obtain_tokens(sandbox, http), obtain_tokens(sandbox, http)
    advance(sandbox, http, 600)
    assert refresh(sandbox, http, first["refresh_token"]).status_code == 200
    assert refresh(sandbox, http, second["refresh_token"]).status_code == 200  # not too early, not reused
    assert refresh(sandbox, http, first["refresh_token"]).status_code == 401
    chains = http.get(f"{sandbox.admin_url}/chains").json()["chains"]
    assert sorted(c["alive"] for c in chains) == [False, True]


def test_daily_token_call_ceiling(sandbox: SandboxHandle, http: httpx.Client) -> None:
    assert http.post(f"{sandbox.admin_url}/config", json={"token_calls_per_day": 3}).status_code == 200
    tokens = obtain_tokens(sandbox, http)  # call 1
    assert refresh(sandbox, http, tokens["refresh_token"]).status_code == 400  # 2: too early
    assert refresh(sandbox, http, tokens["refresh_token"]).status_code == 400  # 3: too early
    over = refresh(sandbox, http, tokens["refresh_token"])
    assert over.status_code == 429 and over.json()["error"] == "access_denied"
    assert http.get(f"{sandbox.admin_url}/counters").json()["token_calls_today"] == 4
    now = http.get(f"{sandbox.admin_url}/clock").json()["now"]
    advance(sandbox, http, 86_400 - now % 86_400 + 1)  # past 00:00 UTC
    assert refresh(sandbox, http, tokens["refresh_token"]).status_code == 200


# --- faults -------------------------------------------------------------------------------------------


def fault(handle: SandboxHandle, http: httpx.Client, **faults: Any) -> None:
    assert http.post(f"{handle.admin_url}/faults", json=faults).status_code == 200


def test_token_5xx_rotates_nothing(sandbox: SandboxHandle, http: httpx.Client) -> None:
    tokens = obtain_tokens(sandbox, http)
    advance(sandbox, http, 600)
    fault(sandbox, http, token_5xx=1)
    failed = refresh(sandbox, http, tokens["refresh_token"])
    assert failed.status_code == 500 and failed.headers["content-type"].startswith("text/html")
    assert refresh(sandbox, http, tokens["refresh_token"]).status_code == 200


def test_token_answer_lost_after_the_server_rotated(sandbox: SandboxHandle, http: httpx.Client) -> None:
    tokens = obtain_tokens(sandbox, http)
    advance(sandbox, http, 600)
    fault(sandbox, http, token_lost_after_rotate=1)
    assert refresh(sandbox, http, tokens["refresh_token"]).status_code == 500
    # the server did rotate: presenting the same refresh token again is reuse
    again = refresh(sandbox, http, tokens["refresh_token"])
    assert again.status_code == 401 and again.json()["error_description"] == "Old refresh token used."


def test_token_connection_dropped_after_the_server_rotated(
    sandbox: SandboxHandle, http: httpx.Client
) -> None:
    tokens = obtain_tokens(sandbox, http)
    advance(sandbox, http, 600)
    fault(sandbox, http, token_dropped_after_rotate=1)
    with pytest.raises(httpx.TransportError):
        refresh(sandbox, http, tokens["refresh_token"])
    log = http.get(f"{sandbox.admin_url}/counters").json()["refresh_log"]
    assert log[-1]["outcome"] == "rotated"
    assert refresh(sandbox, http, tokens["refresh_token"]).status_code == 401


def test_slow_token_answers(sandbox: SandboxHandle, http: httpx.Client) -> None:
    tokens = obtain_tokens(sandbox, http)
    advance(sandbox, http, 600)
    fault(sandbox, http, token_latency=0.4)
    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        http.post(
            f"{sandbox.base_url}/api/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": sandbox.client_id,
                  "client_secret": sandbox.app.client_secret},
            timeout=0.1,
        )  # fmt: skip
    assert time.perf_counter() - started < 0.4
    time.sleep(0.4)  # the slow answer was still produced: the client that timed out lost the chain
    assert http.get(f"{sandbox.admin_url}/counters").json()["refresh_log"][-1]["outcome"] == "rotated"


def test_faults_reject_unknown_names_and_bad_values(sandbox: SandboxHandle, http: httpx.Client) -> None:
    for body in ({"token_5xx": -1}, {"nope": 1}, {"api_latency": "slow"}, {"deny_consent": 1}):
        answer = http.post(f"{sandbox.admin_url}/faults", json=body)
        assert answer.status_code == 400, body
    assert http.get(f"{sandbox.admin_url}/faults").json()["token_5xx"] == 0


def test_pkce_and_unknown_response_types_are_refused(sandbox: SandboxHandle, http: httpx.Client) -> None:
    url = f"{sandbox.base_url}/api/oauth2/auth"
    pkce = http.get(url, params=auth_params(sandbox, code_challenge="abc", code_challenge_method="S256"))
    assert parse_qs(urlsplit(pkce.headers["location"]).query)["error"] == ["invalid_request"]
    for response_type in ("id_token", "code token", ""):
        other = http.get(url, params=auth_params(sandbox, response_type=response_type))
        assert parse_qs(urlsplit(other.headers["location"]).query)["error"] == ["unsupported_response_type"]
    code = authorize_code(sandbox, http)
    verifier = token_call(sandbox, http, grant_type="authorization_code", code=code, redirect_uri=sandbox.redirect_uri,
                          code_verifier="abc")  # fmt: skip
    assert verifier.status_code == 400 and verifier.json()["error"] == "invalid_request"


def test_maintenance_window_loses_token_answers_between_one_and_two_amsterdam_time(
    sandbox_factory: Factory, http: httpx.Client
) -> None:
    from shared.clock import ScaledClock

    night = 1_736_986_800.0  # 2025-01-16T00:20:00Z = 01:20 in Amsterdam (winter)
    handle = sandbox_factory(clock=ScaledClock.starting_now(sim_start=night - 3600))
    http.post(f"{handle.admin_url}/config", json={"maintenance_window": True})
    tokens = obtain_tokens(handle, http)  # 00:20 Amsterdam: fine
    advance(handle, http, 3600)
    lost = refresh(handle, http, tokens["refresh_token"])
    assert lost.status_code == 500
    assert (
        refresh(handle, http, tokens["refresh_token"]).json()["error_description"]
        == "Old refresh token used."
    )
