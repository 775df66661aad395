"""``exactsync authorize``, ``exactsync status`` and ``exactsync serve``.

``authorize`` runs the same consent as ``/api/oauth/start`` + ``/api/oauth/callback``, with the CLI
in the browser's place: the state's binding secret (the browser's cookie in the HTTP flow) is kept
in a 0600 file under ``EXACTSYNC_HOME/consents/`` for the state's 10 minutes. Two ways back:

- a loopback redirect URI (``http://127.0.0.1:PORT/...``): the command listens on that port once
  and completes the exchange when the browser arrives;
- an https redirect URI (Exact requires https for real apps): the browser ends on that URL (a page
  of the deployed app that says "finish this in exactsync", or an error page of an unreachable
  host); the person copies the URL from the address bar and runs
  ``exactsync authorize --redirected-url URL`` on the same machine, which finds the pending file
  by the state and finishes. The state is checked exactly as the HTTP callback checks it.

Registration imports nothing heavy; the handlers import their work.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.errors import ExactSyncError
from shared.settings import LOCAL_SERVE_PORT

if TYPE_CHECKING:
    from shared.clock import Clock
    from shared.oauth.consent import ConsentDone, ConsentFailed, ConsentStart, Redirect
    from shared.runtime import Runtime

_LOOPBACK_HOSTS = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "::1": "::1", "[::1]": "::1"}


def add_parsers(subparsers: Any) -> None:
    authorize = subparsers.add_parser(
        "authorize",
        help="consent for a connection from the command line",
        description=(
            "Print the provider's consent URL and finish the consent: by listening on a loopback "
            "redirect URI, or from the URL you copy out of the browser after consenting "
            "(--redirected-url)."
        ),
    )
    authorize.add_argument("--connection", default=None, help="connection name (default: default)")
    authorize.add_argument("--provider", default=None, help="OAuth provider name (default: exact)")
    authorize.add_argument(
        "--redirected-url",
        metavar="URL",
        default=None,
        help="the full URL the browser was redirected to after consent (from the address bar)",
    )
    authorize.add_argument("--no-browser", action="store_true", help="print the URL, do not open a browser")
    authorize.set_defaults(handler=run_authorize)

    status = subparsers.add_parser("status", help="show each connection's token status (no secrets)")
    status.add_argument("--connection", default=None, help="only this connection")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=run_status)

    serve = subparsers.add_parser(
        "serve",
        help="serve the function app's HTTP routes on 127.0.0.1 (no function keys)",
        description=(
            "Host the real function_app.py HTTP routes on 127.0.0.1 so the consent flow runs "
            "locally without Azure Functions Core Tools. Function keys are not checked."
        ),
    )
    serve.add_argument("--port", type=int, default=LOCAL_SERVE_PORT, help=f"default {LOCAL_SERVE_PORT}")
    serve.set_defaults(handler=run_serve)


# --- authorize ---------------------------------------------------------------------------------


def run_authorize(args: argparse.Namespace) -> int:
    from shared.runtime import current

    runtime = current()
    attach_trace(runtime, args)
    if args.redirected_url:
        done = finish_copied_url(runtime, args.redirected_url, connection=args.connection)
        _print_done(done)
        return 0
    return _start_and_wait(runtime, args)


def attach_trace(runtime: Runtime, args: argparse.Namespace) -> None:
    """``--trace``: the runtime's OAuth HTTP client prints every exchange to stderr, redacted."""
    if getattr(args, "trace", False):
        from shared.oauth.trace import attach

        runtime.providers  # noqa: B018  (registers the configured secrets with the redactor)
        attach(runtime.oauth_http, sys.stderr)


def _start_and_wait(runtime: Runtime, args: argparse.Namespace) -> int:
    from shared.oauth.consent import begin
    from shared.oauth.state import Channel

    started = begin(runtime, args.connection, args.provider, channel=Channel.CLI)
    pending = PendingConsents(runtime.settings.home, runtime.clock)
    pending.save(started)
    loopback = loopback_address(started.redirect_uri)
    catcher = None
    if loopback is not None:
        catcher = RedirectCatcher(*loopback)
        try:
            catcher.bind()
        except OSError as exc:
            pending.discard(started.issued.state.nonce)
            raise ExactSyncError(
                f"cannot listen on {started.redirect_uri} ({exc.strerror or exc}). Is `exactsync "
                "serve` running on that port? Then consent in the browser via /api/oauth/start "
                "instead, or stop it and run `exactsync authorize` again."
            ) from None
    _out(f"Consent for connection {started.connection!r} ({started.provider}). Open this URL:\n")
    _out(f"  {started.authorize_url}\n")
    if catcher is None:
        _out(
            "After consenting, the browser lands on the redirect URI "
            f"({started.redirect_uri}). Copy the complete URL from the address bar and run:\n\n"
            f"  exactsync authorize --connection {started.connection} --redirected-url 'URL'\n\n"
            "within 10 minutes, on this machine."
        )
        _open_browser(started.authorize_url, args.no_browser)
        return 0
    _out(f"Waiting for the redirect on {started.redirect_uri} (up to 10 minutes)...")
    _open_browser(started.authorize_url, args.no_browser)
    try:
        done = catcher.wait(
            lambda query: _finish_query(runtime, query, pending),
            until=started.issued.state.expires_at,
            clock=runtime.clock,
        )
    finally:
        catcher.close()
    if done is None:
        pending.discard(started.issued.state.nonce)
        raise ExactSyncError(
            "no redirect arrived before the consent link expired: run `exactsync authorize` again"
        )
    _print_done(done)
    return 0


def finish_copied_url(runtime: Runtime, url: str, *, connection: str | None = None) -> ConsentDone:
    """Finish a consent from the URL a person copied out of the browser (decoded once, here)."""
    from shared.oauth.consent import Redirect, peek_state

    redirect = Redirect.from_url(url)
    state = _raise_plain(lambda: peek_state(runtime, redirect))
    if connection is not None and connection != state.connection:
        raise ExactSyncError(
            f"this redirect belongs to connection {state.connection!r}, not {connection!r}: nothing "
            "was stored"
        )
    pending = PendingConsents(runtime.settings.home, runtime.clock)
    done: ConsentDone = _raise_plain(lambda: _finish(runtime, redirect, pending))
    return done


def _finish(runtime: Runtime, redirect: Redirect, pending: PendingConsents) -> ConsentDone:
    from shared.oauth.consent import ConsentFailed, Failure, finish
    from shared.oauth.state import Channel

    try:
        done = finish(runtime, redirect, lambda state: pending.binding(state.nonce), channel=Channel.CLI)
    except ConsentFailed as failure:
        # once the state is claimed (or refused for good) the pending file is of no further use
        if failure.state is not None and failure.failure not in (
            Failure.UNBOUND_STATE,
            Failure.WRONG_CHANNEL,
        ):
            pending.discard(failure.state.nonce)
        raise
    pending.discard(done.state.nonce)
    return done


def _finish_query(runtime: Runtime, query: str, pending: PendingConsents) -> ConsentDone:
    from shared.oauth.consent import Redirect

    return _finish(runtime, Redirect.from_query(query), pending)


def _raise_plain(action: Callable[[], Any]) -> Any:
    """Turn ``ConsentFailed`` into the CLI's one-line error (title, reason and next step)."""
    from shared.oauth.consent import ConsentFailed

    try:
        return action()
    except ConsentFailed as failure:
        raise ExactSyncError(f"{failure.title}: {failure.text}") from None


def _print_done(done: ConsentDone) -> None:
    view = done.status
    _out(
        f"Connection {done.connection!r} is connected ({done.provider}): status {view.get('status')}, "
        f"access token valid until {_when(view.get('access_expires_at'))}. exactsync keeps it alive "
        "from now on (see `exactsync status`)."
    )


def _open_browser(url: str, disabled: bool) -> None:
    if disabled:
        return
    import webbrowser

    with contextlib.suppress(Exception):
        webbrowser.open(url)


def _out(text: str) -> None:
    print(text, flush=True)


def loopback_address(redirect_uri: str) -> tuple[str, int, str] | None:
    """(bind host, port, path) when the redirect URI is plain-http loopback, else None."""
    parts = urlsplit(redirect_uri)
    host = _LOOPBACK_HOSTS.get((parts.hostname or "").lower())
    if parts.scheme != "http" or host is None:
        return None
    return host, parts.port or 80, parts.path or "/"


class PendingConsents:
    """The CLI's side of started consents: the binding secret per state nonce, in 0600 files
    under ``<home>/consents/`` that live as long as the state (10 minutes)."""

    def __init__(self, home: Path, clock: Clock) -> None:
        self.directory = Path(home) / "consents"
        self._clock = clock

    def _path(self, nonce: str) -> Path:
        return self.directory / (hashlib.sha256(nonce.encode("utf-8")).hexdigest()[:40] + ".json")

    def save(self, started: ConsentStart) -> Path:
        from shared.stores.local_file import ensure_private_directory, write_private_file_atomically

        self.prune()
        state = started.issued.state
        ensure_private_directory(self.directory)
        path = self._path(state.nonce)
        document = {
            "connection": state.connection,
            "provider": state.provider,
            "expires_at": state.expires_at,
            "binding": started.issued.binding,
            "authorize_url": started.authorize_url,
        }
        write_private_file_atomically(path, json.dumps(document).encode("utf-8"))
        return path

    def binding(self, nonce: str) -> str | None:
        try:
            document = json.loads(self._path(nonce).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        binding = document.get("binding") if isinstance(document, dict) else None
        return binding if isinstance(binding, str) and binding else None

    def discard(self, nonce: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(nonce).unlink()

    def prune(self) -> None:
        now = self._clock.now()
        for path in self.directory.glob("*.json") if self.directory.is_dir() else ():
            try:
                expires_at = float(json.loads(path.read_text("utf-8"))["expires_at"])
            except (OSError, ValueError, KeyError, TypeError):
                expires_at = 0.0
            if expires_at < now:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


class _V6Server(HTTPServer):
    address_family = socket.AF_INET6


@dataclass
class _Caught:
    done: ConsentDone | None = None
    failure: ConsentFailed | None = None


class RedirectCatcher:
    """A one-shot HTTP listener on the loopback redirect URI."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self._server: HTTPServer | None = None

    def bind(self) -> None:
        server_class = _V6Server if ":" in self.host else HTTPServer
        self._server = server_class((self.host, self.port), BaseHTTPRequestHandler)
        self._server.timeout = 0.5

    def close(self) -> None:
        if self._server is not None:
            self._server.server_close()
            self._server = None

    def wait(
        self, on_redirect: Callable[[str], ConsentDone], *, until: float, clock: Clock
    ) -> ConsentDone | None:
        """Serve requests until one on the redirect path finishes the consent (returned), fails
        for a reason other than a foreign state (raised as a plain error), or ``until`` passes."""
        from shared.oauth.consent import ConsentFailed, Failure

        server = self._server
        if server is None:
            raise RuntimeError("bind() first")
        caught = _Caught()
        path = self.path

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != path:
                    self._reply(404, "Not found", "This port only receives the consent redirect.")
                    return
                try:
                    caught.done = on_redirect(parts.query)
                except ConsentFailed as failure:
                    if failure.failure is not Failure.FORGED_STATE:
                        caught.failure = failure
                    self._reply(failure.status, failure.title, failure.text)
                    return
                except ExactSyncError as exc:
                    caught.failure = ConsentFailed(
                        Failure.STORE_FAILED, 503, "Consent could not be completed", str(exc), ""
                    )
                    self._reply(503, "Consent could not be completed", str(exc))
                    return
                self._reply(
                    200,
                    "Connected",
                    f"Connection {caught.done.connection!r} is connected. You can close this window "
                    "and return to the terminal.",
                )

            def _reply(self, status: int, title: str, message: str) -> None:
                from shared.web import WebResponse

                page = WebResponse.page(title, message, status)
                body = page.body.encode("utf-8") if isinstance(page.body, str) else page.body
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Referrer-Policy", "no-referrer")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the request line holds the code: never print it

        server.RequestHandlerClass = Handler
        while clock.now() < until:
            server.handle_request()
            if caught.done is not None:
                return caught.done
            if caught.failure is not None:
                failure = caught.failure
                raise ExactSyncError(f"{failure.title}: {failure.text}".strip())
        return None


# --- status ------------------------------------------------------------------------------------


def run_status(args: argparse.Namespace) -> int:
    from shared.oauth.consent import validate_connection
    from shared.runtime import current

    runtime = current()
    attach_trace(runtime, args)
    keeper = runtime.keeper
    views: list[dict[str, Any]]
    if args.connection is not None:
        name = validate_connection(args.connection)
        view = keeper.status(name)
        if view is None:
            raise ExactSyncError(
                f"no tokens are stored for connection {name!r}: run `exactsync authorize --connection {name}`"
            )
        views = [view]
    else:
        views = keeper.list_status()
    if args.json:
        payload: Any = views[0] if args.connection is not None else views
        _out(json.dumps(payload, indent=2, sort_keys=True, default=str))
    elif not views:
        _out("No connections yet: run `exactsync authorize` (or open /api/oauth/start?connection=NAME).")
    else:
        _out(format_status(views, runtime.clock.now()))
    return 1 if any(v.get("status") == "needs_reauth" for v in views) else 0


def format_status(views: list[dict[str, Any]], now: float) -> str:
    header = (
        "CONNECTION",
        "PROVIDER",
        "STATUS",
        "ACCESS TOKEN",
        "REFRESH TOKEN AGE",
        "LAST REFRESH",
        "LAST ERROR",
    )
    rows = [header]
    for view in views:
        valid_for = view.get("access_valid_for_seconds")
        access = (
            "expired"
            if isinstance(valid_for, int | float) and valid_for <= 0
            else (f"{_duration(valid_for)} left" if valid_for is not None else "-")
        )
        last = view.get("last_refresh_at") or view.get("consented_at")
        rows.append(
            (
                str(view.get("connection", "?")),
                str(view.get("provider", "?")),
                str(view.get("status", "?")),
                access,
                _duration(view.get("refresh_token_age_seconds")),
                f"{_when(last)} ({_duration(now - float(last))} ago)" if last else "-",
                str(view.get("last_error") or "-")[:80],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    value = abs(float(seconds))
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    if value < 172800:
        return f"{value / 3600:.1f}h"
    return f"{value / 86400:.1f}d"


def _when(epoch: object) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(float(epoch)))


# --- serve -------------------------------------------------------------------------------------


def run_serve(args: argparse.Namespace) -> int:
    from shared.runtime import current
    from shared.serve import host_for

    runtime = current()
    attach_trace(runtime, args)
    host = host_for(runtime, port=args.port)
    try:
        host.bind()
    except OSError as exc:
        raise ExactSyncError(f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror or exc})") from None
    _out(f"Serving function_app.py on {host.base_url} (loopback only; function keys are NOT checked):")
    for route in host.routes:
        _out(
            f"  {'/'.join(sorted(route.methods)):<5} {host.base_url}/{host.prefix}/{route.template}  ({route.name})"
        )
    loopback = loopback_address(runtime.settings.redirect_uri)
    if loopback is not None and loopback[1] != host.port:
        _out(
            f"Note: EXACT_REDIRECT_URI is {runtime.settings.redirect_uri}; the consent callback only "
            f"reaches this server if it uses port {host.port}."
        )
    _out(f"Consent: open {host.base_url}/{host.prefix}/oauth/start?connection=default   (Ctrl-C stops)")
    host.start()
    try:
        host.wait()
    except KeyboardInterrupt:
        pass
    finally:
        host.stop()
    return 0
