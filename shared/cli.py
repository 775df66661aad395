"""The ``exactsync`` command.

Each area registers its own subcommands (``add_parsers``) so this module stays a dispatcher.
Registration modules import nothing heavy: the work's imports happen inside the handlers.
Errors exactsync raises on purpose end as one line on stderr and exit code 2, never a trace.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from shared.errors import ExactSyncError


def build_parser() -> argparse.ArgumentParser:
    from shared.oauth import commands as oauth_commands
    from shared.sandbox import command as sandbox_command
    from shared.sync import commands as sync_commands

    parser = argparse.ArgumentParser(
        prog="exactsync",
        description="Keep Exact Online connections alive and copy their data into SQL.",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print every HTTP exchange with the OAuth provider, secrets redacted",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sandbox_command.add_parsers(sub)
    oauth_commands.add_parsers(sub)
    sync_commands.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(args.log_level or "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = args.handler(args)
    except ExactSyncError as exc:
        print(f"exactsync: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
