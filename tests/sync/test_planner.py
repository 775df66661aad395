"""The planner: divisions from the consent or SYNC_DIVISIONS, entities from SYNC_ENTITIES or the
catalog, one step per division x entity plus sync/Deleted; the timer and POST /api/sync."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.errors import ConfigError
from shared.exact.catalog import CATALOG
from shared.runtime import install
from shared.sync.http import request_sync
from shared.sync.messages import parse_step
from shared.sync.planner import choose_entities, plan, schedule_all
from shared.sync.queues import EmbeddedQueue
from shared.tokens import TokenStatus
from shared.web import WebRequest
from tests.sync.support import CONNECTION, admin, api_calls, consented_runtime

ALL = [*(e.name for e in CATALOG), "Deleted"]


def _queued(runtime: Any) -> list[Any]:
    queue = runtime.queue
    assert isinstance(queue, EmbeddedQueue)
    return [parse_step(body) for body, _visible, _count in queue.peek_all()]


def test_divisions_are_discovered_from_what_the_consent_allows(
    sandbox_factory: Callable[..., Any], tmp_path: Path
) -> None:
    sandbox = sandbox_factory(divisions=(11, 12, 13))
    admin(sandbox, "POST", "config", json={"consent_divisions": [11, 13]})
    runtime = consented_runtime(sandbox, tmp_path)
    admin(sandbox, "POST", "counters/reset")
    planned = plan(runtime)
    assert planned.divisions == {CONNECTION: [11, 13]}
    assert [(s.division, s.entity) for s in planned.steps] == [(d, e) for d in (11, 13) for e in ALL]
    assert {s.run_id for s in planned.steps} == {planned.run_id}
    assert {s.mode for s in planned.steps} == {"incremental"}
    # discovery costs one rate-counted call (current/Me is not counted by Exact)
    calls = api_calls(sandbox)
    assert sum(v for k, v in calls.items() if not k.startswith("current ")) == 1


def test_settings_narrow_the_plan(sandbox_factory: Callable[..., Any], tmp_path: Path) -> None:
    sandbox = sandbox_factory()
    runtime = consented_runtime(
        sandbox, tmp_path, SYNC_DIVISIONS="1001002", SYNC_ENTITIES="accounts,Divisions"
    )
    admin(sandbox, "POST", "counters/reset")
    planned = plan(runtime, mode="full")
    assert [(s.division, s.entity, s.mode) for s in planned.steps] == [
        (1001002, "Accounts", "full"),
        (1001002, "Divisions", "full"),
        (1001002, "Deleted", "full"),
    ]
    assert api_calls(sandbox) == {}  # configured divisions: no discovery
    only_divisions = plan(runtime, entities=["Divisions"])
    assert [s.entity for s in only_divisions.steps] == ["Divisions"]  # no deletions to apply


def test_unknown_entities_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown entity 'Contacts'.*known: Divisions, Accounts"):
        choose_entities(["Contacts"])


def test_a_connection_that_needs_consent_is_skipped_and_reported(
    sandbox_factory: Callable[..., Any], tmp_path: Path
) -> None:
    sandbox = sandbox_factory()
    runtime = consented_runtime(sandbox, tmp_path)
    record = runtime.token_store.load(CONNECTION)
    assert record is not None
    runtime.token_store.save(record.with_changes(connection="broken", status=TokenStatus.NEEDS_REAUTH))
    planned = plan(runtime)
    assert planned.skipped == [("broken", "needs a new consent (`exactsync authorize`)")]
    assert {s.connection for s in planned.steps} == {CONNECTION}


def test_the_timer_enqueues_the_plan(sandbox_factory: Callable[..., Any], tmp_path: Path) -> None:
    from azure.functions.timer import TimerRequest

    import function_app

    sandbox = sandbox_factory()
    runtime = consented_runtime(sandbox, tmp_path)
    install(runtime)
    try:
        function_app.schedule_syncs(TimerRequest(past_due=False))
    finally:
        install(None)
    queued = _queued(runtime)
    assert len(queued) == 2 * len(ALL) and {s.mode for s in queued} == {"incremental"}
    assert schedule_all(runtime).steps  # and again: each run plans afresh


def test_post_sync_enqueues_and_answers_202(sandbox_factory: Callable[..., Any], tmp_path: Path) -> None:
    sandbox = sandbox_factory()
    runtime = consented_runtime(sandbox, tmp_path)
    body = json.dumps({"division": [1001001], "entity": "Items", "full": True}).encode()
    answer = request_sync(runtime, WebRequest("POST", "http://h/api/sync", body=body))
    assert answer.status == 202
    document = json.loads(answer.body)
    assert document["steps"] == 2 and document["mode"] == "full"
    assert [(s.entity, s.mode) for s in _queued(runtime)] == [("Items", "full"), ("Deleted", "full")]
    query = request_sync(
        runtime, WebRequest("POST", "http://h/api/sync", params={"entity": "Accounts,Items"})
    )
    assert query.status == 202 and json.loads(query.body)["steps"] == 2 * 3

    for bad, reason in [
        (b"[1]", "JSON object"),
        (b'{"division": "x"}', "division must be"),
        (b'{"full": "maybe"}', "full must be"),
        (b'{"entity": "Nope"}', "unknown entity"),
        (b'{"connection": "Bad Name"}', "connection must be"),
        (b'{"everything": true}', "unknown option"),
    ]:
        refused = request_sync(runtime, WebRequest("POST", "http://h/api/sync", body=bad))
        assert refused.status == 400 and reason in json.loads(refused.body)["error"], bad
