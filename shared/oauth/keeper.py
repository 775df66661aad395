"""The TokenKeeper: hands out access tokens and never loses a token chain by our doing.

The protocol (docs/architecture.md, "The token protocol"), per connection:

1. A cached or stored access token that stays valid past the provider's margin (plus what the
   caller asks for, ``min_validity``) is used as is. Reads never write.
2. Otherwise take the connection's lock (blob lease in Azure, ``flock`` locally; every path that
   may refresh takes it: API callers, the timer, consent, the CLI) and RE-READ the store: if
   another process refreshed meanwhile, its token is used.
3. ``needs_reauth`` raises ``NeedsReauth`` without calling anyone. The provider's earliest-refresh
   rule (Exact: 570 s after issue, measured from our *receive* time of the current tokens, which
   is never earlier than the server's) is never broken: the current token is used while still
   valid, or the keeper waits the few seconds to the window.
4. The intent is written (``refreshing``, generation + 1, ``attempted_at``), then the token
   endpoint is called ONCE with a long timeout. No blind retry.
5. Success: the new token set is stored BEFORE anything uses it, retrying the write with backoff
   while the tokens stay in memory. If the store stays down the process keeps serving the new
   tokens from memory and retries the write on each later call (``pending``).
6. Dead chain ("Old refresh token used.", ``invalid_grant``, expired): ``needs_reauth`` + last
   error stored, the alert emitted, ``NeedsReauth`` raised. 5xx/timeout: ``in_doubt`` stored,
   ``TokenInDoubt`` raised; the next attempt presents the same refresh token once more and the
   answer settles it (new tokens: ``ok``; "Old refresh token used.": ``needs_reauth`` + alert).
   Refusals that rotate nothing (bad client, rate limit, unreachable) restore the previous status
   with ``last_error``. Failed attempts are spaced out (``failures``: 30 s doubling to 1 h) so a
   broken setup cannot burn Exact's token-call budget (about 200 a day).

A process killed between the token endpoint's answer and the store write (decision, tested in
tests/oauth/test_keeper_faults.py): the answer dies with the process and the store still says
``refreshing`` with the old refresh token. Whoever takes the lock next, once that intent is older
than ``stale_refreshing_after_s`` (a live holder could still be storing it), treats it like
``in_doubt``: it presents the old refresh token once. If the request never reached the server, that
succeeds and nothing is lost. If the server had rotated, Exact answers "Old refresh token used.":
the connection goes to ``needs_reauth`` and the alert asks a person to consent again. There is no
way to recover a token set that only a dead process ever saw; the keeper keeps that window as
small as it can: the store write is the first thing done after the answer is parsed (nothing else
runs in between), and it does not wait for anything but the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from shared.clock import Clock
from shared.locks.base import ConnectionLock
from shared.oauth.errors import (
    LockLost,
    LockTimeout,
    NeedsReauth,
    RefreshDeferred,
    RefreshTokenDead,
    TokenEndpointError,
    TokenInDoubt,
    TokenStoreUnavailable,
    TooEarlyToRefresh,
)
from shared.oauth.providers import Provider, Providers
from shared.oauth.redact import DEFAULT as REDACTOR
from shared.oauth.redact import get_logger
from shared.tokens import TokenRecord, TokenStatus

if TYPE_CHECKING:
    from shared.oauth.alerts import Alerts
    from shared.oauth.token_endpoint import TokenGrant
    from shared.stores.base import TokenStore

log = get_logger("exactsync.oauth.keeper")

MAX_ERROR_LENGTH = 500


class RefreshingEndpoint(Protocol):
    def refresh(self, refresh_token: str) -> TokenGrant: ...


EndpointFactory = Callable[[Provider], RefreshingEndpoint]


class RefreshResult(StrEnum):
    """What ``TokenKeeper.refresh_now`` did (the timer reports it per connection)."""

    REFRESHED = "refreshed"
    NOT_NEEDED = "not_needed"  # after re-reading: another process refreshed, or nothing to do
    TOO_EARLY = "too_early"  # the provider's earliest-refresh rule forbids it now
    NOT_ALLOWED = "not_allowed"  # the caller's rule (quiet hours) forbids it now
    DEFERRED = "deferred"  # a recent failure, or a fresh intent of another process


class TokenKeeper:
    """Access tokens for named connections (see the module docstring for the protocol).

    ``endpoint_factory`` builds a token endpoint client for a provider (``TokenEndpoint`` over the
    runtime's ``httpx.Client``). ``lock_timeout`` is how long to wait for a connection's lock: longer
    than a token call (120 s read timeout) plus the store retries. ``store_retry_delays`` are the
    waits between attempts to write a record (clock seconds); a ``TokenStoreError`` that names a
    ``retry_after`` waits at least that long (capped at ``max_store_retry_after``).
    """

    def __init__(
        self,
        *,
        providers: Providers,
        store: TokenStore,
        lock: ConnectionLock,
        endpoint_factory: EndpointFactory,
        clock: Clock,
        lock_timeout: float = 180.0,
        alerts: Alerts | None = None,
        store_retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0),
        max_store_retry_after: float = 30.0,
        retry_backoff_s: float = 30.0,
        max_retry_backoff_s: float = 3600.0,
        stale_refreshing_after_s: float = 300.0,
        max_window_wait_s: float = 60.0,
    ) -> None:
        if alerts is None:
            from shared.oauth.alerts import Alerts

            alerts = Alerts()
        self._providers = providers
        self._store = store
        self._lock = lock
        self._endpoint_factory = endpoint_factory
        self._clock = clock
        self._lock_timeout = lock_timeout
        self._alerts = alerts
        self._store_retry_delays = store_retry_delays
        self._max_store_retry_after = max_store_retry_after
        self._retry_backoff_s = retry_backoff_s
        self._max_retry_backoff_s = max_retry_backoff_s
        self._stale_refreshing_after_s = stale_refreshing_after_s
        self._max_window_wait_s = max_window_wait_s
        self._cache: dict[str, TokenRecord] = {}
        #: new token sets not yet in the store: the only copy of a live chain, never dropped
        #: unless the store holds something newer (a consent, or these very tokens)
        self._pending: dict[str, TokenRecord] = {}
        #: access tokens an API refused (401) although they looked valid
        self._rejected: dict[str, str] = {}
        self._endpoints: dict[str, RefreshingEndpoint] = {}
        self._guards: dict[str, threading.Lock] = {}
        self._guards_guard = threading.Lock()

    # --- public API ---------------------------------------------------------------------------

    @property
    def providers(self) -> Providers:
        return self._providers

    @property
    def alerts(self) -> Alerts:
        return self._alerts

    def get_access_token(self, connection: str, *, min_validity: float = 0.0) -> str:
        """A bearer token valid for at least the provider's margin plus ``min_validity`` seconds
        (best effort when the provider's earliest-refresh rule makes that impossible right now).

        Raises ``NeedsReauth``, ``TokenInDoubt``, ``RefreshDeferred``, ``TokenEndpointError``,
        ``TokenStoreUnavailable`` or ``LockTimeout``; all carry no secret.
        """
        if min_validity < 0:
            raise ValueError("min_validity must not be negative")
        if connection not in self._pending:
            now = self._clock.now()
            cached = self._cache.get(connection)
            if cached is not None and self._usable(cached, now, min_validity):
                return cached.access_token
            record = self._live(connection, self._load(connection))
            if self._usable(record, now, min_validity):
                self._cache[connection] = record
                return record.access_token
        _, record = self._locked(
            connection, lambda hold: self._decide(connection, min_validity=min_validity, hold=hold)
        )
        return record.access_token

    def refresh_after_rejection(self, connection: str, rejected_token: str) -> str:
        """After an API 401 for ``rejected_token``: refresh only if the stored token is still that
        one (otherwise another process already replaced it, and that token is returned)."""
        self._rejected[connection] = rejected_token
        cached = self._cache.get(connection)
        if cached is not None and cached.access_token == rejected_token:
            self._cache.pop(connection, None)
        _, record = self._locked(
            connection, lambda hold: self._decide(connection, min_validity=0.0, hold=hold)
        )
        return record.access_token

    def refresh_now(
        self,
        connection: str,
        *,
        unless_younger_than: float | None = None,
        may_call: Callable[[float], bool] | None = None,
    ) -> RefreshResult:
        """Refresh (or settle an ``in_doubt`` chain) now, for the keep-alive timer.

        Under the lock, after re-reading: an ``ok`` chain whose refresh token is younger than
        ``unless_younger_than`` seconds is left alone; the provider's window is never broken (no
        waiting: ``TOO_EARLY``); ``may_call(now)`` returning False (quiet hours) gives
        ``NOT_ALLOWED``, checked right before the token call. A dead chain raises ``NeedsReauth``.
        """
        result, _ = self._locked(
            connection,
            lambda hold: self._decide(
                connection,
                min_validity=0.0,
                keepalive_age=unless_younger_than if unless_younger_than is not None else 0.0,
                may_call=may_call,
                hold=hold,
            ),
        )
        return result

    def adopt_consent(
        self,
        connection: str,
        provider_name: str,
        grant: TokenGrant,
        *,
        subject: str | None = None,
    ) -> TokenRecord:
        """Store the token set of a fresh consent (replacing a dead or live chain) and return it.

        Under the connection's lock, so it cannot interleave with a refresh; the generation
        continues from the stored record. Raises ``TokenStoreUnavailable`` when the store cannot be
        written (the consent must then be repeated: the code is spent).
        """
        provider = self._providers.get(provider_name)
        if not grant.refresh_token:
            raise TokenEndpointError(
                f"provider {provider.name!r} answered the consent without a refresh token: the "
                "connection could not be kept alive (for Microsoft, request the offline_access scope)",
                endpoint=provider.host,
            )

        def adopt(hold: object) -> tuple[RefreshResult, TokenRecord]:
            previous = self._load(connection)
            now = self._clock.now()
            record = TokenRecord(
                connection=connection,
                provider=provider.name,
                access_token=grant.access_token,
                refresh_token=grant.refresh_token or "",
                access_expires_at=grant.access_expires_at,
                refresh_issued_at=grant.issued_at,
                generation=(previous.generation + 1) if previous is not None else 1,
                status=TokenStatus.OK,
                last_error=None,
                last_refresh_at=None,
                consented_at=now,
                subject=subject,
                scope=grant.scope,
                access_issued_at=grant.issued_at,
                refresh_expires_at=provider.refresh_expires_at(grant.issued_at),
                attempted_at=None,
                failures=0,
            )
            self._pending.pop(connection, None)
            self._rejected.pop(connection, None)
            if not self._save(record, what="consent"):
                self._cache.pop(connection, None)
                raise TokenStoreUnavailable(
                    f"connection {connection!r}: the new consent could not be stored; consent again "
                    "once the token store is reachable"
                )
            self._cache[connection] = record
            log.info(
                "connection %s: consent stored (provider %s, generation %d)",
                connection,
                provider.name,
                record.generation,
            )
            return RefreshResult.REFRESHED, record

        _, record = self._locked(connection, adopt, reread_on_timeout=False)
        return record

    def status(self, connection: str) -> dict[str, Any] | None:
        """The connection's public view (no token values), or None when nothing is stored."""
        record = self._pending.get(connection) or self._load(connection)
        if record is None:
            return None
        view = record.public_view(self._clock.now())
        view["pending_store_write"] = connection in self._pending
        return view

    def list_status(self) -> list[dict[str, Any]]:
        views = []
        for connection in self._store.list_connections():
            view = self.status(connection)
            if view is not None:
                views.append(view)
        return views

    def has_pending(self, connection: str) -> bool:
        return connection in self._pending

    # --- the protocol under the lock ----------------------------------------------------------

    def _decide(
        self,
        connection: str,
        *,
        min_validity: float,
        keepalive_age: float | None = None,
        may_call: Callable[[float], bool] | None = None,
        hold: object = None,
    ) -> tuple[RefreshResult, TokenRecord]:
        """Runs with the lock held: re-read, then refresh only if every gate lets us."""
        serving = keepalive_age is None
        self._flush_pending(connection)
        record = self._live(connection, self._pending.get(connection) or self._load(connection))
        provider = self._providers.get(record.provider)
        now = self._clock.now()
        early = (
            self._nothing_to_do(record, now, min_validity, keepalive_age)
            or self._other_process_busy(record, now, serving)
            or self._backing_off(record, now, serving)
        )
        if early is not None:
            return early
        gate = self._window(record, provider, serving)
        if gate is not None:
            return gate
        if may_call is not None and not may_call(self._clock.now()):
            return RefreshResult.NOT_ALLOWED, record
        return self._refresh(connection, record, provider, hold)

    def _nothing_to_do(
        self, record: TokenRecord, now: float, min_validity: float, keepalive_age: float | None
    ) -> tuple[RefreshResult, TokenRecord] | None:
        """Another process refreshed while we waited, or (keep-alive) the chain is young enough."""
        if record.status is not TokenStatus.OK:
            return None  # in_doubt/refreshing: to be settled
        if keepalive_age is None:
            if self._usable(record, now, min_validity):
                self._cache[record.connection] = record
                return RefreshResult.NOT_NEEDED, record
            return None
        if record.refresh_age(now) < keepalive_age:
            return RefreshResult.NOT_NEEDED, record
        return None

    def _other_process_busy(
        self, record: TokenRecord, now: float, serving: bool
    ) -> tuple[RefreshResult, TokenRecord] | None:
        """A fresh ``refreshing`` intent: its writer may still hold the answer (lock lost, store
        write pending). Presenting the refresh token now could replay one it just rotated."""
        if record.status is not TokenStatus.REFRESHING or record.attempted_at is None:
            return None
        age = now - record.attempted_at
        if age >= self._stale_refreshing_after_s:
            return None  # stale: its writer died; settle it like in_doubt
        if serving and self._usable(record, now, 0.0):
            return RefreshResult.NOT_NEEDED, record
        return self._defer(
            serving,
            record,
            TokenInDoubt(
                f"connection {record.connection!r}: another process began refreshing {age:.0f} s ago "
                f"and has not stored the result; the chain is settled once that intent is "
                f"{self._stale_refreshing_after_s:.0f} s old",
                connection=record.connection,
            ),
        )

    def _backing_off(
        self, record: TokenRecord, now: float, serving: bool
    ) -> tuple[RefreshResult, TokenRecord] | None:
        """A recent failed attempt: space the next one out (token-call and error budgets)."""
        if not record.failures or record.attempted_at is None:
            return None
        next_at = record.attempted_at + self._backoff(record.failures)
        if now >= next_at:
            return None
        if serving and self._usable(record, now, 0.0):
            return RefreshResult.NOT_NEEDED, record
        detail = record.last_error or "no detail"
        problem: Exception
        if record.status is TokenStatus.OK:
            problem = RefreshDeferred(
                f"connection {record.connection!r}: the last refresh failed ({detail}); "
                f"next attempt in {next_at - now:.0f} s"
            )
        else:
            problem = TokenInDoubt(
                f"connection {record.connection!r}: the last refresh answer was lost ({detail}); "
                f"the next attempt settles it in {next_at - now:.0f} s",
                connection=record.connection,
            )
        return self._defer(serving, record, problem)

    def _window(
        self, record: TokenRecord, provider: Provider, serving: bool
    ) -> tuple[RefreshResult, TokenRecord] | None:
        """The provider's earliest-refresh rule: never call too early. Serving, wait the few
        seconds to the window (or keep using a still valid token); keep-alive never waits."""
        earliest = provider.earliest_refresh_at(record.issued_at)
        now = self._clock.now()
        if earliest is None or now >= earliest:
            return None
        wait = earliest - now
        if not serving:
            return RefreshResult.TOO_EARLY, record
        if wait > self._max_window_wait_s:
            if self._usable(record, now, 0.0):
                return RefreshResult.NOT_NEEDED, record
            raise RefreshDeferred(
                f"connection {record.connection!r}: {provider.name} allows the next refresh in "
                f"{wait:.0f} s and the current access token is not usable"
            )
        log.debug("connection %s: waiting %.1f s for the refresh window", record.connection, wait)
        while now < earliest:  # a clock that wakes early must not make us early
            self._clock.sleep(earliest - now)
            now = self._clock.now()
        return None

    def _refresh(
        self, connection: str, record: TokenRecord, provider: Provider, hold: object
    ) -> tuple[RefreshResult, TokenRecord]:
        """Intent, one token call, and the outcome stored. Lock held."""
        now = self._clock.now()
        _check_lock(hold)
        intent = record.with_changes(
            status=TokenStatus.REFRESHING, generation=record.generation + 1, attempted_at=now
        )
        if not self._save(intent, what="refresh intent"):
            raise TokenStoreUnavailable(
                f"connection {connection!r}: the refresh intent could not be stored, so the token "
                "endpoint was not called; the chain is untouched"
            )
        # From here until the outcome is stored, the store says "refreshing".
        self._pending.pop(connection, None)  # superseded by the intent (it carries these tokens)
        _check_lock(hold)
        endpoint = self._endpoint(provider)
        try:
            grant = endpoint.refresh(record.refresh_token)
        except RefreshTokenDead as exc:
            reason = _short(str(exc))
            dead = intent.with_changes(status=TokenStatus.NEEDS_REAUTH, last_error=reason)
            self._save(dead, what="needs_reauth status")
            self._cache.pop(connection, None)
            self._rejected.pop(connection, None)
            self._alerts.connection_needs_reauth(connection, provider=provider.name, reason=reason)
            raise NeedsReauth(connection, reason) from None
        except TokenInDoubt as exc:
            reason = _short(str(exc))
            doubt = intent.with_changes(
                status=TokenStatus.IN_DOUBT, last_error=reason, failures=record.failures + 1
            )
            self._save(doubt, what="in_doubt status")
            self._cache.pop(connection, None)
            log.warning(
                "connection %s: refresh answer lost (%s); the next attempt settles it", connection, reason
            )
            raise TokenInDoubt(
                f"connection {connection!r}: {reason}; the next attempt presents the same refresh "
                "token once more and settles the chain",
                connection=connection,
                endpoint=exc.endpoint,
                status=exc.status,
            ) from None
        except TokenEndpointError as exc:
            # Refused without rotating: the chain is as before; note the failure.
            reason = _short(str(exc))
            back = TokenStatus.OK if record.status is TokenStatus.OK else TokenStatus.IN_DOUBT
            failed = intent.with_changes(status=back, last_error=reason, failures=record.failures + 1)
            self._save(failed, what="refresh failure")
            log.warning("connection %s: refresh refused, nothing rotated (%s)", connection, reason)
            # Too early by the server's reckoning: "the current tokens stay valid", so serve them.
            if (
                isinstance(exc, TooEarlyToRefresh)
                and back is TokenStatus.OK
                and failed.access_valid_for(self._clock.now()) > 0
                and self._not_rejected(failed)
            ):
                return RefreshResult.TOO_EARLY, failed
            raise
        # Success. Nothing between here and the store write but building the record.
        new = self._record_from_grant(intent, provider, grant)
        self._pending[connection] = new
        self._cache[connection] = new
        self._rejected.pop(connection, None)
        if self._save(new, what="new tokens"):
            self._pending.pop(connection, None)
            log.info(
                "connection %s: tokens refreshed (generation %d, access token valid %.0f s)",
                connection,
                new.generation,
                new.access_valid_for(self._clock.now()),
            )
        else:
            log.error(
                "connection %s: new tokens could not be stored; this process keeps them in memory "
                "and retries the write on every call",
                connection,
            )
        return RefreshResult.REFRESHED, new

    def _record_from_grant(self, intent: TokenRecord, provider: Provider, grant: TokenGrant) -> TokenRecord:
        rotated = grant.refresh_token is not None
        if not rotated and provider.rotates_refresh_tokens:
            log.warning(
                "connection %s: %s answered a refresh without a new refresh token; keeping the old one",
                intent.connection,
                provider.name,
            )
        return intent.with_changes(
            access_token=grant.access_token,
            refresh_token=grant.refresh_token if rotated else intent.refresh_token,
            access_expires_at=grant.access_expires_at,
            access_issued_at=grant.issued_at,
            refresh_issued_at=grant.issued_at if rotated else intent.refresh_issued_at,
            refresh_expires_at=(
                provider.refresh_expires_at(grant.issued_at) if rotated else intent.refresh_expires_at
            ),
            status=TokenStatus.OK,
            last_error=None,
            last_refresh_at=grant.received_at,
            scope=grant.scope or intent.scope,
            failures=0,
        )

    @staticmethod
    def _defer(serving: bool, record: TokenRecord, problem: Exception) -> tuple[RefreshResult, TokenRecord]:
        if serving:
            raise problem
        return RefreshResult.DEFERRED, record

    # --- pending writes -----------------------------------------------------------------------

    def _flush_pending(self, connection: str) -> None:
        """Lock held: try once more to store tokens only this process holds."""
        pending = self._pending.get(connection)
        if pending is None:
            return
        try:
            stored = self._store.load(connection)
        except Exception as exc:
            log.warning("connection %s: store unreadable (%s); pending tokens kept", connection, _name(exc))
            return
        if stored is not None and _supersedes(stored, pending):
            log.info("connection %s: the store holds newer tokens; dropping this process's copy", connection)
            self._pending.pop(connection, None)
            return
        if self._save(pending, what="pending new tokens", retries=False):
            self._pending.pop(connection, None)
            if stored is not None and stored.status is TokenStatus.NEEDS_REAUTH:
                log.warning(
                    "connection %s: restored the live chain this process held (the store said %s)",
                    connection,
                    stored.status.value,
                )

    # --- helpers ------------------------------------------------------------------------------

    def _live(self, connection: str, record: TokenRecord | None) -> TokenRecord:
        """``record``, unless there is no chain to use: then ``NeedsReauth`` (nobody is called)."""
        if record is None:
            raise NeedsReauth(connection, "no tokens are stored for it (no consent yet)")
        if record.status is TokenStatus.NEEDS_REAUTH:
            self._cache.pop(connection, None)
            raise NeedsReauth(connection, record.last_error)
        return record

    @contextmanager
    def _guard(self, connection: str) -> Iterator[None]:
        with self._guards_guard:
            guard = self._guards.setdefault(connection, threading.Lock())
        if not guard.acquire(timeout=self._lock_timeout):
            raise LockTimeout(connection, self._lock_timeout, detail="another thread of this process")
        try:
            yield
        finally:
            guard.release()

    def _locked(
        self,
        connection: str,
        body: Callable[[object], tuple[RefreshResult, TokenRecord]],
        *,
        reread_on_timeout: bool = True,
    ) -> tuple[RefreshResult, TokenRecord]:
        """Run ``body(hold)`` holding this process's per-connection guard and the connection's
        lock. On ``LockTimeout`` the store is read once more (a holder may have just finished)."""
        try:
            with self._guard(connection):
                hold = self._lock.hold(connection, timeout=self._lock_timeout)
                with hold:
                    return body(hold)
        except LockTimeout:
            if reread_on_timeout:
                record = self._load(connection)
                now = self._clock.now()
                if record is not None and self._usable(record, now, 0.0):
                    self._cache[connection] = record
                    return RefreshResult.NOT_NEEDED, record
            raise

    def _usable(self, record: TokenRecord, now: float, min_validity: float) -> bool:
        if record.status is TokenStatus.NEEDS_REAUTH or not record.access_token:
            return False
        if not self._not_rejected(record):
            return False
        margin = self._providers.get(record.provider).refresh_margin_s
        return record.access_valid_for(now) > margin + min_validity

    def _not_rejected(self, record: TokenRecord) -> bool:
        return self._rejected.get(record.connection) != record.access_token

    def _backoff(self, failures: int) -> float:
        return float(min(self._retry_backoff_s * 2 ** max(failures - 1, 0), self._max_retry_backoff_s))

    def _endpoint(self, provider: Provider) -> RefreshingEndpoint:
        endpoint = self._endpoints.get(provider.name)
        if endpoint is None:
            endpoint = self._endpoints[provider.name] = self._endpoint_factory(provider)
        return endpoint

    def _load(self, connection: str) -> TokenRecord | None:
        record = self._store.load(connection)
        if record is not None:
            REDACTOR.add(record.access_token)
            REDACTOR.add(record.refresh_token)
        return record

    def _save(self, record: TokenRecord, *, what: str, retries: bool = True) -> bool:
        """Write ``record``, retrying with backoff; False (logged) when every attempt failed."""
        from shared.stores.base import TokenStoreError

        delays = self._store_retry_delays if retries else ()
        for attempt in range(len(delays) + 1):
            try:
                self._store.save(record)
                return True
            except TokenStoreError as exc:
                transient, retry_after, detail = exc.transient, exc.retry_after, exc.reason
            except Exception as exc:  # a store bug must not lose the tokens either
                transient, retry_after, detail = True, None, _name(exc)
            if attempt >= len(delays) or not transient:
                log.error(
                    "connection %s: storing the %s failed after %d attempt(s): %s",
                    record.connection,
                    what,
                    attempt + 1,
                    REDACTOR.redact(detail),
                )
                return False
            delay = delays[attempt]
            if retry_after is not None:
                delay = max(delay, min(retry_after, self._max_store_retry_after))
            log.warning(
                "connection %s: storing the %s failed (%s); retrying in %.1f s",
                record.connection,
                what,
                REDACTOR.redact(detail),
                delay,
            )
            self._clock.sleep(delay)
        return False


def _supersedes(stored: TokenRecord, pending: TokenRecord) -> bool:
    """Does the stored record make this process's unsaved token set obsolete?"""
    if stored.refresh_token == pending.refresh_token:
        return True  # our write did land (its answer was lost), or the store already has them
    if (stored.consented_at or 0.0) > (pending.consented_at or 0.0):
        return True  # a person consented since: a newer chain
    return stored.status is TokenStatus.OK and stored.generation > pending.generation


def _check_lock(hold: object) -> None:
    """Refuse to start a refresh under a lock that is known to be lost."""
    if hold is not None and getattr(hold, "lost", False):
        raise LockLost(getattr(hold, "connection", "?"), "lease lost before the token call")


def _short(text: str) -> str:
    text = REDACTOR.redact(text)
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 3] + "..."


def _name(exc: BaseException) -> str:
    return type(exc).__name__
