"""Webhook deliveries from the sandbox (an independent signer) verified by our parser."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from shared.exact.webhooks import InvalidSignature, is_validation_request, verify_delivery
from shared.sandbox.server import SandboxHandle
from shared.settings import LOCAL_WEBHOOK_SECRET
from tests.exact.sandbox_support import admin
from tests.fixtures.sandbox import obtain_tokens


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[bytes] = []
        self.arrived = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/webhooks/exact"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.bodies) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.bodies)} of {count} webhook bodies arrived")
                self.arrived.wait(left)
            return list(self.bodies)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        with self.server.arrived:
            self.server.bodies.append(body)
            self.server.arrived.notify_all()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_sandbox_deliveries_verify_and_parse(sandbox: SandboxHandle, receiver: Receiver) -> None:
    division = sandbox.divisions[0]
    token = obtain_tokens(sandbox)["access_token"]
    created = httpx.post(
        f"{sandbox.base_url}/api/v1/{division}/webhooks/WebhookSubscriptions",
        json={"CallbackURL": receiver.url, "Topic": "Accounts"},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    assert created.status_code == 201, created.text
    validation = receiver.wait_for(1)[0]
    assert is_validation_request(validation)

    changed = admin(
        sandbox, "POST", "mutate", {"division": division, "entity": "Accounts", "update": 1, "insert": 1}
    )
    bodies = receiver.wait_for(3)[1:]
    events = [verify_delivery(body, LOCAL_WEBHOOK_SECRET) for body in bodies]
    assert {(e.action, e.key) for e in events} == {
        ("Update", changed["updated"][0].lower()),
        ("Create", changed["inserted"][0].lower()),
    }
    for event in events:
        assert event.topic == "Accounts"
        assert event.division == division
        assert event.endpoint is not None
        assert event.endpoint.startswith(f"{sandbox.base_url}/api/v1/{division}/crm/Accounts(guid'")
        assert not is_validation_request(bodies[0])
    with pytest.raises(InvalidSignature):
        verify_delivery(bodies[0], "not-the-webhook-secret")
    tampered = bodies[0].replace(str(division).encode(), str(division + 1).encode(), 1)
    with pytest.raises(InvalidSignature):
        verify_delivery(tampered, LOCAL_WEBHOOK_SECRET)
