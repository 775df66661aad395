"""End-to-end sync figures, side by side in one run (sandbox limits off, SQLite warehouse):

- rows per second of a full TransactionLines sync, end to end: planner -> embedded queue ->
  loader -> ExactClient over real HTTP -> convert -> SQLite commit per page (+ cursor);
- API calls used against the minimum (one per 1000-row page, plus sync/Deleted's one);
- peak memory (ru_maxrss) of a 1,000,000-row full sync: target under 200 MB.

The sandbox runs in this process; each sync runs in a child process (``--child``) so that the
loader has an interpreter of its own and its peak RSS is its own. Figures from one run on a
shared machine: compare the rows side by side, not across runs.

    .venv/bin/python bench/bench_sync.py [--rows 1000000] [--throughput-rows 200000]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIVISION = 1001001
CONNECTION = "bench"
TARGET_RSS_MB = 200


def child(home: str, base_url: str) -> None:
    """One full sync of TransactionLines in this process; prints its figures as JSON."""
    import io

    from shared.runtime import Runtime
    from shared.settings import Settings
    from shared.sync.runner import run_sync

    settings = Settings.from_env({"EXACTSYNC_HOME": home, "EXACT_BASE_URL": base_url})
    runtime = Runtime(settings=settings)
    started = time.perf_counter()
    _planned, summary = run_sync(
        runtime,
        divisions=[DIVISION],
        entities=["TransactionLines"],
        full=True,
        workers=1,
        stream=io.StringIO(),
    )
    elapsed = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(
        json.dumps(
            {
                "rows": summary.rows,
                "seconds": elapsed,
                "calls": summary.calls,
                "failures": summary.failures,
                "peak_mb": peak_kb / 1024,
            }
        )
    )


def run_case(rows: int) -> dict[str, Any]:
    import httpx

    from shared.runtime import Runtime
    from shared.sandbox.server import start_sandbox
    from shared.settings import Settings
    from shared.sync.demo import consent_with_sandbox

    with (
        tempfile.TemporaryDirectory(prefix="bench-sync-") as home,
        start_sandbox(
            limits=False, divisions=(DIVISION,), row_counts={"TransactionLines": rows}, warn=False
        ) as sb,
    ):
        runtime = Runtime(settings=Settings.from_env({"EXACTSYNC_HOME": home, "EXACT_BASE_URL": sb.base_url}))
        consent_with_sandbox(runtime, CONNECTION)
        runtime.warehouse.migrate()
        httpx.post(f"{sb.base_url}/_sandbox/counters/reset", timeout=30)
        done = subprocess.run(
            [sys.executable, __file__, "--child", home, sb.base_url],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"child failed:\n{done.stderr[-3000:]}")
        figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        counters = httpx.get(f"{sb.base_url}/_sandbox/counters", timeout=30).json()
        deleted_rows = httpx.get(
            f"{sb.base_url}/_sandbox/dump", params={"division": DIVISION, "entity": "Deleted"}, timeout=60
        ).json()["count"]
    figures["server_calls"] = sum(counters["api_calls"].values())
    figures["minimum_calls"] = math.ceil(rows / 1000) + max(1, math.ceil(deleted_rows / 1000))
    figures["rows_per_second"] = figures["rows"] / figures["seconds"]
    figures["requested"] = rows
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="rows of the memory case (default 1,000,000)"
    )
    parser.add_argument("--throughput-rows", type=int, default=200_000, help="rows of the throughput case")
    parser.add_argument("--child", nargs=2, metavar=("HOME", "BASE_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    cases = [("throughput", args.throughput_rows), ("memory", args.rows)]
    results = []
    for name, rows in cases:
        print(f"running {name} case: full sync of {rows:,} TransactionLines ...", file=sys.stderr, flush=True)
        results.append((name, run_case(rows)))
    header = (
        f"{'case':<11}{'rows':>11}{'seconds':>9}{'rows/s':>10}{'calls':>7}{'minimum':>9}{'server':>8}"
        f"{'peak RSS MB':>13}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results:
        print(
            f"{name:<11}{r['rows']:>11,}{r['seconds']:>9.1f}{r['rows_per_second']:>10,.0f}{r['calls']:>7}"
            f"{r['minimum_calls']:>9}{r['server_calls']:>8}{r['peak_mb']:>13.1f}"
        )
    memory = dict(results)["memory"]
    verdict = "OK" if memory["peak_mb"] < TARGET_RSS_MB else "OVER TARGET"
    print(
        f"\npeak RSS of the {memory['requested']:,}-row sync: {memory['peak_mb']:.1f} MB "
        f"(target < {TARGET_RSS_MB} MB: {verdict}); calls: {memory['calls']} used, "
        f"{memory['minimum_calls']} minimum (one per 1000-row page + sync/Deleted)"
    )
    failures = [f for _name, r in results for f in r["failures"]]
    if failures:
        print("FAILURES: " + "; ".join(failures))


if __name__ == "__main__":
    main()
