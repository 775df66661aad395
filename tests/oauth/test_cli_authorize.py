"""``exactsync authorize`` through ``shared.cli.main``, against the sandbox over real HTTP."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.cli import main
from shared.runtime import current, install
from shared.sandbox.server import SandboxHandle
from shared.tokens import TokenStatus
from tests.oauth.consent_flow import (
    PLANTED_CLIENT_SECRET,
    PLANTED_WEBHOOK_SECRET,
    ConsentRig,
    app_env,
    consent_rig,
    consent_sandbox,
    free_port,
    query_of,
)

HTTPS_REDIRECT = "https://app.example.test/api/oauth/callback"
_URL = re.compile(r"^\s+(http\S+/api/oauth2/auth\?\S+)$", re.MULTILINE)


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sandbox_factory: Callable[..., SandboxHandle]
) -> Iterator[Callable[[str], SandboxHandle]]:
    """Point the CLI's environment at a fresh sandbox registered with ``redirect_uri``."""

    def configure(redirect_uri: str) -> SandboxHandle:
        sandbox = consent_sandbox(sandbox_factory, redirect_uri)
        env = app_env(sandbox, tmp_path / "home", redirect_uri, EXACT_WEBHOOK_SECRET=PLANTED_WEBHOOK_SECRET)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        install(None)
        return sandbox

    install(None)
    yield configure
    install(None)


def _printed_url(text: str) -> str:
    found = _URL.search(text)
    assert found, text
    return found.group(1)


def _pending(home: Path) -> list[Path]:
    folder = home / "consents"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


# --- loopback redirect URI: the command listens once -----------------------------------------------


def test_authorize_with_a_loopback_redirect_listens_and_finishes(
    cli_env: Callable[[str], SandboxHandle], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    port = free_port()
    cli_env(f"http://127.0.0.1:{port}/callback")
    result: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: result.setdefault("code", main(["authorize", "--connection", "acme", "--no-browser"]))
    )
    worker.start()
    printed = ""
    deadline = time.monotonic() + 20
    while "Waiting for the redirect" not in printed and time.monotonic() < deadline:
        time.sleep(0.05)
        printed += capsys.readouterr().out
    url = _printed_url(printed)
    assert _pending(tmp_path / "home"), "the binding is kept while the command waits"

    with httpx.Client(timeout=30) as browser:
        # something else on the port first: ignored, the command keeps waiting
        assert browser.get(f"http://127.0.0.1:{port}/favicon.ico").status_code == 404
        at_provider = browser.get(url)
        assert at_provider.status_code == 302
        page = browser.get(at_provider.headers["location"])
    worker.join(timeout=30)
    assert result["code"] == 0
    assert page.status_code == 200 and "Connected" in page.text
    out = printed + capsys.readouterr().out
    assert "Connection 'acme' is connected" in out
    record = current().token_store.load("acme")
    assert record is not None and record.status is TokenStatus.OK
    assert _pending(tmp_path / "home") == []


def test_authorize_refuses_a_busy_loopback_port(
    cli_env: Callable[[str], SandboxHandle], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cli_env(f"http://127.0.0.1:{busy.getsockname()[1]}/callback")
        assert main(["authorize", "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert "cannot listen on" in err and "exactsync serve" in err
    assert _pending(tmp_path / "home") == []


# --- https redirect URI: copy the URL from the browser ---------------------------------------------


def _consent_at_sandbox(url: str) -> str:
    with httpx.Client(timeout=30) as browser:
        answer = browser.get(url)
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(HTTPS_REDIRECT)
    return location


def test_authorize_with_a_copied_redirected_url(
    cli_env: Callable[[str], SandboxHandle], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sandbox = cli_env(HTTPS_REDIRECT)
    assert main(["authorize", "--connection", "acme", "--no-browser"]) == 0
    out = capsys.readouterr().out
    assert "--redirected-url" in out and "Copy the complete URL" in out
    assert len(_pending(tmp_path / "home")) == 1
    assert (_pending(tmp_path / "home")[0].stat().st_mode & 0o777) == 0o600
    copied = _consent_at_sandbox(_printed_url(out))
    assert "%21" in copied

    assert main(["authorize", "--redirected-url", copied]) == 0
    assert "Connection 'acme' is connected" in capsys.readouterr().out
    record = current().token_store.load("acme")
    assert record is not None and record.status is TokenStatus.OK
    assert _pending(tmp_path / "home") == []
    assert httpx.get(f"{sandbox.admin_url}/counters").json()["codes_exchanged"] == 1

    # the same URL again: the state is single use
    assert main(["authorize", "--redirected-url", copied]) == 2
    err = capsys.readouterr().err
    assert "already used" in err or "not started here" in err
    assert httpx.get(f"{sandbox.admin_url}/counters").json()["codes_exchanged"] == 1


def test_copied_url_of_another_machine_is_refused(
    cli_env: Callable[[str], SandboxHandle], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cli_env(HTTPS_REDIRECT)
    assert main(["authorize", "--no-browser"]) == 0
    copied = _consent_at_sandbox(_printed_url(capsys.readouterr().out))
    for path in _pending(tmp_path / "home"):
        path.unlink()  # the pending consent lives on another machine
    assert main(["authorize", "--redirected-url", copied]) == 2
    err = capsys.readouterr().err
    assert "Consent started elsewhere" in err and "EXACTSYNC_HOME" in err
    assert current().token_store.list_connections() == []


def test_copied_url_with_a_forged_state_or_for_another_connection(
    cli_env: Callable[[str], SandboxHandle], capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env(HTTPS_REDIRECT)
    assert main(["authorize", "--connection", "acme", "--no-browser"]) == 0
    copied = _consent_at_sandbox(_printed_url(capsys.readouterr().out))
    state = query_of(copied)["state"]
    assert main(["authorize", "--redirected-url", copied.replace(state, state[:-2] + "zz")]) == 2
    assert "Invalid consent link" in capsys.readouterr().err
    assert main(["authorize", "--connection", "other", "--redirected-url", copied]) == 2
    assert "belongs to connection 'acme'" in capsys.readouterr().err
    assert current().token_store.list_connections() == []
    # neither refusal burnt the consent
    assert main(["authorize", "--redirected-url", copied]) == 0


def test_access_denied_reaches_the_cli(
    cli_env: Callable[[str], SandboxHandle], capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = cli_env(HTTPS_REDIRECT)
    httpx.post(f"{sandbox.admin_url}/faults", json={"deny_consent": True}).raise_for_status()
    assert main(["authorize", "--no-browser"]) == 0
    copied = _consent_at_sandbox(_printed_url(capsys.readouterr().out))
    assert main(["authorize", "--redirected-url", copied]) == 2
    assert "Consent declined" in capsys.readouterr().err
    assert current().token_store.list_connections() == []


def test_trace_prints_the_exchange_without_secrets(
    cli_env: Callable[[str], SandboxHandle], capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env(HTTPS_REDIRECT)
    assert main(["authorize", "--no-browser"]) == 0
    copied = _consent_at_sandbox(_printed_url(capsys.readouterr().out))
    code = query_of(copied)["code"]
    assert main(["--trace", "authorize", "--redirected-url", copied]) == 0
    captured = capsys.readouterr()
    assert "--> POST" in captured.err and "/api/oauth2/token" in captured.err
    assert "form code=[REDACTED]" in captured.err and "form client_secret=[REDACTED]" in captured.err
    record = current().token_store.load("default")
    assert record is not None
    everything = captured.err + captured.out
    for secret in (code, PLANTED_CLIENT_SECRET, record.access_token, record.refresh_token):
        assert secret not in everything


# --- a consent started by the CLI cannot be finished by the HTTP callback (and vice versa) -----------


@pytest.fixture
def rig(sandbox_factory: Callable[..., SandboxHandle], tmp_path: Path) -> Iterator[ConsentRig]:
    with consent_rig(sandbox_factory, tmp_path / "home", limits=False) as rig:
        yield rig


def test_cli_state_at_the_http_callback_points_to_the_cli(rig: ConsentRig) -> None:
    from shared.oauth.commands import PendingConsents, finish_copied_url
    from shared.oauth.consent import begin
    from shared.oauth.state import Channel

    started = begin(rig.runtime, "acme", channel=Channel.CLI)
    PendingConsents(rig.home, rig.runtime.clock).save(started)
    with httpx.Client(timeout=30) as browser:
        at_provider = browser.get(started.authorize_url)
        redirected = at_provider.headers["location"]
        page = browser.get(redirected)  # the browser lands on the deployed callback
    assert page.status_code == 403
    assert "Finish this consent in exactsync" in page.text and "--redirected-url" in page.text
    assert query_of(redirected)["code"] not in page.text
    assert rig.connections() == []
    # the page claimed nothing: the CLI finishes with the copied URL
    done = finish_copied_url(rig.runtime, redirected)
    assert done.connection == "acme" and rig.connections() == ["acme"]


def test_pending_consents_expire(rig: ConsentRig) -> None:
    from shared.oauth.commands import PendingConsents
    from shared.oauth.consent import begin
    from shared.oauth.state import Channel

    pending = PendingConsents(rig.home, rig.runtime.clock)
    old = begin(rig.runtime, "acme", channel=Channel.CLI)
    pending.save(old)
    rig.admin("POST", "clock", {"advance": 700})
    runtime = rig.use(rig.new_runtime())
    fresh = begin(runtime, "acme", channel=Channel.CLI)
    PendingConsents(rig.home, runtime.clock).save(fresh)  # saving prunes the expired one
    files = sorted((rig.home / "consents").glob("*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["binding"] == fresh.issued.binding
