"""The consent ``state``: signed, expiring, single use, and bound to the one browser (or CLI run)
that started the consent.

The callback is anonymous, so the state is all that protects it. Four properties, four checks:

- **signed** (HMAC-SHA256): nobody can make us exchange a code for a connection name or provider
  they chose. The key is derived from the app's client secret, so no extra setting has to be
  provisioned and rotating the secret invalidates every pending state (they live 10 minutes).
- **expiring**: a state older than ``STATE_LIFETIME`` is refused.
- **bound**: ``issue`` returns a random *binding* secret that never travels through the
  provider. The browser keeps it in an HttpOnly cookie (the CLI in a file under
  ``EXACTSYNC_HOME``); the state carries only its SHA-256. A consent link forwarded to, or a
  redirect intercepted by, someone else is useless without the cookie (login CSRF / session
  fixation), and the PKCE verifier is derived from the binding, so it never leaves our side either.
- **single use**: the state's nonce is claimed in the shared ``NonceStore`` exactly once, after
  every other check passed; a replay (back button, a copied URL, an attacker) is refused.

The state itself is public (it sits in URLs): it holds no secret, only names, times and hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit

from shared.clock import Clock
from shared.errors import ExactSyncError

#: How long a person has between opening the consent link and arriving back (seconds).
STATE_LIFETIME = 600.0
#: Tolerated clock skew between the instance that issued a state and the one that checks it.
CLOCK_SKEW = 60.0
_VERSION = "s1"
_KEY_CONTEXT = b"exactsync/oauth-state/v1"
_COOKIE_PREFIX = "exactsync_consent_"
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class Channel(StrEnum):
    """Where the binding secret lives: a browser cookie, or the CLI's pending-consent file."""

    BROWSER = "browser"
    CLI = "cli"


class StateProblem(StrEnum):
    FORGED = "forged"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    UNBOUND = "unbound"


class StateError(ExactSyncError):
    """The state failed a check. The message is safe to show: it never contains the state."""

    def __init__(self, problem: StateProblem, message: str, state: ConsentState | None = None) -> None:
        super().__init__(message)
        self.problem = problem
        #: the state, when its signature was good (expired, unbound, replayed): lets the callback
        #: clear the right cookie
        self.state = state


class NonceClaims(Protocol):
    def claim(self, nonce: str, expires_at: float) -> bool: ...


@dataclass(frozen=True)
class ConsentState:
    """What a verified state says. Every field is public."""

    connection: str
    provider: str
    nonce: str
    issued_at: float
    expires_at: float
    #: base64url SHA-256 of the binding secret held by the browser cookie or the CLI
    binding_hash: str
    channel: Channel
    pkce: bool

    @property
    def cookie_name(self) -> str:
        return cookie_name(self.nonce)


@dataclass(frozen=True)
class IssuedState:
    """A freshly issued state and the binding secret that must stay with whoever started it."""

    token: str
    binding: str
    state: ConsentState


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 4648 §5, as JWTs and PKCE use it)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def binding_hash(binding: str) -> str:
    return b64url(hashlib.sha256(binding.encode("utf-8")).digest())


def cookie_name(nonce: str) -> str:
    """One cookie per consent flow, so two consents started in one browser do not collide."""
    return _COOKIE_PREFIX + nonce[:16]


def derive_key(secret: str) -> bytes:
    """The state key: an HMAC of a fixed context under the app's client secret.

    Deriving (rather than using the secret itself) keeps the state signature useless for
    anything else the client secret authenticates.
    """
    if not secret:
        raise ExactSyncError("cannot sign consent states: the client secret is empty")
    return hmac.new(secret.encode("utf-8"), _KEY_CONTEXT, hashlib.sha256).digest()


class StateSigner:
    """Issues and checks consent states. Holds the derived key; never logs it."""

    def __init__(self, key: bytes, clock: Clock, *, lifetime: float = STATE_LIFETIME) -> None:
        if len(key) < 32:
            raise ValueError("state key must be at least 32 bytes")
        self._key = key
        self._clock = clock
        self._lifetime = lifetime

    def __repr__(self) -> str:
        return f"StateSigner(lifetime={self._lifetime})"

    @classmethod
    def from_secret(cls, secret: str, clock: Clock, *, lifetime: float = STATE_LIFETIME) -> StateSigner:
        return cls(derive_key(secret), clock, lifetime=lifetime)

    # --- issue -----------------------------------------------------------------------------

    def issue(self, *, connection: str, provider: str, channel: Channel, pkce: bool) -> IssuedState:
        now = self._clock.now()
        binding = secrets.token_urlsafe(32)
        state = ConsentState(
            connection=connection,
            provider=provider,
            nonce=secrets.token_urlsafe(18),
            issued_at=round(now, 3),
            expires_at=round(now + self._lifetime, 3),
            binding_hash=binding_hash(binding),
            channel=channel,
            pkce=pkce,
        )
        payload = {
            "c": state.connection,
            "p": state.provider,
            "n": state.nonce,
            "i": state.issued_at,
            "e": state.expires_at,
            "b": state.binding_hash,
            "h": state.channel.value,
            "k": 1 if state.pkce else 0,
        }
        body = b64url(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return IssuedState(token=f"{_VERSION}.{body}.{self._sign(body)}", binding=binding, state=state)

    def pkce_verifier(self, binding: str) -> str:
        """The PKCE code verifier for a flow: derived from its binding, so it is stored nowhere
        and never appears in a URL (43 characters of base64url, as RFC 7636 allows)."""
        return b64url(hmac.new(self._key, b"pkce\x00" + binding.encode("utf-8"), hashlib.sha256).digest())

    # --- check -----------------------------------------------------------------------------

    def verify(self, token: str | None) -> ConsentState:
        """Signature, format and expiry. Raises ``StateError`` (``forged`` or ``expired``)."""
        forged = StateError(
            StateProblem.FORGED,
            "The consent state is missing or was not issued by this app (it may have been altered).",
        )
        if not token or len(token) > 2048:
            raise forged
        version, _, rest = token.partition(".")
        body, _, signature = rest.partition(".")
        if version != _VERSION or not body or not signature:
            raise forged
        if not hmac.compare_digest(self._sign(body), signature):
            raise forged
        try:
            state = _parse_payload(json.loads(_unb64(body)))
        except (ValueError, KeyError, TypeError):
            raise forged from None
        now = self._clock.now()
        if state.issued_at > now + CLOCK_SKEW:
            raise forged
        if now > state.expires_at:
            raise StateError(
                StateProblem.EXPIRED,
                f"The consent link expired (it is valid for {int(self._lifetime // 60)} minutes). "
                "Start the consent again.",
                state,
            )
        return state

    def redeem(self, token: str | None, binding: str | None, nonces: NonceClaims) -> ConsentState:
        """Every check, in the order that reveals least: signature, expiry, binding, then the
        single-use claim (last, so a request that fails an earlier check burns nothing)."""
        state = self.verify(token)
        check_binding(state, binding)
        if not nonces.claim(state.nonce, state.expires_at + CLOCK_SKEW):
            raise StateError(
                StateProblem.REPLAYED,
                "This consent link was already used. Each consent link works once: start again.",
                state,
            )
        return state

    def _sign(self, body: str) -> str:
        mac = hmac.new(self._key, f"{_VERSION}.{body}".encode("ascii"), hashlib.sha256)
        return b64url(mac.digest())


def check_binding(state: ConsentState, binding: str | None) -> None:
    if not binding:
        where = (
            "this browser has no consent cookie for it. Start and finish the consent in the same "
            "browser, on the same host name as the redirect URI"
            if state.channel is Channel.BROWSER
            else "no pending consent for it was found under EXACTSYNC_HOME. Run `exactsync authorize` "
            "again on this machine"
        )
        raise StateError(StateProblem.UNBOUND, f"This consent was not started here: {where}.", state)
    if not hmac.compare_digest(binding_hash(binding), state.binding_hash):
        raise StateError(
            StateProblem.UNBOUND,
            "This consent was started in another browser or session: start the consent again here.",
            state,
        )


def _parse_payload(data: Any) -> ConsentState:
    if not isinstance(data, dict):
        raise ValueError("state payload is not an object")
    nonce = str(data["n"])
    if not _NONCE_RE.match(nonce):
        raise ValueError("bad nonce")
    return ConsentState(
        connection=str(data["c"]),
        provider=str(data["p"]),
        nonce=nonce,
        issued_at=float(data["i"]),
        expires_at=float(data["e"]),
        binding_hash=str(data["b"]),
        channel=Channel(str(data["h"])),
        pkce=bool(data["k"]),
    )


# --- the browser cookie -------------------------------------------------------------------------


def _cookie_attributes(redirect_uri: str) -> str:
    """Scoped to the callback's path; ``Secure`` unless the callback is plain-http loopback
    (browsers drop Secure cookies set over http); ``SameSite=Lax`` so the provider's top-level
    redirect back to us carries it."""
    parts = urlsplit(redirect_uri)
    path = parts.path or "/"
    attributes = f"Path={path}; HttpOnly; SameSite=Lax"
    if parts.scheme == "https":
        attributes += "; Secure"
    return attributes


def set_cookie_header(issued: IssuedState, redirect_uri: str, *, lifetime: float = STATE_LIFETIME) -> str:
    name = issued.state.cookie_name
    return f"{name}={issued.binding}; Max-Age={int(lifetime)}; {_cookie_attributes(redirect_uri)}"


def clear_cookie_header(name: str, redirect_uri: str) -> str:
    return f"{name}=; Max-Age=0; {_cookie_attributes(redirect_uri)}"
