from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.settings import (
    LOCAL_CLIENT_ID,
    LOCAL_REDIRECT_URI,
    SETTINGS,
    Settings,
    secret_values,
)


def test_embedded_defaults_run_against_a_loopback_sandbox() -> None:
    s = Settings.from_env({"EXACT_BASE_URL": "http://127.0.0.1:8750"})
    assert s.is_local_sandbox
    assert s.client_id == LOCAL_CLIENT_ID
    assert s.redirect_uri == LOCAL_REDIRECT_URI
    assert s.home == Path(".exactsync")
    assert not s.uses_key_vault and not s.uses_azure_sql and not s.uses_azure_storage
    assert s.sqlite_path == Path(".exactsync/warehouse.sqlite3")


def test_real_exact_needs_app_credentials_and_names_the_missing_one() -> None:
    with pytest.raises(ConfigError, match="EXACT_CLIENT_ID"):
        Settings.from_env({})
    env = {
        "EXACT_CLIENT_ID": "id",
        "EXACT_CLIENT_SECRET": "s3cret-value",
        "EXACT_REDIRECT_URI": "https://app.example.com/api/oauth/callback",
    }
    with pytest.raises(ConfigError, match="EXACT_WEBHOOK_SECRET"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"EXACT_BASE_URL": "ftp://x"}, "EXACT_BASE_URL"),
        ({"EXACT_BASE_URL": "http://exact.example.com"}, "EXACT_BASE_URL"),
        ({"EXACT_BASE_URL": "http://127.0.0.1:1", "SQL_SERVER": "x.database.windows.net"}, "SQL_DATABASE"),
        ({"EXACT_BASE_URL": "http://127.0.0.1:1", "DELETE_MODE": "maybe"}, "DELETE_MODE"),
        ({"EXACT_BASE_URL": "http://127.0.0.1:1", "KEEPALIVE_AFTER_HOURS": "x"}, "KEEPALIVE_AFTER_HOURS"),
        ({"EXACT_BASE_URL": "http://127.0.0.1:1", "KEEPALIVE_AFTER_HOURS": "1000"}, "KEEPALIVE_AFTER_HOURS"),
        ({"EXACT_BASE_URL": "http://127.0.0.1:1", "SYNC_DIVISIONS": "12,abc"}, "SYNC_DIVISIONS"),
        ({"EXACT_BASE_URL": "http://127.0.0.1:1", "LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"EXACT_BASE_URL": "http://127.0.0.1:1", "KEY_VAULT_URL": "http://kv.example.com"}, "KEY_VAULT_URL"),
    ],
)
def test_malformed_settings_fail_fast_naming_the_setting(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


def test_secrets_stay_out_of_repr_and_are_listed_for_redaction() -> None:
    s = Settings.from_env(
        {
            "EXACT_CLIENT_ID": "id",
            "EXACT_CLIENT_SECRET": "client-secret-value-123",
            "EXACT_WEBHOOK_SECRET": "webhook-secret-value-456",
            "EXACT_REDIRECT_URI": "https://app.example.com/api/oauth/callback",
        }
    )
    assert "client-secret-value-123" not in repr(s)
    assert "webhook-secret-value-456" not in repr(s)
    assert set(secret_values(s)) == {"client-secret-value-123", "webhook-secret-value-456"}


def test_public_base_url_comes_from_the_site_hostname() -> None:
    s = Settings.from_env(
        {"EXACT_BASE_URL": "http://127.0.0.1:1", "WEBSITE_HOSTNAME": "app.azurewebsites.net"}
    )
    assert s.public_base_url == "https://app.azurewebsites.net"


def test_settings_table_names_are_unique() -> None:
    names = [spec.name for spec in SETTINGS]
    assert len(names) == len(set(names))


def test_deploy_time_commands_need_no_exact_app_credentials() -> None:
    env = {"SQL_SERVER": "x.database.windows.net", "SQL_DATABASE": "exactsync"}
    with pytest.raises(ConfigError, match="EXACT_CLIENT_ID"):
        Settings.from_env(env)
    s = Settings.from_env(env, need_app=False)
    assert s.uses_azure_sql and s.client_id == "" and s.client_secret == ""
