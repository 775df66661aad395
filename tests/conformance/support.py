"""A raw HTTP driver for the sandbox, built from the reference facts (not from our client).

Every helper speaks plain HTTP the way the reference describes Exact Online, so a test fails when
the sandbox deviates, not when some helper of ours happens to agree with it.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from shared.clock import ScaledClock
from shared.sandbox.server import SandboxHandle

SandboxFactory = Callable[..., SandboxHandle]

# Facts from the reference, written down once.
CODE_LIFETIME = 180
ACCESS_LIFETIME = 600
EARLIEST_REFRESH = 570
REFRESH_LIFETIME = 30 * 24 * 3600
SELECT_MESSAGE = "Please add a $select or a $top=1 statement to the query string."
TOO_EARLY = {"error": "access_denied", "error_description": "Rate limit exceeded: access_token not expired"}
OLD_REFRESH = {"error": "unauthorized_client", "error_description": "Old refresh token used."}
MINUTELY_HEADERS = (
    "X-RateLimit-Minutely-Limit",
    "X-RateLimit-Minutely-Remaining",
    "X-RateLimit-Minutely-Reset",
)
DAILY_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
ALL_RATE_HEADERS = DAILY_HEADERS + MINUTELY_HEADERS

ACCOUNT_FIELDS = "ID,Code,Name,Status,Blocked,IsSales,IsSupplier,Email,Country,Created,Modified"


def utc(text: str) -> float:
    """Epoch seconds of an ISO UTC instant such as ``2025-01-15T10:00:10``."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def quote_query(params: Mapping[str, str]) -> str:
    """Encode like the common Exact clients: ``$`` kept, spaces as ``%20``."""
    return "&".join(quote(k, safe="$") + "=" + quote(v, safe=",'()$") for k, v in params.items())


def start(factory: SandboxFactory, *, at: str = "2025-01-15T10:00:10", **options: Any) -> SandboxHandle:
    """A sandbox whose clock starts at a chosen UTC instant and runs at real speed."""
    return factory(clock=ScaledClock.starting_now(scale=1.0, sim_start=utc(at)), **options)


@dataclass
class Exact:
    """Plain-HTTP access to a sandbox: OAuth, REST and the admin API."""

    handle: SandboxHandle
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def close(self) -> None:
        self.http.close()

    # -- admin ---------------------------------------------------------------------------------
    def admin(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        url = f"{self.handle.admin_url}/{path}"
        answer = self.http.get(url) if body is None else self.http.post(url, json=dict(body))
        assert answer.status_code == 200, f"admin {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def now(self) -> float:
        return float(self.admin("clock")["now"])

    def advance(self, seconds: float) -> None:
        self.admin("clock", {"advance": seconds})

    def jump_to(self, epoch: float) -> None:
        self.admin("clock", {"to": epoch})

    def counters(self) -> dict[str, Any]:
        counters: dict[str, Any] = self.admin("counters")
        return counters

    def dump(self, division: int, entity: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.admin(f"dump?division={division}&entity={entity}")["rows"]
        return rows

    def mutate(self, division: int, entity: str, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("mutate", {"division": division, "entity": entity, **changes})
        return result

    # -- OAuth ---------------------------------------------------------------------------------
    @property
    def secret(self) -> str:
        return str(self.handle.app.client_secret)

    def authorize(self, **overrides: str) -> httpx.Response:
        params = {
            "client_id": self.handle.client_id,
            "redirect_uri": self.handle.redirect_uri,
            "response_type": "code",
            "force_login": "0",
            "state": "s1",
        }
        params.update(overrides)
        return self.http.get(f"{self.handle.base_url}/api/oauth2/auth", params=params, follow_redirects=False)

    def code(self) -> str:
        """A fresh code, decoded exactly once from the redirect's query string."""
        answer = self.authorize()
        assert answer.status_code == 302, answer.text
        return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]

    def token_call(self, form: Mapping[str, str]) -> httpx.Response:
        return self.http.post(f"{self.handle.base_url}/api/oauth2/token", data=dict(form))

    def exchange(self, code: str, **overrides: str) -> httpx.Response:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.handle.redirect_uri,
            "client_id": self.handle.client_id,
            "client_secret": self.secret,
        }
        form.update(overrides)
        return self.token_call({k: v for k, v in form.items() if v is not None})

    def tokens(self) -> dict[str, Any]:
        answer = self.exchange(self.code())
        assert answer.status_code == 200, answer.text
        tokens: dict[str, Any] = answer.json()
        return tokens

    def refresh(self, refresh_token: str, **overrides: str) -> httpx.Response:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.handle.client_id,
            "client_secret": self.secret,
        }
        form.update(overrides)
        return self.token_call(form)

    # -- REST ----------------------------------------------------------------------------------
    def url(self, path: str, params: Mapping[str, str] | None = None) -> str:
        query = f"?{quote_query(params)}" if params else ""
        return f"{self.handle.base_url}/api/v1/{path}{query}"

    def get(self, url: str, token: str, *, accept_json: bool = True) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        if accept_json:
            headers["Accept"] = "application/json"
        return self.http.get(url, headers=headers)

    def api(
        self, path: str, token: str, params: Mapping[str, str] | None = None, *, accept_json: bool = True
    ) -> httpx.Response:
        return self.get(self.url(path, params), token, accept_json=accept_json)


@contextmanager
def exact(handle: SandboxHandle) -> Iterator[Exact]:
    driver = Exact(handle)
    try:
        yield driver
    finally:
        driver.close()


def odata_error_text(answer: httpx.Response) -> str:
    """The text of an OData error body, asserting its shape on the way."""
    body = answer.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str), body
    message = error["message"]
    assert isinstance(message, dict) and set(message) >= {"lang", "value"}, body
    assert isinstance(message["lang"], str), body
    return str(message["value"])


# -- a callback receiver for webhooks ------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers ``status``."""

    status: int = 200
    reply: bytes = b""
    content_type: str = "application/json"
    requests: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout=timeout)
            return list(self.requests)


@contextmanager
def receiver(status: int = 200, reply: bytes = b"") -> Iterator[Receiver]:
    """Answers every POST with ``status`` and ``reply`` (a webhook callback, or a scripted token
    endpoint for answers the sandbox never gives)."""
    state = Receiver(status=status, reply=reply)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with state.arrived:
                state.requests.append(Received("POST", self.path, dict(self.headers.items()), body))
                state.arrived.notify_all()
            self.send_response(state.status)
            if state.reply:
                self.send_header("Content-Type", state.content_type)
            self.send_header("Content-Length", str(len(state.reply)))
            self.end_headers()
            self.wfile.write(state.reply)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def raw_json_value(text: str, key: str) -> str:
    """The raw text of a top-level object member's value, exactly as it appears in ``text``."""
    decoder = json.JSONDecoder()
    obj_start = text.index("{") + 1
    position = obj_start
    while True:
        while text[position] in " \t\r\n,":
            position += 1
        name, position = decoder.raw_decode(text, position)
        while text[position] in " \t\r\n":
            position += 1
        assert text[position] == ":"
        position += 1
        while text[position] in " \t\r\n":
            position += 1
        _value, end = decoder.raw_decode(text, position)
        if name == key:
            return text[position:end]
        position = end


# -- recording what our client sends (at the transport boundary, over real HTTP) -------------------


@dataclass
class Exchange:
    method: str
    url: str
    headers: dict[str, str]
    form: dict[str, list[str]]
    read_timeout: float | None
    sent_at: float
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)


class RecordingTransport(httpx.HTTPTransport):
    """httpx's real transport, noting each request (with the sandbox clock's time) and answer."""

    def __init__(self, clock: ScaledClock) -> None:
        super().__init__()
        self.clock = clock
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True) if body else {}
        timeout = request.extensions.get("timeout", {}).get("read")
        exchange = Exchange(
            request.method, str(request.url), dict(request.headers.items()), form, timeout, self.clock.now()
        )
        with self._lock:
            self.exchanges.append(exchange)
        response = super().handle_request(request)
        exchange.status = response.status_code
        exchange.response_headers = dict(response.headers.items())
        return response

    def to(self, path_part: str) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if path_part in e.url]
