"""The alert rules watch what the code actually emits.

The needs-reauth rule matches the record shared.oauth.alerts logs (checked by emitting it);
the poison-queue rule reads the queue write log that storage.bicep sends to the workspace the
rule queries, for the poison queue of the queue the trigger listens on.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest

from shared.oauth.alerts import EVENT_NEEDS_REAUTH, Alerts
from tests.infra.bicep import ROOT, module, render, resources, template, the, variable

ALERTS = "app/alerts.bicep"
RULE = "Microsoft.Insights/scheduledQueryRules"


def _query(var: str) -> str:
    """A query variable with the template's own variables and parameters interpolated."""
    query: str = variable(ALERTS, var)
    names = template(ALERTS)["variables"]
    return re.sub(
        r"\$\{(\w+)\}", lambda m: variable(ALERTS, m[1]) if m[1] in names else "{" + m[1] + "}", query
    )


def _rule(query_var: str) -> dict[str, Any]:
    rules = resources(ALERTS, RULE).values()
    (rule,) = [r for r in rules if r["properties"]["criteria"]["allOf"][0]["query"] == query_var]
    props: dict[str, Any] = rule["properties"]
    return props


def _fires_on_any_match(props: dict[str, Any]) -> None:
    (criterion,) = props["criteria"]["allOf"]
    assert criterion["timeAggregation"] == "Count"
    assert (criterion["operator"], criterion["threshold"]) == ("GreaterThan", 0)
    assert props["enabled"] is True
    assert render(props["actions"]) == "{actionGroups: [actionGroup.id]}"


def test_needs_reauth_rule_matches_the_event_the_code_logs(caplog: pytest.LogCaptureFixture) -> None:
    props = _rule("needsReauthQuery")
    assert props["scopes"] == ["applicationInsightsId"]
    assert (
        render(module("alerts")["params"]["applicationInsightsId"])
        == "monitoring.outputs.applicationInsightsId"
    )
    _fires_on_any_match(props)
    query = _query("needsReauthQuery")
    assert query.startswith("traces ")
    assert f'message contains "{EVENT_NEEDS_REAUTH}"' in query
    assert "severityLevel >= 3" in query  # 3 = Error in App Insights

    # Emit the real alert record and hold it against the query's two conditions.
    with caplog.at_level(logging.ERROR, logger="exactsync.alerts"):
        Alerts().connection_needs_reauth("acme", provider="exact", reason="Old refresh token used.")
    (record,) = [r for r in caplog.records if EVENT_NEEDS_REAUTH in r.getMessage()]
    assert record.levelno >= logging.ERROR
    assert EVENT_NEEDS_REAUTH in record.getMessage()


def test_poison_queue_rule_reads_the_queue_writes_of_the_load_queue() -> None:
    props = _rule("poisonQueueQuery")
    assert props["scopes"] == ["logAnalyticsWorkspaceId"]
    _fires_on_any_match(props)
    query = _query("poisonQueueQuery")
    assert query.startswith("StorageQueueLogs ")
    assert 'OperationName == "PutMessage"' in query
    assert 'Uri contains "/{poisonQueueName}/messages"' in query
    # The poison queue is the host's <queue>-poison of the queue the trigger listens on.
    assert render(module("alerts")["params"]["poisonQueueName"]) == "${loadQueueName}-poison"
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    assert host["extensions"]["queues"]["maxDequeueCount"] >= 1
    # ...and the workspace receives the queue service's write log.
    diag = the("app/storage.bicep", "Microsoft.Insights/diagnosticSettings")
    assert diag["scope"] == "queueService"
    assert "StorageWrite" in [log["category"] for log in diag["properties"]["logs"]]
    assert render(module("storage")["params"]["logAnalyticsWorkspaceId"]) == render(
        module("alerts")["params"]["logAnalyticsWorkspaceId"]
    )


def test_alerts_notify_the_configured_address() -> None:
    group = the(ALERTS, "Microsoft.Insights/actionGroups")
    assert render(group["properties"]["emailReceivers"]).startswith("empty(alertEmail) ? [] : [")
    assert "emailAddress: alertEmail" in render(group["properties"]["emailReceivers"])
    assert module("alerts")["params"]["alertEmail"] == "alertEmail"
    assert len(group["properties"]["groupShortName"]) <= 12
