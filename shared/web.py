"""Plain request/response values for the HTTP services.

Services in ``shared/`` take a ``WebRequest`` and return a ``WebResponse`` so they run the same
under the Functions host (``function_app.py`` converts ``func.HttpRequest``), under
``exactsync serve`` and in tests, without importing ``azure.functions`` themselves.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WebRequest:
    method: str
    url: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    route_params: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def cookie(self, name: str) -> str | None:
        raw = self.header("cookie") or ""
        for part in raw.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class WebResponse:
    status: int
    body: str | bytes = b""
    mimetype: str = "text/plain"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> WebResponse:
        return cls(status, json.dumps(payload, default=str), "application/json", dict(headers or {}))

    @classmethod
    def page(
        cls, title: str, message: str, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> WebResponse:
        """A small HTML page; ``title`` and ``message`` are escaped here."""
        body = (
            "<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(message)}</p></body></html>"
        )
        return cls(status, body, "text/html", dict(headers or {}))

    @classmethod
    def redirect(cls, location: str, headers: Mapping[str, str] | None = None) -> WebResponse:
        merged = {"Location": location, **dict(headers or {})}
        return cls(302, b"", "text/plain", merged)
