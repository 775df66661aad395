"""The planner: which load steps a sync consists of, and putting them on the queue.

A sync is one first step per (connection, division, entity), plus one ``sync/Deleted`` step
per (connection, division) when any chosen entity is reported there. Each step then runs and
continues itself through the queue (``loader``); the planner only starts them. Steps for
different divisions are independent (separate rate budgets) and run in parallel wherever
there are workers; steps for the same key are serialized by the loader's lock.

Divisions: ``SYNC_DIVISIONS`` when set, else every division the consent allows, discovered per
connection through ``current/Me`` (the current division, not rate-counted) and that division's
``system/Divisions`` (one call). Entities: ``SYNC_ENTITIES`` when set, else the whole catalog.

A connection that needs a new consent is skipped and reported (its steps could only fail);
a connection whose discovery fails is reported and the others still get their steps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.errors import ConfigError, ExactSyncError
from shared.exact.catalog import CATALOG, Entity
from shared.sync.messages import DELETED_ENTITY, LoadStep, Mode, make_step, new_run_id

if TYPE_CHECKING:
    from shared.runtime import Runtime

log = logging.getLogger("exactsync.planner")


@dataclass
class Plan:
    run_id: str
    mode: Mode
    steps: list[LoadStep] = field(default_factory=list)
    #: (connection, why it got no steps)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    divisions: dict[str, list[int]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "steps": len(self.steps),
            "divisions": self.divisions,
            "skipped": [{"connection": c, "reason": r} for c, r in self.skipped],
        }


def choose_entities(names: Sequence[str] = ()) -> list[Entity]:
    """Catalog entities by name (case-insensitive), the whole catalog when none are given."""
    if not names:
        return list(CATALOG)
    by_name = {e.name.lower(): e for e in CATALOG}
    chosen: list[Entity] = []
    for name in names:
        found = by_name.get(name.strip().lower())
        if found is None:
            known = ", ".join(e.name for e in CATALOG)
            raise ConfigError(f"unknown entity {name!r} (SYNC_ENTITIES / --entity); known: {known}")
        if found not in chosen:
            chosen.append(found)
    return chosen


def entity_steps(entities: Iterable[Entity]) -> list[str]:
    """Step entity names for a division: the entities, then ``Deleted`` when any of them has
    deletions reported in ``sync/Deleted``."""
    chosen = list(entities)
    names = [e.name for e in chosen]
    if any(e.deleted_entity_type is not None for e in chosen):
        names.append(DELETED_ENTITY)
    return names


def discover_divisions(runtime: Runtime, connection: str) -> list[int]:
    """The divisions a connection's consent allows: ``current/Me`` + ``system/Divisions``."""
    client = runtime.exact_client(connection)
    me = client.me()
    current = me.get("CurrentDivision")
    if isinstance(current, bool) or not isinstance(current, int | str) or not str(current).isdigit():
        raise ConfigError(f"connection {connection!r}: current/Me has no CurrentDivision")
    rows = client.divisions(int(current))
    codes = sorted({int(row["Code"]) for row in rows if str(row.get("Code", "")).isdigit()})
    return codes or [int(current)]


def plan(
    runtime: Runtime,
    *,
    connections: Sequence[str] | None = None,
    divisions: Sequence[int] | None = None,
    entities: Sequence[str] | None = None,
    mode: Mode = "incremental",
    run_id: str | None = None,
) -> Plan:
    """The steps of one sync. Arguments narrow it; unset ones come from the settings."""
    from shared.oauth.errors import NeedsReauth
    from shared.tokens import TokenStatus

    settings = runtime.settings
    result = Plan(run_id=run_id or new_run_id(), mode=mode)
    chosen = choose_entities(entities if entities else settings.sync_entities)
    names = entity_steps(chosen)
    store = runtime.token_store
    wanted = list(connections) if connections else store.list_connections()
    now = runtime.clock.now()
    for connection in wanted:
        record = store.load(connection)
        if record is None:
            result.skipped.append((connection, "no consent stored: run `exactsync authorize` first"))
            continue
        if record.status == TokenStatus.NEEDS_REAUTH:
            result.skipped.append((connection, "needs a new consent (`exactsync authorize`)"))
            continue
        if divisions:
            codes = list(dict.fromkeys(divisions))
        elif settings.sync_divisions:
            codes = list(settings.sync_divisions)
        else:
            try:
                codes = discover_divisions(runtime, connection)
            except NeedsReauth as exc:
                result.skipped.append((connection, str(exc)))
                continue
            except ExactSyncError as exc:
                result.skipped.append((connection, f"could not discover divisions: {exc}"))
                continue
        result.divisions[connection] = codes
        for division in codes:
            for name in names:
                result.steps.append(
                    make_step(
                        connection=connection,
                        division=division,
                        entity=name,
                        mode=mode,
                        run_id=result.run_id,
                        requested_at=now,
                    )
                )
    for connection, reason in result.skipped:
        log.warning("sync plan: connection %s skipped: %s", connection, reason)
    return result


def enqueue(runtime: Runtime, planned: Plan) -> Plan:
    for step in planned.steps:
        runtime.queue.send(step)
    log.info("sync plan %s: %d steps enqueued", planned.run_id, len(planned.steps))
    return planned


def schedule_all(runtime: Runtime) -> Plan:
    """The ``schedule_syncs`` timer: an incremental sync of everything configured."""
    return enqueue(runtime, plan(runtime))
