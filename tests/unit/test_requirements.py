"""requirements.txt (what the platform installs) and pyproject.toml (what we test) must agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _names(lines: list[str]) -> dict[str, str]:
    out = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[<>=!~\[ ]", line, maxsplit=1)[0].lower()
            out[name] = line.replace(" ", "")
    return out


def test_runtime_requirements_match_the_package_dependencies() -> None:
    requirements = _names((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = _names(project["dependencies"])
    assert requirements == declared
    assert requirements["azure-functions"] == "azure-functions==1.26.*"
    assert "azure-functions-worker" not in requirements
