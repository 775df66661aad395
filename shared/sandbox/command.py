"""``exactsync sandbox``: run the Exact Online sandbox until stopped.

The sandbox registers the one app the client reads from the environment (``EXACT_CLIENT_ID``,
``EXACT_CLIENT_SECRET``, ``EXACT_REDIRECT_URI``, ``EXACT_WEBHOOK_SECRET``, with the local
defaults from ``shared.settings`` when unset), so ``exactsync`` and its sandbox agree with no
extra configuration. On start it prints one line of JSON (never the secrets) and serves.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any
from urllib.parse import urlsplit

from shared.cli_args import positive_float
from shared.errors import ExactSyncError


def _divisions(text: str) -> tuple[int, ...]:
    try:
        codes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--divisions takes comma-separated division codes, got {text!r}"
        ) from None
    if not codes or any(code <= 0 for code in codes) or len(set(codes)) != len(codes):
        raise argparse.ArgumentTypeError(f"--divisions needs distinct positive codes, got {text!r}")
    return codes


def _rows(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value.strip().isdigit():
        raise argparse.ArgumentTypeError(
            f"--rows takes Entity=N, e.g. TransactionLines=1000000, got {text!r}"
        )
    return name.strip(), int(value)


def add_parsers(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        help="run the local Exact Online-compatible sandbox",
        description="Serve an Exact Online-compatible API (OAuth, REST, limits, webhooks) on 127.0.0.1.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (0: a free one; default: EXACT_BASE_URL's port if loopback, else 0)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated data set (default 1)")
    parser.add_argument(
        "--time-scale", type=positive_float, default=1.0, help="simulated seconds per real second (default 1)"
    )
    parser.add_argument("--rows", type=_rows, action="append", default=[], metavar="ENTITY=N",
                        help="rows per division for an entity, repeatable (e.g. TransactionLines=1000000)")  # fmt: skip
    parser.add_argument("--no-limits", action="store_true", help="turn rate limits and the error block off")
    parser.add_argument("--divisions", type=_divisions, default=None, help="comma-separated division codes")
    parser.add_argument(
        "--consent-page", action="store_true", help="show a consent page instead of approving at once"
    )
    parser.set_defaults(handler=run)


def _registration(env: dict[str, str]) -> tuple[Any, int | None]:
    """The app registration from the client's own settings, plus EXACT_BASE_URL's port if loopback."""
    from shared.settings import Settings, is_loopback

    base = env.get("EXACT_BASE_URL", "").strip()
    parts = urlsplit(base) if base else None
    loopback = parts is not None and is_loopback(base)
    if not loopback:
        # read the credentials as a local client would: unset ones take the local defaults
        env = {**env, "EXACT_BASE_URL": "http://127.0.0.1"}
    settings = Settings.from_env(env)
    port = parts.port if loopback and parts is not None else None
    return settings, port


def run(args: argparse.Namespace) -> int:
    from shared.sandbox.server import DEFAULT_DIVISIONS, start_sandbox

    settings, env_port = _registration(dict(os.environ))
    port = args.port if args.port is not None else (env_port or 0)
    handle = start_sandbox(
        port=port,
        host=args.host,
        seed=args.seed,
        time_scale=args.time_scale,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        redirect_uri=settings.redirect_uri,
        webhook_secret=settings.webhook_secret,
        divisions=args.divisions or DEFAULT_DIVISIONS,
        row_counts=dict(args.rows),
        limits=not args.no_limits,
        auto_consent=not args.consent_page,
    )
    line = {
        "base_url": handle.base_url,
        "admin_url": handle.admin_url,
        "divisions": list(handle.divisions),
        "client_id": handle.client_id,
        "redirect_uri": handle.redirect_uri,
        "seed": args.seed,
        "time_scale": args.time_scale,
        "limits": not args.no_limits,
        "row_counts": handle.sandbox.data.row_counts,
        "clock": handle.clock.spec(),
    }
    print(json.dumps(line), flush=True)
    stop = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        handle.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.sandbox")
    sub = parser.add_subparsers(dest="command")
    add_parsers(sub)
    args = parser.parse_args(["sandbox", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.handler(args))
    except (ValueError, ExactSyncError) as exc:  # bad --rows entity names, a malformed setting
        print(f"exactsync sandbox: {exc}", file=sys.stderr)
        return 2
