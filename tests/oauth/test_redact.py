"""Masking: known values in every spelling, secret-named fields, and the logging filter."""

from __future__ import annotations

import logging

import pytest

from shared.oauth.redact import MASK, RedactingFilter, Redactor, redact_fields, redact_form, redact_headers

TOKEN = "stampNL001.rt!IAAAAplantedrefreshtoken0123456789"


def test_known_values_in_raw_and_url_encoded_spelling() -> None:
    r = Redactor()
    r.add(TOKEN)
    text = f"raw {TOKEN} form refresh%3D{TOKEN.replace('!', '%21')} plus {TOKEN.replace('!', '%21')}"
    shown = r.redact(text)
    assert TOKEN not in shown and TOKEN.replace("!", "%21") not in shown
    assert shown.count(MASK) >= 3


def test_short_values_are_not_registered() -> None:
    r = Redactor()
    r.add("abc")
    assert r.redact("abc def") == "abc def"


def test_pinned_values_survive_capacity() -> None:
    r = Redactor(capacity=2)
    r.pin("client-secret-value")
    for i in range(10):
        r.add(f"token-number-{i:04d}")
    shown = r.redact("client-secret-value token-number-0000 token-number-0009")
    assert "client-secret-value" not in shown and "token-number-0009" not in shown
    assert "token-number-0000" in shown  # forgotten: old tokens are dead anyway


@pytest.mark.parametrize(
    "text",
    [
        '{"access_token": "eyJhbGciOi.unknown", "token_type": "bearer"}',
        "grant_type=refresh_token&refresh_token=unknown!value&client_secret=unknown-secret",
        "https://app.example.com/api/oauth/callback?code=unknown%21code&state=abc",
        "Authorization: Bearer unknownaccesstokenvalue",
        "{'client_secret': 'unknown-secret'}",
    ],
)
def test_secret_fields_are_masked_even_when_unknown(text: str) -> None:
    shown = redact_fields(text)
    for secret in (
        "eyJhbGciOi.unknown",
        "unknown!value",
        "unknown-secret",
        "unknown%21code",
        "unknownaccesstokenvalue",
    ):
        assert secret not in shown
    assert MASK in shown


def test_harmless_fields_stay_readable() -> None:
    text = "grant_type=refresh_token&state=abc&error_code=42&status_code=400"
    assert redact_fields(text) == text


def test_headers_and_forms() -> None:
    headers = redact_headers(
        {"Authorization": "Basic dXNlcjpwYXNz", "Content-Type": "application/json", "Cookie": "a=b"}
    )
    assert headers == [
        ("Authorization", f"Basic {MASK}"),
        ("Content-Type", "application/json"),
        ("Cookie", MASK),
    ]
    form = redact_form([("grant_type", "authorization_code"), ("code", "c0de!value"), ("client_id", "id")])
    assert form == [("grant_type", "authorization_code"), ("code", MASK), ("client_id", "id")]


def test_logging_filter_masks_message_args_and_exception_text(caplog: pytest.LogCaptureFixture) -> None:
    r = Redactor()
    r.add(TOKEN)
    logger = logging.getLogger("tests.oauth.redact")
    logger.addFilter(RedactingFilter(r))
    try:
        with caplog.at_level(logging.INFO, logger="tests.oauth.redact"):
            logger.info("token is %s", TOKEN)
            try:
                raise ValueError(f"bad {TOKEN}")
            except ValueError:
                logger.exception("failed")
    finally:
        logger.filters.clear()
    assert TOKEN not in caplog.text
    assert caplog.text.count(MASK) >= 2
