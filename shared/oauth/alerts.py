"""Telling a person that a connection needs a new consent.

A dead chain must be a state someone hears about, not a retry loop (lessons-from-peers.md). Two
channels:

- a log record with the STABLE event name ``exactsync.connection_needs_reauth`` at level ERROR
  on logger ``exactsync.alerts``: an Azure Monitor log alert rule matches it in Application
  Insights ``traces`` (``message has "exactsync.connection_needs_reauth"``; the connection, provider,
  reason and re-consent link also travel as custom dimensions);
- optionally a POST of ``{"text": ...}`` to ``NOTIFY_WEBHOOK_URL`` (a Teams or Slack incoming
  webhook) carrying the re-consent link. Never a secret: the reason is redacted, the link holds
  only the connection name (opening it needs the function key, which the person must have).

Notifying never raises: a broken webhook is logged and the caller carries on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.oauth.redact import DEFAULT as REDACTOR
from shared.oauth.redact import get_logger

if TYPE_CHECKING:
    import httpx

    from shared.settings import Settings

EVENT_NEEDS_REAUTH = "exactsync.connection_needs_reauth"
WEBHOOK_TIMEOUT = 10.0

log = get_logger("exactsync.alerts")


class Alerts:
    """Emits the needs-reauth alert. ``http`` (an ``httpx.Client`` or a function building one) is
    used only when a webhook URL is configured; tests give it a ``MockTransport`` or a local server."""

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        public_base_url: str | None = None,
        http: httpx.Client | Callable[[], httpx.Client] | None = None,
    ) -> None:
        self._webhook_url = webhook_url
        self._public_base_url = (public_base_url or "").rstrip("/") or None
        self._http = http
        REDACTOR.pin(webhook_url)  # an incoming-webhook URL is itself a credential

    @classmethod
    def from_settings(
        cls, settings: Settings, *, http: httpx.Client | Callable[[], httpx.Client] | None = None
    ) -> Alerts:
        return cls(
            webhook_url=settings.notify_webhook_url,
            public_base_url=settings.public_base_url,
            http=http,
        )

    def reconsent_url(self, connection: str) -> str:
        path = f"/api/oauth/start?connection={quote(connection, safe='')}"
        return (self._public_base_url or "") + path

    def connection_needs_reauth(
        self,
        connection: str,
        *,
        provider: str,
        reason: str | None,
        reminder: bool = False,
        notify: bool = True,
    ) -> None:
        """Log the alert event (always) and post to the webhook (when configured and ``notify``)."""
        reason_shown = REDACTOR.redact(reason or "the token chain is no longer valid")
        link = self.reconsent_url(connection)
        dimensions: dict[str, Any] = {
            "event": EVENT_NEEDS_REAUTH,
            "connection": connection,
            "provider": provider,
            "reason": reason_shown,
            "reconsent_url": link,
            "reminder": reminder,
        }
        log.error(
            "%s: connection %s (provider %s) needs a new consent%s: %s. Re-consent: %s",
            EVENT_NEEDS_REAUTH,
            connection,
            provider,
            " (still)" if reminder else "",
            reason_shown,
            link,
            extra={
                **{k: v for k, v in dimensions.items() if k != "event"},
                "alert_event": EVENT_NEEDS_REAUTH,
                "custom_dimensions": dimensions,
            },
        )
        if notify and self._webhook_url:
            self._post(connection, provider, reason_shown, link, reminder)

    def _post(self, connection: str, provider: str, reason: str, link: str, reminder: bool) -> None:
        text = (
            f"{'Reminder: ' if reminder else ''}exactsync connection **{connection}** ({provider}) needs "
            f"a new consent: {reason}. A person with access must consent again: {link} "
            f"(or run `exactsync authorize --connection {connection}`)."
        )
        url = self._webhook_url
        assert url is not None
        try:
            import httpx

            client = self._client()
            response = client.post(url, json={"text": text}, timeout=WEBHOOK_TIMEOUT)
            if response.status_code >= 300:
                log.warning(
                    "notification webhook answered %s for connection %s; the alert is in the logs only",
                    response.status_code,
                    connection,
                )
        except (httpx.HTTPError, OSError, ValueError) as exc:
            log.warning(
                "notification webhook failed for connection %s (%s); the alert is in the logs only",
                connection,
                type(exc).__name__,
            )

    def _client(self) -> httpx.Client:
        import httpx

        source = self._http
        if source is None:
            self._http = source = httpx.Client(timeout=WEBHOOK_TIMEOUT)
        if isinstance(source, httpx.Client):
            return source
        client = source()
        self._http = client
        return client
