"""The docs name every setting the code reads (docs drift is a bug users pay for)."""

from __future__ import annotations

from pathlib import Path

from shared.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_doc_lists_every_setting() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [spec.name for spec in SETTINGS if f"`{spec.name}`" not in text]
    assert missing == []


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    fenced = text.split("```")[1::2]
    first_two = [block.strip().splitlines()[-1] for block in fenced[:2]]
    assert first_two == ["./dev demo", "./dev test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "./dev test" in ci.splitlines()
