"""``exactsync sync``, ``exactsync demo`` and ``exactsync migrate``.

Registration only: the work's imports happen inside the handlers (``exactsync --help`` stays
instant).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from shared.cli_args import positive_int


def add_parsers(subparsers: Any) -> None:
    sync = subparsers.add_parser(
        "sync",
        help="sync Exact Online into the warehouse now, with progress and a summary",
        description=(
            "Plan load steps (every consented connection, its divisions and the catalog's entities, "
            "or what the options choose), put them on the load queue and run them to completion here: "
            "one worker process per division. A backfill that reaches the daily call reserve pauses "
            "and resumes on a later run or under `exactsync serve`."
        ),
    )
    sync.add_argument("--connection", action="append", default=None, help="only this connection (repeatable)")
    sync.add_argument(
        "--division", action="append", type=positive_int, default=None, help="only this division (repeatable)"
    )
    sync.add_argument(
        "--entity", action="append", default=None, help="only this entity, e.g. Accounts (repeatable)"
    )
    sync.add_argument(
        "--full", action="store_true", help="re-read everything instead of the changes since the last sync"
    )
    sync.add_argument(
        "--workers", type=positive_int, default=None, help="worker processes (default: one per division)"
    )
    sync.add_argument(
        "--resume",
        action="store_true",
        help="only run the steps already queued (interrupted or paused loads); plan nothing new",
    )
    sync.set_defaults(handler=run_sync_command)

    demo = subparsers.add_parser(
        "demo",
        help="the whole job on a local Exact Online sandbox: consent, full sync, changes, incremental sync",
        description=(
            "Starts the sandbox, consents, syncs every entity of every division into SQLite, changes data in "
            "the sandbox, syncs incrementally and prints what changed. Needs no configuration; its state "
            "lives in .exactsync/demo (wiped on each run)."
        ),
    )
    demo.add_argument("--home", type=Path, default=None, help="demo state folder (default .exactsync/demo)")
    demo.add_argument(
        "--workers", type=positive_int, default=None, help="worker processes (default: one per division)"
    )
    demo.set_defaults(handler=run_demo_command)

    migrate = subparsers.add_parser(
        "migrate",
        help="create or update the warehouse tables (deploy-time DDL)",
        description="Creates or updates every table of the configured warehouse (SQLite or Azure SQL); idempotent.",
    )
    migrate.add_argument("--print", action="store_true", dest="show", help="print the DDL statements applied")
    migrate.set_defaults(handler=run_migrate_command)


def run_sync_command(args: argparse.Namespace) -> int:
    from shared.oauth.commands import attach_trace
    from shared.runtime import current
    from shared.sync.runner import resume_sync, run_sync

    runtime = current()
    attach_trace(runtime, args)  # token refreshes during the sync print, redacted
    if args.resume:
        resumed = resume_sync(runtime, workers=args.workers)
        print(resumed.render())
        return 1 if resumed.failures else 0
    planned, summary = run_sync(
        runtime,
        connections=args.connection,
        divisions=args.division,
        entities=args.entity,
        full=args.full,
        workers=args.workers,
    )
    for connection, reason in planned.skipped:
        print(f"exactsync: connection {connection!r} skipped: {reason}", file=sys.stderr)
    if not planned.steps:
        print(
            "exactsync: nothing to sync (no consented connection? run `exactsync authorize`)", file=sys.stderr
        )
        return 1
    print(summary.render())
    return 1 if summary.failures else 0


def run_demo_command(args: argparse.Namespace) -> int:
    from shared.sync.demo import run_demo

    result = run_demo(home=args.home, workers=args.workers)
    return 0 if result.equal else 1


def run_migrate_command(args: argparse.Namespace) -> int:
    from shared.runtime import Runtime
    from shared.settings import Settings

    # Deploy-time: only the warehouse settings matter (the azd hook has no Exact secrets).
    warehouse = Runtime(settings=Settings.from_env(need_app=False)).warehouse
    applied = warehouse.migrate()
    if args.show:
        for statement in applied:
            print(statement.rstrip(";") + ";")
    print(
        f"{warehouse.dialect} warehouse: {len(applied)} DDL statement(s) applied"
        + ("" if applied else " (up to date)")
    )
    return 0
