"""Importing the stores, locks and storage helper loads no Azure SDK (cold start)."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "shared.stores",
    "shared.stores.keyvault",
    "shared.stores.local_file",
    "shared.stores.nonces",
    "shared.locks",
    "shared.locks.file_lock",
    "shared.locks.blob_lease",
    "shared.azure_storage",
    "shared.credentials",
]


def test_no_azure_sdk_is_imported_at_module_load() -> None:
    code = (
        f"import importlib, sys\nfor m in {MODULES!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m == 'azure' or m.startswith('azure.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_building_a_blob_lock_or_file_store_imports_nothing_heavy(tmp_path: object) -> None:
    code = (
        "import sys\nfrom shared.settings import Settings\nfrom shared.locks import make_lock\n"
        "from shared.stores import make_token_store\n"
        "s = Settings.from_env({'EXACT_BASE_URL': 'http://127.0.0.1:9', "
        f"'EXACTSYNC_HOME': {str(tmp_path)!r}, 'AzureWebJobsStorage': 'UseDevelopmentStorage=true'}})\n"
        "make_lock(s); make_token_store(s)\n"
        "print(sorted(m for m in sys.modules if m.startswith('azure.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
