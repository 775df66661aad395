"""``exactsync sandbox`` / ``python -m shared.sandbox``: one JSON line on start, then it serves."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shared.sandbox.command import add_parsers

ROOT = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(["sandbox", *argv])


def test_parser_reads_every_knob() -> None:
    args = parse("--port", "0", "--seed", "7", "--time-scale", "60", "--rows", "TransactionLines=1000000",
                 "--rows", "Accounts=5", "--no-limits", "--divisions", "123,456")  # fmt: skip
    assert (args.port, args.seed, args.time_scale, args.no_limits) == (0, 7, 60.0, True)
    assert args.rows == [("TransactionLines", 1_000_000), ("Accounts", 5)]
    assert args.divisions == (123, 456)
    assert callable(args.handler)


@pytest.mark.parametrize(
    "argv", [("--rows", "Accounts"), ("--divisions", "a,b"), ("--time-scale", "0"), ("--divisions", "1,1")]
)
def test_parser_refuses_bad_values(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)


def test_the_command_prints_one_json_line_and_serves_until_stopped() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXACT_")}
    env.update(
        {
            "EXACT_CLIENT_ID": "my-app",
            "EXACT_CLIENT_SECRET": "s3cr3t-value",
            "EXACT_REDIRECT_URI": "https://app.example.com/api/oauth/callback",
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.sandbox", "--port", "0", "--divisions", "5,6", "--rows", "Accounts=3"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        info = json.loads(line)
        assert info["client_id"] == "my-app" and info["divisions"] == [5, 6]
        assert (
            info["base_url"].startswith("http://127.0.0.1:")
            and info["admin_url"] == info["base_url"] + "/_sandbox"
        )
        assert "s3cr3t-value" not in line
        answer = httpx.get(f"{info['admin_url']}/dump", params={"division": 5, "entity": "Accounts"})
        assert answer.json()["count"] == 3
        auth = httpx.get(f"{info['base_url']}/api/oauth2/auth", params={
            "client_id": "my-app", "redirect_uri": "https://app.example.com/api/oauth/callback", "response_type": "code"})  # fmt: skip
        assert auth.status_code == 302
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0
    assert process.stderr is not None and "s3cr3t-value" not in process.stderr.read()


def test_bad_rows_fail_with_a_clear_message() -> None:
    answer = subprocess.run(
        [sys.executable, "-m", "shared.sandbox", "--rows", "Nope=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (
        answer.returncode == 2
        and "unknown entity 'Nope'" in answer.stderr
        and "Traceback" not in answer.stderr
    )
