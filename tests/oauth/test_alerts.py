"""The needs-reauth alert: stable event name at ERROR, custom dimensions, optional webhook with the
re-consent link, never a secret, never raising."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from shared.oauth.alerts import EVENT_NEEDS_REAUTH, Alerts
from shared.oauth.redact import DEFAULT
from tests.oauth.support import recorder

WEBHOOK = "https://hooks.example.com/services/T000/B000/planted-webhook-key-9d8e7f"


def test_log_event_is_stable_error_with_dimensions(caplog: pytest.LogCaptureFixture) -> None:
    alerts = Alerts(public_base_url="https://exactsync-app.azurewebsites.net/")
    with caplog.at_level(logging.ERROR, logger="exactsync.alerts"):
        alerts.connection_needs_reauth("acme-nl", provider="exact", reason="Old refresh token used.")
    (record,) = caplog.records
    assert record.name == "exactsync.alerts" and record.levelno == logging.ERROR
    message = record.getMessage()
    assert message.startswith(EVENT_NEEDS_REAUTH) and "acme-nl" in message
    assert "https://exactsync-app.azurewebsites.net/api/oauth/start?connection=acme-nl" in message
    dims = record.custom_dimensions  # type: ignore[attr-defined]
    assert dims["event"] == EVENT_NEEDS_REAUTH and dims["connection"] == "acme-nl"
    assert record.connection == "acme-nl"  # type: ignore[attr-defined]


def test_webhook_carries_the_link_and_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    posted: list[httpx.Request] = []

    def hook(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(200, text="1")

    alerts = Alerts(
        webhook_url=WEBHOOK,
        public_base_url="https://app.example.com",
        http=httpx.Client(transport=httpx.MockTransport(hook)),
    )
    token = "planted-refresh-token-abcdef123456"
    DEFAULT.add(token)  # as the token endpoint does with every token it sends or receives
    alerts.connection_needs_reauth("acme", provider="exact", reason=f"refused {token}")
    (request,) = posted
    assert str(request.url) == WEBHOOK
    text = json.loads(request.content)["text"]
    assert "https://app.example.com/api/oauth/start?connection=acme" in text
    # a token in the reason is masked, and the webhook key never reaches the logs
    assert token not in text and "[REDACTED]" in text and token not in caplog.text
    assert WEBHOOK not in caplog.text and "planted-webhook-key" not in caplog.text


@pytest.mark.parametrize("failure", ["status", "transport"])
def test_webhook_failure_is_logged_not_raised(failure: str, caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        if failure == "transport":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(500)

    alerts = Alerts(webhook_url=WEBHOOK, http=httpx.Client(transport=httpx.MockTransport(broken)))
    with caplog.at_level(logging.WARNING):
        alerts.connection_needs_reauth("acme", provider="exact", reason="dead")
    assert any("notification webhook" in r.getMessage() for r in caplog.records)
    assert "planted-webhook-key" not in caplog.text


def test_no_webhook_when_not_asked() -> None:
    posted: list[httpx.Request] = []
    alerts = Alerts(
        webhook_url=WEBHOOK,
        http=recorder(posted),
    )
    alerts.connection_needs_reauth("acme", provider="exact", reason="dead", reminder=True, notify=False)
    assert posted == []
    assert Alerts().reconsent_url("acme") == "/api/oauth/start?connection=acme"
