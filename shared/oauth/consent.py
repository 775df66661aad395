"""A person's consent, start to finish: the logic the HTTP routes and ``exactsync authorize`` share.

``begin`` issues a state (``shared.oauth.state``) and builds the provider's authorize URL (with a
PKCE challenge when the provider wants one). ``Redirect`` reads what the provider sent back to
the redirect URI, URL-decoding every value exactly once: Exact's codes contain ``!``, which
arrives as ``%21``; a second decode (or a re-encode) mangles the code and Exact answers "Signed
data extraction has failed". ``finish`` checks the state (signature, expiry, binding, single
use), turns provider errors into clear failures, exchanges the code and hands the grant to the
keeper. Any failure raises ``ConsentFailed`` *before* anything is stored.

Failures carry an HTTP status, a title and a next step for a person; none of them ever holds a
code, a token or a secret (provider descriptions pass through the redactor).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from shared.errors import ConfigError, ExactSyncError
from shared.oauth.state import (
    Channel,
    ConsentState,
    IssuedState,
    StateError,
    StateProblem,
    StateSigner,
    b64url,
)

if TYPE_CHECKING:
    import httpx

    from shared.oauth.providers import Provider
    from shared.runtime import Runtime

log = logging.getLogger("exactsync.oauth.consent")

DEFAULT_CONNECTION = "default"
DEFAULT_PROVIDER = "exact"
#: longest provider error text we show a person
_MAX_SHOWN = 200


class Failure(StrEnum):
    """Why a consent did not complete; stable names for logs and tests."""

    INVALID_REQUEST = "invalid_request"
    FORGED_STATE = "forged_state"
    EXPIRED_STATE = "expired_state"
    REPLAYED_STATE = "replayed_state"
    UNBOUND_STATE = "unbound_state"
    WRONG_CHANNEL = "wrong_channel"
    DENIED = "denied"
    PROVIDER_ERROR = "provider_error"
    CODE_REJECTED = "code_rejected"
    REDIRECT_MISMATCH = "redirect_mismatch"
    EXCHANGE_REFUSED = "exchange_refused"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    STORE_FAILED = "store_failed"


class ConsentFailed(ExactSyncError):
    """The consent did not complete and nothing was stored.

    ``status`` is the HTTP status for the callback page, ``title`` a headline, ``str(self)`` the
    explanation and ``next_step`` what the person should do. All safe to show.
    """

    def __init__(
        self,
        failure: Failure,
        status: int,
        title: str,
        message: str,
        next_step: str,
        *,
        state: ConsentState | None = None,
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.status = status
        self.title = title
        self.next_step = next_step
        self.state = state

    @property
    def text(self) -> str:
        return f"{self} {self.next_step}".strip()


@dataclass(frozen=True)
class ConsentStart:
    """A started consent: the URL to open, and the issued state with its binding secret."""

    authorize_url: str
    issued: IssuedState
    provider: str
    redirect_uri: str

    @property
    def connection(self) -> str:
        return self.issued.state.connection


@dataclass(frozen=True)
class ConsentDone:
    connection: str
    provider: str
    state: ConsentState
    #: the keeper's public status view of the new record (no secret values)
    status: dict[str, Any]


@dataclass(frozen=True)
class Redirect:
    """What the provider appended to the redirect URI, each value URL-decoded exactly once."""

    state: str | None = None
    code: str | None = None
    error: str | None = None
    error_description: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Redirect:
        """From query parameters the host already decoded once (Functions' ``req.params``).

        Decoding again here would be the ``%21`` trap: nothing is unquoted in this method.
        """

        def get(name: str) -> str | None:
            value = params.get(name)
            return value if value else None

        return cls(
            state=get("state"),
            code=get("code"),
            error=get("error"),
            error_description=get("error_description"),
        )

    @classmethod
    def from_query(cls, query: str) -> Redirect:
        """From a raw query string (``a=b&c=d``), decoded here, once."""
        pairs: dict[str, str] = {}
        for key, value in parse_qsl(query.lstrip("?"), keep_blank_values=True):
            pairs.setdefault(key, value)
        return cls.from_params(pairs)

    @classmethod
    def from_url(cls, url: str) -> Redirect:
        """From the full URL a person copied out of the browser's address bar (or just its query)."""
        text = url.strip()
        if "://" in text:
            parts = urlsplit(text)
            query = parts.query
            if not query and parts.fragment:
                query = parts.fragment  # implicit-style answers put the parameters after '#'
        else:
            query = text
        return cls.from_query(query)


def signer(runtime: Runtime) -> StateSigner:
    """The state signer: its key is derived from the app's client secret (see shared.oauth.state)."""
    return StateSigner.from_secret(runtime.settings.client_secret, runtime.clock)


def validate_connection(name: str | None) -> str:
    """The connection name, checked against the stores' naming rule (ExactSyncError if bad)."""
    from shared.stores.base import validate_connection_name

    return validate_connection_name(DEFAULT_CONNECTION if name is None else name.strip())


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE verifier (RFC 7636)."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def begin(
    runtime: Runtime,
    connection: str | None,
    provider_name: str | None = None,
    *,
    channel: Channel,
) -> ConsentStart:
    """Issue a state for ``connection`` and build the provider's authorize URL.

    Raises ``InvalidConnectionName`` or ``ConfigError`` (unknown provider); nothing is stored.
    """
    name = validate_connection(connection)
    provider = runtime.providers.get(provider_name or DEFAULT_PROVIDER)
    state_signer = signer(runtime)
    issued = state_signer.issue(connection=name, provider=provider.name, channel=channel, pkce=provider.pkce)
    challenge = pkce_challenge(state_signer.pkce_verifier(issued.binding)) if provider.pkce else None
    url = provider.authorization_url(issued.token, code_challenge=challenge)
    log.info("consent started: connection=%s provider=%s channel=%s", name, provider.name, channel.value)
    return ConsentStart(
        authorize_url=url, issued=issued, provider=provider.name, redirect_uri=provider.redirect_uri
    )


def peek_state(runtime: Runtime, redirect: Redirect) -> ConsentState:
    """Signature and expiry only (no claim): lets a caller find the binding that belongs to the
    state (its cookie name, its pending file). Raises ``ConsentFailed``."""
    try:
        return signer(runtime).verify(redirect.state)
    except StateError as exc:
        raise _state_failure(exc, exc.state) from None


def finish(
    runtime: Runtime,
    redirect: Redirect,
    binding_for: Callable[[ConsentState], str | None],
    *,
    channel: Channel,
    http: httpx.Client | None = None,
) -> ConsentDone:
    """Complete a consent from what came back on the redirect URI.

    ``binding_for`` returns the binding secret held by whoever started the flow (the browser's
    cookie, the CLI's pending file) for the verified state. ``channel`` is where we are finishing:
    a state started by the CLI is refused by the HTTP callback and vice versa, *without* being
    claimed, so the right side can still finish it. Raises ``ConsentFailed``; stores only on
    success.
    """
    state_signer = signer(runtime)
    state = peek_state(runtime, redirect)
    if state.channel is not channel:
        raise _wrong_channel(state)
    binding = binding_for(state)
    try:
        state = state_signer.redeem(redirect.state, binding, runtime.nonces)
    except StateError as exc:
        raise _state_failure(exc, state) from None

    if redirect.error:
        raise _provider_failure(redirect, state)
    if not redirect.code:
        raise ConsentFailed(
            Failure.INVALID_REQUEST,
            400,
            "No authorization code",
            "The provider's answer carried neither an authorization code nor an error.",
            "Start the consent again.",
            state=state,
        )
    try:
        provider = runtime.providers.get(state.provider)
    except ConfigError:
        raise ConsentFailed(
            Failure.INVALID_REQUEST,
            400,
            "Unknown provider",
            f"The provider {state.provider!r} this consent was started for is no longer configured.",
            "Check OAUTH_PROVIDERS and start the consent again.",
            state=state,
        ) from None
    verifier = state_signer.pkce_verifier(binding) if state.pkce and binding else None
    grant = _exchange(runtime, provider, redirect.code, verifier=verifier, state=state, http=http)
    from shared.oauth.errors import TokenStoreUnavailable

    try:
        record = runtime.keeper.adopt_consent(state.connection, provider.name, grant)
    except TokenStoreUnavailable as exc:
        log.error("consent for connection=%s: storing the tokens failed", state.connection)
        raise ConsentFailed(
            Failure.STORE_FAILED,
            503,
            "Tokens could not be stored",
            "The provider accepted the consent, but the token store could not be written: "
            f"{_shown(str(exc))}",
            "Fix the token store (Key Vault access, EXACTSYNC_HOME) and consent again.",
            state=state,
        ) from None
    except ExactSyncError as exc:
        raise _exchange_failure(
            Failure.EXCHANGE_REFUSED,
            400,
            "The consent cannot keep the connection alive",
            f"{_shown(str(exc))}.",
            "Fix the app registration and start the consent again.",
            state=state,
        ) from None
    log.info("consent completed: connection=%s provider=%s", state.connection, provider.name)
    return ConsentDone(
        connection=state.connection,
        provider=provider.name,
        state=state,
        status=record.public_view(runtime.clock.now()),
    )


def _exchange(
    runtime: Runtime,
    provider: Provider,
    code: str,
    *,
    verifier: str | None,
    state: ConsentState,
    http: httpx.Client | None,
) -> Any:
    from shared.oauth.errors import (
        AuthorizationCodeRejected,
        TokenEndpointError,
        TokenEndpointUnavailable,
        TokenInDoubt,
    )
    from shared.oauth.token_endpoint import TokenEndpoint

    client = http if http is not None else runtime.oauth_http
    try:
        endpoint = TokenEndpoint(provider, http=client, clock=runtime.clock)
        return endpoint.exchange_code(code, redirect_uri=provider.redirect_uri, code_verifier=verifier)
    except AuthorizationCodeRejected as exc:
        said = f"{_shown(exc.error or str(exc.status))}: {_shown(exc.description or '')}"
        if "redirect" in (exc.description or "").lower():
            raise _exchange_failure(
                Failure.REDIRECT_MISMATCH,
                400,
                "Redirect URI mismatch",
                f"The provider refused the code exchange ({said}).",
                f"The redirect URI this app sends ({provider.redirect_uri}) must equal the one the "
                "consent was started with and the one registered for the app, exactly "
                "(EXACT_REDIRECT_URI). Fix the setting and start the consent again.",
                state=state,
            ) from None
        raise _exchange_failure(
            Failure.CODE_REJECTED,
            400,
            "Authorization code refused",
            f"The provider refused the authorization code ({said}). A code works once and only for "
            "about 3 minutes, and must arrive exactly as the provider sent it.",
            "Start the consent again and finish it within a few minutes.",
            state=state,
        ) from None
    except (TokenEndpointUnavailable, TokenInDoubt) as exc:
        raise _exchange_failure(
            Failure.PROVIDER_UNAVAILABLE,
            502,
            "The provider did not answer",
            f"The code exchange with {provider.host} failed: {_shown(str(exc))}",
            "Try the consent again in a few minutes.",
            state=state,
        ) from None
    except TokenEndpointError as exc:
        hint = (
            "Check that the redirect URI setting (EXACT_REDIRECT_URI) equals the app's registered "
            "redirect URI exactly, and that the client id and secret are the app's."
        )
        raise _exchange_failure(
            Failure.EXCHANGE_REFUSED,
            400,
            "The provider refused the code exchange",
            f"{_shown(str(exc))}.",
            hint + " Then start the consent again.",
            state=state,
        ) from None


def _exchange_failure(
    failure: Failure, status: int, title: str, message: str, next_step: str, *, state: ConsentState
) -> ConsentFailed:
    log.warning("consent for connection=%s failed: %s", state.connection, failure.value)
    return ConsentFailed(failure, status, title, message, next_step, state=state)


def _shown(text: str) -> str:
    """Provider or error text as shown to a person: redacted, printable, short."""
    from shared.oauth.redact import redact

    cleaned = "".join(c if c.isprintable() else " " for c in text).strip()
    cleaned = redact(cleaned)
    return cleaned if len(cleaned) <= _MAX_SHOWN else cleaned[: _MAX_SHOWN - 3] + "..."


_STATE_FAILURES: dict[StateProblem, tuple[Failure, int, str]] = {
    StateProblem.FORGED: (Failure.FORGED_STATE, 400, "Invalid consent link"),
    StateProblem.EXPIRED: (Failure.EXPIRED_STATE, 400, "Consent link expired"),
    StateProblem.REPLAYED: (Failure.REPLAYED_STATE, 409, "Consent link already used"),
    StateProblem.UNBOUND: (Failure.UNBOUND_STATE, 403, "Consent started elsewhere"),
}


def _state_failure(exc: StateError, state: ConsentState | None) -> ConsentFailed:
    failure, status, title = _STATE_FAILURES[exc.problem]
    log.warning("consent callback refused: %s", failure.value)
    next_step = (
        "Nothing was stored. Start the consent again (open /api/oauth/start?connection=NAME, or run "
        "`exactsync authorize`)."
    )
    if exc.problem is StateProblem.REPLAYED:
        next_step = (
            "Nothing new was stored. If the first attempt succeeded the connection is already set "
            "up (check its status); otherwise start the consent again."
        )
    return ConsentFailed(failure, status, title, str(exc), next_step, state=state)


def _wrong_channel(state: ConsentState) -> ConsentFailed:
    log.warning("consent callback refused: %s", Failure.WRONG_CHANNEL.value)
    if state.channel is Channel.CLI:
        return ConsentFailed(
            Failure.WRONG_CHANNEL,
            403,
            "Finish this consent in exactsync",
            f"This consent for connection {state.connection!r} was started by `exactsync authorize`, "
            "so only that command can finish it.",
            "Copy the complete URL of this page from the address bar and run "
            f"`exactsync authorize --connection {state.connection} --redirected-url 'URL'` on the "
            "machine that started it.",
            state=state,
        )
    return ConsentFailed(
        Failure.WRONG_CHANNEL,
        403,
        "Finish this consent in the browser",
        "This consent was started in a browser (/api/oauth/start); only the browser that started "
        "it can finish it.",
        "Start the consent again with `exactsync authorize`.",
        state=state,
    )


def _provider_failure(redirect: Redirect, state: ConsentState) -> ConsentFailed:
    error = _shown(redirect.error or "")
    description = _shown(redirect.error_description or "")
    log.warning("consent for connection=%s: provider answered error=%s", state.connection, error)
    if redirect.error == "access_denied":
        return ConsentFailed(
            Failure.DENIED,
            403,
            "Consent declined",
            f"The consent for connection {state.connection!r} was declined at the provider"
            + (f" ({description})." if description else "."),
            "Nothing was stored. To connect, start the consent again and choose to allow access.",
            state=state,
        )
    detail = f"{error}: {description}" if description else error
    return ConsentFailed(
        Failure.PROVIDER_ERROR,
        400,
        "The provider reported an error",
        f"The provider did not grant the consent ({detail}).",
        "Nothing was stored. Check the app registration (redirect URI, scopes) and start again.",
        state=state,
    )
