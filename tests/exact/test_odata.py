"""Parsing OData pages: the three shapes Exact uses, and clear errors for everything else."""

from __future__ import annotations

import json

import pytest

from shared.exact.errors import ExactResponseError
from shared.exact.odata import error_message, parse_page, parse_single

EP = "GET /api/v1/1/sync/CRM/Accounts"


def page(body: bytes, content_type: str | None = "application/json; charset=utf-8"):  # type: ignore[no-untyped-def]
    return parse_page(body, endpoint=EP, status=200, content_type=content_type)


def test_results_with_next_and_metadata_removed() -> None:
    body = json.dumps(
        {"d": {"results": [{"__metadata": {"uri": "u"}, "ID": "a"}, {"ID": "b"}], "__next": "https://h/next"}}
    ).encode()
    parsed = page(body)
    assert parsed.rows == [{"ID": "a"}, {"ID": "b"}]
    assert parsed.next_url == "https://h/next"


def test_bare_list_and_single_object() -> None:
    assert page(b'{"d": [{"ID": 1}, {"ID": 2}]}').rows == [{"ID": 1}, {"ID": 2}]
    single = page(b'{"d": {"__metadata": {}, "CurrentDivision": 7}}')
    assert single.rows == [{"CurrentDivision": 7}]
    assert single.next_url is None
    assert parse_single(
        b'{"d": {"results": [{"UserID": "u"}]}}', endpoint=EP, status=200, content_type=None
    ) == {"UserID": "u"}


def test_empty_results_is_a_valid_last_page() -> None:
    parsed = page(b'{"d": {"results": []}}')
    assert parsed.rows == []
    assert parsed.next_url is None


ATOM = (
    b'<?xml version="1.0" encoding="utf-8"?><feed xml:base="https://start.exactonline.nl/api/v1/1/" '
    b'xmlns="http://www.w3.org/2005/Atom"><entry><content type="application/xml"></content></entry></feed>'
)


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (ATOM, "application/atom+xml;type=feed;charset=utf-8", "Atom/XML document"),
        (ATOM, None, "Atom/XML document"),
        (
            b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head></html>",
            "text/html",
            "HTML page",
        ),
        (b"", "application/json", "empty body"),
        (b"   \r\n", None, "empty body"),
        (b'{"d": {"results": [{"ID": "a"}, {"ID": "b', "application/json", "not valid JSON"),
        (b'{"d": {"results": [{"ID": "a"}]}}trailing', "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "JSON list"),
        (b'{"value": []}', "application/json", "without the OData 'd'"),
        (b'{"d": "text"}', "application/json", "'d' is a JSON str"),
        (b'{"d": {"results": {"ID": 1}}}', "application/json", "not a list"),
        (b'{"d": {"results": [1]}}', "application/json", "a row is a JSON int"),
        (b'{"d": {"results": [], "__next": 5}}', "application/json", "__next"),
        (b'{"error": {"code": "", "message": {"lang": "", "value": "Oops"}}}', "application/json", "Oops"),
    ],
)
def test_not_odata_json_is_a_clear_error(body: bytes, content_type: str | None, words: str) -> None:
    with pytest.raises(ExactResponseError) as caught:
        page(body, content_type)
    text = str(caught.value)
    assert words in text
    assert EP in text
    assert "HTTP 200" in text
    assert f"content-type {content_type or 'none'}" in text


def test_html_title_is_quoted_in_the_error() -> None:
    with pytest.raises(ExactResponseError, match="Service Unavailable"):
        page(b"<html><head><title>Service\n  Unavailable</title></head><body>x</body></html>", "text/html")


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (
            b'{"error":{"code":"","message":{"lang":"","value":"Please add a $select"}}}',
            "application/json",
            "Please add a $select",
        ),
        (b'{"error":{"code":"X","message":"plain"}}', "application/json", "plain"),
        (
            b'{"error":"invalid_grant","error_description":"Old refresh token used."}',
            None,
            "invalid_grant: Old refresh token used.",
        ),
        (b"", None, ""),
        (b"<html><title>Error</title></html>", "text/html", "HTML page 'Error'"),
        (
            b'<?xml version="1.0"?><m:error xmlns:m="x"><m:code/><m:message xml:lang="en">Forbidden</m:message></m:error>',
            "application/xml",
            "Forbidden",
        ),
        (b"just text", "text/plain", "just text"),
    ],
)
def test_error_messages(body: bytes, content_type: str | None, expected: str) -> None:
    assert error_message(body, content_type) == expected
