"""Cold start: importing ``function_app`` against importing ``azure.functions`` alone.

Target (issue 2): at most 1.5x. Each figure is the median of fresh interpreter runs measured
side by side in one run (ratios within one run are what compare; see performance.md).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 9


def _time_import(module: str) -> float:
    code = f"import time; t=time.perf_counter(); import {module}; print(time.perf_counter()-t)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return float(out.strip())


def main() -> None:
    base, app = [], []
    for _ in range(RUNS):  # interleaved so both see the same machine load
        base.append(_time_import("azure.functions"))
        app.append(_time_import("function_app"))
    b, a = statistics.median(base), statistics.median(app)
    print(f"import azure.functions: {b * 1000:7.1f} ms (median of {RUNS})")
    print(f"import function_app:    {a * 1000:7.1f} ms (median of {RUNS})")
    print(f"ratio:                  {a / b:7.2f}x  (target <= 1.50x)")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"(bench took {time.perf_counter() - t0:.1f} s)")
