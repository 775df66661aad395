"""The token store interface, the connection-name rule and the store's typed errors.

A connection name becomes a Key Vault secret name, a blob name and a file name as it is. Key Vault
names are case-insensitive and allow only letters, digits and ``-``; blob and file names are
case-sensitive. Allowing lowercase letters, digits and ``-`` only (1-40 characters) makes the
mapping 1:1 everywhere, so two spellings can never share (or split) one token chain.
"""

from __future__ import annotations

import re
from typing import Protocol

from shared.errors import ExactSyncError
from shared.tokens import TokenRecord

CONNECTION_NAME_MAX = 40
_CONNECTION_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


class InvalidConnectionName(ExactSyncError):
    """A connection name outside the rule; the message shows the rule and the rejected name."""

    def __init__(self, name: object) -> None:
        self.name = name
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        super().__init__(
            f"invalid connection name {shown}: use 1-{CONNECTION_NAME_MAX} characters, lowercase "
            "letters a-z, digits 0-9 and '-', starting with a letter or digit (e.g. 'acme-nl')"
        )


class TokenStoreError(ExactSyncError):
    """Reading or writing a connection's tokens failed.

    ``transient`` tells the caller whether trying again later can help (throttling, a 5xx, the
    network) or not (no permission, a corrupted record). ``retry_after`` is the service's own
    wish in seconds when it stated one. The message names the connection and the failure, never a
    token value.
    """

    def __init__(
        self,
        connection: str,
        reason: str,
        *,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.connection = connection
        self.reason = reason
        self.transient = transient
        self.retry_after = retry_after
        super().__init__(f"token store, connection {connection!r}: {reason}")


def validate_connection_name(name: str) -> str:
    """Return ``name`` unchanged when it follows the rule, else raise ``InvalidConnectionName``."""
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= CONNECTION_NAME_MAX
        or not _CONNECTION_NAME.fullmatch(name)
    ):
        raise InvalidConnectionName(name)
    return name


def is_connection_name(name: str) -> bool:
    try:
        validate_connection_name(name)
    except InvalidConnectionName:
        return False
    return True


class TokenStore(Protocol):
    """Where each connection's ``TokenRecord`` lives, one record per connection.

    ``save`` replaces the whole record atomically: a reader sees the old record or the new one,
    never a mix. Stores do no locking of their own; the connection lock serializes writers.
    """

    def load(self, connection: str) -> TokenRecord | None:
        """The stored record, or None when the connection has none."""
        ...

    def save(self, record: TokenRecord) -> None:
        """Store ``record`` as the connection's current record."""
        ...

    def list_connections(self) -> list[str]:
        """Names of every connection with a stored record, sorted."""
        ...

    def delete(self, connection: str) -> None:
        """Forget the connection's record; no error when there is none."""
        ...
