"""``exactsync status [--json] [--connection NAME]`` on real stored records (sandbox consents)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.cli import main
from shared.runtime import install
from shared.sandbox.server import SandboxHandle
from shared.tokens import TokenStatus
from tests.oauth.consent_flow import ConsentRig, app_env, consent_rig


@pytest.fixture
def rig(
    sandbox_factory: Callable[..., SandboxHandle], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ConsentRig]:
    with consent_rig(sandbox_factory, tmp_path / "home", limits=False) as rig:
        assert rig.consent(connection="acme").status_code == 200
        assert rig.consent(connection="beta").status_code == 200
        # the CLI builds its runtime from the environment, like a separate process would
        for name, value in app_env(rig.sandbox, rig.home, rig.redirect_uri).items():
            monkeypatch.setenv(name, value)
        install(None)
        yield rig


def test_status_table_lists_every_connection(rig: ConsentRig, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["CONNECTION", "PROVIDER", "STATUS"]
    assert [line.split()[:3] for line in lines[1:]] == [["acme", "exact", "ok"], ["beta", "exact", "ok"]]
    assert "left" in lines[1]  # access-token validity
    for name in ("acme", "beta"):
        record = rig.stored(name)
        assert record is not None
        assert record.access_token not in out and record.refresh_token not in out


def test_status_json_for_all_and_one(rig: ConsentRig, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json"]) == 0
    views = json.loads(capsys.readouterr().out)
    assert [v["connection"] for v in views] == ["acme", "beta"]
    assert main(["status", "--connection", "acme", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["connection"] == "acme" and view["status"] == "ok"
    for key in ("access_expires_at", "refresh_token_age_seconds", "last_refresh_at", "last_error"):
        assert key in view
    record = rig.stored("acme")
    assert record is not None
    text = json.dumps(view)
    assert record.access_token not in text and record.refresh_token not in text


def test_status_of_unknown_or_invalid_connection(rig: ConsentRig, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--connection", "nobody"]) == 2
    assert "no tokens are stored for connection 'nobody'" in capsys.readouterr().err
    assert main(["status", "--connection", "Bad Name"]) == 2
    assert "invalid connection name" in capsys.readouterr().err


def test_status_exits_1_when_a_connection_needs_a_person(
    rig: ConsentRig, capsys: pytest.CaptureFixture[str]
) -> None:
    record = rig.stored("beta")
    assert record is not None
    rig.runtime.token_store.save(
        record.with_changes(status=TokenStatus.NEEDS_REAUTH, last_error="Old refresh token used.")
    )
    assert main(["status"]) == 1
    out = capsys.readouterr().out
    assert "needs_reauth" in out and "Old refresh token used." in out


def test_status_without_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXACTSYNC_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("EXACT_BASE_URL", "http://127.0.0.1:9")
    install(None)
    try:
        assert main(["status"]) == 0
        assert "No connections yet" in capsys.readouterr().out
        assert main(["status", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == []
    finally:
        install(None)
