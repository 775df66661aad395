"""Token records with recognizable (fake) secret values, for store tests."""

from __future__ import annotations

from shared.tokens import TokenRecord, TokenStatus

ACCESS_MARK = "AT-SECRET-VALUE"
REFRESH_MARK = "RT-SECRET-VALUE"


def record(
    connection: str = "acme-nl",
    *,
    generation: int = 1,
    status: TokenStatus = TokenStatus.OK,
    issued: float = 1_800_000_000.0,
    pad: int = 0,
) -> TokenRecord:
    """A record whose token values embed ``generation`` (and optional padding, for size)."""
    return TokenRecord(
        connection=connection,
        provider="exact",
        access_token=f"{ACCESS_MARK}-{connection}-{generation}" + "a" * pad,
        refresh_token=f"{REFRESH_MARK}-{connection}-{generation}" + "r" * pad,
        access_expires_at=issued + 600,
        refresh_issued_at=issued,
        generation=generation,
        status=status,
        last_refresh_at=issued,
    )
