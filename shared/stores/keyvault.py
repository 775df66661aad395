"""Token records as Key Vault secrets: one secret per connection, one ``set_secret`` per save.

The secret ``<prefix><connection>`` (default prefix ``exactsync-conn-``) holds
``TokenRecord.to_json()`` as its value, content type ``application/json``, a few non-secret tags
(status, generation, provider, access-token expiry, refresh-token issue time, write time) so the
portal and ``az keyvault secret list`` show a chain's health without reading a value, and
``expires_on`` = the refresh token's death: the record's ``refresh_expires_at``, which the keeper
sets from the provider's rule (Exact Online: issued + 30 days). A record without one gets no
expiry (unless ``refresh_lifetime`` says otherwise): a guessed expiry could mark a live chain
expired.

Expired secrets: Microsoft's documentation says both that operations outside the ``exp`` window
"are automatically disallowed" and that a secret's get "will work for expired secrets"; the service
answers the get. We do not rely on it: should a get be refused with 403 ``SecretExpired``, ``load``
returns a value-less ``needs_reauth`` record rebuilt from the secret's tags (which listing still
shows), because a secret past the refresh token's death holds a dead chain anyway. The next
consent writes a new version with a new expiry.

Version growth (Key Vault keeps every version, old versions cannot be deleted, and a vault
backup of one secret fails beyond 500 versions). This store writes only when ``save`` is called;
reads never write. The token keeper saves when the tokens or the status change: the intent
(``refreshing``) and the result (``ok`` with the new tokens) of every refresh, plus the rare
status changes (``in_doubt``, ``needs_reauth``, a new consent). So:

- a chain used around the clock with Exact's 10-minute access tokens: at most 144 refreshes a
  day, i.e. up to ~288 versions/day/connection (~105,000 a year);
- a chain used by hourly loads of a few minutes each: ~24-48 refreshes, ~50-100 versions/day;
- an idle chain kept alive by the timer (``KEEPALIVE_AFTER_HOURS``, default 72): 2 versions
  every 3 days.

Decision: we accept the growth and do NOT rotate to a new secret name every N versions. Rotation
would need a second write (new secret plus a pointer to it), which gives up the one-atomic-write
property the token protocol rests on, for a benefit that does not exist: a backed-up refresh token
is dead as soon as the chain rotates once (minutes later), so restoring a token secret from a
backup can never revive a chain; the recovery path for a lost chain is a new consent. Soft delete
and purge protection on the vault (``infra/`` should enable both) protect the current version
against deletion.
Recommendation for operators: leave ``exactsync-conn-*`` secrets out of vault backup jobs (they
fail beyond 500 versions by design); keep backups for the long-lived secrets (client secret,
webhook secret). Busy chains cost ~9,000 secret writes a month, far below the 300 writes per
10 s throttle and negligible in price.

Throttling and transient errors: the azure-core retry policy retries 408/429/5xx and connection
errors a few times with exponential backoff and honours ``Retry-After``; a ``Retry-After`` longer
than ``max_retry_after`` is not slept through: the call fails at once with a transient
``TokenStoreError`` carrying ``retry_after``, so the keeper (which keeps the new tokens in memory)
decides. A retried ``set_secret`` whose first attempt did reach the vault writes the same value
twice: one extra version, nothing lost.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.clock import Clock, SystemClock
from shared.stores.base import TokenStoreError, is_connection_name, validate_connection_name
from shared.tokens import TokenRecord, TokenStatus

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.pipeline.policies import RetryPolicy
    from azure.core.pipeline.transport import HttpTransport
    from azure.keyvault.secrets import SecretClient

DEFAULT_SECRET_PREFIX = "exactsync-conn-"  # noqa: S105 (a name prefix, not a secret)
CONTENT_TYPE = "application/json"
#: Key Vault's limit for a secret value.
MAX_VALUE_BYTES = 25 * 1024
_SECRET_NAME_MAX = 127
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})

RefreshLifetime = float | Callable[[TokenRecord], float | None] | None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def secret_tags(record: TokenRecord, *, written_at: float) -> dict[str, str]:
    """The tags written with a record: public facts only (never a token, never ``last_error``)."""
    tags = {
        "managed-by": "exactsync",
        "connection": record.connection,
        "provider": record.provider[:200],
        "status": record.status.value,
        "generation": str(record.generation),
        "access-expires": _iso(record.access_expires_at),
        "refresh-issued": _iso(record.refresh_issued_at),
        "written-at": _iso(written_at),
    }
    if record.refresh_expires_at is not None:
        tags["refresh-expires"] = _iso(record.refresh_expires_at)
    return tags


def _bounded_retry_policy(
    *, retry_total: int, max_retry_after: float, timeout: float
) -> RetryPolicy[Any, Any]:
    """azure-core's RetryPolicy, except that it will not sleep through a Retry-After above the cap."""
    from azure.core.pipeline import PipelineResponse
    from azure.core.pipeline.policies import RetryPolicy

    class BoundedRetryAfterPolicy(RetryPolicy[Any, Any]):
        def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
            retry_after = self.get_retry_after(response)
            if retry_after is not None and retry_after > max_retry_after:
                return False
            return bool(super().is_retry(settings, response))

    return BoundedRetryAfterPolicy(
        retry_total=retry_total,
        retry_backoff_factor=0.8,
        retry_backoff_max=20,
        timeout=int(timeout),
    )


class KeyVaultTokenStore:
    """``TokenStore`` over Azure Key Vault secrets (see the module docstring).

    Give ``vault_url`` and ``credential`` (the client is built on first use, so constructing the
    store imports no Azure SDK), or a ready ``client``. ``transport`` is for tests: an azure-core
    ``HttpTransport`` that answers like Key Vault. ``expires_on`` is the record's
    ``refresh_expires_at``; for records without one, ``refresh_lifetime`` decides: seconds after
    ``refresh_issued_at``, a function of the record, or None for no expiry.
    """

    def __init__(
        self,
        vault_url: str | None = None,
        credential: TokenCredential | None = None,
        *,
        client: SecretClient | None = None,
        transport: HttpTransport[Any, Any] | None = None,
        secret_prefix: str = DEFAULT_SECRET_PREFIX,
        refresh_lifetime: RefreshLifetime = None,
        clock: Clock | None = None,
        retry_total: int = 5,
        max_retry_after: float = 60.0,
        operation_timeout: float = 120.0,
    ) -> None:
        if client is None and (not vault_url or credential is None):
            raise ValueError("KeyVaultTokenStore needs vault_url and credential, or a ready client")
        if not secret_prefix or not all(c.isascii() and (c.isalnum() or c == "-") for c in secret_prefix):
            raise ValueError("secret_prefix may hold only ASCII letters, digits and '-'")
        if len(secret_prefix) + 40 > _SECRET_NAME_MAX:
            raise ValueError("secret_prefix is too long for Key Vault secret names")
        self._vault_url = vault_url
        self._credential = credential
        self._client = client
        self._transport = transport
        self.secret_prefix = secret_prefix.lower()
        self._refresh_lifetime = refresh_lifetime
        self._clock = clock or SystemClock()
        self._retry_total = retry_total
        self._max_retry_after = max_retry_after
        self._operation_timeout = operation_timeout
        self._guard = threading.Lock()

    # --- client -------------------------------------------------------------------------------

    @property
    def client(self) -> SecretClient:
        with self._guard:
            if self._client is None:
                from azure.keyvault.secrets import SecretClient

                assert self._vault_url is not None and self._credential is not None
                options: dict[str, Any] = {
                    "retry_policy": _bounded_retry_policy(
                        retry_total=self._retry_total,
                        max_retry_after=self._max_retry_after,
                        timeout=self._operation_timeout,
                    ),
                }
                if self._transport is not None:
                    options["transport"] = self._transport
                else:
                    options.update(connection_timeout=10, read_timeout=30)
                self._client = SecretClient(self._vault_url, self._credential, **options)
            return self._client

    def secret_name(self, connection: str) -> str:
        return self.secret_prefix + validate_connection_name(connection)

    # --- TokenStore ---------------------------------------------------------------------------

    def load(self, connection: str) -> TokenRecord | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        name = self.secret_name(connection)
        try:
            secret = self.client.get_secret(name)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            if _is_expired_refusal(exc):
                return self._expired_record(connection, name)
            raise _store_error(connection, f"reading secret {name}", exc) from exc
        if secret.value is None:
            raise TokenStoreError(connection, f"secret {name} has no value")
        try:
            record = TokenRecord.from_json(secret.value)
        except json.JSONDecodeError as exc:
            raise TokenStoreError(
                connection, f"secret {name} is not a token record: invalid JSON ({exc.msg})"
            ) from None
        except (TypeError, ValueError, KeyError):
            raise TokenStoreError(
                connection, f"secret {name} is not a complete token record (fields missing or wrong)"
            ) from None
        if record.connection != connection:
            raise TokenStoreError(
                connection, f"secret {name} holds the record of connection {record.connection!r}"
            )
        return record

    def save(self, record: TokenRecord) -> None:
        from azure.core.exceptions import AzureError, ResourceExistsError

        connection = record.connection
        name = self.secret_name(connection)
        value = record.to_json()
        if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
            raise TokenStoreError(
                connection, f"token record is larger than Key Vault's {MAX_VALUE_BYTES} byte limit"
            )
        options: dict[str, Any] = {
            "content_type": CONTENT_TYPE,
            "tags": secret_tags(record, written_at=self._clock.now()),
        }
        expires_on = self._expires_on(record)
        if expires_on is not None:
            options["expires_on"] = expires_on
        try:
            try:
                self.client.set_secret(name, value, **options)
            except ResourceExistsError:
                # 409: the name belongs to a soft-deleted secret (the connection was deleted and
                # is being consented again). Bring it back, then write the new version.
                self.client.begin_recover_deleted_secret(name).wait()
                self.client.set_secret(name, value, **options)
        except AzureError as exc:
            raise _store_error(connection, f"writing secret {name}", exc) from exc

    def list_connections(self) -> list[str]:
        from azure.core.exceptions import AzureError

        found: list[str] = []
        try:
            for props in self.client.list_properties_of_secrets():
                name = (props.name or "").lower()
                if name.startswith(self.secret_prefix):
                    connection = name[len(self.secret_prefix) :]
                    if is_connection_name(connection):
                        found.append(connection)
        except AzureError as exc:
            raise _store_error("*", "listing secrets", exc) from exc
        return sorted(set(found))

    def delete(self, connection: str) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        name = self.secret_name(connection)
        try:
            poller = self.client.begin_delete_secret(name)
            # Wait until the deletion is complete, so a new consent for the same name can recover
            # and reuse it right away (a soft-deleted name is not writable while being deleted).
            poller.wait()
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise _store_error(connection, f"deleting secret {name}", exc) from exc

    # --- helpers ------------------------------------------------------------------------------

    def _expired_record(self, connection: str, name: str) -> TokenRecord:
        """A value-less ``needs_reauth`` record from the tags of a secret the vault will not read
        because it is past ``expires_on`` (the refresh token's death)."""
        from azure.core.exceptions import AzureError

        try:
            props = next(
                (p for p in self.client.list_properties_of_secrets() if (p.name or "").lower() == name),
                None,
            )
        except AzureError as exc:
            raise _store_error(connection, f"listing secret {name}", exc) from exc
        tags = (props.tags if props is not None else None) or {}
        expired = props.expires_on.timestamp() if props is not None and props.expires_on else None

        def when(tag: str, default: float) -> float:
            try:
                return datetime.strptime(tags[tag], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
            except (KeyError, ValueError):
                return default

        refresh_issued = when("refresh-issued", 0.0)
        try:
            generation = int(tags.get("generation", "0"))
        except ValueError:
            generation = 0
        return TokenRecord(
            connection=connection,
            provider=tags.get("provider", "unknown"),
            access_token="",
            refresh_token="",
            access_expires_at=when("access-expires", 0.0),
            refresh_issued_at=refresh_issued,
            generation=generation,
            status=TokenStatus.NEEDS_REAUTH,
            last_error=(
                f"Key Vault refuses to read secret {name}: it expired"
                + (f" at {_iso(expired)}" if expired is not None else "")
                + " with the refresh token; consent again"
            ),
            refresh_expires_at=expired,
        )

    def _expires_on(self, record: TokenRecord) -> datetime | None:
        if record.refresh_expires_at is not None:
            return datetime.fromtimestamp(record.refresh_expires_at, tz=UTC)
        lifetime = self._refresh_lifetime
        seconds = lifetime(record) if callable(lifetime) else lifetime
        if seconds is None:
            return None
        return datetime.fromtimestamp(record.refresh_issued_at + seconds, tz=UTC)


def _is_expired_refusal(exc: Exception) -> bool:
    """403 SecretExpired: the vault refuses to return a secret past its ``expires_on``."""
    if getattr(exc, "status_code", None) != 403:
        return False
    error = getattr(exc, "error", None)
    inner = getattr(error, "innererror", None) or {}
    inner_code = inner.get("code") if isinstance(inner, dict) else getattr(inner, "code", None)
    return inner_code == "SecretExpired" or "expired secret" in str(getattr(error, "message", "") or "")


def _store_error(connection: str, action: str, exc: Exception) -> TokenStoreError:
    """A TokenStoreError from an SDK error: status and error code, never a response body."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    status = exc.status_code if isinstance(exc, HttpResponseError) else None
    if status is None:
        if isinstance(exc, ClientAuthenticationError):
            return TokenStoreError(
                connection,
                f"no Key Vault access token while {action} ({type(exc).__name__}): check the managed "
                "identity (AZURE_CLIENT_ID) or your az login",
            )
        return TokenStoreError(
            connection, f"Key Vault unreachable while {action} ({type(exc).__name__})", transient=True
        )
    code = getattr(getattr(exc, "error", None), "code", None)
    retry_after: float | None = None
    response = getattr(exc, "response", None)
    if response is not None:
        raw = response.headers.get("Retry-After")
        if raw:
            try:
                retry_after = float(raw)
            except ValueError:
                retry_after = None
    hint = ""
    if status in (401, 403):
        hint = " (the app's identity needs the 'Key Vault Secrets Officer' role on the vault)"
    elif status == 429:
        hint = " (throttled" + (f"; retry after {retry_after:g} s)" if retry_after else ")")
    reason = f"Key Vault answered {status}{' ' + code if code else ''} while {action}{hint}"
    return TokenStoreError(connection, reason, transient=status in _TRANSIENT_STATUS, retry_after=retry_after)
