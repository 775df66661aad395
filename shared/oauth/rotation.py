"""The ``rotate_tokens`` timer: keep idle chains alive and report every connection's health.

An Exact refresh token dies 30 days after it was issued; a chain nobody used for a month is lost.
The timer refreshes a chain whose refresh token is older than ``KEEPALIVE_AFTER_HOURS`` (default
72 h: ten chances before day 30 even if many runs fail), settles ``in_doubt`` chains, and alerts on
``needs_reauth`` ones. It goes through the keeper, so it takes the same lock as every other path
(picqer #559: a keep-alive cron that raced the app's own refreshes lost chains over weekends), and it
never calls the token endpoint:

- inside 01:00-02:00 Europe/Amsterdam (Exact support's advice after lost chains), checked with the
  lock held right before the call;
- before the provider's earliest-refresh time (it never waits for it either: the next run will do);
- for a chain that does not need it (reads only: no store write, no Key Vault version).

A dead chain is logged as the alert event on every run (level ERROR, so an alert rule keeps firing
until someone acts); the notification webhook is posted at the transition by the keeper and then
at most once a day per connection (claimed in the shared nonce store, so several instances do not
repeat it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from shared.clock import Clock
from shared.errors import ExactSyncError
from shared.oauth.redact import DEFAULT as REDACTOR
from shared.oauth.redact import get_logger
from shared.tokens import TokenRecord, TokenStatus

if TYPE_CHECKING:
    from shared.oauth.keeper import TokenKeeper
    from shared.runtime import Runtime
    from shared.stores.base import TokenStore

log = get_logger("exactsync.oauth.rotation")

AMSTERDAM = "Europe/Amsterdam"
QUIET_HOURS = (1, 2)  # [01:00, 02:00) local time
#: warn when a refresh token has less than this left (keep-alive should have renewed it long before)
EXPIRY_WARNING_S = 7 * 24 * 3600.0
DAY = 24 * 3600.0


def in_quiet_hours(epoch: float, *, zone: str = AMSTERDAM, hours: tuple[int, int] = QUIET_HOURS) -> bool:
    """True inside [start, end) local time of ``zone`` (daylight saving time included)."""
    local = datetime.fromtimestamp(epoch, tz=ZoneInfo(zone))
    return hours[0] <= local.hour < hours[1]


@dataclass(frozen=True)
class ConnectionHealth:
    connection: str
    #: "ok", "warning", "needs_reauth" or "error"
    health: str
    status: str | None
    #: what the run did: "none", "refreshed", "settled", "too_early", "not_allowed" (quiet hours),
    #: "deferred", "needs_reauth", "in_doubt", "error"
    action: str
    detail: str | None = None
    access_valid_for_s: float | None = None
    refresh_age_s: float | None = None
    refresh_expires_in_s: float | None = None


@dataclass(frozen=True)
class RotationReport:
    ran_at: float
    quiet_hours: bool
    connections: list[ConnectionHealth] = field(default_factory=list)

    @property
    def needs_reauth(self) -> list[str]:
        return [c.connection for c in self.connections if c.health == "needs_reauth"]

    def count(self, action: str) -> int:
        return sum(1 for c in self.connections if c.action == action)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ran_at": self.ran_at,
            "quiet_hours": self.quiet_hours,
            "connections": [asdict(c) for c in self.connections],
        }


def keep_alive(
    keeper: TokenKeeper,
    store: TokenStore,
    clock: Clock,
    *,
    keepalive_after_s: float,
    claim_reminder: Callable[[str, float], bool] | None = None,
    quiet: Callable[[float], bool] = in_quiet_hours,
) -> RotationReport:
    """One timer run over every stored connection (see the module docstring).

    ``claim_reminder(key, expires_at)`` returns True once per key (``NonceStore.claim``); without
    it no daily webhook reminder is sent (the log alert still is, every run).
    """
    now = clock.now()
    report = RotationReport(ran_at=now, quiet_hours=quiet(now))
    try:
        connections = store.list_connections()
    except ExactSyncError as exc:
        log.error("rotate_tokens: cannot list connections: %s", REDACTOR.redact(str(exc)))
        raise
    for connection in connections:
        report.connections.append(
            _one(
                keeper,
                store,
                clock,
                connection,
                keepalive_after_s=keepalive_after_s,
                claim_reminder=claim_reminder,
                quiet=quiet,
            )
        )
    return report


def _one(
    keeper: TokenKeeper,
    store: TokenStore,
    clock: Clock,
    connection: str,
    *,
    keepalive_after_s: float,
    claim_reminder: Callable[[str, float], bool] | None,
    quiet: Callable[[float], bool],
) -> ConnectionHealth:
    try:
        record = store.load(connection)
    except ExactSyncError as exc:
        return ConnectionHealth(connection, "error", None, "error", REDACTOR.redact(str(exc)))
    if record is None:
        return ConnectionHealth(connection, "error", None, "error", "the record vanished while listing")
    now = clock.now()
    if record.status is TokenStatus.NEEDS_REAUTH:
        _remind(keeper, record, now, claim_reminder)
        return _health(record, clock, "needs_reauth", record.last_error)
    if record.status is TokenStatus.OK and record.refresh_age(now) < keepalive_after_s:
        return _health(record, clock, "none")
    if quiet(now):
        return _health(record, clock, "not_allowed", "01:00-02:00 Europe/Amsterdam: no token calls")
    return _refresh(keeper, store, clock, record, keepalive_after_s=keepalive_after_s, quiet=quiet)


def _refresh(
    keeper: TokenKeeper,
    store: TokenStore,
    clock: Clock,
    record: TokenRecord,
    *,
    keepalive_after_s: float,
    quiet: Callable[[float], bool],
) -> ConnectionHealth:
    from shared.oauth.errors import NeedsReauth, TokenInDoubt
    from shared.oauth.keeper import RefreshResult

    try:
        result = keeper.refresh_now(
            record.connection, unless_younger_than=keepalive_after_s, may_call=lambda t: not quiet(t)
        )
    except NeedsReauth as exc:
        return _health(_reload(store, record), clock, "needs_reauth", exc.reason)
    except TokenInDoubt as exc:
        return _health(_reload(store, record), clock, "in_doubt", REDACTOR.redact(str(exc)))
    except ExactSyncError as exc:
        log.warning("rotate_tokens: connection %s: %s", record.connection, REDACTOR.redact(str(exc)))
        return _health(_reload(store, record), clock, "error", REDACTOR.redact(str(exc)))
    action = result.value
    if result is RefreshResult.REFRESHED and record.status is not TokenStatus.OK:
        action = "settled"
    return _health(_reload(store, record), clock, action)


def _reload(store: TokenStore, fallback: TokenRecord) -> TokenRecord:
    try:
        return store.load(fallback.connection) or fallback
    except ExactSyncError:
        return fallback


def _health(record: TokenRecord, clock: Clock, action: str, detail: str | None = None) -> ConnectionHealth:
    now = clock.now()
    expires_in = None if record.refresh_expires_at is None else record.refresh_expires_at - now
    if record.status is TokenStatus.NEEDS_REAUTH:
        health = "needs_reauth"
    elif action == "error" or record.status is not TokenStatus.OK:
        health = "error" if action == "error" else "warning"
    elif expires_in is not None and expires_in < EXPIRY_WARNING_S:
        health = "warning"
        detail = detail or f"refresh token dies in {expires_in / 3600:.0f} h"
    else:
        health = "ok"
    return ConnectionHealth(
        connection=record.connection,
        health=health,
        status=record.status.value,
        action=action,
        detail=REDACTOR.redact(detail) if detail else None,
        access_valid_for_s=round(record.access_valid_for(now), 1),
        refresh_age_s=round(record.refresh_age(now), 1),
        refresh_expires_in_s=None if expires_in is None else round(expires_in, 1),
    )


def _remind(
    keeper: TokenKeeper,
    record: TokenRecord,
    now: float,
    claim_reminder: Callable[[str, float], bool] | None,
) -> None:
    """The alert event on every run; the webhook at most once per Amsterdam day."""
    day = datetime.fromtimestamp(now, tz=ZoneInfo(AMSTERDAM)).date().isoformat()
    notify = False
    if claim_reminder is not None:
        key = "reauth-" + hashlib.sha256(f"{record.connection}:{day}".encode()).hexdigest()[:40]
        try:
            notify = claim_reminder(key, now + 2 * DAY)
        except ExactSyncError as exc:
            log.warning("rotate_tokens: reminder bookkeeping failed (%s)", REDACTOR.redact(str(exc)))
    keeper.alerts.connection_needs_reauth(
        record.connection, provider=record.provider, reason=record.last_error, reminder=True, notify=notify
    )


def rotate_all(runtime: Runtime) -> RotationReport:
    """The timer's work: ``keep_alive`` over the runtime's keeper and store, summary logged."""
    settings = runtime.settings
    report = keep_alive(
        runtime.keeper,
        runtime.token_store,
        runtime.clock,
        keepalive_after_s=settings.keepalive_after_hours * 3600.0,
        claim_reminder=runtime.nonces.claim,
    )
    for item in report.connections:
        log.info(
            "rotate_tokens: connection %s health=%s status=%s action=%s%s",
            item.connection,
            item.health,
            item.status,
            item.action,
            f" ({item.detail})" if item.detail else "",
        )
    log.info(
        "rotate_tokens: %d connection(s), %d refreshed, %d settled, %d need consent%s",
        len(report.connections),
        report.count("refreshed"),
        report.count("settled"),
        len(report.needs_reauth),
        ", quiet hours" if report.quiet_hours else "",
    )
    return report
