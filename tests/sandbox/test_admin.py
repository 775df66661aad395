"""The admin API: clock, counters, mutations, dumps, configuration; determinism of the data set."""

from __future__ import annotations

import time

import httpx

from shared.clock import ScaledClock
from shared.sandbox.server import SandboxHandle
from tests.fixtures.sandbox import obtain_tokens
from tests.sandbox.conftest import Api, Factory

ACCOUNT_FIELDS = "ID,Timestamp,Code,Name,Status,Blocked,IsSales,IsSupplier,Email,Country,Created,Modified"


def test_clock_reads_moves_and_scales(api: Api) -> None:
    spec = api.admin("GET", "clock")
    assert set(spec) == {"now", "anchor_real", "anchor_sim", "scale", "offset"}
    shared = ScaledClock.from_spec(spec)
    assert abs(shared.now() - api.admin("GET", "clock")["now"]) < 1
    moved = api.admin("POST", "clock", {"advance": 3600})
    assert moved["now"] - spec["now"] >= 3600 and moved["offset"] == 3600
    fast = api.admin("POST", "clock", {"scale": 1000})
    assert fast["scale"] == 1000
    time.sleep(0.05)
    assert api.admin("GET", "clock")["now"] - fast["now"] >= 40
    for bad in ({"advance": -1}, {"scale": 0}, {"speed": 2}, {}):
        assert api.http.post(f"{api.handle.admin_url}/clock", json=bad).status_code == 400


def test_a_fast_clock_lives_through_token_lifetimes(sandbox_factory: Factory, http: httpx.Client) -> None:
    handle: SandboxHandle = sandbox_factory(time_scale=2000)
    tokens = obtain_tokens(handle, http)
    time.sleep(0.35)  # 700 simulated seconds
    answer = http.get(
        f"{handle.base_url}/api/v1/current/Me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert answer.status_code == 401


def test_counters_count_calls_per_endpoint_and_reset(api: Api) -> None:
    api.get("sync/CRM/Accounts", {"$select": "ID", "$filter": "Timestamp gt 1L"})
    api.get("sync/CRM/Accounts", {"$filter": "Timestamp gt 1L"})
    api.me()
    counters = api.admin("GET", "counters")
    assert counters["api_calls"] == {f"{api.division} sync/CRM/Accounts": 2, "current Me": 1}
    assert counters["api_calls_total"] == 3 and counters["errors_4xx"] == 1
    assert counters["token_calls"] == 1 and counters["codes_exchanged"] == 1
    for name in (
        "refreshes",
        "refresh_token_reuse",
        "too_early_refreshes",
        "rate_limited_429",
        "token_calls_today",
    ):
        assert name in counters
    assert counters["refresh_log"] == [] and len(counters["exchange_log"]) == 1
    after = api.admin("POST", "counters/reset")
    assert after["api_calls_total"] == 0 and after["api_calls"] == {}


def test_mutations_get_new_timestamps_and_the_dump_matches_the_api(api: Api) -> None:
    before = api.sync_all("sync/CRM/Accounts", ACCOUNT_FIELDS)
    last = max(r["Timestamp"] for r in before)
    result = api.admin(
        "POST",
        "mutate",
        {"division": api.division, "entity": "Accounts", "insert": 3, "update": 2, "delete": 1},
    )
    assert (len(result["inserted"]), len(result["updated"]), len(result["deleted"])) == (3, 2, 1)
    changed = api.sync_all("sync/CRM/Accounts", ACCOUNT_FIELDS, after=last)
    assert {r["ID"] for r in changed} == set(result["inserted"]) | set(result["updated"])
    assert all(r["Timestamp"] > last for r in changed)
    old = {r["ID"]: r for r in before}
    for key in result["updated"]:
        new = next(r for r in changed if r["ID"] == key)
        assert new["Code"] == old[key]["Code"] and new["Modified"] != old[key]["Modified"]
    assert all(len(r["Code"]) == 18 for r in changed)
    dump = api.admin("GET", "dump", division=api.division, entity="Accounts")["rows"]
    live = api.sync_all("sync/CRM/Accounts", ACCOUNT_FIELDS)
    assert len(dump) == len(before) + 3 - 1
    fields = ACCOUNT_FIELDS.split(",")
    assert [{k: r[k] for k in fields} for r in dump] == sorted(
        ({k: r[k] for k in fields} for r in live), key=lambda r: str(r["ID"])
    )
    assert {"City", "Remarks"} <= set(dump[0])  # every field, not only those asked for here
    assert result["deleted"][0] not in {r["ID"] for r in dump}
    updated_again = api.admin(
        "POST",
        "mutate",
        {"division": api.division, "entity": "Accounts", "update_keys": result["updated"][:1]},
    )
    assert updated_again["updated"] == result["updated"][:1]


def test_bad_mutations_change_nothing(api: Api) -> None:
    dump = api.admin("GET", "dump", division=api.division, entity="Items")
    for body in (
        {"division": api.division, "entity": "Nope", "insert": 1},
        {"division": 1, "entity": "Items", "insert": 1},
        {"division": api.division, "entity": "Items", "delete": 10_000},
        {"division": api.division, "entity": "Items", "insert": -1},
        {
            "division": api.division,
            "entity": "Items",
            "delete_keys": ["00000000-0000-0000-0000-000000000000"],
        },
        {"division": api.division, "entity": "Items", "insert": 1, "colour": "red"},
    ):
        assert api.http.post(f"{api.handle.admin_url}/mutate", json=body).status_code == 400, body
    assert api.admin("GET", "dump", division=api.division, entity="Items") == dump
    assert api.http.get(f"{api.handle.admin_url}/dump", params={"division": api.division}).status_code == 400


def test_the_data_set_is_deterministic_from_the_seed(sandbox_factory: Factory, http: httpx.Client) -> None:
    def dump(handle: SandboxHandle, entity: str) -> list[dict[str, object]]:
        answer = http.get(
            f"{handle.admin_url}/dump", params={"division": handle.divisions[0], "entity": entity}
        )
        rows: list[dict[str, object]] = answer.json()["rows"]
        return rows

    one, same, other = sandbox_factory(seed=5), sandbox_factory(seed=5), sandbox_factory(seed=6)
    for entity in ("Accounts", "TransactionLines", "Deleted", "Divisions"):
        assert dump(one, entity) == dump(same, entity)
    assert dump(one, "Accounts") != dump(other, "Accounts")
    divisions = sandbox_factory(divisions=[11, 12, 13], row_counts={"Accounts": 5, "TransactionLines": 0})
    assert len(dump(divisions, "Accounts")) == 5 and dump(divisions, "TransactionLines") == []
    assert [d["Code"] for d in dump(divisions, "Divisions")] == [11, 12, 13]


def test_config_and_chains(api: Api) -> None:
    config = api.admin("GET", "config")
    assert config["reuse_kills_chain"] is True and config["token_calls_per_day"] == 200
    assert api.http.post(f"{api.handle.admin_url}/config", json={"consent_divisions": [1]}).status_code == 400
    assert api.http.post(f"{api.handle.admin_url}/config", json={"nope": 1}).status_code == 400
    (chain,) = api.admin("GET", "chains")["chains"]
    assert chain["alive"] and chain["access_valid"]
    assert "access_token" not in chain and "refresh_token" not in chain
    assert api.admin("POST", "chains/revoke", {"chain": None}) == {"revoked": 1}
    assert api.me().status_code == 401


def test_admin_answers_never_hold_secrets(api: Api) -> None:
    secret, hook_secret = api.handle.app.client_secret, api.handle.app.webhook_secret
    for name in ("", "clock", "counters", "config", "chains", "faults", "limits", "webhooks"):
        text = api.http.get(f"{api.handle.admin_url}/{name}").text
        assert secret not in text and hook_secret not in text and api.tokens["refresh_token"] not in text
    assert api.http.get(f"{api.handle.admin_url}/nothing").status_code == 404
