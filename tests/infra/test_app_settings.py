"""shared/settings.py (the SETTINGS table) and the Function App's app settings, held together.

Both directions: every setting the code reads in Azure (``in_azure=True``) is set by the template,
and the template sets nothing the code ignores, except the platform settings the Functions host
itself reads (the allow-list below, each with its reason). The table is read at test time, so a
row another engineer adds fails here until infra/ provides it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from shared.errors import ConfigError
from shared.settings import SETTINGS, Settings
from tests.infra.bicep import ROOT, app_settings, module, param, render, template, variable

# Settings the Functions host (not exactsync) reads; allowed in the template without a SETTINGS row.
PLATFORM_SETTINGS = {
    # Where the host sends logs, traces and metrics (the component's connection string).
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    # Local auth is off on App Insights: the host authenticates as the user-assigned identity.
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# (AzureWebJobsStorage__blobServiceUri/__queueServiceUri/__credential/__clientId are host settings
# too, but our code reads them as well, so they are SETTINGS rows and need no entry here.)

IN_AZURE = {spec.name for spec in SETTINGS if spec.in_azure}


def test_every_setting_the_code_reads_in_azure_is_set_by_the_template() -> None:
    missing = IN_AZURE - set(app_settings())
    assert not missing, (
        f"shared/settings.py reads these in Azure but infra/ does not set them: {sorted(missing)}"
    )


def test_the_template_sets_nothing_the_code_ignores() -> None:
    extra = set(app_settings()) - IN_AZURE - PLATFORM_SETTINGS
    assert not extra, f"infra/ sets settings no code reads (add a SETTINGS row or drop them): {sorted(extra)}"


def test_platform_allow_list_is_used_and_not_duplicated_in_the_table() -> None:
    assert set(app_settings()) >= PLATFORM_SETTINGS
    assert not PLATFORM_SETTINGS & {spec.name for spec in SETTINGS}


def test_local_only_settings_stay_out_of_azure() -> None:
    local_only = {spec.name for spec in SETTINGS if not spec.in_azure}
    assert not local_only & set(app_settings()), "a local-only setting is set in Azure"
    assert "EXACTSYNC_HOME" in local_only  # sanity: the table is the one we think it is


def test_secret_settings_reach_the_app_only_as_key_vault_references() -> None:
    settings = app_settings()
    for spec in SETTINGS:
        if spec.secret and spec.in_azure:
            assert render(settings[spec.name]).startswith("@Microsoft.KeyVault(SecretUri="), spec.name


def test_every_binding_expression_in_function_app_resolves_to_an_app_setting() -> None:
    source = (ROOT / "function_app.py").read_text(encoding="utf-8")
    expressions = set(re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)%", source))
    assert {"ROTATE_SCHEDULE", "SYNC_SCHEDULE", "LOAD_QUEUE"} <= expressions
    assert expressions <= set(app_settings())
    # connection="AzureWebJobsStorage": the queue trigger reads the identity-based prefix.
    for prefix in set(re.findall(r'connection="([^"]+)"', source)):
        for suffix in ("__queueServiceUri", "__credential", "__clientId"):
            assert prefix + suffix in app_settings(), prefix + suffix


# --- every value the template can set is one the code accepts ----------------------------------

# What Azure puts into the settings that come from resources, not from parameters.
AZURE_VALUES = {
    "EXACT_CLIENT_ID": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    "EXACT_CLIENT_SECRET": "resolved-from-key-vault",
    "EXACT_WEBHOOK_SECRET": "resolved-from-key-vault",
    "EXACT_REDIRECT_URI": "https://func-abc123.azurewebsites.net/api/oauth/callback",
    "NOTIFY_WEBHOOK_URL": "",
    "KEY_VAULT_URL": "https://kv-abc123.vault.azure.net/",
    "SQL_SERVER": "sql-abc123.database.windows.net",
    "SQL_DATABASE": "exactsync",
    "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "AzureWebJobsStorage__blobServiceUri": "https://stabc123.blob.core.windows.net/",
    "AzureWebJobsStorage__queueServiceUri": "https://stabc123.queue.core.windows.net/",
    "AzureWebJobsStorage__clientId": "11111111-2222-3333-4444-555555555555",
}


def _source(setting: str) -> tuple[str, Any]:
    """Where a setting's value comes from: ("param", main param), ("literal", value) or ("azure", None)."""
    value = app_settings()[setting]
    if isinstance(value, dict) and value.get("function", {}).get("type") == "string":
        value = value["function"]["parameters"]["value_to_convert"]
    if not isinstance(value, str) or value not in template("app/function-app.bicep")["parameters"]:
        if isinstance(value, str) and value in template("app/function-app.bicep").get("variables", {}):
            return "azure", None  # built from resource names (the redirect URI)
        return ("literal", value) if isinstance(value, str) and "${" not in value else ("azure", None)
    wired = render(module("app")["params"][value])
    if wired in template("main.bicep")["parameters"]:
        return "param", wired
    if wired in template("main.bicep").get("variables", {}):
        return "literal", variable("main.bicep", wired)
    return "azure", None


def _candidates(main_param: str) -> list[Any]:
    spec = param("main.bicep", main_param)
    values = [spec["default"]] if spec["default"] is not None else []
    values += spec["decorators"].get("allowed") or []
    values += [spec["decorators"][k] for k in ("min_value", "max_value") if k in spec["decorators"]]
    return values


def _base_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for name in app_settings():
        kind, value = _source(name)
        if kind == "literal":
            env[name] = value
        elif kind == "param":
            candidates = _candidates(value)
            env[name] = str(candidates[0]) if candidates else AZURE_VALUES[name]
        elif name in IN_AZURE:
            assert name in AZURE_VALUES, f"{name}: give it a representative Azure value in AZURE_VALUES"
            env[name] = AZURE_VALUES[name]
    return env


def test_the_settings_as_deployed_are_accepted_by_the_code() -> None:
    settings = Settings.from_env(_base_env())
    assert settings.uses_key_vault and settings.uses_azure_sql and settings.uses_azure_storage
    assert not settings.is_local_sandbox
    assert settings.exact_base_url == "https://start.exactonline.nl"
    assert (settings.lock_container, settings.load_queue) == ("token-locks", "load-steps")
    defaults = Settings.__dataclass_fields__
    assert settings.rotate_schedule == defaults["rotate_schedule"].default
    assert settings.sync_schedule == defaults["sync_schedule"].default
    assert settings.keepalive_after_hours == defaults["keepalive_after_hours"].default
    assert settings.step_time_budget_seconds == defaults["step_time_budget_seconds"].default


def _param_backed() -> list[tuple[str, str, Any]]:
    cases: list[tuple[str, str, Any]] = []
    for name in sorted(app_settings()):
        kind, main_param = _source(name)
        if kind == "param":
            cases.extend((name, main_param, value) for value in _candidates(main_param))
    return cases


@pytest.mark.parametrize(("setting", "main_param", "value"), _param_backed())
def test_every_value_a_parameter_allows_is_accepted_by_the_code(
    setting: str, main_param: str, value: Any
) -> None:
    env = _base_env() | {setting: str(value)}
    try:
        Settings.from_env(env)
    except ConfigError as exc:
        pytest.fail(f"main.bicep lets {main_param} be {value!r}, but {setting}={value!r} is refused: {exc}")


def test_the_bounds_are_the_codes_bounds() -> None:
    # One past each bound must be refused by the code too, or the template is stricter for nothing
    # (or looser than the code, which the previous test catches).
    for setting, main_param in (("KEEPALIVE_AFTER_HOURS", "keepaliveAfterHours"),
                                ("STEP_TIME_BUDGET_SECONDS", "stepTimeBudgetSeconds")):  # fmt: skip
        low = param("main.bicep", main_param)["decorators"]["min_value"]
        with pytest.raises(ConfigError, match=setting):
            Settings.from_env(_base_env() | {setting: str(low - 1)})
