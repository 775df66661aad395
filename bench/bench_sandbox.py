"""How fast the sandbox serves ``sync/…`` pages (limits off): rows per second, printed.

The serving figure (the acceptance one: serving must never be what limits a later benchmark)
runs the sandbox as ``exactsync sandbox`` runs it, in its own process, and reads
``sync/Financial/TransactionLines`` page after page with an httpx client in this script,
following ``__next`` (found in the raw body, so the client's JSON parsing is not counted as
serving time). Two reference figures follow: the same client also parsing every page with
orjson (what a loader's fetch costs end to end), and the sandbox in this process (client and
server then share one interpreter lock).

    .venv/bin/python bench/bench_sandbox.py [--rows 1000000] [--pages 300] [--skip-inprocess]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.settings import LOCAL_CLIENT_ID, LOCAL_CLIENT_SECRET, LOCAL_REDIRECT_URI  # noqa: E402

SELECT = (
    "ID,Timestamp,EntryID,EntryNumber,LineNumber,Date,FinancialYear,FinancialPeriod,GLAccount,GLAccountCode,"
    "AmountDC,AmountFC,Account,Project,Status,Type,Description,Modified"
)
DIVISION = 1001001


def tokens(client: httpx.Client, base_url: str) -> dict[str, Any]:
    from urllib.parse import parse_qs, urlsplit

    auth = client.get(
        f"{base_url}/api/oauth2/auth",
        params={
            "client_id": LOCAL_CLIENT_ID,
            "redirect_uri": LOCAL_REDIRECT_URI,
            "response_type": "code",
            "state": "b",
        },
    )
    code = parse_qs(urlsplit(auth.headers["location"]).query)["code"][0]
    answer = client.post(
        f"{base_url}/api/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": LOCAL_REDIRECT_URI,
            "client_id": LOCAL_CLIENT_ID,
            "client_secret": LOCAL_CLIENT_SECRET,
        },
    )
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def read_pages(base_url: str, pages: int, *, parse: bool) -> tuple[int, float, int]:
    """(rows, seconds, bytes) for up to ``pages`` pages of sync/Financial/TransactionLines."""
    with httpx.Client(timeout=120) as client:
        access = tokens(client, base_url)["access_token"]
        headers = {"Authorization": f"Bearer {access}", "Accept": "application/json"}
        url: str | None = f"{base_url}/api/v1/{DIVISION}/sync/Financial/TransactionLines"
        params: dict[str, str] | None = {"$select": SELECT, "$filter": "Timestamp gt 1L"}
        rows = size = 0
        started = time.perf_counter()
        for _ in range(pages):
            if url is None:
                break
            answer = client.get(url, params=params, headers=headers)
            answer.raise_for_status()
            body = answer.content
            size += len(body)
            if parse:
                d = orjson.loads(body)["d"]
                rows += len(d["results"])
                url = d.get("__next")
            else:
                rows += body.count(b'"__metadata":')
                start = body.rfind(b'"__next":"')
                url = body[start + 10 : body.index(b'"', start + 10)].decode() if start >= 0 else None
            params = None
        return rows, time.perf_counter() - started, size


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident memory (Linux ``VmHWM``), or None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def out_of_process(
    row_count: int, pages: int
) -> tuple[tuple[int, float, int], tuple[int, float, int], float | None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXACT_")}
    command = [sys.executable, "-m", "shared.sandbox", "--port", "0", "--no-limits", "--divisions", str(DIVISION),
               "--rows", f"TransactionLines={row_count}"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        line = json.loads(process.stdout.readline())
        read_pages(line["base_url"], 3, parse=False)  # warm up: connection, caches
        serving = read_pages(line["base_url"], pages, parse=False)
        parsed = read_pages(line["base_url"], max(1, pages // 2), parse=True)
        return serving, parsed, peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)


def in_process(row_count: int, pages: int) -> tuple[int, float, int]:
    from shared.sandbox.server import start_sandbox

    with start_sandbox(
        limits=False, divisions=[DIVISION], row_counts={"TransactionLines": row_count}, warn=False
    ) as handle:
        return read_pages(handle.base_url, pages, parse=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="TransactionLines in the division")
    parser.add_argument("--pages", type=int, default=300, help="pages of 1000 rows to read (default 300)")
    parser.add_argument("--skip-inprocess", action="store_true")
    args = parser.parse_args()
    (rows, seconds, size), (prows, pseconds, _), rss = out_of_process(args.rows, args.pages)
    print(
        f"sandbox serving sync/Financial/TransactionLines, limits off, {args.rows:,} rows in the division, "
        f"own process, httpx client: {rows / seconds:,.0f} rows/s "
        f"({rows:,} rows in {seconds:.2f} s, {size / max(rows, 1):.0f} bytes/row)"
    )
    print(f"  reference: the same client also parsing each page with orjson: {prows / pseconds:,.0f} rows/s")
    if rss is not None:
        print(f"  sandbox peak memory (VmHWM) after serving {rows + prows:,} rows: {rss:,.0f} MB")
    if not args.skip_inprocess:
        rows, seconds, _ = in_process(args.rows, max(1, args.pages // 3))
        print(
            f"  reference: sandbox in the client's process (one GIL), parsing: {rows / seconds:,.0f} rows/s"
        )


if __name__ == "__main__":
    main()
