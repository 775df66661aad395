"""No secret in logs, errors or status views: planted client secret, webhook secret and
notification URL, and every token and code the flows handle, over failing flows included.

The runtime is built as in production (``Runtime`` from settings, its own keeper, store, lock
and HTTP client); only the HTTP transport is wrapped to record every secret that crosses it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from shared.errors import ExactSyncError
from shared.oauth.providers import Providers, exact_provider
from shared.oauth.rotation import rotate_all
from shared.oauth.token_endpoint import TokenEndpoint
from shared.runtime import Runtime
from shared.sandbox.server import SandboxHandle
from shared.settings import Settings
from tests.oauth.sandbox_support import advance, authorize, faults, sandbox_clock

PLANTED_CLIENT_SECRET = "planted-CLIENT-secret-core-5e2d7a"
PLANTED_WRONG_SECRET = "planted-WRONG-secret-core-0c4f1b"
PLANTED_WEBHOOK_SECRET = "planted-WEBHOOK-secret-core-9a8b7c"
PLANTED_NOTIFY_URL = "http://127.0.0.1:9/planted-NOTIFY-key-core-3f2e1d"
SECRET_FIELDS = ("access_token", "refresh_token", "code", "client_secret", "id_token")


class RecordingTransport(httpx.BaseTransport):
    """The real HTTP transport, noting every secret value sent or received."""

    def __init__(self, seen: set[str]) -> None:
        self.inner = httpx.HTTPTransport()
        self.seen = seen

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for key, values in parse_qs(request.content.decode(errors="replace")).items():
            if key in SECRET_FIELDS:
                self.seen.update(values)
        response = self.inner.handle_request(request)
        body = response.read()
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            self.seen.update(str(data[k]) for k in SECRET_FIELDS if data.get(k))
        return response


def test_no_secret_reaches_logs_errors_or_views(
    sandbox_factory: Callable[..., SandboxHandle], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handle = sandbox_factory(limits=False, client_secret=PLANTED_CLIENT_SECRET)
    settings = Settings.from_env(
        {
            "EXACTSYNC_HOME": str(tmp_path),
            "EXACT_BASE_URL": handle.base_url,
            "EXACT_CLIENT_ID": handle.client_id,
            "EXACT_CLIENT_SECRET": PLANTED_CLIENT_SECRET,
            "EXACT_REDIRECT_URI": handle.redirect_uri,
            "EXACT_WEBHOOK_SECRET": PLANTED_WEBHOOK_SECRET,
            "NOTIFY_WEBHOOK_URL": PLANTED_NOTIFY_URL,
        }
    )
    clock = sandbox_clock(handle)
    runtime = Runtime(settings=settings, clock=clock)
    seen: set[str] = set()
    runtime.oauth_http = httpx.Client(transport=RecordingTransport(seen))
    errors: list[BaseException] = []
    views: list[Any] = []

    def attempt(action: Callable[[], object]) -> None:
        try:
            action()
        except ExactSyncError as exc:
            errors.append(exc)

    caplog.set_level(logging.DEBUG)
    keeper = runtime.keeper
    provider = runtime.providers.get("exact")

    def consent(replay: bool = False) -> None:
        with httpx.Client(timeout=30) as browser:
            code = authorize(handle, browser)
        seen.add(code)
        grant = TokenEndpoint(provider, http=runtime.oauth_http, clock=clock).exchange_code(code)
        keeper.adopt_consent("acme", "exact", grant)
        if replay:  # the same code again: refused (and the sandbox revokes its chain)
            attempt(lambda: TokenEndpoint(provider, http=runtime.oauth_http, clock=clock).exchange_code(code))

    consent()
    keeper.get_access_token("acme")
    advance(handle, clock, 580)
    keeper.get_access_token("acme")  # a normal refresh
    advance(handle, clock, 580)
    faults(handle, token_lost_after_rotate=1)
    attempt(lambda: keeper.get_access_token("acme"))  # in doubt
    advance(handle, clock, 31)
    attempt(lambda: keeper.get_access_token("acme"))  # settled: needs_reauth, alert, webhook fails
    views.append(keeper.list_status())
    views.append(rotate_all(runtime).to_dict())  # the timer alerts again
    consent(replay=True)  # a person consents again, and replays the code
    views.append(keeper.status("acme"))

    # a wrong client secret: the endpoint refuses; the message must not echo what was sent
    wrong = exact_provider(
        handle.base_url,
        client_id=handle.client_id,
        client_secret=PLANTED_WRONG_SECRET,
        redirect_uri=handle.redirect_uri,
    )
    assert runtime.keeper.providers.get("exact").client_secret == PLANTED_CLIENT_SECRET
    bad_keeper = type(keeper)(
        providers=Providers([wrong]),
        store=runtime.token_store,
        lock=runtime.lock,
        endpoint_factory=lambda p: TokenEndpoint(p, http=runtime.oauth_http, clock=clock),
        clock=clock,
    )
    advance(handle, clock, 600)
    attempt(lambda: bad_keeper.get_access_token("acme"))

    # a provider that echoes the request (secrets and all) in its error description
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400, json={"error": "invalid_request", "error_description": request.content.decode()}
        )

    echoing = TokenEndpoint(provider, http=httpx.Client(transport=httpx.MockTransport(echo)), clock=clock)
    stored = runtime.token_store.load("acme")
    assert stored is not None
    attempt(lambda: echoing.refresh(stored.refresh_token))
    attempt(lambda: echoing.exchange_code("planted!code-value-0123456789"))
    seen.add("planted!code-value-0123456789")

    assert len(errors) >= 5
    seen.discard("")
    assert len([s for s in seen if len(s) > 20]) >= 8  # codes, access and refresh tokens
    planted = {PLANTED_CLIENT_SECRET, PLANTED_WRONG_SECRET, PLANTED_WEBHOOK_SECRET, PLANTED_NOTIFY_URL}
    haystacks = {
        "logs": caplog.text,
        "errors": "\n".join(f"{e}\n{e!r}\n{vars(e)}" for e in errors),
        "views": json.dumps(views, default=str),
    }
    for where, text in haystacks.items():
        for secret in planted | seen | {"planted-NOTIFY-key-core"}:
            for spelling in {secret, secret.replace("!", "%21")}:
                assert spelling not in text, f"a secret leaked into {where}"
    # and the flows did log something worth reading
    assert "exactsync.connection_needs_reauth" in caplog.text and "notification webhook" in caplog.text
