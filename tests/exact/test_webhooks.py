"""Webhook deliveries: HMAC over the raw Content text, constant-time compare, clear refusals."""

from __future__ import annotations

import json

import pytest

from shared.errors import ConfigError
from shared.exact.webhooks import (
    InvalidSignature,
    MalformedWebhook,
    content_span,
    is_validation_request,
    sign_content,
    verify_delivery,
)

SECRET = "webhook-secret-under-test"
KEY = "0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9"


def content_text(**overrides: object) -> str:
    content = {
        "Topic": "Accounts",
        "ClientId": "{c1d2e3f4-0000-4000-8000-000000000001}",
        "Division": 123456,
        "Action": "Update",
        "Key": KEY,
        "ExactOnlineEndpoint": f"https://start.exactonline.nl/api/v1/123456/crm/Accounts(guid'{KEY}')",
        "EventCreatedOn": "2024-06-01T10:11:12.123",
    }
    content.update(overrides)
    return json.dumps(content, separators=(",", ":"))


def delivery(
    content: str,
    secret: str = SECRET,
    *,
    hash_code: str | None = None,
    layout: str = '{{"Content":{c},"HashCode":"{h}"}}',
) -> bytes:
    signed = sign_content(content.encode("utf-8"), secret) if hash_code is None else hash_code
    return layout.format(c=content, h=signed).encode("utf-8")


def test_valid_delivery_verifies_and_parses() -> None:
    event = verify_delivery(delivery(content_text()), SECRET)
    assert event.topic == "Accounts"
    assert event.division == 123456
    assert event.action == "Update"
    assert event.key == KEY.lower()
    assert event.endpoint is not None
    assert event.endpoint.endswith(f"Accounts(guid'{KEY}')")
    assert len(event.hash_code) == 64
    assert event.hash_code == event.hash_code.upper()


def test_hash_is_upper_hex_hmac_sha256() -> None:
    # Known answer from: printf %s '{"a":1}' | openssl dgst -sha256 -hmac key
    assert (
        sign_content(b'{"a":1}', "key") == "88A67F24BBCDAED0E6C997404BB79A743BAF44C6BAB2F4C27328E3009D22E342"
    )


def test_tampered_content_is_refused() -> None:
    body = delivery(content_text())
    tampered = body.replace(b'"Action":"Update"', b'"Action":"Delete"')
    assert tampered != body
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_delivery(tampered, SECRET)


def test_wrong_secret_is_refused_without_leaking_digests() -> None:
    body = delivery(content_text())
    with pytest.raises(InvalidSignature) as caught:
        verify_delivery(body, "another-secret")
    expected_for_other = sign_content(content_text().encode(), "another-secret")
    assert expected_for_other not in str(caught.value)
    assert "another-secret" not in str(caught.value)


def test_lower_case_hash_code_is_not_the_upper_case_signature() -> None:
    text = content_text()
    lower = sign_content(text.encode(), SECRET).lower()
    with pytest.raises(InvalidSignature):
        verify_delivery(delivery(text, hash_code=lower), SECRET)


def test_signature_covers_the_raw_text_exactly_as_sent() -> None:
    # Exact's own spacing, key order and escapes: the signature is over these bytes, so a
    # verifier that re-serialises the parsed Content would compute another digest.
    raw = (
        '{ "Topic" : "Accounts",\n  "Division": 123456, "Action":"Create",'
        ' "Key":"' + KEY + '", "Note": "caf\\u00e9 \\/ \u00e9", "Nested": {"a": [1, 2.50]} }'
    )
    reserialised = json.dumps(json.loads(raw), separators=(",", ":"))
    assert sign_content(raw.encode(), SECRET) != sign_content(reserialised.encode(), SECRET)
    body = delivery(raw, layout='{{\n  "HashCode" :  "{h}" ,\n  "Content" :\t{c}\n}}\n')
    event = verify_delivery(body, SECRET)
    assert event.action == "Create"
    assert event.content["Note"] == "café / é"
    assert content_span(body)[0] == raw.encode()
    # The same content, re-serialised but signed over the original text, does not verify.
    forged = delivery(reserialised, hash_code=sign_content(raw.encode(), SECRET))
    with pytest.raises(InvalidSignature):
        verify_delivery(forged, SECRET)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not a JSON object"),
        (b'{"Content": {"Topic": "Accounts"}, "HashCode": "AB', "not valid JSON"),
        (b'{"Content": {"Topic": "Accounts"}}', "no HashCode"),
        (b'{"HashCode": "' + b"A" * 64 + b'"}', "no Content"),
        (b'{"Content": "text", "HashCode": "' + b"A" * 64 + b'"}', "Content is not a JSON object"),
        (b'{"Content": {}, "HashCode": "XYZ"}', "64 hexadecimal"),
        (b'{"Content": {}, "Content": {}, "HashCode": "' + b"A" * 64 + b'"}', "twice"),
        (b'{"Content": {}, "HashCode": "' + b"A" * 64 + b'"} {}', "after the JSON object"),
        (b"[1]", "not a JSON object"),
        (b"\xff\xfe", "not UTF-8"),
        (b"", "empty body"),
    ],
)
def test_malformed_bodies_have_a_clear_reason(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedWebhook) as caught:
        verify_delivery(body, SECRET)
    assert reason in caught.value.reason


def test_signed_but_incomplete_content_is_malformed() -> None:
    text = json.dumps({"Topic": "Accounts", "Division": 1, "Action": "Update", "Key": "nope"})
    with pytest.raises(MalformedWebhook, match="Key is not a GUID"):
        verify_delivery(delivery(text), SECRET)
    text = json.dumps({"Topic": "Accounts", "Action": "Update", "Key": KEY})
    with pytest.raises(MalformedWebhook, match="Division"):
        verify_delivery(delivery(text), SECRET)


def test_empty_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="EXACT_WEBHOOK_SECRET"):
        verify_delivery(delivery(content_text(), secret="x"), "")


def test_validation_request_is_the_empty_post() -> None:
    assert is_validation_request(b"")
    assert is_validation_request(b" \r\n")
    assert not is_validation_request(b"{}")
    assert not is_validation_request(delivery(content_text()))
