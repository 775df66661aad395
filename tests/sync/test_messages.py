"""Load-step messages: every bad shape is refused with a clear reason, and nothing secret travels."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from shared.settings import LOCAL_CLIENT_SECRET, LOCAL_WEBHOOK_SECRET
from shared.sync.messages import (
    MAX_MESSAGE_BYTES,
    InvalidStep,
    LoadStep,
    StepCursor,
    make_step,
    parse_step,
    redacted_excerpt,
)


def _good(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "schema_version": 1,
        "connection": "acme-nl",
        "division": 123456,
        "entity": "Accounts",
        "mode": "incremental",
        "cursor": None,
        "run_id": "run-1",
        "requested_at": 1_767_225_600.0,
    }
    document.update(changes)
    return document


def _body(document: Any) -> bytes:
    return json.dumps(document).encode()


def _reason(body: bytes | str) -> str:
    with pytest.raises(InvalidStep) as caught:
        parse_step(body)
    return caught.value.reason


def test_a_step_survives_the_round_trip_unchanged() -> None:
    step = make_step(
        connection="acme-nl", division=7, entity="TransactionLines", mode="full", requested_at=5.0
    )
    cursor = StepCursor(
        timestamp=987, next_url="https://start.exactonline.nl/api/v1/7/sync/x?$skiptoken=987L"
    )
    for candidate in (step, step.continued(cursor), step.continued(StepCursor(timestamp=0))):
        assert parse_step(candidate.to_bytes()) == candidate
        assert parse_step(candidate.to_json()) == candidate
    assert step.key == ("acme-nl", 7, "TransactionLines")
    assert not step.is_continuation and step.continued(cursor).is_continuation


def test_every_catalog_entity_and_the_deleted_stream_are_accepted() -> None:
    from shared.exact.catalog import CATALOG

    for name in [e.name for e in CATALOG] + ["Deleted"]:
        assert parse_step(_body(_good(entity=name))).entity == name


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "message is empty"),
        (b"   ", "message is empty"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"{not json", "not JSON"),
        (base64.b64encode(_body(_good())), "not JSON"),  # still base64: the encoding pitfall
        (b"NaN", "not JSON"),
        (b"[1, 2]", "must be a JSON object, got a JSON array"),
        (b'"text"', "must be a JSON object, got a JSON string"),
        (b"null", "must be a JSON object, got a JSON null"),
        (b"x" * (MAX_MESSAGE_BYTES + 1), "at most"),
    ],
)
def test_bodies_that_are_not_a_json_object(body: bytes, expected: str) -> None:
    assert expected in _reason(body)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"schema_version": 2}, "unsupported schema_version 2"),
        ({"schema_version": "1"}, "schema_version must be a whole number"),
        ({"schema_version": True}, "schema_version must be a whole number"),
        ({"connection": "Acme NL"}, "connection must be a connection name"),
        ({"connection": ""}, "connection must be a connection name"),
        ({"connection": 5}, "connection must be a connection name"),
        ({"connection": "a" * 41}, "connection must be a connection name"),
        ({"division": "123"}, "division must be a whole number"),
        ({"division": 0}, "division must be a whole number"),
        ({"division": -4}, "division must be a whole number"),
        ({"division": 2**31}, "division must be a whole number"),
        ({"division": 12.5}, "division must be a whole number"),
        ({"division": True}, "division must be a whole number"),
        ({"entity": "Contacts"}, "entity 'Contacts' is not in the catalog; known: Divisions, Accounts"),
        ({"entity": "accounts"}, "is not in the catalog"),
        ({"entity": None}, "entity a JSON null is not in the catalog"),
        ({"mode": "fulll"}, "mode must be 'full' or 'incremental', got 'fulll'"),
        ({"mode": None}, "mode must be 'full' or 'incremental'"),
        ({"run_id": ""}, "run_id must be"),
        ({"run_id": "a b"}, "run_id must be"),
        ({"run_id": "x" * 65}, "run_id must be"),
        ({"requested_at": -1}, "requested_at must be epoch seconds"),
        ({"requested_at": "now"}, "requested_at must be epoch seconds"),
        ({"requested_at": False}, "requested_at must be epoch seconds"),
        ({"cursor": 5}, "cursor must be null or an object"),
        ({"cursor": {}}, "cursor must hold a timestamp or a next_url"),
        ({"cursor": {"timestamp": None, "next_url": None}}, "cursor must hold a timestamp or a next_url"),
        ({"cursor": {"timestamp": -1}}, "cursor.timestamp must be a whole number"),
        ({"cursor": {"timestamp": "12"}}, "cursor.timestamp must be a whole number"),
        ({"cursor": {"timestamp": 2**63}}, "cursor.timestamp must be a whole number"),
        ({"cursor": {"timestamp": 1, "skip": 2}}, "cursor has unknown field(s): 'skip'"),
        ({"cursor": {"next_url": 5}}, "cursor.next_url must be a string or null"),
        ({"cursor": {"next_url": "/api/v1/123456/x"}}, "absolute http(s) URL"),
        ({"cursor": {"next_url": "ftp://h/api/v1/123456/x"}}, "absolute http(s) URL"),
        ({"cursor": {"next_url": "https://h/api/v1/999/x"}}, "Exact API URL of division 123456"),
        ({"cursor": {"next_url": "https://u:p@h/api/v1/123456/x"}}, "must not carry credentials"),
        (
            {"cursor": {"next_url": "https://h/api/v1/123456/x?access_token=abc"}},
            "must not carry credentials in its query string",
        ),
        ({"cursor": {"next_url": "https://h/api/v1/123456/x#f"}}, "fragment"),
        ({"cursor": {"next_url": "https://h/api/v1/123456/" + "x" * 6000}}, "1-6000 characters"),
        ({"cursor": {"next_url": "https://h:99999/api/v1/123456/x"}}, "not a valid URL"),
        ({"extra": 1}, "unknown field(s): 'extra'"),
        ({"access_token": "abc"}, "unknown field(s): 'access_token'"),
    ],
)
def test_each_bad_field_is_named(changes: dict[str, Any], expected: str) -> None:
    assert expected in _reason(_body(_good(**changes)))


@pytest.mark.parametrize(
    "name", ["schema_version", "connection", "division", "entity", "mode", "run_id", "requested_at"]
)
def test_each_missing_field_is_named(name: str) -> None:
    document = _good()
    del document[name]
    assert _reason(_body(document)) == f"missing field(s): {name}"


def test_the_cursor_may_be_left_out() -> None:
    document = _good()
    del document["cursor"]
    assert parse_step(_body(document)).cursor is None


def test_reasons_never_echo_long_values() -> None:
    secret = "eyJhbGciOiJIUzI1NiJ9." + "A" * 200
    for field in ("connection", "entity", "mode", "run_id", "division", "requested_at"):
        reason = _reason(_body(_good(**{field: secret})))
        assert "AAAA" not in reason, (field, reason)
    reason = _reason(_body(_good(cursor={"next_url": f"https://h/api/v1/1/x?code={secret}"})))
    assert "AAAA" not in reason


def test_make_step_validates_like_a_receiver() -> None:
    with pytest.raises(InvalidStep, match="connection must be"):
        make_step(connection="Bad Name", division=1, entity="Accounts")
    step = make_step(connection="c", division=1, entity="Deleted")
    assert step.mode == "incremental" and len(step.run_id) == 32


def test_a_message_holds_no_field_for_secrets() -> None:
    step = make_step(connection="acme-nl", division=1, entity="Items", mode="full")
    document = json.loads(step.to_json())
    assert set(document) == {
        "schema_version",
        "connection",
        "division",
        "entity",
        "mode",
        "cursor",
        "run_id",
        "requested_at",
    }
    assert isinstance(LoadStep.__dataclass_fields__, dict)


def test_redacted_excerpt_masks_secrets_and_credential_fields() -> None:
    body = json.dumps(
        {
            "refresh_token": "rt-very-secret",
            "note": f"client {LOCAL_CLIENT_SECRET} hook {LOCAL_WEBHOOK_SECRET}",
            "auth": "Bearer abc.def.ghi",
            "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
        }
    )
    text = redacted_excerpt(body, (LOCAL_CLIENT_SECRET, LOCAL_WEBHOOK_SECRET))
    for secret in ("rt-very-secret", LOCAL_CLIENT_SECRET, LOCAL_WEBHOOK_SECRET, "abc.def.ghi", "eyJzdWIi"):
        assert secret not in text
    assert "refresh_token" in text and "note" in text
    assert len(redacted_excerpt(b"x" * 10_000, limit=100)) == 100
    assert redacted_excerpt(b"\xff\xfeok").endswith("ok")
