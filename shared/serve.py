"""``exactsync serve``: host the real ``function_app.py`` HTTP routes on 127.0.0.1.

Core Tools (the Functions host) cannot be installed everywhere, and the consent flow needs a
browser to reach ``/api/oauth/start`` and ``/api/oauth/callback``. This module is a small stand-in
for the host's HTTP side: it takes the decorated function objects from ``app.get_functions()``
(once per app: azure-functions 1.26 refuses a second call), matches the incoming path against
each HTTP trigger's route (``{name}`` parameters included, under the host's ``api`` prefix),
builds an ``azure.functions.HttpRequest`` the way the host does (query parameters URL-decoded
exactly once) and calls the user function, so what runs is the code Azure runs.

Differences from the real host, on purpose: it listens on loopback only and checks no function
keys (``AuthLevel.FUNCTION`` routes are open to whoever can reach 127.0.0.1).

Beside the HTTP server it runs ``background_loops``: the app's timers and its queue trigger, as
``shared.sync.background`` emulates them (each a ``BackgroundLoop``: a name and a ``run(stop)``
that returns when ``stop`` is set).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from shared.settings import LOCAL_SERVE_PORT

if TYPE_CHECKING:
    import azure.functions as func

    from shared.runtime import Runtime

log = logging.getLogger("exactsync.serve")

DEFAULT_ROUTE_PREFIX = "api"
LOOPBACK = "127.0.0.1"
_MAX_BODY = 4 * 1024 * 1024


class BackgroundLoop(Protocol):
    """Something the local host runs beside the HTTP server (a timer, a queue poller)."""

    name: str

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set, then return promptly."""
        ...


# --- the function app's functions, obtained once ----------------------------------------------

_functions: dict[int, tuple[Any, list[Any]]] = {}
_functions_guard = threading.Lock()


def functions_of(app: Any) -> list[Any]:
    """``app.get_functions()``, called once per app object and remembered (1.26 raises on a
    second call: "does not have a unique function name")."""
    with _functions_guard:
        cached = _functions.get(id(app))
        if cached is None or cached[0] is not app:
            cached = (app, list(app.get_functions()))
            _functions[id(app)] = cached
        return cached[1]


def route_prefix(app_root: Path | None = None) -> str:
    """The host's route prefix: ``extensions.http.routePrefix`` in host.json, else ``api``."""
    root = app_root or Path(__file__).resolve().parent.parent
    try:
        config = json.loads((root / "host.json").read_text(encoding="utf-8"))
        prefix = config["extensions"]["http"]["routePrefix"]
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_ROUTE_PREFIX
    return str(prefix).strip("/") if isinstance(prefix, str) else DEFAULT_ROUTE_PREFIX


# --- routes ------------------------------------------------------------------------------------

_PARAM = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(\?)?(?::[^}]*)?\}")


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP trigger: its route template compiled to a pattern, and the user function."""

    name: str
    template: str
    methods: frozenset[str]
    auth_level: str
    pattern: re.Pattern[str]
    handler: Callable[[func.HttpRequest], func.HttpResponse]

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        return {key: unquote(value) for key, value in found.groupdict().items() if value is not None}


def compile_route(template: str, prefix: str = DEFAULT_ROUTE_PREFIX) -> re.Pattern[str]:
    """``connections/{name}`` -> a pattern matching ``/api/connections/acme`` (ASP.NET style:
    literals case-insensitive, ``{x}`` one segment, ``{x?}`` optional, ``{*x}`` the rest)."""
    full = "/".join(part for part in (prefix.strip("/"), template.strip("/")) if part)
    pattern = ""
    position = 0
    for found in _PARAM.finditer(full):
        pattern += re.escape(full[position : found.start()])
        catch_all, name, optional = found.group(1), found.group(2), found.group(3)
        body = r".*" if catch_all else r"[^/]+"
        if optional and pattern.endswith("/"):
            pattern = pattern[:-1] + f"(?:/(?P<{name}>{body}))?"
        else:
            pattern += f"(?P<{name}>{body})" + ("?" if optional else "")
        position = found.end()
    pattern += re.escape(full[position:])
    return re.compile("/" + pattern + "/?", re.IGNORECASE)


def http_routes(functions: Iterable[Any], prefix: str = DEFAULT_ROUTE_PREFIX) -> list[HttpRoute]:
    routes: list[HttpRoute] = []
    for function in functions:
        trigger = function.get_trigger()
        if type(trigger).__name__ != "HttpTrigger":
            continue
        template = trigger.route or function.get_function_name()
        methods = frozenset(str(getattr(m, "value", m)).upper() for m in (trigger.methods or ["GET", "POST"]))
        level = getattr(trigger, "auth_level", None)
        routes.append(
            HttpRoute(
                name=function.get_function_name(),
                template=template,
                methods=methods,
                auth_level=str(getattr(level, "name", level or "FUNCTION")),
                pattern=compile_route(template, prefix),
                handler=function.get_user_function(),
            )
        )
    # literal routes before parameterised ones, as the host's router prefers them
    return sorted(routes, key=lambda r: (r.template.count("{"), -len(r.template)))


def background_loops(runtime: Runtime, functions: Sequence[Any]) -> list[BackgroundLoop]:
    """Loops run beside the HTTP routes: every timer trigger (``rotate_tokens``,
    ``schedule_syncs``) on its schedule, the queue trigger (``load_step``) on the load queue."""
    from shared.sync.background import loops_for

    return list(loops_for(runtime, functions))


# --- the server --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class LocalHost:
    """The HTTP routes of a function app on loopback, plus any background loops."""

    def __init__(
        self,
        functions: Sequence[Any],
        *,
        port: int = LOCAL_SERVE_PORT,
        host: str = LOOPBACK,
        prefix: str = DEFAULT_ROUTE_PREFIX,
        loops: Sequence[BackgroundLoop] = (),
    ) -> None:
        self.routes = http_routes(functions, prefix)
        self.prefix = prefix
        self.loops = list(loops)
        self._requested = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------------

    def bind(self) -> LocalHost:
        if self._server is None:
            self._server = ThreadingHTTPServer(self._requested, _handler_for(self))
            self._server.daemon_threads = True
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not bound")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._requested[0]}:{self.port}"

    def start(self) -> LocalHost:
        """Serve in background threads (tests, and the CLI's foreground loop)."""
        server = self.bind()._server
        assert server is not None
        self._stop.clear()
        self._spawn("http", functools.partial(server.serve_forever, 0.05))
        for loop in self.loops:
            self._spawn(loop.name, functools.partial(loop.run, self._stop))
        return self

    def wait(self) -> None:
        """Block until ``stop`` (or Ctrl-C in the caller)."""
        while not self._stop.wait(0.5):
            pass

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def __enter__(self) -> LocalHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"exactsync-serve-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- one request -----------------------------------------------------------------------------

    def dispatch(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
        """Route one request and call the function, as the host would."""
        import azure.functions as func

        parts = urlsplit(target)
        path = parts.path or "/"
        allowed: set[str] = set()
        for route in self.routes:
            route_params = route.match(path)
            if route_params is None:
                continue
            if method.upper() not in route.methods:
                allowed |= route.methods
                continue
            host_header = _header(headers, "host") or f"{self._requested[0]}:{self.port}"
            request = func.HttpRequest(
                method=method.upper(),
                url=f"http://{host_header}{target}",
                headers=_merged(headers),
                params=_params(parts.query),
                route_params=route_params,
                body=body,
            )
            try:
                response = route.handler(request)
            except Exception:
                log.exception("function %s failed", route.name)
                return _plain(500, "internal error: the function raised (see the serve log)")
            return _answer(response)
        if allowed:
            answer = _plain(405, "method not allowed")
            answer.headers.append(("Allow", ", ".join(sorted(allowed))))
            return answer
        return _plain(404, "no function has this route")


def _handler_for(host: LocalHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "exactsync-serve"
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                self._send(_plain(413, "request body too large"))
                return
            body = self.rfile.read(length) if length else b""
            answer = host.dispatch(self.command, self.path, list(self.headers.items()), body)
            self._send(answer)

        def _send(self, answer: Answer) -> None:
            self.send_response(answer.status)
            for name, value in answer.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

        def log_message(self, format: str, *args: Any) -> None:
            # the request line may hold a code or a state: log the path only
            log.info("%s %s -> %s", self.command, urlsplit(self.path).path, args[1] if len(args) > 1 else "")

    return Handler


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _merged(headers: list[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for key, value in headers:
        lower = key.lower()
        if lower in merged:
            merged[lower] += ("; " if lower == "cookie" else ", ") + value
        else:
            merged[lower] = value
    return merged


def _params(query: str) -> dict[str, str]:
    """Query parameters decoded once (the host's ``req.params``); the first of a repeated one."""
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(key, value)
    return params


def _answer(response: func.HttpResponse) -> Answer:
    headers = [(str(k), str(v)) for k, v in response.headers.items()]
    if not any(k.lower() == "content-type" for k, _ in headers):
        mimetype = response.mimetype or "text/plain"
        charset = response.charset or "utf-8"
        headers.append(("Content-Type", f"{mimetype}; charset={charset}"))
    return Answer(int(response.status_code), headers, response.get_body() or b"")


def _plain(status: int, text: str) -> Answer:
    return Answer(status, [("Content-Type", "text/plain; charset=utf-8")], text.encode("utf-8"))


def host_for(
    runtime: Runtime, *, port: int = LOCAL_SERVE_PORT, app: Any = None, host: str = LOOPBACK
) -> LocalHost:
    """A local host for ``app`` (default: ``function_app.app``) serving ``runtime``.

    ``runtime`` is installed as the process runtime, because the triggers call
    ``shared.runtime.current()`` exactly as they do under the Functions host.
    """
    from shared.runtime import install

    if app is None:
        import function_app

        app = function_app.app
    install(runtime)
    functions = functions_of(app)
    return LocalHost(
        functions, port=port, host=host, prefix=route_prefix(), loops=background_loops(runtime, functions)
    )
