"""Webhook subscriptions and signed deliveries.

Creating a subscription makes the sandbox POST an empty body to the callback first, as Exact
does; anything but a 2xx answer fails the creation. Callbacks must be https on the registered
redirect URI's host (http on a loopback host only when the registered redirect URI is loopback).
Deliveries carry no row data, only what changed, signed with the app's webhook secret:
``HashCode = UPPER(hex(HMAC-SHA256(secret, raw Content JSON)))``. They are sent from one
background thread so a slow receiver never holds up the change that caused them.
"""

from __future__ import annotations

import hashlib
import hmac
import queue
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from shared.clock import Clock
from shared.sandbox import entities as E
from shared.sandbox.api import GUID_KEY, WEBHOOKS_PATH, Request
from shared.sandbox.counters import Counters
from shared.sandbox.dates import wall_iso, wall_ms
from shared.sandbox.oauth import AppRegistration, Grant, is_loopback
from shared.sandbox.odata import JSON_TYPE, ODataError
from shared.sandbox.reply import Reply

if TYPE_CHECKING:
    from shared.sandbox.server import Sandbox

DELIVERY_TIMEOUT = 5.0
VALIDATION_TIMEOUT = 10.0


@dataclass
class Subscription:
    id: str
    division: int
    topic: str
    callback: str
    user: str
    created_ms: int
    description: str | None


def sign(secret: str, content: bytes) -> str:
    return hmac.new(secret.encode(), content, hashlib.sha256).hexdigest().upper()


def _post(url: str, body: bytes, timeout: float) -> int:
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("only http(s) callbacks")
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310 (checked above)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class Webhooks:
    def __init__(self, app: AppRegistration, clock: Clock, counters: Counters) -> None:
        self.app = app
        self.clock = clock
        self.counters = counters
        self._lock = threading.Lock()
        self._subs: dict[str, Subscription] = {}
        self._queue: queue.Queue[tuple[str, bytes, dict[str, Any]] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self.log: list[dict[str, Any]] = []

    def callback_problem(self, url: str) -> str | None:
        parts = urlsplit(url)
        registered = urlsplit(self.app.redirect_uri)
        if parts.scheme == "http" and is_loopback(url) and is_loopback(self.app.redirect_uri):
            return None
        if parts.scheme != "https":
            return "The CallbackURL must use https."
        host, domain = (parts.hostname or "").lower(), (registered.hostname or "").lower()
        if host != domain and not host.endswith("." + domain):
            return "The CallbackURL must be on the domain of the app's redirect URI."
        return None

    def create(
        self, division: int, user: str, topic: str, callback: str, description: str | None
    ) -> Subscription:
        """Validate by POSTing an empty body to the callback; raise ``ValueError`` if it fails."""
        with self._lock:
            for sub in self._subs.values():
                if sub.division == division and sub.topic == topic and sub.callback == callback:
                    raise ValueError("A subscription for this topic and callback already exists.")
        self.counters.add("webhook_validations")
        try:
            status = _post(callback, b"", VALIDATION_TIMEOUT)
        except (OSError, ValueError) as exc:
            raise ValueError(f"The CallbackURL could not be reached: {type(exc).__name__}.") from None
        if not 200 <= status < 300:
            raise ValueError(f"The CallbackURL answered {status} to the validation request.")
        sub = Subscription(
            str(uuid.uuid4()), division, topic, callback, user, wall_ms(self.clock.now()), description
        )
        with self._lock:
            self._subs[sub.id] = sub
        return sub

    def list(self, division: int) -> list[Subscription]:
        with self._lock:
            return [s for s in self._subs.values() if s.division == division]

    def get(self, division: int, sub_id: str) -> Subscription | None:
        with self._lock:
            sub = self._subs.get(sub_id.lower())
            return sub if sub is not None and sub.division == division else None

    def delete(self, division: int, sub_id: str) -> bool:
        with self._lock:
            sub = self._subs.get(sub_id.lower())
            if sub is None or sub.division != division:
                return False
            del self._subs[sub.id]
            return True

    def notify(self, division: int, topic: str, action: str, key: str, endpoint: str) -> int:
        """Queue a delivery to every subscriber of ``topic`` in ``division``; never blocks."""
        with self._lock:
            targets = [s for s in self._subs.values() if s.division == division and s.topic == topic]
        if not targets:
            return 0
        content = {
            "Topic": topic,
            "ClientId": self.app.client_id,
            "Division": division,
            "Action": action,
            "Key": key,
            "ExactOnlineEndpoint": endpoint,
            "EventCreatedOn": wall_iso(wall_ms(self.clock.now())),
        }
        raw = orjson.dumps(content)
        body = b'{"Content":' + raw + b',"HashCode":"' + sign(self.app.webhook_secret, raw).encode() + b'"}'
        self._ensure_worker()
        for sub in targets:
            self._queue.put(
                (sub.callback, body, {"topic": topic, "action": action, "key": key, "division": division})
            )
        return len(targets)

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._deliver_forever, name="sandbox-webhooks", daemon=True
                )
                self._worker.start()

    def _deliver_forever(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            url, body, info = job
            entry: dict[str, Any] = {"at": self.clock.now(), "url": url, **info}
            try:
                entry["status"] = _post(url, body, DELIVERY_TIMEOUT)
            except (OSError, ValueError) as exc:
                entry["status"] = None
                entry["error"] = type(exc).__name__
            ok = entry["status"] is not None and 200 <= entry["status"] < 300
            self.counters.add("webhook_deliveries" if ok else "webhook_delivery_failures")
            with self._lock:
                self.log.append(entry)
                del self.log[:-1000]

    def pending(self) -> int:
        return self._queue.qsize()

    def stop(self) -> None:
        if self._worker is not None:
            self._queue.put(None)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "subscriptions": [
                    {"id": s.id, "division": s.division, "topic": s.topic, "callback": s.callback}
                    for s in self._subs.values()
                ],
                "deliveries": list(self.log),
                "pending": self._queue.qsize(),
            }


class WebhookApi:
    """``webhooks/WebhookSubscriptions``: POST creates (validating the callback), GET lists, DELETE removes."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox

    def _row(self, sub: Any) -> dict[str, Any]:
        return {
            "__metadata": {
                "uri": f"{self.sb.base_url}/api/v1/{sub.division}/{WEBHOOKS_PATH}(guid'{sub.id}')",
                "type": "Exact.Web.Api.Models.Webhooks.WebhookSubscription",
            },
            "ID": sub.id,
            "CallbackURL": sub.callback,
            "ClientID": self.sb.app.client_id,
            "Created": f"/Date({sub.created_ms})/",
            "Description": sub.description,
            "Division": sub.division,
            "Topic": sub.topic,
            "UserID": sub.user,
        }

    def handle(self, req: Request, grant: Grant, division: int, key: str | None) -> Reply:
        sub_id = None
        if key is not None:
            found = GUID_KEY.match(key)
            if not found:
                raise ODataError(400, f"Bad Request - Error in query syntax: '{key}' is not a guid key.")
            sub_id = found.group(1)
        if req.method == "GET":
            return self._get(division, sub_id)
        if req.method == "DELETE" and sub_id is not None:
            if not self.sb.webhooks.delete(division, sub_id):
                raise ODataError(404, "Resource not found for the segment 'WebhookSubscriptions'.")
            return Reply(204)
        if req.method == "POST" and sub_id is None:
            return self._create(req, grant, division)
        allow = "GET, POST" if sub_id is None else "GET, DELETE"
        raise ODataError(
            405,
            f"The requested resource does not support http method '{req.method}' "
            "(webhook subscriptions cannot be updated).",
            allow=allow,
        )

    def _get(self, division: int, sub_id: str | None) -> Reply:
        if sub_id is None:
            rows = [self._row(s) for s in self.sb.webhooks.list(division)]
            return Reply(200, orjson.dumps({"d": {"results": rows}}), JSON_TYPE)
        sub = self.sb.webhooks.get(division, sub_id)
        if sub is None:
            raise ODataError(404, "Resource not found for the segment 'WebhookSubscriptions'.")
        return Reply(200, orjson.dumps({"d": self._row(sub)}), JSON_TYPE)

    def _create(self, req: Request, grant: Grant, division: int) -> Reply:
        content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ODataError(400, "The request body must be JSON (Content-Type: application/json).")
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            raise ODataError(400, "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ODataError(400, "The request body must be a JSON object.")
        unknown = set(body) - {"CallbackURL", "Topic", "Description"}
        if unknown:
            raise ODataError(
                400, f"The property '{sorted(unknown)[0]}' does not exist on type 'WebhookSubscription'."
            )
        callback, topic, description = body.get("CallbackURL"), body.get("Topic"), body.get("Description")
        if not isinstance(callback, str) or not callback:
            raise ODataError(400, "CallbackURL is required.")
        if not isinstance(topic, str) or topic not in E.KNOWN_TOPICS:
            raise ODataError(400, f"Topic {topic!r} is not a known webhook topic.")
        problem = self.sb.webhooks.callback_problem(callback)
        if problem:
            raise ODataError(400, problem)
        try:
            sub = self.sb.webhooks.create(
                division, grant.user, topic, callback, description if isinstance(description, str) else None
            )
        except ValueError as exc:
            raise ODataError(400, str(exc)) from None
        return Reply(201, orjson.dumps({"d": self._row(sub)}), JSON_TYPE)
