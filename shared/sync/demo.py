"""``exactsync demo``: the whole job on embedded defaults, in well under a minute.

1. start the Exact Online sandbox in this process, on a free port;
2. consent through the real consent flow (``exactsync authorize --redirected-url`` machinery:
   a signed state, the authorize URL, the sandbox's automatic approval, the code exchange and
   the token store) for a connection named ``demo``;
3. create the SQLite tables (``migrate``);
4. sync every entity of every division the consent allows (full), with progress bars;
5. change data in the sandbox (inserts, updates and deletes in every entity and division);
6. sync incrementally and print, per entity and division, what changed and the calls it took;
7. check that the SQLite tables equal the sandbox's data, row for row.

State goes to ``.exactsync/demo`` (or ``--home``), never to the real ``EXACTSYNC_HOME``; the
settings are the embedded defaults whatever the environment says (no Azure, no SQL Server).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from shared.errors import ExactSyncError

if TYPE_CHECKING:
    from shared.exact.catalog import Entity
    from shared.oauth.consent import ConsentDone
    from shared.runtime import Runtime
    from shared.sandbox.server import SandboxHandle

DEMO_CONNECTION = "demo"
DEFAULT_HOME = Path(".exactsync") / "demo"
_MARKER = ".exactsync-demo"
#: per entity and division: rows inserted, updated, deleted in the sandbox between the syncs
MUTATIONS = {"insert": 3, "update": 2, "delete": 1}


@dataclass
class Change:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    calls: int = 0


@dataclass
class DemoResult:
    home: Path
    divisions: list[int]
    full_rows: int
    full_calls: int
    changes: dict[tuple[str, int], Change] = field(default_factory=dict)
    incremental_calls: int = 0
    equal: bool = False
    mismatches: list[str] = field(default_factory=list)
    elapsed: float = 0.0


def consent_with_sandbox(runtime: Runtime, connection: str) -> ConsentDone:
    """Consent for ``connection`` against a sandbox that approves at once: start the consent as
    ``exactsync authorize`` does, follow the authorize URL, and finish from the redirect URL."""
    import httpx

    from shared.oauth.commands import PendingConsents, finish_copied_url
    from shared.oauth.consent import begin
    from shared.oauth.state import Channel

    started = begin(runtime, connection, channel=Channel.CLI)
    PendingConsents(runtime.settings.home, runtime.clock).save(started)
    with httpx.Client(timeout=30) as http:
        answer = http.get(started.authorize_url, follow_redirects=False)
    location = answer.headers.get("location")
    if answer.status_code != 302 or not location:
        raise ExactSyncError(
            f"the sandbox did not approve the consent (HTTP {answer.status_code}); is auto-consent on?"
        )
    return finish_copied_url(runtime, location, connection=connection)


def prepare_home(home: Path) -> Path:
    """A clean demo folder. Only a folder the demo made (it holds the marker) is wiped."""
    home = home.resolve()
    if home.exists():
        if not (home / _MARKER).exists() and any(home.iterdir()):
            raise ExactSyncError(
                f"{home} exists and is not a demo folder: choose another --home (the demo wipes its folder)"
            )
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / _MARKER).write_text("state of `exactsync demo`; deleted by the next demo run\n", encoding="utf-8")
    return home


def demo_runtime(sandbox: SandboxHandle, home: Path) -> Runtime:
    """Embedded defaults against the sandbox: nothing from the environment leaks in."""
    from shared.runtime import Runtime
    from shared.settings import Settings

    settings = Settings.from_env({"EXACTSYNC_HOME": str(home), "EXACT_BASE_URL": sandbox.base_url})
    return Runtime(settings=settings, clock=sandbox.clock)


def warehouse_rows(runtime: Runtime, division: int, entity: Entity) -> dict[Any, dict[str, Any]]:
    """The warehouse's live rows of an entity, by key."""
    return {row[entity.key]: row for row in runtime.warehouse.read_rows(entity, division)}


def snapshot(
    runtime: Runtime, divisions: Iterable[int], entities: Iterable[Entity]
) -> dict[Any, dict[Any, Any]]:
    return {
        (entity.name, division): warehouse_rows(runtime, division, entity)
        for entity in entities
        for division in divisions
    }


def sandbox_rows(
    sandbox: SandboxHandle, division: int, entity: Entity, current: int | None = None
) -> dict[Any, dict[str, Any]]:
    """The sandbox's live rows of an entity, converted as the loader converts them.

    The dump has no user, while ``system/Divisions`` answers ``Current`` for the consenting user
    (``current``, from ``current/Me``): that field is filled in the same way here.
    """
    import httpx

    from shared.exact.convert import convert_row

    answer = httpx.get(
        f"{sandbox.base_url}/_sandbox/dump", params={"division": division, "entity": entity.name}, timeout=60
    )
    answer.raise_for_status()
    rows = [convert_row(entity, raw) for raw in answer.json()["rows"]]
    if entity.name == "Divisions" and current is not None:
        for row in rows:
            row["Current"] = row["Code"] == current
    return {row[entity.key]: row for row in rows}


def mutate(sandbox: SandboxHandle, division: int, entity: str, **counts: int | list[str]) -> dict[str, Any]:
    """Change rows through the sandbox's admin API: counts (``insert=2``) or keys (``update_keys=[…]``)."""
    import httpx

    answer = httpx.post(
        f"{sandbox.base_url}/_sandbox/mutate",
        json={"division": division, "entity": entity, **counts},
        timeout=60,
    )
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def compare(
    runtime: Runtime, sandbox: SandboxHandle, divisions: Iterable[int], entities: Iterable[Entity]
) -> list[str]:
    """Differences between the warehouse and the sandbox (empty: equal row for row)."""
    problems: list[str] = []
    current = int(runtime.exact_client(DEMO_CONNECTION).me()["CurrentDivision"])
    for entity in entities:
        for division in divisions:
            want = sandbox_rows(sandbox, division, entity, current)
            have = warehouse_rows(runtime, division, entity)
            missing = want.keys() - have.keys()
            extra = have.keys() - want.keys()
            differ = [k for k in want.keys() & have.keys() if want[k] != have[k]]
            if missing or extra or differ:
                problems.append(
                    f"{entity.name} division {division}: {len(missing)} missing, {len(extra)} extra, "
                    f"{len(differ)} different"
                )
    return problems


def changes(
    before: dict[Any, dict[Any, Any]],
    after: dict[Any, dict[Any, Any]],
    per_entity: dict[tuple[int, str], Any],
    divisions: Iterable[int],
) -> dict[tuple[str, int], Change]:
    """Per (entity, division): rows inserted, updated and deleted between two snapshots, and the
    calls the sync between them used (``sync/Deleted`` calls under "Deleted")."""
    out: dict[tuple[str, int], Change] = {}
    for (name, division), rows_after in after.items():
        rows_before = before[(name, division)]
        common = rows_after.keys() & rows_before.keys()
        totals = per_entity.get((division, name))
        out[(name, division)] = Change(
            inserted=len(rows_after.keys() - rows_before.keys()),
            deleted=len(rows_before.keys() - rows_after.keys()),
            updated=sum(1 for key in common if rows_after[key] != rows_before[key]),
            calls=totals.calls if totals else 0,
        )
    for division in divisions:
        totals = per_entity.get((division, "Deleted"))
        out[("Deleted", division)] = Change(calls=totals.calls if totals else 0)
    return out


def _table(result: DemoResult, entities: list[Entity]) -> str:
    header = f"  {'entity':<18}{'division':>10}{'inserted':>10}{'updated':>9}{'deleted':>9}{'calls':>7}"
    lines = [header, "  " + "-" * (len(header) - 2)]
    for entity in [*(e.name for e in entities), "Deleted"]:
        for division in result.divisions:
            change = result.changes.get((entity, division), Change())
            lines.append(
                f"  {entity:<18}{division:>10}{change.inserted:>10}{change.updated:>9}{change.deleted:>9}"
                f"{change.calls:>7}"
            )
    return "\n".join(lines)


def run_demo(
    *,
    home: Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    workers: int | None = None,
) -> DemoResult:
    from shared.exact.catalog import CATALOG
    from shared.runtime import install
    from shared.sandbox.server import start_sandbox
    from shared.sync.runner import run_sync

    out = out or sys.stdout
    err = err or sys.stderr
    started = time.perf_counter()
    folder = prepare_home(home or DEFAULT_HOME)

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    with start_sandbox(port=0, warn=False) as sandbox:
        runtime = demo_runtime(sandbox, folder)
        install(runtime)
        say(f"1. Exact Online sandbox running at {sandbox.base_url} (state in {folder})")
        done = consent_with_sandbox(runtime, DEMO_CONNECTION)
        say(f"2. consent given: connection {done.connection!r} is connected (tokens in {folder})")
        applied = runtime.warehouse.migrate()
        say(
            f"3. SQLite warehouse ready at {runtime.settings.sqlite_path} ({len(applied)} DDL statements applied)"
        )
        say("4. full sync of every entity of every division:")
        plan, summary = run_sync(
            runtime, connections=[DEMO_CONNECTION], full=True, workers=workers, stream=err
        )
        divisions = sorted(plan.divisions.get(DEMO_CONNECTION, []))
        say(_indent(summary.render()))
        if summary.failures:
            raise ExactSyncError("the full sync failed: " + "; ".join(summary.failures))
        entities = list(CATALOG)
        data_entities = [e for e in entities if e.incremental]
        before = snapshot(runtime, divisions, entities)
        for division in divisions:
            for entity in data_entities:
                mutate(sandbox, division, entity.name, **MUTATIONS)
        per = MUTATIONS
        say(
            f"5. changed the sandbox: in each of {len(data_entities)} entities x {len(divisions)} divisions "
            f"{per['insert']} inserts, {per['update']} updates, {per['delete']} delete"
        )
        say("6. incremental sync:")
        _plan2, summary2 = run_sync(runtime, connections=[DEMO_CONNECTION], workers=workers, stream=err)
        say(_indent(summary2.render()))
        after = snapshot(runtime, divisions, entities)
        result = DemoResult(folder, divisions, summary.rows, summary.calls, incremental_calls=summary2.calls)
        result.changes = changes(before, after, summary2.per_entity, divisions)
        say("   what changed in SQLite:")
        say(_table(result, entities))
        result.mismatches = compare(runtime, sandbox, divisions, entities)
        result.equal = not result.mismatches
        say(
            "7. check: the SQLite tables equal the sandbox's data row for row"
            if result.equal
            else "7. check FAILED: " + "; ".join(result.mismatches)
        )
        install(None)
    result.elapsed = time.perf_counter() - started
    say(
        f'done in {result.elapsed:.1f} s. Next: `exactsync serve`, `exactsync sync`, README\'s "In Azure" section.'
    )
    return result


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())
