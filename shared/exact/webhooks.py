"""Exact Online webhook deliveries: the validation POST, signature verification, parsing.

A delivery is ``{"Content": {...}, "HashCode": "<64 upper-case hex>"}`` where HashCode is
``UPPER(hex(HMAC-SHA256(webhook secret, raw JSON text of the Content value)))``. The HMAC covers
the *bytes as sent*, so this module never re-serialises ``Content``: it walks the top-level
object of the raw body and slices out the exact span of the ``Content`` value (whitespace, key
order and escapes included), then compares digests in constant time. Only after the signature
holds are the fields read: unauthenticated content is never trusted.

When a subscription is created, Exact POSTs an empty body to the callback and expects a 2xx:
``is_validation_request`` recognises it.

Cheap to import (stdlib only): the webhook trigger runs on cold instances.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from shared.errors import ConfigError
from shared.exact.errors import InvalidSignature, MalformedWebhook

_HASH = re.compile(r"[0-9A-Fa-f]{64}", re.ASCII)
_GUID = re.compile(
    r"\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?", re.ASCII
)
_WS = " \t\r\n"
_DECODER = json.JSONDecoder()
#: Exact's deliveries are a few hundred bytes; anything far larger is not one.
MAX_BODY_BYTES = 64 * 1024

__all__ = [
    "InvalidSignature",
    "MalformedWebhook",
    "WebhookEvent",
    "content_span",
    "is_validation_request",
    "sign_content",
    "verify_delivery",
]


@dataclass(frozen=True)
class WebhookEvent:
    """One verified delivery. No row data: the receiver reads ``endpoint`` itself."""

    topic: str
    division: int
    action: str
    #: the changed record's key, lower-case GUID
    key: str
    client_id: str | None
    #: ``ExactOnlineEndpoint``: the record's API URL
    endpoint: str | None
    event_created_on: str | None
    #: the verified HashCode, unique per delivery content: a natural de-duplication key
    hash_code: str
    content: dict[str, Any]


def is_validation_request(raw_body: bytes) -> bool:
    """Exact's subscription check: a POST with an empty body (whitespace at most), answer 2xx."""
    return not raw_body.strip()


def sign_content(content_text: bytes, secret: str) -> str:
    """``UPPER(hex(HMAC-SHA256(secret, content_text)))``: how Exact signs (tests, sandbox)."""
    return hmac.new(secret.encode("utf-8"), content_text, hashlib.sha256).hexdigest().upper()


def _skip_ws(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WS:
        index += 1
    return index


def _top_level_spans(text: str) -> dict[str, tuple[int, int]]:
    """The ``(start, end)`` character span of each top-level member's value, in the raw text."""
    index = _skip_ws(text, 0)
    if index >= len(text) or text[index] != "{":
        raise MalformedWebhook("body is not a JSON object")
    spans: dict[str, tuple[int, int]] = {}
    index = _skip_ws(text, index + 1)
    if index < len(text) and text[index] == "}":
        index += 1
    else:
        while True:
            if index >= len(text) or text[index] != '"':
                raise MalformedWebhook("body is not valid JSON (expected a member name)")
            key, index = _DECODER.raw_decode(text, index)
            index = _skip_ws(text, index)
            if index >= len(text) or text[index] != ":":
                raise MalformedWebhook("body is not valid JSON (expected ':')")
            start = _skip_ws(text, index + 1)
            _value, end = _DECODER.raw_decode(text, start)
            if key in spans:
                raise MalformedWebhook(f"body has the member {key!r} twice")
            spans[key] = (start, end)
            index = _skip_ws(text, end)
            if index < len(text) and text[index] == ",":
                index = _skip_ws(text, index + 1)
                continue
            if index < len(text) and text[index] == "}":
                index += 1
                break
            raise MalformedWebhook("body is not valid JSON (expected ',' or '}')")
    if _skip_ws(text, index) != len(text):
        raise MalformedWebhook("body has data after the JSON object")
    return spans


def content_span(raw_body: bytes) -> tuple[bytes, str]:
    """The raw bytes of the ``Content`` value exactly as sent, and the ``HashCode`` string."""
    if len(raw_body) > MAX_BODY_BYTES:
        raise MalformedWebhook(f"body of {len(raw_body)} bytes is too large for a webhook delivery")
    try:
        text = raw_body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedWebhook("body is not UTF-8 text") from None
    if text.startswith("\ufeff"):
        raise MalformedWebhook("body starts with a byte-order mark; not a delivery")
    try:
        spans = _top_level_spans(text)
    except ValueError as exc:  # json.JSONDecodeError from raw_decode
        raise MalformedWebhook(f"body is not valid JSON ({exc.args[0] if exc.args else exc})") from None
    if "Content" not in spans:
        raise MalformedWebhook("body has no Content member")
    if "HashCode" not in spans:
        raise MalformedWebhook("body has no HashCode member")
    start, end = spans["Content"]
    if text[start] != "{":
        raise MalformedWebhook("Content is not a JSON object")
    hash_start, hash_end = spans["HashCode"]
    hash_code = json.loads(text[hash_start:hash_end])
    if not isinstance(hash_code, str) or not _HASH.fullmatch(hash_code):
        raise MalformedWebhook("HashCode is not 64 hexadecimal characters")
    return text[start:end].encode("utf-8"), hash_code


def verify_delivery(raw_body: bytes, secret: str) -> WebhookEvent:
    """Verify a delivery's signature on the raw body and return its event.

    Raises ``MalformedWebhook`` (not a delivery; the reason says why), ``InvalidSignature``
    (HashCode does not match) or ``ConfigError`` (no secret configured). Messages hold no
    secret and no expected digest.
    """
    if not secret:
        raise ConfigError("EXACT_WEBHOOK_SECRET is empty: webhook deliveries cannot be verified")
    if is_validation_request(raw_body):
        raise MalformedWebhook("empty body: a subscription validation request, not a delivery")
    content_bytes, hash_code = content_span(raw_body)
    expected = sign_content(content_bytes, secret)
    if not hmac.compare_digest(expected.encode("ascii"), hash_code.encode("ascii")):
        raise InvalidSignature("HashCode does not match the Content signed with the webhook secret")
    content = json.loads(content_bytes)
    return _event(content, hash_code)


def _event(content: dict[str, Any], hash_code: str) -> WebhookEvent:
    def required(name: str) -> str:
        value = content.get(name)
        if not isinstance(value, str) or not value:
            raise MalformedWebhook(f"Content.{name} is missing or not a string")
        return value

    def optional(name: str) -> str | None:
        value = content.get(name)
        return None if value is None else str(value)

    division = content.get("Division")
    if isinstance(division, str) and division.isdigit():
        division = int(division)
    if isinstance(division, bool) or not isinstance(division, int):
        raise MalformedWebhook("Content.Division is missing or not a number")
    key = required("Key")
    match = _GUID.fullmatch(key)
    if match is None:
        raise MalformedWebhook("Content.Key is not a GUID")
    return WebhookEvent(
        topic=required("Topic"),
        division=division,
        action=required("Action"),
        key=match.group(1).lower(),
        client_id=optional("ClientId"),
        endpoint=optional("ExactOnlineEndpoint"),
        event_created_on=optional("EventCreatedOn"),
        hash_code=hash_code,
        content=content,
    )
