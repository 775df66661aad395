"""Every way a consent callback can be wrong: a clear page, a 4xx, and NOTHING stored.

All over real HTTP: the browser is an httpx client with a cookie jar, the routes are the real
function_app.py served by ``shared.serve``, the provider is the sandbox.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from shared.sandbox.server import SandboxHandle
from shared.tokens import TokenStatus
from tests.oauth.consent_flow import ConsentRig, consent_rig, query_of


@pytest.fixture
def rig(sandbox_factory: Callable[..., SandboxHandle], tmp_path: Path) -> Iterator[ConsentRig]:
    with consent_rig(sandbox_factory, tmp_path / "home", limits=False) as rig:
        yield rig


def _with_query(url: str, **changes: str | None) -> str:
    params = query_of(url)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return urlunsplit(urlsplit(url)._replace(query=urlencode(params, quote_via=quote)))


def _consent_cookie(browser: httpx.Client) -> tuple[str, str]:
    found = [(c.name, c.value or "") for c in browser.cookies.jar if c.name.startswith("exactsync_consent_")]
    assert len(found) == 1, found
    return found[0]


def _assert_page(answer: httpx.Response, status: int, *phrases: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["cache-control"] == "no-store"
    for phrase in phrases:
        assert phrase in answer.text, answer.text


def _assert_nothing_stored(rig: ConsentRig, *, exchanged: int = 0) -> None:
    assert rig.connections() == []
    assert rig.counters()["codes_exchanged"] == exchanged


def test_forged_state_is_refused(rig: ConsentRig) -> None:
    browser = rig.browser()
    url = rig.consent_redirect(browser)
    state = query_of(url)["state"]
    forged = state[:-3] + ("abc" if not state.endswith("abc") else "xyz")
    answer = rig.callback(browser, _with_query(url, state=forged))
    _assert_page(answer, 400, "Invalid consent link", "Nothing was stored")
    _assert_nothing_stored(rig)
    assert rig.counters()["token_calls"] == 0  # refused before the code was even presented


def test_missing_state_is_refused(rig: ConsentRig) -> None:
    browser = rig.browser()
    url = rig.consent_redirect(browser)
    _assert_page(rig.callback(browser, _with_query(url, state=None)), 400, "Invalid consent link")
    _assert_nothing_stored(rig)


def test_state_signed_by_another_app_is_refused(rig: ConsentRig) -> None:
    other = rig.new_runtime(EXACT_CLIENT_SECRET="an-attackers-own-client-secret")
    from shared.oauth.consent import begin
    from shared.oauth.state import Channel

    foreign = begin(other, "acme", channel=Channel.BROWSER)
    browser = rig.browser()
    url = rig.consent_redirect(browser)
    browser.cookies.set(foreign.issued.state.cookie_name, foreign.issued.binding, path="/api/oauth/callback")
    answer = rig.callback(browser, _with_query(url, state=foreign.issued.token))
    _assert_page(answer, 400, "Invalid consent link")
    _assert_nothing_stored(rig)


def test_expired_state_is_refused(rig: ConsentRig) -> None:
    browser = rig.browser()
    url = rig.consent_redirect(browser)
    rig.admin("POST", "clock", {"advance": 601})
    rig.use(rig.new_runtime())  # the host's next process reads the moved clock
    answer = rig.callback(browser, url)
    _assert_page(answer, 400, "Consent link expired", "Start the consent again")
    assert "Max-Age=0" in answer.headers["set-cookie"]
    _assert_nothing_stored(rig)


def test_replayed_state_is_refused_and_keeps_the_first_consent(rig: ConsentRig) -> None:
    browser = rig.browser()
    url = rig.consent_redirect(browser)
    cookie = _consent_cookie(browser)
    assert rig.callback(browser, url).status_code == 200
    first = rig.stored("acme")
    assert first is not None

    # the attacker (or the back button) replays the whole request, cookie included
    replay = httpx.get(url, headers={"Cookie": f"{cookie[0]}={cookie[1]}"})
    _assert_page(replay, 409, "Consent link already used")
    again = rig.stored("acme")
    assert again is not None and again.refresh_token == first.refresh_token
    assert again.generation == first.generation
    assert rig.counters()["codes_exchanged"] == 1


def test_missing_cookie_is_refused_and_burns_nothing(rig: ConsentRig) -> None:
    rightful = rig.browser()
    url = rig.consent_redirect(rightful)
    stranger = rig.browser()  # a forwarded link: no cookie in this browser
    answer = rig.callback(stranger, url)
    _assert_page(answer, 403, "Consent started elsewhere", "same browser")
    _assert_nothing_stored(rig)
    # the refusal claimed nothing: the browser that started the consent still finishes it
    assert rig.callback(rightful, url).status_code == 200
    assert rig.connections() == ["acme"]


def test_mismatched_cookie_is_refused(rig: ConsentRig) -> None:
    browser = rig.browser()
    url = rig.consent_redirect(browser)
    name, _ = _consent_cookie(browser)
    attacker = rig.browser()
    attacker.cookies.set(name, "a-guessed-binding-value", path="/api/oauth/callback")
    _assert_page(rig.callback(attacker, url), 403, "Consent started elsewhere")
    _assert_nothing_stored(rig)


def test_access_denied_at_the_provider(rig: ConsentRig) -> None:
    rig.admin("POST", "faults", {"deny_consent": True})
    browser = rig.browser()
    url = rig.consent_redirect(browser)
    assert query_of(url)["error"] == "access_denied" and "code" not in query_of(url)
    answer = rig.callback(browser, url)
    _assert_page(answer, 403, "Consent declined", "acme", "Nothing was stored")
    assert "Max-Age=0" in answer.headers["set-cookie"]
    _assert_nothing_stored(rig)
    assert rig.counters()["token_calls"] == 0


def test_other_provider_error_is_shown_escaped(rig: ConsentRig) -> None:
    browser = rig.browser()
    url = rig.consent_redirect(browser)
    broken = _with_query(
        url, code=None, error="server_error", error_description="<script>alert(1)</script> went wrong"
    )
    answer = rig.callback(browser, broken)
    _assert_page(answer, 400, "The provider reported an error", "server_error", "went wrong")
    assert "<script>" not in answer.text and "&lt;script&gt;" in answer.text
    _assert_nothing_stored(rig)


def test_reused_code_is_refused(rig: ConsentRig) -> None:
    browser = rig.browser()
    first_url = rig.consent_redirect(browser, "acme")
    second_url = rig.consent_redirect(browser, "other")  # a second consent, its own cookie
    assert rig.callback(browser, first_url).status_code == 200
    used_code = query_of(first_url)["code"]
    answer = rig.callback(browser, _with_query(second_url, code=used_code))
    _assert_page(answer, 400, "Authorization code refused", "already been used", "Start the consent again")
    assert used_code not in answer.text
    assert rig.connections() == ["acme"]  # nothing stored for "other"
    assert rig.counters()["codes_exchanged"] == 1


def test_the_percent_21_trap(rig: ConsentRig) -> None:
    """Exact's codes contain '!', sent as %21. Decoded exactly once the code works (the success
    tests); a client that does not decode (or re-encodes) presents '%21' and is refused."""
    browser = rig.browser()
    url = rig.consent_redirect(browser)
    raw_query = urlsplit(url).query
    assert "%21" in raw_query and "!" not in raw_query
    issued = query_of(url)["code"]  # decoded once
    assert "!" in issued and "%" not in issued

    # the re-encoded code: what arrives after one decode is the still-encoded text
    re_encoded = raw_query.replace("%21", "%2521")
    answer = rig.callback(browser, url.split("?")[0] + "?" + re_encoded)
    _assert_page(answer, 400, "Authorization code refused", "Signed data extraction has failed")
    _assert_nothing_stored(rig)
    log = rig.counters()["exchange_log"]
    assert [entry["outcome"] for entry in log] == ["bad_code"]

    # decoded exactly once, a fresh consent goes through
    assert rig.consent(connection="acme").status_code == 200
    record = rig.stored("acme")
    assert record is not None and record.status is TokenStatus.OK


def test_wrong_redirect_uri_at_exchange_is_refused(rig: ConsentRig) -> None:
    browser = rig.browser()
    url = rig.consent_redirect(browser)
    # the instance finishing the consent is configured with another redirect URI
    rig.use(rig.new_runtime(EXACT_REDIRECT_URI=f"{rig.base_url}/api/oauth/callback/other"))
    answer = rig.callback(browser, url)
    _assert_page(answer, 400, "Redirect URI mismatch", "EXACT_REDIRECT_URI")
    _assert_nothing_stored(rig)


def test_wrong_redirect_uri_never_leaves_the_provider(rig: ConsentRig) -> None:
    rig.use(rig.new_runtime(EXACT_REDIRECT_URI=f"{rig.base_url}/api/oauth/callback/other"))
    browser = rig.browser()
    started = rig.start(browser)
    at_provider = browser.get(started.headers["location"])
    assert at_provider.status_code == 400 and "redirect_uri" in at_provider.text
    _assert_nothing_stored(rig)


@pytest.mark.parametrize(
    ("params", "title"),
    [
        ({"connection": "Not A Name"}, "Invalid connection name"),
        ({"connection": "x" * 41}, "Invalid connection name"),
        ({"connection": "acme", "provider": "nobody"}, "Cannot start the consent"),
    ],
)
def test_start_refuses_bad_parameters(rig: ConsentRig, params: dict[str, str], title: str) -> None:
    browser = rig.browser()
    answer = browser.get(f"{rig.base_url}/api/oauth/start", params=params)
    _assert_page(answer, 400, title)
    assert "set-cookie" not in answer.headers
    _assert_nothing_stored(rig)


def test_start_without_a_name_uses_the_default_connection(rig: ConsentRig) -> None:
    browser = rig.browser()
    started = browser.get(f"{rig.base_url}/api/oauth/start")
    assert started.status_code == 302
    at_provider = browser.get(started.headers["location"])
    assert browser.get(at_provider.headers["location"]).status_code == 200
    assert rig.connections() == ["default"]
