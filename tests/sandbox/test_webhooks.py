"""Webhook subscriptions (with Exact's empty validation POST) and signed deliveries."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest

from shared.sandbox.server import SandboxHandle
from tests.fixtures.sandbox import obtain_tokens
from tests.sandbox.conftest import Api, Factory, error_text


class Receiver:
    """A webhook receiver on 127.0.0.1 that records what it is sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.status = 200
        self.delay = 0.0
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(receiver.delay)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver.arrived:
                    receiver.requests.append((self.path, dict(self.headers.items()), body))
                    receiver.arrived.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/webhooks/exact"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[str, dict[str, str], bytes]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def subscribe(api: Api, callback: str, topic: str = "Accounts", **extra: Any) -> httpx.Response:
    return api.http.post(
        f"{api.handle.base_url}/api/v1/{api.division}/webhooks/WebhookSubscriptions",
        json={"CallbackURL": callback, "Topic": topic, **extra},
        headers={**api.auth, "Accept": "application/json"},
    )


def test_creation_posts_an_empty_body_to_the_callback_first(api: Api, receiver: Receiver) -> None:
    created = subscribe(api, receiver.url)
    assert created.status_code == 201, created.text
    row = created.json()["d"]
    assert (
        row["CallbackURL"] == receiver.url and row["Topic"] == "Accounts" and row["Division"] == api.division
    )
    (validation,) = receiver.wait_for(1)
    assert validation[0] == "/api/webhooks/exact" and validation[2] == b""
    listed = api.get("webhooks/WebhookSubscriptions").json()["d"]["results"]
    assert [s["ID"] for s in listed] == [row["ID"]]
    assert (
        api.get("webhooks/WebhookSubscriptions", division=api.handle.divisions[1]).json()["d"]["results"]
        == []
    )
    deleted = api.http.delete(
        f"{api.handle.base_url}/api/v1/{api.division}/webhooks/WebhookSubscriptions(guid'{row['ID']}')",
        headers={**api.auth, "Accept": "application/json"},
    )
    assert deleted.status_code == 204
    assert api.get("webhooks/WebhookSubscriptions").json()["d"]["results"] == []


def test_creation_fails_when_the_callback_does_not_answer_2xx(api: Api, receiver: Receiver) -> None:
    receiver.status = 500
    answer = subscribe(api, receiver.url)
    assert answer.status_code == 400 and "500" in error_text(answer)
    assert api.get("webhooks/WebhookSubscriptions").json()["d"]["results"] == []
    unreachable = subscribe(api, "http://127.0.0.1:9/nothing-listens-here")
    assert unreachable.status_code == 400


def test_callbacks_must_be_https_on_the_redirect_uris_domain(
    sandbox_factory: Factory, http: httpx.Client
) -> None:
    handle: SandboxHandle = sandbox_factory(redirect_uri="https://app.example.com/api/oauth/callback")
    api = Api(handle, http, obtain_tokens(handle, http))
    plain = subscribe(api, "http://127.0.0.1:8080/hook")
    assert plain.status_code == 400 and "https" in error_text(plain)
    elsewhere = subscribe(api, "https://evil.example.net/hook")
    assert elsewhere.status_code == 400 and "domain" in error_text(elsewhere)


def test_bad_subscription_requests(api: Api, receiver: Receiver) -> None:
    assert subscribe(api, receiver.url, topic="Nonsense").status_code == 400
    assert subscribe(api, receiver.url, Extra=1).status_code == 400
    assert subscribe(api, "").status_code == 400
    form = api.http.post(
        f"{api.handle.base_url}/api/v1/{api.division}/webhooks/WebhookSubscriptions",
        data={"CallbackURL": receiver.url, "Topic": "Accounts"},
        headers={**api.auth, "Accept": "application/json"},
    )
    assert form.status_code == 400
    assert subscribe(api, receiver.url).status_code == 201
    assert subscribe(api, receiver.url).status_code == 400  # the same subscription twice


def test_changes_are_delivered_signed(api: Api, receiver: Receiver) -> None:
    assert subscribe(api, receiver.url, topic="Accounts").status_code == 201
    assert subscribe(api, receiver.url, topic="Items").status_code == 201
    result = api.admin(
        "POST",
        "mutate",
        {"division": api.division, "entity": "Accounts", "insert": 1, "update": 1, "delete": 1},
    )
    assert result["webhooks_queued"] == 3
    deliveries = receiver.wait_for(2 + 3)[2:]
    assert len(deliveries) == 3
    actions = {}
    for _path, headers, body in deliveries:
        assert headers["Content-Type"] == "application/json"
        raw_content = body[len(b'{"Content":') : body.rindex(b',"HashCode":')]
        parsed = orjson.loads(body)
        expected = (
            hmac.new(api.handle.app.webhook_secret.encode(), raw_content, hashlib.sha256).hexdigest().upper()
        )
        assert parsed["HashCode"] == expected and len(expected) == 64
        content = parsed["Content"]
        assert content["Topic"] == "Accounts" and content["ClientId"] == api.handle.client_id
        assert content["Division"] == api.division
        assert content["ExactOnlineEndpoint"] == (
            f"{api.handle.base_url}/api/v1/{api.division}/crm/Accounts(guid'{content['Key']}')"
        )
        actions[content["Action"]] = content["Key"]
    assert actions == {
        "Create": result["inserted"][0],
        "Update": result["updated"][0],
        "Delete": result["deleted"][0],
    }
    # the endpoint the delivery names answers for the live rows
    assert api.get(f"crm/Accounts(guid'{actions['Update']}')", {"$select": "ID"}).status_code == 200
    assert api.get(f"crm/Accounts(guid'{actions['Delete']}')", {"$select": "ID"}).status_code == 404


def test_a_slow_receiver_never_holds_up_the_change(api: Api, receiver: Receiver) -> None:
    assert subscribe(api, receiver.url).status_code == 201
    receiver.delay = 0.6
    started = time.perf_counter()
    api.admin("POST", "mutate", {"division": api.division, "entity": "Accounts", "update": 2})
    assert time.perf_counter() - started < 0.4
    assert len(receiver.wait_for(3, timeout=5)) == 3
