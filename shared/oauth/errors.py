"""Typed OAuth outcomes. Every message is built from public facts: names, HTTP status, the
provider's error code and a sanitized description. No token, code or client secret, ever.

The split follows what the caller must do next, not what the server said:

- ``NeedsReauth``: the chain is dead; only a person's consent helps. Never retried.
- ``TokenInDoubt``: the token endpoint may have rotated the chain but we did not get the answer
  (5xx, timeout, unreadable 200). The next attempt settles it; never retried blindly.
- ``TokenEndpointError`` and subclasses: the endpoint refused the request and rotated nothing
  (bad client, bad redirect, too early, rate limited, unreachable before sending).
"""

from __future__ import annotations

from shared.errors import ExactSyncError
from shared.locks.base import LockLost, LockTimeout

__all__ = [
    "AuthorizationCodeRejected",
    "LockLost",
    "LockTimeout",
    "NeedsReauth",
    "OAuthError",
    "RefreshDeferred",
    "RefreshTokenDead",
    "TokenEndpointError",
    "TokenEndpointUnavailable",
    "TokenInDoubt",
    "TokenStoreUnavailable",
    "TooEarlyToRefresh",
]


class OAuthError(ExactSyncError):
    """Base for the OAuth area's errors."""


class NeedsReauth(OAuthError):
    """The connection has no live token chain; a person must consent again."""

    def __init__(self, connection: str, reason: str | None = None) -> None:
        self.connection = connection
        self.reason = reason
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"connection {connection!r} needs a new consent{detail}. A person must open the consent "
            f"link (/api/oauth/start?connection={connection}) or run `exactsync authorize`"
        )


class TokenInDoubt(OAuthError):
    """The token endpoint's answer to a refresh was lost; the server may have rotated the chain."""

    def __init__(
        self,
        message: str,
        *,
        connection: str | None = None,
        endpoint: str | None = None,
        status: int | None = None,
    ) -> None:
        self.connection = connection
        self.endpoint = endpoint
        self.status = status
        super().__init__(message)


class TokenEndpointError(OAuthError):
    """The token endpoint refused the request; nothing was rotated.

    ``error`` is the provider's OAuth error code (``invalid_client``...), ``description`` its
    ``error_description`` after sanitizing (secrets masked, length capped).
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        status: int | None = None,
        error: str | None = None,
        description: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.status = status
        self.error = error
        self.description = description
        super().__init__(message)


class TooEarlyToRefresh(TokenEndpointError):
    """The provider refused a refresh before its earliest-refresh time; the current tokens stay valid."""


class RefreshTokenDead(TokenEndpointError):
    """The refresh token was refused for good (reused, expired, revoked): the chain is dead."""


class AuthorizationCodeRejected(TokenEndpointError):
    """The authorization code was refused: used already, expired (3 minutes), or mangled
    (decoded twice: Exact's "Signed data extraction has failed")."""


class TokenEndpointUnavailable(TokenEndpointError):
    """The request did not reach the endpoint, or was refused before processing (rate limit):
    nothing rotated, trying again later is safe."""


class TokenStoreUnavailable(OAuthError):
    """The token store could not be written after retries."""


class RefreshDeferred(OAuthError):
    """The keeper declined to call the token endpoint now (a recent failure, or the provider's
    window forbids it) and has no valid access token to offer."""
