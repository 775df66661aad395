"""Helpers for the ExactClient's sandbox tests: the admin API, a consented runtime, transports.

The token source is the OAuth area's real ``TokenKeeper`` (through a ``Runtime`` built for the
sandbox), consented by the real authorization-code exchange over HTTP. Where a test needs a
token source that misbehaves on purpose (a revoked token first), ``ScriptedTokens`` hands out
real tokens of real (revoked or live) sandbox chains.

The transports wrap httpx's real ``HTTPTransport``: requests go over real HTTP to the sandbox and
only the named change is applied on the way (drop the Accept header, cut the body short).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from shared.clock import Clock
from shared.exact.client import ExactClient, TraceEvent
from shared.runtime import Runtime
from shared.sandbox.server import SandboxHandle
from shared.settings import Settings
from tests.fixtures.sandbox import obtain_tokens
from tests.oauth.sandbox_support import consent as oauth_consent

CONNECTION = "acme"


def admin(
    handle: SandboxHandle, method: str, name: str, body: dict[str, Any] | None = None, **params: Any
) -> Any:
    """Call ``/_sandbox/<name>`` and return its JSON (raising on an error answer)."""
    with httpx.Client(timeout=60) as http:
        answer = http.request(method, f"{handle.admin_url}/{name}", json=body, params=params or None)
    assert answer.status_code == 200, answer.text
    return answer.json()


def api_calls(handle: SandboxHandle, division: int, path: str) -> int:
    calls: dict[str, int] = admin(handle, "GET", "counters")["api_calls"]
    return calls.get(f"{division} {path}", 0)


def sandbox_runtime(handle: SandboxHandle, home: Path, clock: Clock | None = None) -> Runtime:
    settings = Settings.from_env({"EXACT_BASE_URL": handle.base_url, "EXACTSYNC_HOME": str(home)})
    return Runtime(settings=settings, clock=clock or handle.clock)


def consent(runtime: Runtime, handle: SandboxHandle, connection: str = CONNECTION) -> None:
    """A person's consent, minus the person: the real code exchange, adopted by the runtime's keeper."""
    oauth_consent(handle, runtime.keeper, runtime.clock, connection)


def client_for(
    handle: SandboxHandle,
    tokens: Any,
    *,
    clock: Clock | None = None,
    traces: list[TraceEvent] | None = None,
    transport: httpx.BaseTransport | None = None,
    **options: Any,
) -> ExactClient:
    options.setdefault("backoff_base", 0.05)
    options.setdefault("backoff_max", 0.5)
    return ExactClient(
        handle.base_url,
        tokens,
        connection=CONNECTION,
        clock=clock or handle.clock,
        transport=transport,
        on_trace=traces.append if traces is not None else None,
        **options,
    )


class ScriptedTokens:
    """A token source of real sandbox tokens, handed out in a set order.

    ``first`` is what ``get_access_token`` returns; each ``refresh_after_rejection`` returns the
    next of ``renewals``. Records what was asked.
    """

    def __init__(self, first: str, renewals: list[str]) -> None:
        self.first = first
        self.renewals = list(renewals)
        self.rejected: list[str] = []
        self.gets = 0

    def get_access_token(self, connection: str, *, min_validity: float = 0.0) -> str:
        self.gets += 1
        return self.first

    def refresh_after_rejection(self, connection: str, rejected_token: str) -> str:
        self.rejected.append(rejected_token)
        return self.renewals.pop(0)


def revoked_token(handle: SandboxHandle) -> str:
    """An access token of a chain the sandbox has revoked (Exact answers 401 invalid_token)."""
    dead = obtain_tokens(handle)["access_token"]
    chains = admin(handle, "GET", "chains")["chains"]
    for chain in chains:
        admin(handle, "POST", "chains/revoke", {"chain": chain["chain"]})
    return str(dead)


class EditingTransport(httpx.BaseTransport):
    """Real HTTP, with ``edit_request`` / ``edit_response`` applied on the way."""

    def __init__(
        self,
        *,
        edit_request: Callable[[httpx.Request], None] | None = None,
        edit_response: Callable[[httpx.Response], httpx.Response] | None = None,
    ) -> None:
        self.inner = httpx.HTTPTransport()
        self.edit_request = edit_request
        self.edit_response = edit_response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.edit_request is not None:
            self.edit_request(request)
        response = self.inner.handle_request(request)
        if self.edit_response is None:
            return response
        response.read()
        return self.edit_response(response)

    def close(self) -> None:
        self.inner.close()


def drop_accept(request: httpx.Request) -> None:
    del request.headers["Accept"]


def replace_body(body: Callable[[bytes], bytes]) -> Callable[[httpx.Response], httpx.Response]:
    """A proxy that forwards status and headers but changes the body (Content-Length follows)."""

    def edit(response: httpx.Response) -> httpx.Response:
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-length"]
        return httpx.Response(response.status_code, headers=headers, content=body(response.content))

    return edit
