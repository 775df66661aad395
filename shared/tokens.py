"""The token record: one connection's whole OAuth state, stored as one secret.

Everything about a chain lives in one JSON document written atomically (one Key Vault
``set_secret``, one file rename), so a reader never sees a new refresh token beside an old
status. ``status`` is the protocol's memory across processes and crashes:

- ``ok``: the stored tokens are the live ones.
- ``refreshing``: a process wrote its intent and called the token endpoint; its answer is not
  stored yet. Seen by another process after the lock is free, it means that process died
  mid-refresh: the stored refresh token may or may not still be alive (treated as ``in_doubt``).
- ``in_doubt``: the token endpoint's answer was lost (5xx, timeout). The next attempt presents the
  same refresh token once more and settles the status either way.
- ``needs_reauth``: the chain is dead; only a person's consent repairs it.

``__repr__`` never shows token values, so a record can be logged by accident without harm.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any


class TokenStatus(StrEnum):
    OK = "ok"
    REFRESHING = "refreshing"
    IN_DOUBT = "in_doubt"
    NEEDS_REAUTH = "needs_reauth"


SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TokenRecord:
    connection: str
    provider: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    #: epoch seconds after which the access token must not be used
    access_expires_at: float
    #: epoch seconds when the current refresh token was issued (our receive time)
    refresh_issued_at: float
    generation: int = 0
    status: TokenStatus = TokenStatus.OK
    last_error: str | None = None
    last_refresh_at: float | None = None
    consented_at: float | None = None
    #: who consented / what the consent allows, as far as the provider tells us (no secrets)
    subject: str | None = None
    scope: str | None = None
    #: epoch seconds when the current access token was issued (our receive time: never earlier
    #: than the provider's own issue time, so "earliest refresh" rules measured from it are safe).
    #: None in records written before this field existed: ``refresh_issued_at`` stands in.
    access_issued_at: float | None = None
    #: epoch seconds when the current refresh token dies, when the provider's rule is known
    refresh_expires_at: float | None = None
    #: epoch seconds of the last call to the token endpoint for this chain (intent time)
    attempted_at: float | None = None
    #: failed token-endpoint attempts since the last success (spaces out the next attempt)
    failures: int = 0

    def with_changes(self, **changes: Any) -> TokenRecord:
        return replace(self, **changes)

    def access_valid_for(self, now: float) -> float:
        return self.access_expires_at - now

    def refresh_age(self, now: float) -> float:
        return now - self.refresh_issued_at

    @property
    def issued_at(self) -> float:
        """When the current access token was issued (falls back for older records)."""
        return self.refresh_issued_at if self.access_issued_at is None else self.access_issued_at

    def public_view(self, now: float) -> dict[str, Any]:
        """What status endpoints show: everything but the token values."""
        return {
            "connection": self.connection,
            "provider": self.provider,
            "status": self.status.value,
            "generation": self.generation,
            "access_expires_at": self.access_expires_at,
            "access_valid_for_seconds": round(self.access_valid_for(now), 1),
            "refresh_token_age_seconds": round(self.refresh_age(now), 1),
            "last_refresh_at": self.last_refresh_at,
            "consented_at": self.consented_at,
            "last_error": self.last_error,
            "subject": self.subject,
            "refresh_expires_at": self.refresh_expires_at,
            "last_attempt_at": self.attempted_at,
        }

    def to_json(self) -> str:
        data = asdict(self)
        data["status"] = self.status.value
        data["schema"] = SCHEMA_VERSION
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TokenRecord:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("token record is not a JSON object")
        data.pop("schema", None)
        data["status"] = TokenStatus(data.get("status", "ok"))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
