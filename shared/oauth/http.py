"""The consent and status HTTP services behind ``function_app.py``'s routes.

- ``GET /api/oauth/start?connection=NAME[&provider=exact]`` (function key): 302 to the provider's
  consent page, with the state's binding secret in an HttpOnly cookie scoped to the callback.
- ``GET /api/oauth/callback`` (anonymous): the provider's redirect. Checks the state, exchanges the
  code, stores the tokens, and answers a small page saying what happened and what to do next;
  every refusal is a 4xx page and stores nothing. The cookie is cleared whatever the outcome.
- ``GET /api/connections/{name}`` (function key): the connection's status as JSON, no secrets.

Pages and JSON are built from names and fixed texts only: a code, a token or the client secret
can never be echoed (provider texts pass through the redactor).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.errors import ConfigError, ExactSyncError
from shared.oauth.consent import ConsentFailed, Redirect, begin, finish
from shared.oauth.redact import get_logger, redact
from shared.oauth.state import Channel, clear_cookie_header, set_cookie_header
from shared.web import WebRequest, WebResponse

if TYPE_CHECKING:
    from shared.runtime import Runtime

log = get_logger("exactsync.oauth.http")

#: Consent pages must not be cached, and must not leak their URL (it holds the code) as a Referer.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def start_consent(runtime: Runtime, req: WebRequest) -> WebResponse:
    from shared.stores.base import InvalidConnectionName

    try:
        started = begin(
            runtime, req.params.get("connection"), req.params.get("provider"), channel=Channel.BROWSER
        )
    except InvalidConnectionName as exc:
        return _page(400, "Invalid connection name", str(exc))
    except ConfigError as exc:
        return _page(400, "Cannot start the consent", redact(str(exc)))
    except ExactSyncError as exc:
        log.error("starting a consent failed: %s", type(exc).__name__)
        return _page(500, "Cannot start the consent", redact(str(exc)))
    cookie = set_cookie_header(started.issued, started.redirect_uri)
    return WebResponse.redirect(started.authorize_url, headers={**_PAGE_HEADERS, "Set-Cookie": cookie})


def complete_consent(runtime: Runtime, req: WebRequest) -> WebResponse:
    # req.params were URL-decoded once by the host: Redirect.from_params decodes nothing more.
    redirect = Redirect.from_params(req.params)
    try:
        done = finish(runtime, redirect, lambda state: req.cookie(state.cookie_name), channel=Channel.BROWSER)
    except ConsentFailed as failure:
        headers = {}
        if failure.state is not None and failure.state.channel is Channel.BROWSER:
            # the cookie was scoped to the callback's own path: clear it with the same attributes
            headers["Set-Cookie"] = clear_cookie_header(failure.state.cookie_name, req.url)
        return _page(failure.status, failure.title, failure.text, headers)
    except ExactSyncError as exc:
        # the nonce store or the lock was unreachable: nothing was stored
        log.error("consent callback failed: %s", type(exc).__name__)
        return _page(
            503,
            "Consent could not be completed",
            f"{redact(str(exc))} Nothing was stored. Start the consent again in a few minutes.",
        )
    headers = {"Set-Cookie": clear_cookie_header(done.state.cookie_name, req.url)}
    return _page(
        200,
        "Connected",
        f"Connection {done.connection!r} is connected to {done.provider}. exactsync keeps it alive "
        "from now on; you can close this window. Its status: GET /api/connections/"
        f"{done.connection} (or `exactsync status`).",
        headers,
    )


def connection_status(runtime: Runtime, req: WebRequest) -> WebResponse:
    from shared.stores.base import InvalidConnectionName, validate_connection_name

    name = req.route_params.get("name", "")
    try:
        validate_connection_name(name)
    except InvalidConnectionName as exc:
        return WebResponse.json({"error": "invalid_connection_name", "message": str(exc)}, 400, _PAGE_HEADERS)
    try:
        view = runtime.keeper.status(name)
    except ExactSyncError as exc:
        log.error("status of connection %s failed: %s", name, type(exc).__name__)
        return WebResponse.json(
            {"error": "store_unavailable", "message": redact(str(exc))}, 503, _PAGE_HEADERS
        )
    if view is None:
        return WebResponse.json(
            {
                "error": "unknown_connection",
                "message": f"no tokens are stored for connection {name!r}: consent first "
                f"(/api/oauth/start?connection={name})",
            },
            404,
            _PAGE_HEADERS,
        )
    return WebResponse.json(view, 200, _PAGE_HEADERS)


def _page(status: int, title: str, message: str, headers: dict[str, str] | None = None) -> WebResponse:
    return WebResponse.page(title, message, status, {**_PAGE_HEADERS, **(headers or {})})
