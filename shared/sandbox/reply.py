"""The one value every sandbox route returns: status, headers, body, and how to deliver it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: real seconds to wait before answering (latency faults)
    delay: float = 0.0
    #: close the connection without answering (a lost answer)
    drop: bool = False


def json_reply(payload: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, orjson.dumps(payload), "application/json; charset=utf-8", list(headers or []))


def html_reply(status: int, title: str, message: str) -> Reply:
    from html import escape

    body = (
        f"<!DOCTYPE html><html><head><title>{escape(title)}</title></head>"
        f"<body><h1>{escape(title)}</h1><p>{escape(message)}</p></body></html>"
    )
    return Reply(status, body.encode(), "text/html; charset=utf-8")
