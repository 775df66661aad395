"""Reference: "Webhooks" section, one test per fact (HMAC computed here, not with our code)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

import httpx
import pytest

from tests.conformance.support import Exact, SandboxFactory, raw_json_value, receiver, start

SECRET = "conformance-webhook-secret"
HASH = re.compile(r"^[0-9A-F]{64}$")


def session(factory: SandboxFactory, **options: Any) -> tuple[Exact, str, int]:
    options.setdefault("webhook_secret", SECRET)
    driver = Exact(start(factory, **options))
    token = driver.tokens()["access_token"]
    return driver, token, driver.handle.divisions[0]


def subscribe(
    driver: Exact, token: str, division: int, callback: str, topic: str = "Accounts"
) -> httpx.Response:
    return driver.http.post(
        driver.url(f"{division}/webhooks/WebhookSubscriptions"),
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        json={"CallbackURL": callback, "Topic": topic},
    )


def subscriptions(driver: Exact, token: str, division: int) -> list[dict[str, Any]]:
    answer = driver.api(f"{division}/webhooks/WebhookSubscriptions", token)
    assert answer.status_code == 200, answer.text
    d = answer.json()["d"]
    rows: list[dict[str, Any]] = d["results"] if isinstance(d, dict) else d
    return rows


def test_creation_posts_an_empty_body_to_the_callback_first(sandbox_factory: SandboxFactory) -> None:
    """ "On creation Exact POSTs an **empty body** to the callback, which must answer 2xx"."""
    driver, token, division = session(sandbox_factory)
    with receiver(200) as hook:
        answer = subscribe(driver, token, division, hook.url)
        assert 200 <= answer.status_code < 300, answer.text
        validation = hook.wait_for(1)[0]
        assert validation.method == "POST"
        assert validation.body == b""
        assert [row["CallbackURL"] for row in subscriptions(driver, token, division)] == [hook.url]
    driver.close()


@pytest.mark.parametrize("status", [404, 500, 302])
def test_creation_fails_when_the_callback_does_not_answer_2xx(
    sandbox_factory: SandboxFactory, status: int
) -> None:
    """ "… which must answer 2xx or the subscription fails"."""
    driver, token, division = session(sandbox_factory)
    with receiver(status) as hook:
        answer = subscribe(driver, token, division, hook.url)
        assert 400 <= answer.status_code < 500, answer.status_code
        assert len(hook.wait_for(1)) == 1
        assert subscriptions(driver, token, division) == []
    driver.close()


def test_creation_fails_when_the_callback_is_unreachable(sandbox_factory: SandboxFactory) -> None:
    driver, token, division = session(sandbox_factory)
    with receiver(200) as hook:
        gone = hook.url
    answer = subscribe(driver, token, division, gone)
    assert 400 <= answer.status_code < 500
    assert subscriptions(driver, token, division) == []
    driver.close()


@pytest.mark.parametrize(
    ("registered", "callback"),
    [
        ("http://127.0.0.1:7071/api/oauth/callback", "https://hooks.example.org/exact"),
        ("https://app.example.com/api/oauth/callback", "http://127.0.0.1:9/hook"),
        ("https://app.example.com/api/oauth/callback", "http://app.example.com/hook"),
        ("https://app.example.com/api/oauth/callback", "https://app.example.org/hook"),
        ("https://app.example.com/api/oauth/callback", "https://example.com.evil.net/hook"),
    ],
    ids=[
        "other-domain-from-loopback",
        "loopback-http-when-registered-https",
        "plain-http",
        "other-tld",
        "suffix-trick",
    ],
)
def test_callback_must_be_https_on_the_redirect_uris_domain(
    sandbox_factory: SandboxFactory, registered: str, callback: str
) -> None:
    """ "Callback must be HTTPS on the redirect URI's domain" (http loopback only when the registered
    redirect is loopback); the refusal happens without a validation call."""
    driver, token, division = session(sandbox_factory, redirect_uri=registered)
    before = driver.counters().get("webhook_validations", 0)
    answer = subscribe(driver, token, division, callback)
    assert 400 <= answer.status_code < 500
    assert subscriptions(driver, token, division) == []
    assert driver.counters().get("webhook_validations", 0) == before
    driver.close()


def test_subscriptions_can_be_deleted_but_not_updated(sandbox_factory: SandboxFactory) -> None:
    """ "POST creates, DELETE removes, no update"."""
    driver, token, division = session(sandbox_factory)
    with receiver(200) as hook:
        created = subscribe(driver, token, division, hook.url)
        assert 200 <= created.status_code < 300
        ident = subscriptions(driver, token, division)[0]["ID"]
        item = driver.url(f"{division}/webhooks/WebhookSubscriptions(guid'{ident}')")
        auth = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        for method in ("PUT", "PATCH", "MERGE"):
            answer = driver.http.request(
                method, item, headers=auth, json={"CallbackURL": hook.url, "Topic": "Items"}
            )
            assert not 200 <= answer.status_code < 300, (method, answer.status_code)
        assert subscriptions(driver, token, division)[0]["Topic"] == "Accounts"
        removed = driver.http.delete(item, headers=auth)
        assert 200 <= removed.status_code < 300
        assert subscriptions(driver, token, division) == []
    driver.close()


def test_deliveries_are_signed_with_upper_hex_hmac_of_the_raw_content(
    sandbox_factory: SandboxFactory,
) -> None:
    """Delivery ``{"Content":{…},"HashCode":"<64 upper-case hex>"}`` with
    HashCode = UPPER(hex(HMAC-SHA256(webhook secret, raw Content JSON text)))."""
    driver, token, division = session(sandbox_factory)
    with receiver(200) as hook:
        assert 200 <= subscribe(driver, token, division, hook.url).status_code < 300
        changed = driver.mutate(division, "Accounts", update=1)["updated"][0]
        requests = hook.wait_for(2)
        assert len(requests) >= 2, "no delivery arrived"
        delivery = requests[1]
        text = delivery.body.decode("utf-8")
        body = json.loads(text)
        assert set(body) == {"Content", "HashCode"}
        assert HASH.match(body["HashCode"]), body["HashCode"]
        raw_content = raw_json_value(text, "Content")
        expected = hmac.new(SECRET.encode(), raw_content.encode("utf-8"), hashlib.sha256).hexdigest().upper()
        assert hmac.compare_digest(expected, body["HashCode"])
        content = body["Content"]
        assert content["Topic"] == "Accounts"
        assert content["Action"] == "Update"
        assert content["Key"] == changed
        assert content["Division"] == division
        assert content["ClientId"] == driver.handle.client_id
        assert content["EventCreatedOn"]
        assert "HashCode" not in content and "Name" not in content  # no row data
        endpoint = content["ExactOnlineEndpoint"]
        assert endpoint.endswith(f"/api/v1/{division}/crm/Accounts(guid'{changed}')")
        # "the receiver GETs the endpoint itself": the link must be usable as given
        row = driver.get(endpoint, token)
        assert row.status_code == 200, row.text
        d = row.json()["d"]
        rows = d["results"] if isinstance(d, dict) and "results" in d else [d] if isinstance(d, dict) else d
        assert [r["ID"] for r in rows] == [changed]
    driver.close()


@pytest.mark.parametrize(("action", "change"), [("Create", "insert"), ("Delete", "delete")])
def test_creates_and_deletes_are_delivered_too(
    sandbox_factory: SandboxFactory, action: str, change: str
) -> None:
    driver, token, division = session(sandbox_factory)
    with receiver(200) as hook:
        assert 200 <= subscribe(driver, token, division, hook.url).status_code < 300
        result = driver.mutate(division, "Accounts", **{change: 1})
        key = (result["inserted"] + result["deleted"])[0]
        requests = hook.wait_for(2)
        assert len(requests) >= 2
        body = json.loads(requests[1].body)
        assert body["Content"]["Action"] == action
        assert body["Content"]["Key"] == key
    driver.close()
