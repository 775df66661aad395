"""One provider's token endpoint: the code exchange and the refresh, and nothing else.

Rules from lost chains (see shared/reference/lessons-from-peers.md):

- ONE request per call, with a long read timeout (Exact: "never time out a token request early").
  No retry here, ever: a refresh that may have reached the server and is sent again can replay a
  refresh token the server already rotated (Airbyte retried on ReadTimeout for 300 s). Deciding
  what happens next is the keeper's job, with the lock held and the store updated.
- Every failure maps to what it means for the chain: ``RefreshTokenDead`` (dead, needs a person),
  ``TokenInDoubt`` (the server may have rotated: 5xx, a timeout after sending, an unreadable 200),
  ``TooEarlyToRefresh`` / ``TokenEndpointUnavailable`` / ``TokenEndpointError`` (nothing rotated).
- Messages are built from the status, the OAuth error code and a sanitized description. Request
  bodies never enter a message; a description that echoes a token or the client secret is masked.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

from shared.clock import Clock
from shared.oauth.errors import (
    AuthorizationCodeRejected,
    RefreshTokenDead,
    TokenEndpointError,
    TokenEndpointUnavailable,
    TokenInDoubt,
    TooEarlyToRefresh,
)
from shared.oauth.providers import Provider
from shared.oauth.redact import DEFAULT as REDACTOR
from shared.oauth.redact import get_logger

if TYPE_CHECKING:
    import httpx

log = get_logger("exactsync.oauth.token_endpoint")

#: Seconds. The read timeout is long on purpose; connect stays short (a connect failure proves
#: the request was never sent, so it is safe to report as "unavailable", not "in doubt").
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 120.0
WRITE_TIMEOUT = 30.0
POOL_TIMEOUT = 30.0
MAX_DESCRIPTION = 300


@dataclass(frozen=True)
class TokenGrant:
    """A successful token answer. ``sent_at``/``received_at`` frame when the server issued it."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: float
    token_type: str
    scope: str | None
    sent_at: float
    received_at: float

    @property
    def access_expires_at(self) -> float:
        """Expiry counted from when we SENT the request: never later than the server's own."""
        return self.sent_at + self.expires_in

    @property
    def issued_at(self) -> float:
        """Issue time as RECEIVED: never earlier than the server's, so earliest-refresh rules hold."""
        return self.received_at


class TokenEndpoint:
    """The token endpoint of ``provider`` over ``http`` (an ``httpx.Client``; tests give it a
    ``MockTransport`` or point it at the sandbox; the CLI's ``--trace`` adds event hooks)."""

    def __init__(
        self,
        provider: Provider,
        *,
        http: httpx.Client,
        clock: Clock,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        self.provider = provider
        self._http = http
        self._clock = clock
        self._timeout = timeout
        REDACTOR.pin(provider.client_secret)

    # --- grants -------------------------------------------------------------------------------

    def exchange_code(
        self, code: str, *, redirect_uri: str | None = None, code_verifier: str | None = None
    ) -> TokenGrant:
        """Trade an authorization code (already URL-decoded exactly once) for a token set."""
        if not code:
            raise AuthorizationCodeRejected("no authorization code given", endpoint=self.provider.host)
        REDACTOR.add(code)
        REDACTOR.add(code_verifier)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri or self.provider.redirect_uri,
        }
        if code_verifier:
            form["code_verifier"] = code_verifier
        return self._post(form, grant="authorization_code", secrets=(code, code_verifier))

    def refresh(self, refresh_token: str) -> TokenGrant:
        """Present ``refresh_token`` once. Never retried here (see the module docstring)."""
        if not refresh_token:
            raise RefreshTokenDead("no refresh token stored", endpoint=self.provider.host)
        REDACTOR.add(refresh_token)
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if self.provider.scopes:
            form["scope"] = " ".join(self.provider.scopes)
        return self._post(form, grant="refresh_token", secrets=(refresh_token,))

    # --- one request --------------------------------------------------------------------------

    def _post(self, form: dict[str, str], *, grant: str, secrets: tuple[str | None, ...]) -> TokenGrant:
        import httpx

        provider = self.provider
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        if provider.client_auth == "basic":
            pair = f"{quote_plus(provider.client_id)}:{quote_plus(provider.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            form = {**form, "client_id": provider.client_id, "client_secret": provider.client_secret}
        timeout = self._timeout or httpx.Timeout(
            connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, write=WRITE_TIMEOUT, pool=POOL_TIMEOUT
        )
        endpoint = provider.host
        sent_at = self._clock.now()
        try:
            response = self._http.post(provider.token_url, data=form, headers=headers, timeout=timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing left this process: the chain is untouched.
            raise TokenEndpointUnavailable(
                f"token endpoint {endpoint} unreachable ({type(exc).__name__}); nothing was sent",
                endpoint=endpoint,
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise TokenEndpointError(
                f"token endpoint {endpoint} is not a usable URL ({type(exc).__name__})", endpoint=endpoint
            ) from None
        except httpx.HTTPError as exc:
            # Sent (or partly sent) and no complete answer: the server may have rotated.
            raise TokenInDoubt(
                f"token endpoint {endpoint} gave no complete answer ({type(exc).__name__}); the "
                "request may have been processed",
                endpoint=endpoint,
            ) from None
        received_at = self._clock.now()
        return self._interpret(
            response, grant=grant, sent_at=sent_at, received_at=received_at, secrets=secrets
        )

    def _interpret(
        self,
        response: httpx.Response,
        *,
        grant: str,
        sent_at: float,
        received_at: float,
        secrets: tuple[str | None, ...],
    ) -> TokenGrant:
        endpoint = self.provider.host
        status = response.status_code
        content_type = response.headers.get("content-type", "").split(";")[0].strip() or "no content type"
        body = _json_object(response)

        if 200 <= status < 300:
            if body is None:
                raise TokenInDoubt(
                    f"token endpoint {endpoint} answered {status} with {content_type} instead of a JSON "
                    "token response; the request may have been processed",
                    endpoint=endpoint,
                    status=status,
                )
            return self._grant(body, status=status, sent_at=sent_at, received_at=received_at)

        if status >= 500:
            raise TokenInDoubt(
                f"token endpoint {endpoint} answered {status}{_suffix(body, secrets)}; the request may "
                "have been processed",
                endpoint=endpoint,
                status=status,
            )

        error = _text(body, "error") if body else None
        description = _sanitize(_text(body, "error_description"), secrets) if body else None
        if body is None:
            shown = f"{status} with {content_type} instead of JSON"
            if 300 <= status < 400:
                shown = f"{status} (a redirect: is {endpoint} the token URL?)"
            raise TokenEndpointError(
                f"token endpoint {endpoint} answered {shown}", endpoint=endpoint, status=status
            )

        message = f"token endpoint {endpoint} answered {status}" + _suffix(body, secrets)
        details: dict[str, Any] = {
            "endpoint": endpoint,
            "status": status,
            "error": error,
            "description": description,
        }
        lowered = (description or "").lower()
        reason = response.headers.get("reason", "")
        if reason.lower().startswith("tooearlytorefreshtokens") or "access_token not expired" in lowered:
            raise TooEarlyToRefresh(message, **details)
        if status == 429:
            raise TokenEndpointUnavailable(message + " (rate limited)", **details)
        if grant == "refresh_token" and _chain_dead(error, lowered):
            raise RefreshTokenDead(message, **details)
        if grant == "authorization_code" and _code_rejected(error, lowered):
            raise AuthorizationCodeRejected(message, **details)
        hint = _hint(error, lowered)
        raise TokenEndpointError(message + hint, **details)

    def _grant(
        self, body: Mapping[str, Any], *, status: int, sent_at: float, received_at: float
    ) -> TokenGrant:
        endpoint = self.provider.host
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise TokenInDoubt(
                f"token endpoint {endpoint} answered {status} without an access_token",
                endpoint=endpoint,
                status=status,
            )
        REDACTOR.add(access)
        refresh = body.get("refresh_token")
        refresh = refresh if isinstance(refresh, str) and refresh else None
        REDACTOR.add(refresh)
        REDACTOR.add(body.get("id_token") if isinstance(body.get("id_token"), str) else None)
        token_type = body.get("token_type")
        token_type = token_type.strip() if isinstance(token_type, str) and token_type.strip() else "bearer"
        if token_type.lower() != "bearer":
            raise TokenInDoubt(
                f"token endpoint {endpoint} issued a {token_type[:20]!r} token, not a bearer token",
                endpoint=endpoint,
                status=status,
            )
        expires_in = parse_expires_in(body.get("expires_in"), self.provider.access_lifetime_default_s)
        scope = body.get("scope")
        return TokenGrant(
            access_token=access,
            refresh_token=refresh,
            expires_in=expires_in,
            token_type=token_type,
            scope=scope if isinstance(scope, str) else None,
            sent_at=sent_at,
            received_at=received_at,
        )


def parse_expires_in(value: object, default: float) -> float:
    """``expires_in`` as Exact sends it (a string, "600") or as RFC 6749 has it (a number)."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            log.warning("token answer has an unreadable expires_in; assuming %.0f s", default)
            return default
    else:
        return default
    if not math.isfinite(seconds) or seconds <= 0:
        return default
    return seconds


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _text(body: Mapping[str, Any] | None, key: str) -> str | None:
    value = (body or {}).get(key)
    return value if isinstance(value, str) and value else None


def _sanitize(text: str | None, secrets: tuple[str | None, ...]) -> str | None:
    """A provider's description, safe to show: control characters gone, secrets masked, capped."""
    if not text:
        return None
    cleaned = "".join(c if c.isprintable() else " " for c in text).strip()
    cleaned = REDACTOR.redact(cleaned, secrets)
    cleaned = _mask_token_like(cleaned)
    if len(cleaned) > MAX_DESCRIPTION:
        cleaned = cleaned[: MAX_DESCRIPTION - 3] + "..."
    return cleaned


def _mask_token_like(text: str) -> str:
    """Mask any long unbroken run that looks like a credential (a token we never saw)."""
    return re.sub(r"[A-Za-z0-9!._~+/=%-]{40,}", "[REDACTED]", text)


def _suffix(body: Mapping[str, Any] | None, secrets: tuple[str | None, ...]) -> str:
    error = _sanitize(_text(body, "error"), secrets)
    description = _sanitize(_text(body, "error_description"), secrets)
    if error and description:
        return f" {error}: {description}"
    if error or description:
        return f" {error or description}"
    return ""


def _chain_dead(error: str | None, description: str) -> bool:
    if "old refresh token" in description:
        return True
    if error == "invalid_grant":
        return True
    if "refresh token" in description or "refresh_token" in description:
        return any(word in description for word in ("expired", "revoked", "invalid", "not found", "unknown"))
    return False


def _code_rejected(error: str | None, description: str) -> bool:
    return (
        error == "invalid_grant"
        or "signed data extraction" in description
        or (
            "code" in description
            and any(w in description for w in ("expired", "invalid", "used", "redeemed"))
        )
    )


def _hint(error: str | None, description: str) -> str:
    if error in ("invalid_client", "unauthorized_client") or "client" in description:
        return " (check the client id and client secret of the app registration)"
    if "redirect" in description:
        return " (the redirect URI must equal the registered one exactly)"
    return ""
