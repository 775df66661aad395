"""Typed errors of the Exact Online REST client.

Each error names the endpoint (method and path, never the host's credentials) and the facts a
person needs to act: the HTTP status, Exact's OData message, its ``Reason`` header, the content
type of an unexpected body, the division whose budget ran out and when it comes back. Messages
are built from those public facts only: no access token, no Authorization header, no secret.

Why so many types: the caller's reaction differs. A 4xx must not be retried (Exact blocks an
endpoint for an hour after 10 errors), ``DailyBudgetExhausted`` means "continue after the reset",
``MinutelyBudgetSpent`` means "hand over and come back at the minute's reset", a 5xx that kept
failing is worth a later retry, and an unexpected body is a protocol problem to report.
"""

from __future__ import annotations

from shared.errors import ExactSyncError


class ExactError(ExactSyncError):
    """Base of everything the Exact client raises on purpose."""


class ExactApiError(ExactError):
    """Exact answered with an error status (4xx, or a 5xx that outlived the retries)."""

    def __init__(
        self,
        status: int,
        endpoint: str,
        message: str,
        reason: str | None = None,
        *,
        content_type: str | None = None,
    ) -> None:
        self.status = status
        self.endpoint = endpoint
        self.message = message
        self.reason = reason
        self.content_type = content_type
        text = f"Exact Online answered HTTP {status} on {endpoint}"
        if reason:
            text += f" (Reason: {reason})"
        if message:
            text += f": {message}"
        super().__init__(text)


class ExactUnauthorized(ExactApiError):
    """401: the access token was refused (after the one refresh-and-retry, or not refreshable)."""


class ExactForbidden(ExactApiError):
    """403: ``reason`` says why (NoDivisionAccess, BlockedUser, InactiveUser, BlockedCustomer,
    LicenseExpired, DivisionBlocked, or a scope violation). Only a person can fix it."""


class ExactNotFound(ExactApiError):
    """404: wrong path or key. Not retried (it counts toward Exact's error block)."""


class ExactRateLimited(ExactApiError):
    """429 that the client could not wait out: no reset header to wait for (e.g. an endpoint
    blocked after too many errors, ``Reason: ErrorLimitExceeded``), or the retries are spent."""

    def __init__(
        self,
        endpoint: str,
        division: int | None,
        reset_at: float | None,
        message: str,
        reason: str | None = None,
    ) -> None:
        self.division = division
        self.reset_at = reset_at
        super().__init__(429, endpoint, message, reason)

    @property
    def endpoint_blocked(self) -> bool:
        """Exact blocked this endpoint after too many errors (about an hour; longer on repeat):
        retrying at the next minute would only extend the block."""
        return (self.reason or "").lower() == "errorlimitexceeded"


class ExactServerError(ExactApiError):
    """5xx that kept coming back after the bounded, jittered retries."""


class ExactResponseError(ExactError):
    """The answer was not the JSON the endpoint promises: Atom/XML, HTML, empty, truncated,
    malformed, or shaped unlike OData. Not retried: the same request would likely get the same."""

    def __init__(
        self, endpoint: str, problem: str, *, status: int | None = None, content_type: str | None = None
    ):
        self.endpoint = endpoint
        self.problem = problem
        self.status = status
        self.content_type = content_type
        details = []
        if status is not None:
            details.append(f"HTTP {status}")
        details.append(f"content-type {content_type or 'none'}")
        super().__init__(
            f"unexpected answer from Exact Online on {endpoint} ({', '.join(details)}): {problem}"
        )


class ExactTransportError(ExactError):
    """The request never got an answer (connect error, timeout, dropped connection) after retries."""

    def __init__(self, endpoint: str, cause: str, attempts: int) -> None:
        self.endpoint = endpoint
        self.cause = cause
        self.attempts = attempts
        super().__init__(f"no answer from Exact Online on {endpoint} after {attempts} attempt(s): {cause}")


class DailyBudgetExhausted(ExactError):
    """The division's daily call budget is down to the reserve: stop and continue after ``reset_at``.

    Raised *before* a call is made, so the reserve (kept for incremental syncs) is not burned.
    """

    def __init__(self, division: int, reset_at: float | None, remaining: int | None = None, reserve: int = 0):
        self.division = division
        self.reset_at = reset_at
        self.remaining = remaining
        self.reserve = reserve
        when = f"at epoch {reset_at:.0f}" if reset_at is not None else "at the next 00:00 UTC"
        super().__init__(
            f"daily Exact Online call budget of division {division} is spent down to its reserve "
            f"(remaining {remaining if remaining is not None else '?'}, reserve {reserve}); it resets {when}"
        )


class MinutelyBudgetSpent(ExactError):
    """The division's minutely budget is spent and waiting for its reset exceeds the caller's
    ``max_wait``: hand over (e.g. a continuation delayed to ``reset_at``) instead of blocking."""

    def __init__(self, division: int, reset_at: float, wait_seconds: float) -> None:
        self.division = division
        self.reset_at = reset_at
        self.wait_seconds = wait_seconds
        super().__init__(
            f"minutely Exact Online call budget of division {division} is spent; "
            f"it resets in {wait_seconds:.1f} s (epoch {reset_at:.3f})"
        )


class ConversionError(ExactError, ValueError):
    """A row value does not fit its catalog type; names the entity, field and a short value preview."""

    def __init__(self, entity: str, field: str, value: object, expected: str) -> None:
        self.entity = entity
        self.field = field
        self.expected = expected
        preview = repr(value)
        if len(preview) > 80:
            preview = preview[:77] + "..."
        super().__init__(f"{entity}.{field}: expected {expected}, got {preview}")


class WebhookError(ExactError):
    """A webhook delivery was refused; ``reason`` is safe to log and to answer with."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class MalformedWebhook(WebhookError):
    """The body is not a delivery: not JSON, no ``Content`` object, no well-formed ``HashCode``."""


class InvalidSignature(WebhookError):
    """``HashCode`` does not match the HMAC of the raw ``Content`` text under our webhook secret."""
