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


#: What the triggers import when they first run: loading them must not load the SDKs either
#: (a timer or queue trigger on a cold instance pays for every module it imports).
TRIGGER_MODULES = (
    "shared.runtime",
    "shared.oauth.http",
    "shared.oauth.rotation",
    "shared.sync.http",
    "shared.sync.webhook",
    "shared.sync.planner",
    "shared.sync.loader",
)


def _heavy_modules_after(imports: str) -> list[str]:
    code = f"import sys, json; {imports}; print(json.dumps(sorted(m for m in sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    loaded = set(json.loads(out))
    return sorted(m for m in loaded for h in HEAVY if m == h or m.startswith(h + "."))


def test_function_app_import_loads_no_heavy_module() -> None:
    assert _heavy_modules_after("import function_app") == []


def test_trigger_modules_load_no_heavy_module() -> None:
    assert _heavy_modules_after("; ".join(f"import {m}" for m in TRIGGER_MODULES)) == []
