"""The consent rig: the sandbox, the REAL function_app.py served by ``shared.serve`` on a free
loopback port, a runtime sharing the sandbox's clock, and a "browser" (an httpx client with a
cookie jar, which honours Path/Secure like a browser does).

Secrets are planted with recognisable values so tests can prove none of them leaks.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from shared.runtime import Runtime, install
from shared.sandbox.server import SandboxHandle
from shared.serve import LocalHost, functions_of
from shared.settings import Settings
from shared.tokens import TokenRecord
from tests.oauth.sandbox_support import sandbox_clock

PLANTED_CLIENT_SECRET = "planted-CLIENT-secret-4b1f9e7d2c"
PLANTED_WEBHOOK_SECRET = "planted-WEBHOOK-secret-8e3a6c0b5f"
PLANTED_NOTIFY_URL = "http://127.0.0.1:9/planted-NOTIFY-hook-1d7c2b9a4e"
CLIENT_ID = "exactsync-test-client"

_ROOT = Path(__file__).resolve().parents[2]
_apps: list[Any] = []


def fresh_function_app() -> Any:
    """``function_app.py`` loaded as a private module: its own ``FunctionApp`` object, so
    ``get_functions()`` runs once on it whatever other tests did with ``function_app.app``."""
    name = f"_function_app_for_serve_{len(_apps)}"
    spec = importlib.util.spec_from_file_location(name, _ROOT / "function_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _apps.append(module.app)
    return module.app


_shared_functions: list[Any] = []


def served_functions() -> list[Any]:
    """The function objects of one private function_app copy, obtained once per test process."""
    if not _shared_functions:
        _shared_functions.extend(functions_of(fresh_function_app()))
    return _shared_functions


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def consent_sandbox(
    sandbox_factory: Callable[..., SandboxHandle], redirect_uri: str, **sandbox_options: Any
) -> SandboxHandle:
    """A sandbox whose one app is ours: the planted client id and secrets, ``redirect_uri``."""
    return sandbox_factory(
        client_id=CLIENT_ID,
        client_secret=PLANTED_CLIENT_SECRET,
        webhook_secret=PLANTED_WEBHOOK_SECRET,
        redirect_uri=redirect_uri,
        **sandbox_options,
    )


def app_env(sandbox: SandboxHandle, home: Path, redirect_uri: str, **extra: str) -> dict[str, str]:
    """The settings of an exactsync process registered as the sandbox's app (its environment)."""
    return {
        "EXACTSYNC_HOME": str(home),
        "EXACT_BASE_URL": sandbox.base_url,
        "EXACT_CLIENT_ID": sandbox.client_id,
        "EXACT_CLIENT_SECRET": PLANTED_CLIENT_SECRET,
        "EXACT_REDIRECT_URI": redirect_uri,
        **extra,
    }


def settings_for(sandbox: SandboxHandle, home: Path, redirect_uri: str, **extra: str) -> Settings:
    planted = {"EXACT_WEBHOOK_SECRET": PLANTED_WEBHOOK_SECRET, "NOTIFY_WEBHOOK_URL": PLANTED_NOTIFY_URL}
    return Settings.from_env(app_env(sandbox, home, redirect_uri, **{**planted, **extra}))


@dataclass
class ConsentRig:
    sandbox: SandboxHandle
    host: LocalHost
    home: Path
    redirect_uri: str
    runtime: Runtime
    browsers: list[httpx.Client] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.host.base_url

    def new_runtime(self, **extra: str) -> Runtime:
        """A runtime as another process would build it (fresh clock spec, same settings/home)."""
        return Runtime(
            settings=settings_for(self.sandbox, self.home, self.redirect_uri, **extra),
            clock=sandbox_clock(self.sandbox),
        )

    def use(self, runtime: Runtime) -> Runtime:
        self.runtime = runtime
        install(runtime)
        return runtime

    def browser(self) -> httpx.Client:
        client = httpx.Client(timeout=30, follow_redirects=False)
        self.browsers.append(client)
        return client

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = httpx.request(method, f"{self.sandbox.admin_url}/{path}", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def counters(self) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("GET", "counters")
        return result

    def stored(self, connection: str) -> TokenRecord | None:
        return self.runtime.token_store.load(connection)

    def connections(self) -> list[str]:
        return self.runtime.token_store.list_connections()

    # --- the browser's walk ------------------------------------------------------------------------

    def start(self, browser: httpx.Client, connection: str = "acme", **params: str) -> httpx.Response:
        return browser.get(f"{self.base_url}/api/oauth/start", params={"connection": connection, **params})

    def consent_redirect(self, browser: httpx.Client, connection: str = "acme") -> str:
        """Start, let the sandbox consent, and return the callback URL it redirected to."""
        started = self.start(browser, connection)
        assert started.status_code == 302, started.text
        at_provider = browser.get(started.headers["location"])
        assert at_provider.status_code == 302, at_provider.text
        location = at_provider.headers["location"]
        assert location.startswith(self.redirect_uri)
        return location

    def callback(self, browser: httpx.Client, url: str) -> httpx.Response:
        return browser.get(url)

    def consent(self, browser: httpx.Client | None = None, connection: str = "acme") -> httpx.Response:
        browser = browser or self.browser()
        return self.callback(browser, self.consent_redirect(browser, connection))


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


@contextmanager
def consent_rig(
    sandbox_factory: Callable[..., SandboxHandle], home: Path, **sandbox_options: Any
) -> Iterator[ConsentRig]:
    host = LocalHost(served_functions(), port=0).bind()
    redirect_uri = f"{host.base_url}/api/oauth/callback"
    sandbox = consent_sandbox(sandbox_factory, redirect_uri, **sandbox_options)
    runtime = Runtime(settings=settings_for(sandbox, home, redirect_uri), clock=sandbox_clock(sandbox))
    rig = ConsentRig(sandbox=sandbox, host=host, home=home, redirect_uri=redirect_uri, runtime=runtime)
    install(runtime)
    host.start()
    try:
        yield rig
    finally:
        host.stop()
        for browser in rig.browsers:
            browser.close()
        install(None)
