"""Exact Online's OAuth 2.0 server, as strict as the facts allow.

One registered app (client id, secret, exact redirect URI). ``/api/oauth2/auth`` stands in for
the consent screen: ``response_type=code`` redirects back with a code, ``response_type=token``
(the implicit grant) with an access token in the URI fragment and no refresh token.
``/api/oauth2/token`` serves the ``authorization_code`` and ``refresh_token`` grants with client
credentials in the form body only. Every consent starts an independent *chain*: codes are single
use for 3 minutes, access tokens live 600 s (``expires_in`` is the string "600"), refresh tokens
30 days and only until their first use.
A refresh earlier than 570 s after the chain's last issue is refused and rotates nothing;
presenting a used refresh token answers "Old refresh token used." and (the stricter reading)
kills the chain. Token calls are counted per app per UTC day against a ceiling (200).
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from shared.clock import Clock
from shared.sandbox.counters import Counters
from shared.sandbox.faults import Faults
from shared.sandbox.reply import Reply, html_reply, json_reply

ACCESS_SECONDS = 600
REFRESH_SECONDS = 30 * 86_400
CODE_SECONDS = 180
TOO_EARLY_SECONDS = 570
TOKEN_CALLS_PER_DAY = 200
SANDBOX_USER = "f3d2c1b0-5a4e-4c3b-9a2f-0e1d2c3b4a59"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


@dataclass(frozen=True)
class AppRegistration:
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    webhook_secret: str = field(repr=False)

    def check(self) -> str | None:
        """Refuse what Exact refuses; return a warning for what only the sandbox accepts."""
        parts = urlsplit(self.redirect_uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"redirect URI must be an absolute http(s) URL, got {self.redirect_uri!r}")
        if parts.scheme == "http" and not is_loopback(self.redirect_uri):
            raise ValueError(
                f"redirect URI must use https (http only on a loopback host), got {self.redirect_uri!r}"
            )
        if parts.scheme == "http" or is_loopback(self.redirect_uri):
            return (
                f"warning: the registered redirect URI {self.redirect_uri} is a loopback/http address; "
                "the sandbox accepts it because it is what is registered, but Exact Online refuses "
                "redirect URIs that are not https or that point at localhost"
            )
        return None


@dataclass
class Code:
    value: str
    redirect_uri: str
    issued_at: float
    divisions: tuple[int, ...]
    user: str
    used: bool = False
    chain: str | None = None


@dataclass
class Chain:
    id: str
    user: str
    divisions: tuple[int, ...]
    created_at: float
    issued_at: float  # when the current access/refresh pair was issued
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    generation: int = 1
    alive: bool = True
    ended_because: str | None = None
    #: "authorization_code", or "implicit" (an access token only: nothing to refresh)
    grant: str = "authorization_code"


@dataclass
class Grant:
    """What a valid access token stands for."""

    chain: str
    user: str
    divisions: tuple[int, ...]


@dataclass
class Policy:
    """Unconfirmed behaviours; the defaults are the stricter readings (``POST /_sandbox/config``)."""

    token_calls_per_day: int = TOKEN_CALLS_PER_DAY
    reuse_kills_chain: bool = True
    rotation_revokes_access_token: bool = True
    consent_divisions: tuple[int, ...] | None = None  # None: every division
    #: token calls between 01:00 and 02:00 Europe/Amsterdam rotate, then answer 500 (Exact's
    #: advice is to avoid that hour); off by default so tests do not depend on the time of day
    maintenance_window: bool = False


class _Answer(Exception):
    """The token endpoint answers with this reply instead of going on."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _new_secret(prefix: str, size: int) -> str:
    return f"stampSB001.{prefix}{secrets.token_urlsafe(size)}"


def _token_error(
    status: int, error: str, description: str, headers: list[tuple[str, str]] | None = None
) -> Reply:
    reply = json_reply({"error": error, "error_description": description}, status, headers)
    reply.headers.append(("Cache-Control", "no-store"))
    return reply


RESPONSE_TYPES = frozenset({"code", "token"})


def _authorize_problem(params: dict[str, str]) -> dict[str, str] | None:
    """The error to redirect back with, for a request from the registered client."""
    if params.get("response_type") not in RESPONSE_TYPES:
        return {"error": "unsupported_response_type"}
    if "code_challenge" in params or "code_challenge_method" in params:
        # PKCE support is unconfirmed for Exact: the stricter reading refuses it (and it has no
        # meaning for the implicit grant)
        return {"error": "invalid_request", "error_description": "PKCE is not supported"}
    return None


def _redirect(uri: str, params: dict[str, str], *, fragment: bool = False) -> Reply:
    """302 back to the app: parameters in the query, or (implicit grant, RFC 6749 4.2.2) in the
    fragment, which the browser keeps away from servers and logs."""
    if not fragment:
        joiner = "&" if urlsplit(uri).query else "?"
        return Reply(302, b"", "text/html; charset=utf-8", [("Location", uri + joiner + urlencode(params))])
    headers = [("Location", uri + "#" + urlencode(params)), ("Cache-Control", "no-store")]
    return Reply(302, b"", "text/html; charset=utf-8", headers)


class OAuthServer:
    def __init__(
        self, app: AppRegistration, clock: Clock, counters: Counters, faults: Faults, divisions: tuple[int, ...],
        *, auto_consent: bool = True,
    ) -> None:  # fmt: skip
        self.app = app
        self.clock = clock
        self.counters = counters
        self.faults = faults
        self.divisions = divisions
        self.auto_consent = auto_consent
        self.policy = Policy()
        self._lock = threading.Lock()
        self._codes: dict[str, Code] = {}
        self._chains: dict[str, Chain] = {}
        self._access: dict[str, tuple[str, float]] = {}  # live token -> (chain id, expires at)
        self._access_seen: dict[str, str] = {}  # every token ever issued -> chain id
        self._refresh: dict[str, tuple[str, float, bool]] = {}  # token -> (chain id, issued at, current)
        self._token_days: dict[tuple[str, int], int] = {}

    # --- consent ---------------------------------------------------------------------------------

    def authorize(self, method: str, params: dict[str, str]) -> Reply:
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        if not hmac.compare_digest(client_id.encode(), self.app.client_id.encode()):
            return html_reply(400, "Invalid client", "The client_id is not a registered app.")
        if redirect_uri != self.app.redirect_uri:
            # never redirect to an unregistered address: show the error here
            return html_reply(
                400,
                "Invalid redirect_uri",
                "The redirect_uri does not match the one registered for this app.",
            )
        return self._consent(method, params, redirect_uri)

    def _consent(self, method: str, params: dict[str, str], redirect_uri: str) -> Reply:
        """For the registered client and redirect URI: the consent's outcome, redirected back (in
        the fragment for the implicit grant; an unknown response_type answers in the query)."""
        state = params.get("state")
        extra = {"state": state} if state is not None else {}
        implicit = params.get("response_type") == "token"
        problem = _authorize_problem(params)
        if problem is not None:
            return _redirect(redirect_uri, {**problem, **extra}, fragment=implicit)
        if method == "GET" and not self.auto_consent:
            return self._consent_page(params)
        if self.faults.flag("deny_consent") or (method == "POST" and params.get("decision") != "approve"):
            self.counters.add("consents_denied")
            return _redirect(redirect_uri, {"error": "access_denied", **extra}, fragment=implicit)
        if implicit:
            return _redirect(redirect_uri, {**self._implicit_grant(), **extra}, fragment=True)
        code = Code(
            value=_new_secret("code", 24) + "!IAAAA" + secrets.token_urlsafe(96),
            redirect_uri=redirect_uri,
            issued_at=self.clock.now(),
            divisions=self.policy.consent_divisions or self.divisions,
            user=SANDBOX_USER,
        )
        with self._lock:
            self._codes[code.value] = code
        self.counters.add("codes_issued")
        return _redirect(redirect_uri, {"code": code.value, **extra})

    def _implicit_grant(self) -> dict[str, str]:
        """The implicit grant: a chain with an access token (600 s, valid on the API like any
        other) and no refresh token; it ends when the token expires or the app is revoked."""
        now = self.clock.now()
        divisions = self.policy.consent_divisions or self.divisions
        chain = Chain(
            id=secrets.token_hex(8), user=SANDBOX_USER, divisions=divisions, created_at=now, issued_at=now,
            access_token=_new_secret("gAAAAA", 300), refresh_token="", grant="implicit",
        )  # fmt: skip
        with self._lock:
            self._chains[chain.id] = chain
            self._access[chain.access_token] = (chain.id, now + ACCESS_SECONDS)
            self._access_seen[chain.access_token] = chain.id
        self.counters.add("implicit_tokens_issued")
        return {"access_token": chain.access_token, "token_type": "bearer", "expires_in": str(ACCESS_SECONDS)}

    def _consent_page(self, params: dict[str, str]) -> Reply:
        from html import escape

        hidden = "".join(
            f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
            for k, v in params.items()
            if k != "decision"
        )
        body = (
            "<!DOCTYPE html><html><head><title>Exact Online sandbox: consent</title></head><body>"
            "<h1>Allow this app to read your administrations?</h1>"
            f'<form method="post" action="/api/oauth2/auth">{hidden}'
            '<button name="decision" value="approve">Allow</button> '
            '<button name="decision" value="deny">Deny</button></form></body></html>'
        )
        return Reply(200, body.encode(), "text/html; charset=utf-8")

    # --- token endpoint -----------------------------------------------------------------------------

    def token(self, headers: dict[str, str], body: bytes) -> Reply:
        now = self.clock.now()
        self.counters.add("token_calls")
        reply = self._token(headers, body, now)
        latency = self.faults.delay("token_latency")
        if latency:
            reply.delay = max(reply.delay, latency)
        return reply

    def _token(self, headers: dict[str, str], body: bytes, now: float) -> Reply:
        try:
            form = self._form(headers, body)
            self._authenticate(form, headers)
            self._count_call(form["client_id"], now)
            if self.faults.take("token_5xx"):
                self.counters.add("faults_injected")
                raise _Answer(html_reply(500, "Server Error", "Runtime Error"))
            if "code_verifier" in form:
                raise _Answer(_token_error(400, "invalid_request", "PKCE is not supported."))
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                reply = self._exchange(form, now)
            elif grant_type == "refresh_token":
                reply = self._refresh_grant(form, now)
            elif grant_type is None:
                raise _Answer(_token_error(400, "invalid_request", "grant_type is required."))
            else:
                raise _Answer(
                    _token_error(
                        400, "unsupported_grant_type", f"The grant type {grant_type!r} is not supported."
                    )
                )
        except _Answer as answer:
            return answer.reply
        # the server has issued (and for a refresh, rotated): the answer may still get lost
        if self.faults.take("token_lost_after_rotate") or self._in_maintenance(now):
            self.counters.add("faults_injected")
            return html_reply(500, "Server Error", "Runtime Error")
        if self.faults.take("token_dropped_after_rotate"):
            self.counters.add("faults_injected")
            return Reply(500, drop=True)
        return reply

    def _in_maintenance(self, now: float) -> bool:
        if not self.policy.maintenance_window:
            return False
        from shared.sandbox.dates import wall_ms

        return (wall_ms(now) // 3_600_000) % 24 == 1

    def _form(self, headers: dict[str, str], body: bytes) -> dict[str, str]:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            message = "The request must be sent as application/x-www-form-urlencoded."
            raise _Answer(_token_error(400, "invalid_request", message))
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise _Answer(
                _token_error(400, "invalid_request", "The request body is not valid UTF-8.")
            ) from None
        form: dict[str, str] = {}
        for key, value in pairs:
            if key in form:
                raise _Answer(
                    _token_error(400, "invalid_request", f"The parameter {key} was sent more than once.")
                )
            form[key] = value
        return form

    def _authenticate(self, form: dict[str, str], headers: dict[str, str]) -> None:
        """Client credentials in the form body only (an Authorization header is not read)."""
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if not client_id or not client_secret:
            where = (
                " (in the request body; an Authorization header is not read)"
                if "authorization" in headers
                else ""
            )
            raise _Answer(
                _token_error(400, "invalid_request", f"client_id and client_secret are required{where}.")
            )
        if not (
            hmac.compare_digest(client_id.encode(), self.app.client_id.encode())
            and hmac.compare_digest(client_secret.encode(), self.app.client_secret.encode())
        ):
            raise _Answer(_token_error(401, "invalid_client", "The client credentials are invalid."))

    def _count_call(self, client_id: str, now: float) -> None:
        day = int(now // 86_400)
        with self._lock:
            calls = self._token_days.get((client_id, day), 0) + 1
            self._token_days[(client_id, day)] = calls
        if calls > self.policy.token_calls_per_day:
            message = "Rate limit exceeded: too many token requests today."
            raise _Answer(_token_error(429, "access_denied", message))

    def token_calls_today(self) -> int:
        day = int(self.clock.now() // 86_400)
        with self._lock:
            return self._token_days.get((self.app.client_id, day), 0)

    def _issue(self, chain: Chain, now: float) -> Reply:
        chain.access_token = _new_secret("gAAAAA", 300)
        chain.refresh_token = _new_secret("rt", 30) + "!IAAAA" + secrets.token_urlsafe(120)
        chain.issued_at = now
        self._access[chain.access_token] = (chain.id, now + ACCESS_SECONDS)
        self._access_seen[chain.access_token] = chain.id
        self._refresh[chain.refresh_token] = (chain.id, now, True)
        payload = {
            "access_token": chain.access_token,
            "token_type": "bearer",
            "expires_in": str(ACCESS_SECONDS),
            "refresh_token": chain.refresh_token,
        }
        return json_reply(payload, 200, [("Cache-Control", "no-store"), ("Pragma", "no-cache")])

    def _exchange(self, form: dict[str, str], now: float) -> Reply:
        value, redirect_uri = form.get("code"), form.get("redirect_uri")
        if not value or redirect_uri is None:
            raise _Answer(_token_error(400, "invalid_request", "code and redirect_uri are required."))
        with self._lock:
            code = self._codes.get(value)
            problem = self._code_problem(code, redirect_uri, now)
            if problem is not None:
                outcome, status, error, description = problem
                self.counters.log_exchange(now, outcome, code.chain if code else None)
                raise _Answer(_token_error(status, error, description))
            assert code is not None
            code.used = True
            chain = Chain(
                id=secrets.token_hex(8), user=code.user, divisions=code.divisions, created_at=now, issued_at=now,
                access_token="", refresh_token="",
            )  # fmt: skip
            code.chain = chain.id
            self._chains[chain.id] = chain
            reply = self._issue(chain, now)
        self.counters.add("codes_exchanged")
        self.counters.log_exchange(now, "exchanged", chain.id)
        return reply

    def _code_problem(
        self, code: Code | None, redirect_uri: str, now: float
    ) -> tuple[str, int, str, str] | None:
        """(log outcome, status, error, description) when the code cannot be exchanged."""
        if code is None:
            return "bad_code", 400, "invalid_request", "Signed data extraction has failed"
        if code.used:
            # a replayed code: the stricter reading revokes the chain it started
            if code.chain and code.chain in self._chains:
                self._end_chain(self._chains[code.chain], "authorization code replayed")
            return "code_reused", 400, "invalid_grant", "The authorization code has already been used."
        if now > code.issued_at + CODE_SECONDS:
            return "code_expired", 400, "invalid_grant", "The authorization code has expired."
        if redirect_uri != code.redirect_uri:
            return (
                "redirect_mismatch",
                400,
                "invalid_grant",
                "The redirect_uri does not match the authorization request.",
            )
        return None

    def _refresh_grant(self, form: dict[str, str], now: float) -> Reply:
        token = form.get("refresh_token")
        if not token:
            raise _Answer(_token_error(400, "invalid_request", "refresh_token is required."))
        with self._lock:
            found = self._refresh.get(token)
            chain = self._chains[found[0]] if found else None
            problem = self._refresh_problem(found, chain, now)
            if problem is not None:
                outcome, reply = problem
                self.counters.log_refresh(now, outcome, chain.id if chain else None)
                raise _Answer(reply)
            assert found is not None and chain is not None
            self._refresh[token] = (chain.id, found[1], False)
            if self.policy.rotation_revokes_access_token:
                self._access.pop(chain.access_token, None)
            chain.generation += 1
            reply = self._issue(chain, now)
        self.counters.add("refreshes")
        self.counters.log_refresh(now, "rotated", chain.id)
        return reply

    def _refresh_problem(
        self, found: tuple[str, float, bool] | None, chain: Chain | None, now: float
    ) -> tuple[str, Reply] | None:
        """(log outcome, answer) when the refresh token cannot be used; checked in Exact's order."""
        if found is None or chain is None:
            return "invalid", _token_error(400, "invalid_grant", "The refresh token is invalid.")
        _, issued_at, current = found
        if not current:
            self.counters.add("refresh_token_reuse")
            if self.policy.reuse_kills_chain:
                self._end_chain(chain, "old refresh token used")
            return "reuse", _token_error(401, "unauthorized_client", "Old refresh token used.")
        if not chain.alive:
            return "revoked", _token_error(400, "invalid_grant", "The refresh token has been revoked.")
        if now >= issued_at + REFRESH_SECONDS:
            expired = datetime.fromtimestamp(issued_at + REFRESH_SECONDS, UTC).strftime("%m/%d/%Y %H:%M:%S")
            return "expired", _token_error(
                400, "invalid_request", f"The refresh token expired at {expired} (UTC)."
            )
        if now - chain.issued_at < TOO_EARLY_SECONDS:
            self.counters.add("too_early_refreshes")
            reply = _token_error(
                400,
                "access_denied",
                "Rate limit exceeded: access_token not expired",
                [("Reason", "TooEarlyToRefreshTokens")],
            )
            return "too_early", reply
        return None

    def _end_chain(self, chain: Chain, why: str) -> None:
        chain.alive = False
        chain.ended_because = chain.ended_because or why
        self._access.pop(chain.access_token, None)

    # --- the API's view ---------------------------------------------------------------------------

    def grant_for(self, authorization: str | None) -> tuple[Grant | None, str, str | None]:
        """(grant, "", user) for a valid ``Bearer`` header, else (None, error_description, user if known).

        The user of an expired or revoked token is still known: its 401 counts toward that
        user's error block, as Exact counts 401s.
        """
        if not authorization:
            return None, "access token missing", None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, "access token missing", None
        now = self.clock.now()
        with self._lock:
            found = self._access_seen.get(token.strip())
            if found is None:
                return None, "Signed data extraction has failed", None
            chain = self._chains[found]
            expires = self._access.get(token.strip())
            if expires is None or not chain.alive:
                return None, "access token revoked", chain.user
            if now >= expires[1]:
                return None, "access token expired", chain.user
            return Grant(chain.id, chain.user, chain.divisions), "", chain.user

    # --- admin ---------------------------------------------------------------------------------------

    def chains(self) -> list[dict[str, Any]]:
        now = self.clock.now()
        with self._lock:
            return [
                {
                    "chain": c.id, "grant": c.grant, "alive": c.alive, "ended_because": c.ended_because,
                    "generation": c.generation, "divisions": list(c.divisions), "created_at": c.created_at,
                    "issued_at": c.issued_at, "access_expires_at": c.issued_at + ACCESS_SECONDS,
                    "refresh_expires_at": c.issued_at + REFRESH_SECONDS if c.refresh_token else None,
                    "refresh_allowed_after": c.issued_at + TOO_EARLY_SECONDS if c.refresh_token else None,
                    "access_valid": c.alive and now < c.issued_at + ACCESS_SECONDS,
                }
                for c in self._chains.values()
            ]  # fmt: skip

    def revoke(self, chain_id: str | None) -> int:
        with self._lock:
            targets = [c for c in self._chains.values() if c.alive and (chain_id is None or c.id == chain_id)]
            for chain in targets:
                self._end_chain(chain, "revoked by the administrator")
            return len(targets)
