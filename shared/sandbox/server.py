"""The sandbox's HTTP server and its public entry point, ``start_sandbox``.

A stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive, one thread per connection,
run in a daemon thread of the caller's process. ``Sandbox`` wires the parts together (data,
OAuth, limits, webhooks, faults, counters) and routes each request; the handler only moves
bytes. ``SandboxHandle`` is what callers keep: URLs, the shared clock, ``stop()``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote

from shared.clock import ScaledClock
from shared.sandbox.admin import Admin
from shared.sandbox.api import Api, Request
from shared.sandbox.counters import Counters
from shared.sandbox.data import Dataset
from shared.sandbox.faults import Faults
from shared.sandbox.limits import ErrorBlock, RateLimits
from shared.sandbox.oauth import AppRegistration, OAuthServer
from shared.sandbox.reply import Reply, html_reply, json_reply
from shared.sandbox.webhooks import WebhookApi, Webhooks
from shared.settings import LOCAL_CLIENT_ID, LOCAL_CLIENT_SECRET, LOCAL_REDIRECT_URI, LOCAL_WEBHOOK_SECRET

log = logging.getLogger("exactsync.sandbox")

DEFAULT_DIVISIONS: tuple[int, ...] = (1_001_001, 1_001_002)


class Sandbox:
    """Everything one sandbox knows, and the router from a request to its reply."""

    def __init__(
        self, *, clock: ScaledClock, app: AppRegistration, divisions: Iterable[int], seed: int,
        row_counts: Mapping[str, int] | None, limits: bool, auto_consent: bool,
    ) -> None:  # fmt: skip
        self.clock = clock
        self.app = app
        self.counters = Counters()
        self.faults = Faults()
        self.data = Dataset(seed, divisions, dict(row_counts or {}))
        self.oauth = OAuthServer(
            app, clock, self.counters, self.faults, self.data.division_codes, auto_consent=auto_consent
        )
        self.limits = RateLimits(enabled=limits)
        self.errors = ErrorBlock(threshold=10 if limits else 0)
        self.webhooks = Webhooks(app, clock, self.counters)
        self.config: dict[str, Any] = {
            "timestamp_as_string": False,
            "scope_violation_endpoints": [],
            "division_blocks": {},  # division code (text) -> 403 Reason, e.g. "DivisionBlocked"
        }
        self.base_url = ""
        self.api = Api(self)
        self.webhook_api = WebhookApi(self)
        self.admin = Admin(self)

    def dispatch(self, req: Request) -> Reply:
        path = req.path
        if path.startswith("/api/v1/"):
            reply = self.api.handle(req)
        elif path == "/api/oauth2/token":
            reply = self._token(req)
        elif path == "/api/oauth2/auth":
            reply = self._authorize(req)
        elif path == "/_sandbox" or path.startswith("/_sandbox/"):
            return self.admin.handle(req)
        else:
            reply = html_reply(404, "Not Found", "The resource cannot be found.")
        self.counters.answered(reply.status)
        return reply

    def _token(self, req: Request) -> Reply:
        if req.method != "POST":
            return json_reply(
                {"error": "invalid_request", "error_description": "The token endpoint takes POST."},
                405,
                [("Allow", "POST")],
            )
        return self.oauth.token(req.headers, req.body)

    def _authorize(self, req: Request) -> Reply:
        if req.method == "GET":
            params = dict(parse_qsl(req.query, keep_blank_values=True))
        elif req.method == "POST":
            params = dict(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        else:
            reply = html_reply(405, "Method not allowed", "Use GET.")
            reply.headers.append(("Allow", "GET, POST"))
            return reply
        return self.oauth.authorize(req.method, params)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        super().__init__(address, _Handler)
        self.sandbox = sandbox
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()


_REASONS = {s.value: s.phrase for s in HTTPStatus}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header, on the sandbox's simulated clock (the rate-limit resets use it too,
        so a client can tell the sandbox's time from it; RFC 9110 IMF-fixdate, whole seconds)."""
        return formatdate(self.server.sandbox.clock.now() if timestamp is None else timestamp, usegmt=True)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        raw_path, _, query = self.path.partition("?")
        request = Request(
            method=self.command,
            path=unquote(raw_path),
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            url_length=len(self.server.sandbox.base_url) + len(self.path),
        )
        try:
            reply = self.server.sandbox.dispatch(request)
        except Exception:  # a sandbox bug must show as a 500, not kill the connection thread
            traceback.print_exc(file=sys.stderr)
            reply = html_reply(500, "Sandbox error", "The sandbox failed; see its stderr.")
        if reply.delay > 0:
            time.sleep(reply.delay)
        if reply.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        head = [
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}",
            "Server: ExactOnlineSandbox",
            f"Date: {self.date_time_string()}",
        ]
        if reply.content_type:
            head.append(f"Content-Type: {reply.content_type}")
        head.append(f"Content-Length: {len(reply.body)}")
        head.extend(f"{name}: {value}" for name, value in reply.headers)
        if self.close_connection:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body
        try:
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    # MERGE is OData v2's update verb: routed like the others, so a resource that does not take it
    # answers 405 with an OData error (the stdlib default for an unknown method is a bare 501).
    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_MERGE = _serve


class SandboxHandle:
    """A running sandbox: ``base_url``, ``admin_url``, ``clock`` (share it via ``clock.spec()``), ``stop()``."""

    def __init__(self, server: _Server, thread: threading.Thread, sandbox: Sandbox) -> None:
        self._server = server
        self._thread = thread
        self.sandbox = sandbox
        self.base_url = sandbox.base_url
        self.admin_url = f"{sandbox.base_url}/_sandbox"
        self.clock = sandbox.clock
        self.app = sandbox.app
        self.divisions = sandbox.data.division_codes
        self.port = server.server_address[1]
        self._stopped = False

    @property
    def client_id(self) -> str:
        return self.app.client_id

    @property
    def redirect_uri(self) -> str:
        return self.app.redirect_uri

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        with self._server.connections_lock:
            open_connections = list(self._server.connections)
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.sandbox.webhooks.stop()
        self._thread.join(timeout=5)

    def __enter__(self) -> SandboxHandle:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SandboxHandle(base_url={self.base_url!r}, divisions={self.divisions!r})"


def start_sandbox(
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    seed: int = 1,
    time_scale: float = 1.0,
    client_id: str = LOCAL_CLIENT_ID,
    client_secret: str = LOCAL_CLIENT_SECRET,
    redirect_uri: str = LOCAL_REDIRECT_URI,
    webhook_secret: str = LOCAL_WEBHOOK_SECRET,
    divisions: Iterable[int] = DEFAULT_DIVISIONS,
    row_counts: Mapping[str, int] | None = None,
    limits: bool = True,
    auto_consent: bool = True,
    clock: ScaledClock | None = None,
    warn: bool = True,
) -> SandboxHandle:
    """Start a sandbox in a daemon thread of this process and return its handle.

    ``port=0`` picks a free port. ``time_scale`` makes the sandbox clock run faster than real
    time (ignored when a ``clock`` is given). ``row_counts`` overrides the generated rows per
    entity and division, e.g. ``{"TransactionLines": 1_000_000}``. ``limits=False`` turns the
    rate limits and the error block off. ``auto_consent=False`` shows a consent page instead of
    redirecting straight back.
    """
    app = AppRegistration(client_id, client_secret, redirect_uri, webhook_secret)
    warning = app.check()
    if warning and warn:
        print(warning, file=sys.stderr)
    sandbox = Sandbox(
        clock=clock or ScaledClock.starting_now(scale=time_scale),
        app=app,
        divisions=divisions,
        seed=seed,
        row_counts=row_counts,
        limits=limits,
        auto_consent=auto_consent,
    )
    server = _Server((host, port), sandbox)
    bound_host, bound_port = server.server_address[:2]
    host_text = bound_host.decode() if isinstance(bound_host, bytes) else str(bound_host)
    shown = f"[{host_text}]" if ":" in host_text else host_text
    sandbox.base_url = f"http://{shown}:{bound_port}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="exact-sandbox", daemon=True
    )
    thread.start()
    return SandboxHandle(server, thread, sandbox)
