"""checkov on infra/, as CI runs it (`checkov --framework bicep -d infra`): no failed check, and
every skip accounted for.

Skips live inline (`// checkov:skip=CKV_...:reason`) at the resource; only the checks checkov
cannot suppress inline or cannot evaluate sit in infra/.checkov.yaml, and this file pins that list.
A second run on a deliberately weakened copy of infra/ proves the gate bites.
"""

from __future__ import annotations

import collections
import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep import INFRA, ROOT, bicep_files, text

# Checks skipped in infra/.checkov.yaml (not inline), and why they cannot be inline.
CONFIG_SKIPS = {
    "CKV_AZURE_23": "Bicep graph check: inline suppression not applied",
    "CKV_AZURE_24": "Bicep graph check: inline suppression not applied",
    "CKV_AZURE_25": "Bicep graph check: inline suppression not applied",
    "CKV_AZURE_189": "crashes on the publicNetworkAccess expression instead of evaluating it",
}
SKIP_COMMENT = re.compile(r"//\s*checkov:skip=([A-Za-z0-9_]+):(.*)$", re.MULTILINE)


def _checkov(directory: Path) -> tuple[dict[str, Any], str]:
    exe = Path(sys.executable).with_name("checkov")
    command = [
        str(exe) if exe.exists() else "checkov",
        "--framework",
        "bicep",
        "-d",
        str(directory),
        "-o",
        "json",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    report = json.loads(done.stdout)
    if isinstance(report, list):
        (report,) = [r for r in report if r.get("check_type") == "bicep"]
    return report, done.stderr


@pytest.fixture(scope="module")
def scan() -> tuple[dict[str, Any], str]:
    return _checkov(INFRA)


def test_checkov_finds_no_failed_check(scan: tuple[dict[str, Any], str]) -> None:
    report, stderr = scan
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in report["results"]["failed_checks"]
    ]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] >= 40 and summary["resource_count"] >= 50, summary  # it really scanned
    assert "Failed to run check" not in stderr, stderr[-2000:]


def test_every_inline_skip_carries_a_reason_and_is_used(scan: tuple[dict[str, Any], str]) -> None:
    report, _ = scan
    written: collections.Counter[tuple[str, str]] = collections.Counter()
    for relative in bicep_files():
        for check_id, reason in SKIP_COMMENT.findall(text(relative)):
            assert len(reason.strip()) >= 30, f"{relative}: {check_id} needs a real reason, got {reason!r}"
            written[("/" + relative, check_id)] += 1
    skipped: collections.Counter[tuple[str, str]] = collections.Counter()
    for record in report["results"]["skipped_checks"]:
        assert record["check_result"].get("suppress_comment", "No comment provided") != "No comment provided"
        skipped[(record["file_path"], record["check_id"])] += 1
    # Each comment suppresses exactly one finding: none is stale, none is missing.
    assert skipped == written


def test_config_skips_are_only_those_that_cannot_be_inline() -> None:
    config = (INFRA / ".checkov.yaml").read_text(encoding="utf-8")
    yaml: Any = importlib.import_module("yaml")  # PyYAML comes with checkov; no stubs installed
    skips = yaml.safe_load(config)["skip-check"]
    assert set(skips) == set(CONFIG_SKIPS)
    checkov_dir = Path(str(importlib.import_module("checkov").__file__)).parent
    graph_dir = checkov_dir / "bicep" / "checks" / "graph_checks"
    graph_ids = {json.loads(p.read_text())["metadata"]["id"] for p in graph_dir.glob("*.json")}
    assert {c for c, why in CONFIG_SKIPS.items() if why.startswith("Bicep graph check")} <= graph_ids
    lines = config.splitlines()
    for check_id in skips:
        index = lines.index(f"  - {check_id}")
        assert lines[index - 1].strip().startswith("#"), f"{check_id} needs its reason in a comment above it"


def test_checkov_fails_a_weakened_copy(tmp_path: Path) -> None:
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    weaken = {
        "app/storage.bicep": ("minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'"),
        "app/function-app.bicep": ("httpsOnly: true", "httpsOnly: false"),
        "app/key-vault.bicep": ("enablePurgeProtection: true", "enablePurgeProtection: false"),
    }
    for relative, (old, new) in weaken.items():
        path = copy / relative
        body = path.read_text(encoding="utf-8")
        assert old in body, (relative, old)
        path.write_text(body.replace(old, new), encoding="utf-8")
    report, _ = _checkov(copy)
    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert {"CKV_AZURE_44", "CKV_AZURE_70", "CKV_AZURE_110"} <= failed, failed
