"""The HTTP service ``POST /api/sync`` (``POST /api/webhooks/exact`` is ``shared.sync.webhook``).

``request_sync`` only plans and enqueues (an HTTP answer must come within 230 s; a sync can
take days): it answers 202 with the run id and the number of steps, and the queue trigger does
the work. Options come as a JSON body or as query parameters::

    {"connection": "acme-nl", "division": [123, 456], "entity": ["Accounts"], "full": false}

Each of connection, division and entity takes one value or a list; all are optional.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared.web import WebRequest, WebResponse

if TYPE_CHECKING:
    from shared.runtime import Runtime

_OPTIONS = frozenset({"connection", "division", "entity", "full"})


class BadRequest(Exception):
    pass


def _as_list(value: Any) -> list[Any]:
    """One value, a list, or a comma-separated string (query parameters) -> a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value) if isinstance(value, list) else [value]


def _divisions(values: list[Any]) -> list[int]:
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
            raise BadRequest("division must be a division code (a whole number) or a list of them")
        out.append(int(value))
    return out


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", ""}:
        return value.lower() in {"true", "1"}
    raise BadRequest("full must be true or false")


def parse_options(req: WebRequest) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if req.body.strip():
        try:
            body = json.loads(req.body)
        except ValueError:
            raise BadRequest("the body must be JSON (or empty, with query parameters)") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        options.update(body)
    for name in _OPTIONS:
        if name in req.params and name not in options:
            options[name] = req.params[name]
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise BadRequest(f"unknown option(s): {', '.join(unknown[:5])}; known: {', '.join(sorted(_OPTIONS))}")
    connections = [str(c) for c in _as_list(options.get("connection"))]
    entities = [str(e) for e in _as_list(options.get("entity"))]
    from shared.stores.base import is_connection_name

    for connection in connections:
        if not is_connection_name(connection):
            raise BadRequest("connection must be a connection name (lowercase letters, digits, '-')")
    return {
        "connections": connections or None,
        "divisions": _divisions(_as_list(options.get("division"))) or None,
        "entities": entities or None,
        "full": _flag(options.get("full", False)),
    }


def request_sync(runtime: Runtime, req: WebRequest) -> WebResponse:
    from shared.errors import ConfigError
    from shared.sync.planner import enqueue, plan

    try:
        options = parse_options(req)
        planned = plan(
            runtime,
            connections=options["connections"],
            divisions=options["divisions"],
            entities=options["entities"],
            mode="full" if options["full"] else "incremental",
        )
    except (BadRequest, ConfigError) as exc:
        return WebResponse.json({"error": str(exc)}, 400)
    enqueue(runtime, planned)
    answer = planned.summary()
    if not planned.steps:
        answer["error"] = "nothing to sync: no consented connection matches (see skipped)"
        return WebResponse.json(answer, 409)
    return WebResponse.json(answer, 202)
