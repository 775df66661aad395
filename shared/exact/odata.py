"""Reading Exact's OData v2 answers: pages of rows, ``__next`` links and error messages.

Why strict: a page that is not what it claims must stop the load with a clear error, not be
stored as zero rows. Without ``Accept: application/json`` Exact answers Atom XML; a proxy or a
maintenance window answers HTML; a dropped connection leaves truncated JSON. Each of those is an
``ExactResponseError`` naming the endpoint, the status and the content type.

Tolerated shapes (Exact uses all three): ``{"d": {"results": [...], "__next": "..."}}``,
``{"d": [...]}`` and ``{"d": {...one object...}}``. Rows lose their ``__metadata`` member.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.exact.errors import ExactResponseError

_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_XML_MESSAGE = re.compile(rb"<(?:\w+:)?message[^>]*>(.*?)</(?:\w+:)?message>", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"\s+")
_MAX_MESSAGE = 300


@dataclass(frozen=True)
class ODataPage:
    rows: list[dict[str, Any]]
    next_url: str | None


def _short(text: str) -> str:
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def body_kind(body: bytes, content_type: str | None) -> str | None:
    """Name a body that is certainly not JSON ("empty body", "Atom/XML document", "HTML page"),
    or ``None`` when it may be JSON."""
    ctype = (content_type or "").lower()
    head = body[:512].lstrip()[:200].lower()
    if not head:
        if body.strip():
            return None  # a lot of leading whitespace; let the JSON parser judge
        return "empty body"
    if "html" in ctype or head.startswith((b"<!doctype html", b"<html")):
        return "HTML page"
    if "xml" in ctype or "atom" in ctype or head.startswith(b"<"):
        return "Atom/XML document"
    return None


def _html_title(body: bytes) -> str:
    match = _TITLE.search(body[:20_000])
    return _short(match.group(1).decode("utf-8", "replace")) if match else ""


def _loads(body: bytes) -> Any:
    import orjson

    return orjson.loads(body)


def parse_page(body: bytes, *, endpoint: str, status: int, content_type: str | None) -> ODataPage:
    """A 2xx answer's body -> rows and the ``__next`` link; ``ExactResponseError`` otherwise."""

    def fail(problem: str) -> ExactResponseError:
        return ExactResponseError(endpoint, problem, status=status, content_type=content_type)

    kind = body_kind(body, content_type)
    if kind == "empty body":
        raise fail("empty body where JSON was expected")
    if kind == "HTML page":
        title = _html_title(body)
        raise fail("HTML page where JSON was expected" + (f" (title: {title!r})" if title else ""))
    if kind is not None:
        raise fail(
            f"{kind} where JSON was expected (Exact answers Atom XML when Accept: application/json is missing)"
        )
    try:
        document = _loads(body)
    except ValueError as exc:
        raise fail(f"body is not valid JSON, truncated or malformed ({len(body)} bytes: {exc})") from None
    if not isinstance(document, dict):
        raise fail(f"JSON {type(document).__name__} where an OData object with 'd' was expected")
    if "d" not in document:
        if "error" in document:
            raise fail(f"OData error in a success answer: {_json_error_text(document)}")
        raise fail("JSON object without the OData 'd' member")
    problem, page = _page_of(document["d"])
    if page is None:
        raise fail(problem)
    return page


def _page_of(d: Any) -> tuple[str, ODataPage | None]:
    """``d`` as a list, as ``{"results": [...], "__next": ...}`` or as one object."""
    next_url: Any = None
    if isinstance(d, list):
        rows = d
    elif isinstance(d, dict) and "results" in d:
        rows = d["results"]
        next_url = d.get("__next")
        if not isinstance(rows, list):
            return "'d.results' is not a list", None
    elif isinstance(d, dict):
        rows = [d]
    else:
        return f"'d' is a JSON {type(d).__name__}, expected an object or a list", None
    if next_url is not None and (not isinstance(next_url, str) or not next_url):
        return "'__next' is not a URL string", None
    for row in rows:
        if not isinstance(row, dict):
            return f"a row is a JSON {type(row).__name__}, expected an object", None
        row.pop("__metadata", None)
    return "", ODataPage(rows=rows, next_url=next_url)


def parse_single(body: bytes, *, endpoint: str, status: int, content_type: str | None) -> dict[str, Any]:
    """An answer that must hold exactly one object (``current/Me``)."""
    page = parse_page(body, endpoint=endpoint, status=status, content_type=content_type)
    if len(page.rows) != 1:
        raise ExactResponseError(
            endpoint, f"expected one object, got {len(page.rows)}", status=status, content_type=content_type
        )
    return page.rows[0]


def error_message(body: bytes, content_type: str | None) -> str:
    """The human text of an error answer: OData ``error.message.value``, a token endpoint's
    ``error_description``, an XML ``<message>``, an HTML ``<title>``; short, whitespace-collapsed."""
    kind = body_kind(body, content_type)
    if kind == "empty body":
        return ""
    if kind == "HTML page":
        title = _html_title(body)
        return "HTML page" + (f" {title!r}" if title else "")
    if kind is not None:
        match = _XML_MESSAGE.search(body[:20_000])
        return _short(match.group(1).decode("utf-8", "replace")) if match else kind
    try:
        document = _loads(body)
    except ValueError:
        return _short(body[:_MAX_MESSAGE].decode("utf-8", "replace"))
    return _json_error_text(document)


def _json_error_text(document: Any) -> str:
    text: Any = None
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            text = message.get("value") if isinstance(message, dict) else message
            if not isinstance(text, str):
                text = error.get("code") or None
        elif isinstance(error, str):
            description = document.get("error_description")
            text = f"{error}: {description}" if isinstance(description, str) else error
        else:
            text = document.get("message") or document.get("Message")
    return _short(text if isinstance(text, str) else str(document))
