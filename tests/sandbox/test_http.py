"""What every sandbox answer carries at the HTTP level: a ``Date`` on the simulated clock, and a
405 with ``Allow`` (an OData error on the REST API) for a method a resource does not take."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

import httpx
import pytest

from shared.clock import ScaledClock
from tests.sandbox.conftest import Api, Factory, error_text

#: RFC 9110 5.6.7 IMF-fixdate, e.g. "Wed, 15 Jan 2025 10:00:53 GMT"
IMF_FIXDATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d{2}:\d{2}:\d{2} GMT$"
)
SIMULATED_START = 1_736_935_253.0  # 2025-01-15T10:00:53Z: far from the real time of any test run


def dated(answer: httpx.Response) -> float:
    text = answer.headers["date"]
    assert IMF_FIXDATE.match(text), text
    return parsedate_to_datetime(text).timestamp()


def test_every_answer_is_dated_on_the_simulated_clock(sandbox_factory: Factory, http: httpx.Client) -> None:
    """The rate-limit resets are simulated epoch ms; the ``Date`` a client compares them with
    must come from the same clock, truncated to whole seconds as servers send it."""
    handle = sandbox_factory(clock=ScaledClock.starting_now(sim_start=SIMULATED_START))
    api = Api(handle, http, {"access_token": "unknown"})
    answers = [
        http.get(f"{handle.base_url}/api/oauth2/auth", params={"client_id": handle.client_id}),  # 400 page
        http.post(f"{handle.base_url}/api/oauth2/token", data={}),  # 400 JSON
        api.get("system/Divisions"),  # 401 OData
        http.get(f"{handle.base_url}/nowhere"),  # 404
        http.get(f"{handle.admin_url}/clock"),  # the admin API too
    ]
    for answer in answers:
        before = handle.clock.now()
        assert before - 1.5 <= dated(answer) <= before, (answer.request.url, answer.headers["date"])
    http.post(f"{handle.admin_url}/clock", json={"advance": 3600})
    assert dated(http.get(f"{handle.base_url}/nowhere")) >= SIMULATED_START + 3600


def test_a_minutely_429_is_dated_before_the_reset_it_announces(
    sandbox_factory: Factory, http: httpx.Client
) -> None:
    from tests.fixtures.sandbox import obtain_tokens

    handle = sandbox_factory(clock=ScaledClock.starting_now(sim_start=SIMULATED_START))
    api = Api(handle, http, obtain_tokens(handle, http))
    api.admin("POST", "limits", {"minutely": 1})
    assert api.get("system/Divisions", {"$select": "Code"}).status_code == 200
    refused = api.get("system/Divisions", {"$select": "Code"})
    assert refused.status_code == 429
    reset = int(refused.headers["x-ratelimit-minutely-reset"]) / 1000
    assert reset - 60 <= dated(refused) < reset


@pytest.mark.parametrize("method", ["MERGE", "PUT", "PATCH"])
def test_a_webhook_subscription_cannot_be_updated_405_with_an_odata_error(
    api: Api, http: httpx.Client, method: str
) -> None:
    """There is no update: MERGE (OData v2's update verb) is refused like PUT and PATCH, with a
    405, ``Allow`` and the OData error shape, not the HTTP server's bare 501."""
    item = f"{api.handle.base_url}/api/v1/{api.division}/webhooks/WebhookSubscriptions(guid'6f1d2b9a-0c5e-4c1b-9d1e-2a3b4c5d6e7f')"
    answer = http.request(
        method,
        item,
        headers={**api.auth, "Accept": "application/json"},
        json={"CallbackURL": "https://example.com/hook", "Topic": "Items"},
    )
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, DELETE"
    assert method in error_text(answer)


def test_read_only_endpoints_answer_405_with_allow_get(api: Api, http: httpx.Client) -> None:
    base = api.handle.base_url
    headers = {**api.auth, "Accept": "application/json"}
    for method, url in (
        ("MERGE", f"{base}/api/v1/{api.division}/crm/Accounts"),
        ("POST", f"{base}/api/v1/{api.division}/crm/Accounts"),
        ("DELETE", f"{base}/api/v1/current/Me"),
    ):
        answer = http.request(method, url, headers=headers)
        assert answer.status_code == 405, (method, url)
        assert answer.headers["allow"] == "GET"
        assert method in error_text(answer)
    xml = http.request("MERGE", f"{base}/api/v1/{api.division}/crm/Accounts", headers=api.auth)
    assert xml.status_code == 405 and xml.headers["content-type"].startswith("application/xml")
    token = http.get(f"{base}/api/oauth2/token")
    assert token.status_code == 405 and token.headers["allow"] == "POST"
    assert token.json()["error"] == "invalid_request"
    auth = http.request("MERGE", f"{base}/api/oauth2/auth")
    assert auth.status_code == 405 and auth.headers["allow"] == "GET, POST"
