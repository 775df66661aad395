"""Planted secrets never show: not in pages, JSON, headers, logs, ``--trace`` output or errors.

The client secret, the webhook secret and the notification webhook URL are planted with known
values; every code and token the sandbox issues during the run is collected. Then the flows run,
the failing ones included, with every logger at DEBUG, and everything that came out is searched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest

from shared.cli import main
from shared.errors import ExactSyncError
from shared.oauth.consent import ConsentFailed, Redirect, finish
from shared.oauth.state import Channel
from shared.runtime import install
from shared.sandbox.server import SandboxHandle
from tests.oauth.consent_flow import (
    PLANTED_CLIENT_SECRET,
    PLANTED_NOTIFY_URL,
    PLANTED_WEBHOOK_SECRET,
    ConsentRig,
    app_env,
    consent_rig,
    query_of,
)


@pytest.fixture
def rig(sandbox_factory: Callable[..., SandboxHandle], tmp_path: Path) -> Iterator[ConsentRig]:
    with consent_rig(sandbox_factory, tmp_path / "home", limits=False) as rig:
        yield rig


class Evidence:
    """Everything that left the code under test, and every secret that must not be in it."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.secrets: set[str] = {PLANTED_CLIENT_SECRET, PLANTED_WEBHOOK_SECRET, PLANTED_NOTIFY_URL}

    def response(self, answer: httpx.Response) -> httpx.Response:
        for step in [*answer.history, answer]:
            self.texts.append(step.text)
            self.texts.extend(f"{k}: {v}" for k, v in step.headers.multi_items())
        return answer

    def tokens_of(self, rig: ConsentRig, connection: str) -> None:
        record = rig.stored(connection)
        if record is not None:
            self.secrets |= {record.access_token, record.refresh_token}

    def check(self) -> None:
        blob = "\n".join(self.texts)
        assert blob, "nothing captured"
        for secret in self.secrets:
            for spelling in {secret, quote(secret, safe=""), quote_plus(secret)}:
                assert spelling not in blob, f"a planted secret leaked ({secret[:12]}...)"


def test_no_secret_leaks_from_any_flow(
    rig: ConsentRig,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    seen = Evidence()
    browser = rig.browser()

    # 1. a successful browser consent, then the status route
    url = rig.consent_redirect(browser, "acme")
    seen.secrets.add(query_of(url)["code"])
    seen.response(rig.callback(browser, url))
    seen.tokens_of(rig, "acme")
    seen.response(browser.get(f"{rig.base_url}/api/connections/acme"))

    # 2. replay, forged state, missing cookie, provider error
    seen.response(httpx.get(url))
    other = rig.consent_redirect(browser, "beta")
    seen.secrets.add(query_of(other)["code"])
    seen.response(rig.callback(rig.browser(), other))
    seen.response(browser.get(other.replace("state=", "state=x")))
    # 3. a reused code (its text comes back from the provider), and the %21 trap
    reused = other.replace(quote(query_of(other)["code"], safe=""), quote(query_of(url)["code"], safe=""))
    seen.response(rig.callback(browser, reused))
    third = rig.consent_redirect(browser, "gamma")
    seen.secrets.add(query_of(third)["code"])
    seen.response(rig.callback(browser, third.replace("%21", "%2521")))
    # 4. a declined consent
    rig.admin("POST", "faults", {"deny_consent": True})
    seen.response(rig.callback(browser, rig.consent_redirect(browser, "delta")))
    rig.admin("POST", "faults", {"deny_consent": False})

    # 5. exception text of a failing finish, raised directly
    fourth = rig.consent_redirect(browser, "epsilon")
    seen.secrets.add(query_of(fourth)["code"])
    with pytest.raises(ConsentFailed) as failed:
        finish(rig.runtime, Redirect.from_url(fourth), lambda state: "wrong-binding", channel=Channel.BROWSER)
    seen.texts += [str(failed.value), repr(failed.value), failed.value.text, failed.value.title]

    # 6. re-consent (the reused code made the sandbox revoke the first chain: the stricter reading)
    again = rig.consent_redirect(browser, "acme")
    seen.secrets.add(query_of(again)["code"])
    seen.response(rig.callback(browser, again))
    seen.tokens_of(rig, "acme")

    # 7. the CLI: status, and a traced refresh, then a dead chain (alert to the webhook)
    env = app_env(
        rig.sandbox,
        rig.home,
        rig.redirect_uri,
        EXACT_WEBHOOK_SECRET=PLANTED_WEBHOOK_SECRET,
        NOTIFY_WEBHOOK_URL=PLANTED_NOTIFY_URL,
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    install(None)
    assert main(["--trace", "status", "--json"]) == 0
    assert main(["--trace", "status", "--connection", "acme"]) == 0

    runtime = rig.use(rig.new_runtime())
    from shared.oauth.trace import attach

    attach(runtime.oauth_http)  # to sys.stderr, captured
    rig.admin("POST", "clock", {"advance": 590})
    runtime = rig.use(rig.new_runtime())
    attach(runtime.oauth_http)
    runtime.keeper.get_access_token("acme")  # a refresh, traced
    seen.tokens_of(rig, "acme")
    rig.admin("POST", "chains/revoke", {})
    rig.admin("POST", "clock", {"advance": 590})
    runtime = rig.use(rig.new_runtime())
    attach(runtime.oauth_http)
    with pytest.raises(ExactSyncError) as dead:
        runtime.keeper.get_access_token("acme")
    seen.texts += [str(dead.value), repr(dead.value)]
    seen.response(browser.get(f"{rig.base_url}/api/connections/acme"))
    install(None)
    assert main(["status", "--connection", "acme"]) == 1

    captured = capsys.readouterr()
    assert "--> POST" in captured.err and "refresh_token=[REDACTED]" in captured.err
    assert "exactsync.connection_needs_reauth" in caplog.text
    seen.texts += [captured.out, captured.err, caplog.text]
    for record in caplog.records:
        seen.texts.append(record.getMessage())
        if record.exc_text:
            seen.texts.append(record.exc_text)
        seen.texts.append(repr(record.__dict__))
    assert rig.connections() == ["acme"]
    seen.check()
