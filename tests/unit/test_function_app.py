"""The Functions host indexes function_app.py: check what it will find, as the host sees it."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def functions() -> dict[str, Any]:
    import function_app
    from shared.serve import functions_of

    # get_functions() may be called once per app object (azure-functions 1.26): share the
    # process's one call with exactsync serve.
    return {f.get_function_name(): f for f in functions_of(function_app.app)}


def _binding(function: Any, kind: str) -> dict[str, Any]:
    for binding in function.get_bindings_dict()["bindings"]:
        if binding["type"] == kind:
            return dict(binding)
    raise AssertionError(f"{function.get_function_name()} has no {kind} binding")


def test_every_trigger_is_indexed(functions: dict[str, Any]) -> None:
    assert set(functions) == {
        "oauth_start",
        "oauth_callback",
        "connection_status",
        "rotate_tokens",
        "request_sync",
        "exact_webhook",
        "schedule_syncs",
        "load_step",
    }


@pytest.mark.parametrize(
    ("name", "route", "methods", "auth"),
    [
        ("oauth_start", "oauth/start", ["GET"], "FUNCTION"),
        # a browser redirect and Exact's webhook POST carry no function key
        ("oauth_callback", "oauth/callback", ["GET"], "ANONYMOUS"),
        ("exact_webhook", "webhooks/exact", ["POST"], "ANONYMOUS"),
        ("connection_status", "connections/{name}", ["GET"], "FUNCTION"),
        ("request_sync", "sync", ["POST"], "FUNCTION"),
    ],
)
def test_http_routes_and_auth_levels(
    functions: dict[str, Any], name: str, route: str, methods: list[str], auth: str
) -> None:
    binding = _binding(functions[name], "httpTrigger")
    assert binding["route"] == route
    assert [str(getattr(m, "value", m)).upper() for m in binding["methods"]] == methods
    assert str(getattr(binding["authLevel"], "value", binding["authLevel"])).upper() == auth


def test_timers_read_their_schedule_from_app_settings(functions: dict[str, Any]) -> None:
    assert _binding(functions["rotate_tokens"], "timerTrigger")["schedule"] == "%ROTATE_SCHEDULE%"
    assert _binding(functions["schedule_syncs"], "timerTrigger")["schedule"] == "%SYNC_SCHEDULE%"
    assert _binding(functions["rotate_tokens"], "timerTrigger")["runOnStartup"] is False


def test_queue_trigger_uses_the_hosts_storage_connection(functions: dict[str, Any]) -> None:
    binding = _binding(functions["load_step"], "queueTrigger")
    assert binding["queueName"] == "%LOAD_QUEUE%"
    assert binding["connection"] == "AzureWebJobsStorage"
