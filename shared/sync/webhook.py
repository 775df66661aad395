"""Exact Online webhooks -> incremental load steps.

A delivery carries no data, only "topic T changed in division D" (and the record's key). The
receiver verifies the signature on the raw body (``shared.exact.webhooks``), maps the topic to
catalog entities and enqueues one incremental step per entity (plus the division's
``sync/Deleted`` step for a deletion). The steps read everything changed since the cursor, so
a lost, repeated or out-of-order delivery costs at most one call; bursts collapse in the
loader (a step whose data a newer read already covered returns without a call).

Answers: Exact's empty validation POST -> 200 (else the subscription fails); a wrong
signature -> 401 and nothing enqueued; not a delivery -> 400; a topic we do not sync -> 200
(Exact must not retry what we ignore on purpose).

Which connection: the ``connection`` query parameter of the callback URL when the subscription
set one; otherwise every stored connection that has loaded this division and entity before
(its cursor is in the warehouse), or the only connection there is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from shared.sync.messages import DELETED_ENTITY, LoadStep, make_step
from shared.web import WebRequest, WebResponse

if TYPE_CHECKING:
    from shared.exact.webhooks import WebhookEvent
    from shared.runtime import Runtime

log = logging.getLogger("exactsync.webhook")

#: Exact's webhook topics -> catalog entities they announce changes of.
TOPIC_ENTITIES: dict[str, tuple[str, ...]] = {
    "Accounts": ("Accounts",),
    "Items": ("Items",),
    "SalesInvoices": ("SalesInvoices",),
    "FinancialTransactions": ("TransactionLines",),
}


def entities_for(topic: str, configured: tuple[str, ...] = ()) -> list[str]:
    """Catalog entities a topic announces, narrowed to ``SYNC_ENTITIES`` when that is set."""
    names = list(TOPIC_ENTITIES.get(topic, ()))
    if configured:
        wanted = {name.lower() for name in configured}
        names = [name for name in names if name.lower() in wanted]
    return names


def _connections(runtime: Runtime, req: WebRequest, event: WebhookEvent, entities: list[str]) -> list[str]:
    from shared.stores.base import is_connection_name

    named = req.params.get("connection")
    if named:
        if not is_connection_name(named):
            return []
        return [named] if runtime.token_store.load(named) is not None else []
    stored = runtime.token_store.list_connections()
    if len(stored) <= 1:
        return stored
    return [
        connection
        for connection in stored
        if any(
            runtime.warehouse.read_cursor(connection, event.division, name) is not None for name in entities
        )
    ]


def steps_for(runtime: Runtime, req: WebRequest, event: WebhookEvent) -> list[LoadStep]:
    entities = entities_for(event.topic, runtime.settings.sync_entities)
    if not entities:
        return []
    if event.action.lower() == "delete":
        entities.append(DELETED_ENTITY)
    now = runtime.clock.now()
    # One run id per delivery content: a repeated delivery is recognisably the same request.
    run_id = "webhook-" + event.hash_code[:24].lower()
    return [
        make_step(
            connection=connection,
            division=event.division,
            entity=name,
            mode="incremental",
            run_id=run_id,
            requested_at=now,
        )
        for connection in _connections(runtime, req, event, entities)
        for name in entities
    ]


def receive_webhook(runtime: Runtime, req: WebRequest) -> WebResponse:
    from shared.errors import ConfigError
    from shared.exact.webhooks import (
        InvalidSignature,
        MalformedWebhook,
        is_validation_request,
        verify_delivery,
    )

    if req.method.upper() != "POST":
        return WebResponse.json({"error": "webhooks are POSTed"}, 405, {"Allow": "POST"})
    if is_validation_request(req.body):
        log.info("webhook subscription validation request answered")
        return WebResponse.json({"status": "ok"})
    try:
        event = verify_delivery(req.body, runtime.settings.webhook_secret)
    except InvalidSignature as exc:
        log.warning("webhook refused: %s", exc.reason)
        return WebResponse.json({"error": exc.reason}, 401)
    except MalformedWebhook as exc:
        log.warning("webhook refused: %s", exc.reason)
        return WebResponse.json({"error": exc.reason}, 400)
    except ConfigError as exc:
        log.error("webhook cannot be verified: %s", exc)
        return WebResponse.json({"error": "webhook verification is not configured"}, 503)
    steps = steps_for(runtime, req, event)
    for step in steps:
        runtime.queue.send(step)
    answer: dict[str, Any] = {"topic": event.topic, "division": event.division, "enqueued": len(steps)}
    if not steps:
        answer["ignored"] = (
            f"topic {event.topic!r} is not synced"
            if not entities_for(event.topic, runtime.settings.sync_entities)
            else "no connection reads this division"
        )
    log.info(
        "webhook %s %s division %s: %d step(s) enqueued",
        event.topic,
        event.action,
        event.division,
        len(steps),
    )
    return WebResponse.json(answer)
