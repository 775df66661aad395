"""Importing function_app must not load the heavy SDKs: they cost seconds on a cold start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "httpx",
    "azure.identity",
    "azure.keyvault",
    "azure.storage",
    "pyodbc",
    "sqlite3",
)


def test_function_app_import_loads_no_heavy_module() -> None:
    code = "import sys, json; import function_app; print(json.dumps(sorted(m for m in sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    loaded = set(json.loads(out))
    offenders = sorted(m for m in loaded for h in HEAVY if m == h or m.startswith(h + "."))
    assert offenders == []
