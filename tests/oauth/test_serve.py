"""``shared.serve``: the real function_app.py HTTP routes on loopback, and ``exactsync serve``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.sandbox.server import SandboxHandle
from shared.serve import LocalHost, compile_route, functions_of, http_routes
from tests.oauth.consent_flow import (
    PLANTED_CLIENT_SECRET,
    PLANTED_WEBHOOK_SECRET,
    app_env,
    consent_sandbox,
    free_port,
    fresh_function_app,
    served_functions,
)

ROOT = Path(__file__).resolve().parents[2]


def test_routes_of_the_real_function_app() -> None:
    routes = {route.name: route for route in http_routes(served_functions())}
    assert {"oauth_start", "oauth_callback", "connection_status"} <= set(routes)
    assert "rotate_tokens" not in routes and "load_step" not in routes  # not HTTP triggers
    assert routes["oauth_callback"].auth_level == "ANONYMOUS"
    assert routes["oauth_start"].auth_level == "FUNCTION"
    assert routes["connection_status"].methods == frozenset({"GET"})
    assert routes["connection_status"].match("/api/connections/acme-nl") == {"name": "acme-nl"}
    assert routes["connection_status"].match("/api/connections/a/b") is None
    assert routes["oauth_start"].match("/API/OAuth/Start") == {}
    assert routes["oauth_start"].match("/api/oauth/startx") is None


def test_route_templates() -> None:
    assert compile_route("items/{id?}").fullmatch("/api/items") is not None
    assert compile_route("items/{id?}").fullmatch("/api/items/7") is not None
    assert compile_route("files/{*path}").fullmatch("/api/files/a/b/c") is not None
    assert compile_route("n/{x:int}", prefix="").fullmatch("/n/5") is not None


def test_functions_are_taken_from_the_app_once() -> None:
    app = fresh_function_app()
    first = functions_of(app)
    assert functions_of(app) is first  # a second get_functions() would raise in 1.26
    with pytest.raises(ValueError, match="unique function name"):
        app.get_functions()


# --- the host with a small app of the test's own --------------------------------------------------


def _echo_app() -> Any:
    import azure.functions as func

    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="echo/{name}", methods=["GET", "POST"])
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        payload = {
            "method": req.method,
            "url": req.url,
            "params": dict(req.params),
            "route": dict(req.route_params),
            "cookie": req.headers.get("cookie"),
            "body": req.get_body().decode(),
        }
        return func.HttpResponse(
            json.dumps(payload), mimetype="application/json", headers={"Set-Cookie": "a=b; Path=/"}
        )

    @app.route(route="boom", methods=["GET"])
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("a function failed")

    return app


class _Loop:
    name = "probe"

    def __init__(self) -> None:
        self.started = threading.Event()
        self.stopped = threading.Event()

    def run(self, stop: threading.Event) -> None:
        self.started.set()
        stop.wait()
        self.stopped.set()


@pytest.fixture
def echo_host() -> Iterator[tuple[LocalHost, _Loop]]:
    loop = _Loop()
    host = LocalHost(functions_of(_echo_app()), port=0, loops=[loop]).start()
    try:
        yield host, loop
    finally:
        host.stop()
    assert loop.stopped.is_set()


def test_request_is_built_like_the_host_does(echo_host: tuple[LocalHost, _Loop]) -> None:
    host, loop = echo_host
    assert loop.started.wait(5)
    answer = httpx.post(
        f"{host.base_url}/api/echo/some%20one?code=ab%2521cd&x=1&x=2&empty=",
        content=b"payload",
        headers={"Cookie": "k=v"},
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["set-cookie"] == "a=b; Path=/"
    seen = answer.json()
    # query parameters decoded exactly once: %2521 -> %21, never '!'
    assert seen["params"] == {"code": "ab%21cd", "x": "1", "empty": ""}
    assert seen["route"] == {"name": "some one"}
    assert seen["method"] == "POST" and seen["body"] == "payload" and seen["cookie"] == "k=v"
    assert seen["url"] == f"{host.base_url}/api/echo/some%20one?code=ab%2521cd&x=1&x=2&empty="


def test_unknown_route_wrong_method_and_failing_function(echo_host: tuple[LocalHost, _Loop]) -> None:
    host, _ = echo_host
    assert httpx.get(f"{host.base_url}/api/nothing").status_code == 404
    wrong = httpx.delete(f"{host.base_url}/api/echo/x")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, POST"
    failed = httpx.get(f"{host.base_url}/api/boom")
    assert failed.status_code == 500 and "a function failed" not in failed.text


# --- `exactsync serve` as its own process ---------------------------------------------------------


def test_exactsync_serve_runs_the_consent_end_to_end(
    sandbox_factory: Callable[..., SandboxHandle], tmp_path: Path
) -> None:
    port = free_port()
    redirect_uri = f"http://127.0.0.1:{port}/api/oauth/callback"
    sandbox = consent_sandbox(sandbox_factory, redirect_uri)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("EXACT", "AzureWebJobs"))},
        **app_env(sandbox, tmp_path / "home", redirect_uri, EXACT_WEBHOOK_SECRET=PLANTED_WEBHOOK_SECRET),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/api/connections/acme", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "exactsync serve did not come up"
                time.sleep(0.1)
        with httpx.Client(timeout=30, follow_redirects=True) as browser:
            page = browser.get(f"{base}/api/oauth/start", params={"connection": "acme"})
            assert page.status_code == 200 and "Connected" in page.text
            assert [r.status_code for r in page.history] == [302, 302]
            status = browser.get(f"{base}/api/connections/acme")
            assert status.status_code == 200 and status.json()["status"] == "ok"
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "function keys are NOT checked" in out
    assert f"{base}/api/oauth/start" in out and "connections/{name}" in out
    assert PLANTED_CLIENT_SECRET not in out + err
