"""``--trace``: show every HTTP exchange with the provider, with every secret masked.

When Exact answers ``invalid_request`` the question is always "what exactly did we send?". The
printer shows the method, URL, status, request and response headers, form fields and JSON bodies
as they went over the wire, but never a credential: secret-named form/query/JSON fields
(``client_secret``, ``code``, ``code_verifier``, ``refresh_token``, ``access_token``...) and
credential headers (``Authorization``, cookies) are replaced by ``[REDACTED]``, and every value the
redactor knows (tokens it has seen, the client secret) is masked wherever else it appears.

It is a pair of httpx event hooks, so any ``httpx.Client`` can carry it:
``httpx.Client(event_hooks=TracePrinter().event_hooks())``.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from shared.oauth.redact import DEFAULT, MASK, SECRET_FIELD_NAMES, Redactor, redact_form, redact_headers

if TYPE_CHECKING:
    import httpx

#: longest body excerpt printed for a non-JSON, non-form body
MAX_BODY = 2000
_FORM = "application/x-www-form-urlencoded"


class TracePrinter:
    """Prints request/response pairs to ``stream`` (stderr by default) as they happen."""

    def __init__(self, stream: TextIO | None = None, *, redactor: Redactor | None = None) -> None:
        self._stream = stream
        self._redactor = redactor or DEFAULT
        self._guard = threading.Lock()

    def event_hooks(self) -> dict[str, list[Callable[..., Any]]]:
        return {"request": [self.on_request], "response": [self.on_response]}

    # --- hooks ----------------------------------------------------------------------------------

    def on_request(self, request: httpx.Request) -> None:
        lines = [f"--> {request.method} {self.url(str(request.url))}"]
        lines += self._headers(request.headers.multi_items())
        lines += self._body(request.headers.get("content-type", ""), _request_body(request))
        self._emit(lines)

    def on_response(self, response: httpx.Response) -> None:
        response.read()
        request = response.request
        elapsed = ""
        try:
            elapsed = f" ({response.elapsed.total_seconds():.2f} s)"
        except RuntimeError:  # elapsed is only known once the response is closed
            elapsed = ""
        lines = [
            f"<-- {response.status_code} {response.reason_phrase} "
            f"{request.method} {self.url(str(request.url))}{elapsed}"
        ]
        lines += self._headers(response.headers.multi_items())
        lines += self._body(response.headers.get("content-type", ""), response.content)
        self._emit(lines)

    # --- formatting -----------------------------------------------------------------------------

    def url(self, url: str) -> str:
        """The URL with secret query parameters masked (and known values masked anywhere)."""
        parts = urlsplit(url)
        if parts.query:
            pairs = [(k, MASK if k.lower() in SECRET_FIELD_NAMES else v) for k, v in _pairs(parts.query)]
            url = urlunsplit(parts._replace(query=urlencode(pairs, safe="[]")))
        return self._redactor.redact(url)

    def _headers(self, pairs: Iterable[tuple[str, str]]) -> list[str]:
        return [f"    {name}: {self._redactor.redact(value)}" for name, value in redact_headers(list(pairs))]

    def _body(self, content_type: str, body: bytes | None) -> list[str]:
        if not body:
            return []
        kind = content_type.split(";", maxsplit=1)[0].strip().lower()
        text = body.decode("utf-8", errors="replace")
        if kind == _FORM:
            return [f"    form {name}={value}" for name, value in redact_form(_pairs(text), self._redactor)]
        if kind.endswith("json") or text.lstrip().startswith(("{", "[")):
            try:
                data = json.loads(text)
            except ValueError:
                pass
            else:
                shown = json.dumps(_mask_json(data), ensure_ascii=False)
                return [f"    body {self._redactor.redact(shown)}"]
        excerpt = text if len(text) <= MAX_BODY else text[:MAX_BODY] + f"... ({len(text)} characters)"
        return [f"    body {self._redactor.redact(excerpt)}"]

    def _emit(self, lines: list[str]) -> None:
        stream = self._stream or sys.stderr
        with self._guard:
            stream.write("\n".join(lines) + "\n")
            stream.flush()


def _pairs(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def _request_body(request: httpx.Request) -> bytes | None:
    try:
        return request.content
    except Exception:  # a streaming body: not readable without consuming it
        return None


def _mask_json(data: Any) -> Any:
    if isinstance(data, dict):
        return {
            key: (
                MASK
                if str(key).lower() in SECRET_FIELD_NAMES and value not in (None, "")
                else _mask_json(value)
            )
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [_mask_json(item) for item in data]
    return data


def attach(client: httpx.Client, stream: TextIO | None = None) -> TracePrinter:
    """Make ``client`` (e.g. ``runtime.oauth_http``) print its exchanges from now on; idempotent."""
    for hook in client.event_hooks.get("request", []):
        printer = getattr(hook, "__self__", None)
        if isinstance(printer, TracePrinter):
            return printer
    printer = TracePrinter(stream)
    hooks = {name: list(client.event_hooks.get(name, [])) for name in ("request", "response")}
    for name, added in printer.event_hooks().items():
        hooks[name].extend(added)
    client.event_hooks = hooks
    return printer
