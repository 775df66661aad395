"""Reference: "OAuth 2.0" table, one test per row (authorize, token, grants, redirect URI, code,
token response, lifetimes, rotation, too early, other token errors)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from tests.conformance.support import (
    ACCESS_LIFETIME,
    CODE_LIFETIME,
    EARLIEST_REFRESH,
    OLD_REFRESH,
    REFRESH_LIFETIME,
    TOO_EARLY,
    Exact,
    SandboxFactory,
    exact,
    start,
)

WWW_AUTHENTICATE = re.compile(r'^Bearer error="invalid_token",\s*error_description="([^"]*)"$')


def token_error(answer: httpx.Response) -> dict[str, Any]:
    """Reference "Errors": token endpoint errors are ``{"error":…,"error_description":…}``."""
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    body: dict[str, Any] = answer.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("error_description", ""), str), body
    return body


def me_status(driver: Exact, token: str) -> int:
    return driver.api("current/Me", token).status_code


# -- authorize ------------------------------------------------------------------------------------


def test_authorize_redirects_back_with_code_and_exact_state(sandbox_factory: SandboxFactory) -> None:
    """Row "authorize": GET /api/oauth2/auth with client_id, redirect_uri, response_type=code,
    force_login=0, state -> back to the redirect URI with the code and the state untouched."""
    with exact(start(sandbox_factory)) as driver:
        state = "a b&c=d/é!%21"
        answer = driver.authorize(state=state)
        assert answer.status_code == 302
        location = answer.headers["location"]
        assert location.split("?")[0] == driver.handle.redirect_uri
        query = parse_qs(urlsplit(location).query)
        assert query["state"] == [state]
        assert query["code"][0]


def test_authorize_refuses_an_unknown_client_id(sandbox_factory: SandboxFactory) -> None:
    """Row "authorize"/"redirect URI": only the registered app may start a consent, and an
    unregistered request must never be sent to any redirect URI."""
    with exact(start(sandbox_factory)) as driver:
        answer = driver.authorize(client_id="someone-else")
        assert 400 <= answer.status_code < 500
        assert "code=" not in answer.headers.get("location", "")


@pytest.mark.parametrize(
    "variant",
    [
        lambda uri: uri + "/",  # trailing slash
        lambda uri: uri.rstrip("/").rsplit("/", 1)[0] + "/" + uri.rstrip("/").rsplit("/", 1)[1].upper(),
        lambda uri: uri.replace("http://", "https://", 1),
        lambda uri: uri + "?x=1",
        lambda uri: uri.replace("127.0.0.1", "localhost", 1),
    ],
    ids=["trailing-slash", "path-case", "scheme", "extra-query", "other-host-spelling"],
)
def test_authorize_refuses_a_redirect_uri_that_is_not_exactly_the_registered_one(
    sandbox_factory: SandboxFactory, variant: Any
) -> None:
    """Row "redirect URI": must equal the registered one exactly (no redirect to the impostor)."""
    with exact(start(sandbox_factory)) as driver:
        wrong = variant(driver.handle.redirect_uri)
        assert wrong != driver.handle.redirect_uri
        answer = driver.authorize(redirect_uri=wrong)
        assert 400 <= answer.status_code < 500, (wrong, answer.status_code, answer.headers)
        assert "location" not in answer.headers


def test_the_implicit_grant_exists(sandbox_factory: SandboxFactory) -> None:
    """Row "grants": authorization code (and implicit): ``response_type=token`` hands back a token."""
    with exact(start(sandbox_factory)) as driver:
        answer = driver.authorize(response_type="token")
        assert answer.status_code == 302
        location = answer.headers["location"]
        assert "error=" not in location
        assert "access_token=" in location


def test_sandbox_refuses_to_register_a_plain_http_redirect_uri_off_loopback(
    sandbox_factory: SandboxFactory,
) -> None:
    """Row "redirect URI": HTTPS only (the loopback exception exists for local consent only)."""
    with pytest.raises(ValueError, match="https"):
        start(sandbox_factory, redirect_uri="http://app.example.com/api/oauth/callback")


def test_code_contains_bang_sent_as_pct21_and_decodes_once(sandbox_factory: SandboxFactory) -> None:
    """Row "authorization code": contains ``!``, arrives URL-encoded as ``%21``."""
    with exact(start(sandbox_factory)) as driver:
        location = driver.authorize().headers["location"]
        raw_code = next(
            p.split("=", 1)[1] for p in urlsplit(location).query.split("&") if p.startswith("code=")
        )
        assert "%21" in raw_code
        assert "!" not in raw_code
        decoded = unquote(raw_code)
        assert "!" in decoded
        assert driver.exchange(decoded).status_code == 200


def test_code_left_encoded_is_refused_as_signed_data_extraction_failure(
    sandbox_factory: SandboxFactory,
) -> None:
    """Row "other token errors": 400 "Signed data extraction has failed" for a badly decoded code."""
    with exact(start(sandbox_factory)) as driver:
        location = driver.authorize().headers["location"]
        raw_code = next(
            p.split("=", 1)[1] for p in urlsplit(location).query.split("&") if p.startswith("code=")
        )
        answer = driver.exchange(raw_code)  # never decoded: the server receives "%21"
        assert answer.status_code == 400
        assert "Signed data extraction has failed" in token_error(answer).get("error_description", "")


def test_code_is_single_use(sandbox_factory: SandboxFactory) -> None:
    """Row "authorization code": single use."""
    with exact(start(sandbox_factory)) as driver:
        code = driver.code()
        assert driver.exchange(code).status_code == 200
        again = driver.exchange(code)
        assert again.status_code == 400
        token_error(again)


def test_code_lives_three_minutes(sandbox_factory: SandboxFactory) -> None:
    """Row "authorization code": valid 3 minutes."""
    with exact(start(sandbox_factory)) as driver:
        fresh = driver.code()
        driver.advance(CODE_LIFETIME - 5)
        assert driver.exchange(fresh).status_code == 200
        stale = driver.code()
        driver.advance(CODE_LIFETIME + 1)
        answer = driver.exchange(stale)
        assert answer.status_code == 400
        token_error(answer)


@pytest.mark.parametrize("redirect", ["trailing-slash", "missing"])
def test_code_exchange_is_bound_to_the_redirect_uri(sandbox_factory: SandboxFactory, redirect: str) -> None:
    """Row "token": the exchange carries the same ``redirect_uri`` as the authorize request."""
    with exact(start(sandbox_factory)) as driver:
        code = driver.code()
        if redirect == "missing":
            form = {
                "grant_type": "authorization_code",
                "code": code,
                "client_id": driver.handle.client_id,
                "client_secret": driver.secret,
            }
            answer = driver.token_call(form)
        else:
            answer = driver.exchange(code, redirect_uri=driver.handle.redirect_uri + "/")
        assert answer.status_code == 400
        token_error(answer)


# -- token endpoint -------------------------------------------------------------------------------


def test_token_response_has_string_expires_in_and_bearer_type(sandbox_factory: SandboxFactory) -> None:
    """Row "token response": expires_in is the STRING "600"; token_type bearer; refresh token with ``!``."""
    with exact(start(sandbox_factory)) as driver:
        answer = driver.exchange(driver.code())
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/json")
        body = answer.json()
        assert body["expires_in"] == "600"
        assert body["token_type"].lower() == "bearer"
        assert body["access_token"]
        assert "!" in body["refresh_token"]
        driver.advance(EARLIEST_REFRESH + 1)
        rotated = driver.refresh(body["refresh_token"])
        assert rotated.status_code == 200
        again = rotated.json()
        assert again["expires_in"] == "600"
        assert again["token_type"].lower() == "bearer"
        assert "!" in again["refresh_token"]


def test_no_client_credentials_grant(sandbox_factory: SandboxFactory) -> None:
    """Row "grants": authorization code only; **no client_credentials**."""
    with exact(start(sandbox_factory)) as driver:
        answer = driver.token_call(
            {
                "grant_type": "client_credentials",
                "client_id": driver.handle.client_id,
                "client_secret": driver.secret,
            }
        )
        assert 400 <= answer.status_code < 500
        assert "access_token" not in answer.text
        token_error(answer)


@pytest.mark.parametrize("secret", ["wrong", "missing"])
def test_token_calls_require_the_client_secret(sandbox_factory: SandboxFactory, secret: str) -> None:
    """Row "token": both grants carry client_id and client_secret; a refused refresh rotates nothing."""
    with exact(start(sandbox_factory)) as driver:
        bad: dict[str, str] = {"client_secret": "not-the-secret"} if secret == "wrong" else {}
        code = driver.code()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": driver.handle.redirect_uri,
            "client_id": driver.handle.client_id,
            **bad,
        }
        refused = driver.token_call(form)
        assert 400 <= refused.status_code < 500
        assert "access_token" not in refused.text
        token_error(refused)

        tokens = driver.tokens()
        driver.advance(EARLIEST_REFRESH + 1)
        form = {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": driver.handle.client_id,
            **bad,
        }
        refused = driver.token_call(form)
        assert 400 <= refused.status_code < 500
        assert "access_token" not in refused.text
        assert driver.refresh(tokens["refresh_token"]).status_code == 200


def test_token_endpoint_takes_form_urlencoded_only(sandbox_factory: SandboxFactory) -> None:
    """Row "token": POST, form-urlencoded (a JSON body is not the protocol)."""
    with exact(start(sandbox_factory)) as driver:
        answer = driver.http.post(
            f"{driver.handle.base_url}/api/oauth2/token",
            json={
                "grant_type": "authorization_code",
                "code": driver.code(),
                "redirect_uri": driver.handle.redirect_uri,
                "client_id": driver.handle.client_id,
                "client_secret": driver.secret,
            },
        )
        assert 400 <= answer.status_code < 500
        assert "access_token" not in answer.text


def test_access_token_lives_600_seconds_then_401_invalid_token(sandbox_factory: SandboxFactory) -> None:
    """Rows "lifetimes" and Errors "401 from the API": ``WWW-Authenticate: Bearer error="invalid_token"…``."""
    with exact(start(sandbox_factory)) as driver:
        tokens = driver.tokens()
        driver.advance(ACCESS_LIFETIME - 5)
        assert me_status(driver, tokens["access_token"]) == 200
        driver.advance(10)
        answer = driver.api("current/Me", tokens["access_token"])
        assert answer.status_code == 401
        match = WWW_AUTHENTICATE.match(answer.headers["www-authenticate"])
        assert match, answer.headers["www-authenticate"]
        assert " " not in match.group(1)  # URL-encoded text
        assert unquote(match.group(1))


def test_api_refuses_a_missing_or_garbled_bearer_token(sandbox_factory: SandboxFactory) -> None:
    """Errors "401 from the API": the same header for a token that was never issued."""
    with exact(start(sandbox_factory)) as driver:
        answer = driver.api("current/Me", "not-a-token")
        assert answer.status_code == 401
        assert WWW_AUTHENTICATE.match(answer.headers["www-authenticate"])


def test_refresh_before_570_seconds_is_refused_and_rotates_nothing(sandbox_factory: SandboxFactory) -> None:
    """Row "too early": 400 access_denied "Rate limit exceeded: access_token not expired", header
    ``Reason: TooEarlyToRefreshTokens…``; nothing rotated, the current tokens stay valid."""
    with exact(start(sandbox_factory)) as driver:
        tokens = driver.tokens()
        driver.advance(EARLIEST_REFRESH - 10)
        answer = driver.refresh(tokens["refresh_token"])
        assert answer.status_code == 400
        assert token_error(answer) == TOO_EARLY
        assert answer.headers.get("reason", "").startswith("TooEarlyToRefreshTokens")
        assert me_status(driver, tokens["access_token"]) == 200
        driver.advance(15)  # now past 570 s
        rotated = driver.refresh(tokens["refresh_token"])
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["refresh_token"] != tokens["refresh_token"]


def test_the_570_seconds_count_from_the_last_issue_not_the_consent(sandbox_factory: SandboxFactory) -> None:
    """Row "too early": "after the previous token was issued" (a rotation restarts the window)."""
    with exact(start(sandbox_factory)) as driver:
        tokens = driver.tokens()
        driver.advance(EARLIEST_REFRESH + 1)
        second = driver.refresh(tokens["refresh_token"]).json()
        driver.advance(EARLIEST_REFRESH - 100)
        answer = driver.refresh(second["refresh_token"])
        assert answer.status_code == 400
        assert token_error(answer) == TOO_EARLY


def test_rotation_kills_the_old_refresh_token(sandbox_factory: SandboxFactory) -> None:
    """Row "rotation": a new refresh token each time; the old one gives 401 unauthorized_client
    "Old refresh token used."."""
    with exact(start(sandbox_factory)) as driver:
        first = driver.tokens()
        driver.advance(EARLIEST_REFRESH + 1)
        second = driver.refresh(first["refresh_token"])
        assert second.status_code == 200
        assert second.json()["refresh_token"] != first["refresh_token"]
        driver.advance(EARLIEST_REFRESH + 1)
        reused = driver.refresh(first["refresh_token"])
        assert reused.status_code == 401
        assert token_error(reused) == OLD_REFRESH


def test_reusing_an_old_refresh_token_loses_the_chain(sandbox_factory: SandboxFactory) -> None:
    """Row "rotation": "the chain is lost, only a new consent by a person restores it"."""
    with exact(start(sandbox_factory)) as driver:
        first = driver.tokens()
        driver.advance(EARLIEST_REFRESH + 1)
        second = driver.refresh(first["refresh_token"]).json()
        assert driver.refresh(first["refresh_token"]).status_code == 401
        driver.advance(EARLIEST_REFRESH + 1)
        newest = driver.refresh(second["refresh_token"])
        assert newest.status_code in (400, 401), newest.text
        assert "access_token" not in newest.text
        assert me_status(driver, driver.tokens()["access_token"]) == 200  # a new consent does


def test_refresh_token_expires_after_30_days(sandbox_factory: SandboxFactory) -> None:
    """Rows "lifetimes" and "other token errors": 400 invalid_request "The refresh token expired at …"."""
    with exact(start(sandbox_factory)) as driver:
        young = driver.tokens()
        old = driver.tokens()
        driver.advance(REFRESH_LIFETIME - 600)
        assert driver.refresh(young["refresh_token"]).status_code == 200
        driver.advance(601)
        answer = driver.refresh(old["refresh_token"])
        assert answer.status_code == 400
        body = token_error(answer)
        assert body["error"] == "invalid_request"
        assert body["error_description"].startswith("The refresh token expired at ")


def test_the_30_days_run_from_each_refresh_tokens_own_issue(sandbox_factory: SandboxFactory) -> None:
    """Row "lifetimes": a refresh token lives 30 days, so a chain refreshed in time lives on
    (35 days after consent, 15 after the last rotation, it still refreshes)."""
    with exact(start(sandbox_factory)) as driver:
        first = driver.tokens()
        driver.advance(20 * 86400)
        second = driver.refresh(first["refresh_token"])
        assert second.status_code == 200
        driver.advance(15 * 86400)
        assert driver.refresh(second.json()["refresh_token"]).status_code == 200


def test_a_500_after_rotation_loses_the_chain(sandbox_factory: SandboxFactory) -> None:
    """Row "other token errors": an HTTP 500 **after** the server rotated; the client never sees the
    new token, so presenting the old one again is a reuse."""
    with exact(start(sandbox_factory)) as driver:
        tokens = driver.tokens()
        driver.advance(EARLIEST_REFRESH + 1)
        driver.admin("faults", {"token_lost_after_rotate": 1})
        assert driver.refresh(tokens["refresh_token"]).status_code == 500
        again = driver.refresh(tokens["refresh_token"])
        assert again.status_code == 401
        assert token_error(again) == OLD_REFRESH
