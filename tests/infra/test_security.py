"""The security properties issue 5 asks of infra/, read from the parsed templates.

Each assertion names the concrete value it expects, so removing or loosening a property (or
renaming it so Azure would ignore it) fails here.
"""

from __future__ import annotations

import re

import pytest

from shared.settings import Settings
from tests.infra.bicep import (
    app_settings,
    bicep_files,
    code,
    is_secure,
    main_value_of_app_param,
    module,
    module_path,
    param,
    render,
    resources,
    template,
    the,
    variable,
)

STORAGE = "app/storage.bicep"
VAULT = "app/key-vault.bicep"
SQL = "app/sql.bicep"
APP = "app/function-app.bicep"
MONITORING = "app/monitoring.bicep"
NETWORK = "app/network.bicep"


def test_every_template_parses_and_declares_something() -> None:
    files = bicep_files()
    assert "main.bicep" in files
    assert len(files) >= 10, files
    for relative in files:
        parsed = template(relative)
        assert parsed.get("resources") or parsed.get("modules"), relative


def test_main_targets_the_subscription_and_builds_its_resource_group() -> None:
    assert template("main.bicep")["globals"]["scope"]["value"] == "subscription"
    groups = resources("main.bicep", "Microsoft.Resources/resourceGroups")
    assert len(groups) == 1
    for name in template("main.bicep")["modules"]:
        assert module(name)["scope"] == "rg", f"module {name} is not deployed into the resource group"


def test_modules_are_local_files_not_registry_modules() -> None:
    for name, spec in template("main.bicep")["modules"].items():
        assert spec["type"] == "local", f"module {name} is {spec['type']}"
    for relative in bicep_files():
        assert "br/public:" not in code(relative) and "br:" not in code(relative), relative


def test_no_keys_connection_strings_or_passwords_anywhere() -> None:
    forbidden = ["listKeys", "listAccountSas", "listServiceSas", "AccountKey=", "SharedAccessSignature",
                 "InstrumentationKey=", "administratorLoginPassword", "TrustServerCertificate"]  # fmt: skip
    for relative in bicep_files():
        body = code(relative)
        for word in forbidden:
            assert word not in body, f"{relative} contains {word}"


# --- storage -----------------------------------------------------------------------------------


def test_storage_is_entra_only_private_and_tls12() -> None:
    props = the(STORAGE, "Microsoft.Storage/storageAccounts")["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["defaultToOAuthAuthentication"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["allowCrossTenantReplication"] is False
    assert props["networkAcls"]["defaultAction"] == "Deny"
    assert props["networkAcls"]["ipRules"]["loop_type"]["detail"]["array_name"] == "allowedClientIps"
    assert props["publicNetworkAccess"] == "publicNetworkAccess"


def test_public_endpoints_open_only_for_listed_addresses() -> None:
    # main decides once for Storage, Key Vault and SQL: Disabled unless addresses are listed.
    assert render(variable("main.bicep", "publicNetworkAccess")) == "empty(clientIps) ? Disabled : Enabled"
    for name in ("storage", "keyVault", "sql"):
        params = module(name)["params"]
        assert params["publicNetworkAccess"] == "publicNetworkAccess", name
        assert params["allowedClientIps"] == "clientIps", name
        allowed = param(module_path(name), "publicNetworkAccess")["decorators"]["allowed"]
        assert sorted(allowed) == ["Disabled", "Enabled"], name


def test_storage_holds_the_deployment_and_lock_containers_and_the_load_queue() -> None:
    containers = resources(STORAGE, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert {c["name"] for c in containers.values()} == {"deploymentContainerName", "lockContainerName"}
    assert all(c["properties"]["publicAccess"] == "None" for c in containers.values())
    queues = resources(STORAGE, "Microsoft.Storage/storageAccounts/queueServices/queues")
    assert [q["name"] for q in queues.values()] == ["loadQueueName"]
    params = module("storage")["params"]
    assert (params["lockContainerName"], params["loadQueueName"]) == ("lockContainerName", "loadQueueName")
    # The names the code falls back to are the names the template creates.
    defaults = Settings.__dataclass_fields__
    assert variable("main.bicep", "lockContainerName") == defaults["lock_container"].default == "token-locks"
    assert variable("main.bicep", "loadQueueName") == defaults["load_queue"].default == "load-steps"


# --- Key Vault ---------------------------------------------------------------------------------


def test_key_vault_uses_rbac_soft_delete_and_purge_protection() -> None:
    props = the(VAULT, "Microsoft.KeyVault/vaults")["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert "accessPolicies" not in props
    assert props["networkAcls"]["defaultAction"] == "Deny"
    assert props["publicNetworkAccess"] == "publicNetworkAccess"
    retention = param(VAULT, "softDeleteRetentionInDays")["decorators"]
    assert (retention["min_value"], retention["max_value"]) == (7, 90)


def test_exact_secrets_come_from_secure_parameters_into_the_vault_only() -> None:
    secrets = resources(VAULT, "Microsoft.KeyVault/vaults/secrets")
    by_name = {s["name"]: s["properties"] for s in secrets.values()}
    assert set(by_name) == {"EXACT-CLIENT-SECRET", "EXACT-WEBHOOK-SECRET", "NOTIFY-WEBHOOK-URL"}
    for props in by_name.values():
        assert is_secure(VAULT, props["value"]), f"{props['value']} is not @secure()"
        assert props["contentType"]
    for name in ("exactClientSecret", "exactWebhookSecret", "notifyWebhookUrl"):
        assert is_secure("main.bicep", name), name
        assert module("keyVault")["params"][name] == name
    # The Function App module never sees a secret value, only the secrets' URIs.
    assert not any(is_secure(APP, p) for p in template(APP)["parameters"])
    passed = {render(v) for v in module("app")["params"].values()}
    assert not passed & {"exactClientSecret", "exactWebhookSecret", "notifyWebhookUrl"}


def test_no_output_carries_a_secure_value() -> None:
    for relative in bicep_files():
        secure = {p for p in template(relative).get("parameters", {}) if is_secure(relative, p)}
        for name, output in template(relative).get("outputs", {}).items():
            words = set(re.findall(r"[A-Za-z_]\w*", render(output["value"])))
            assert not words & secure, f"{relative}: output {name} uses {words & secure}"


# --- Azure SQL ---------------------------------------------------------------------------------


def test_sql_server_accepts_only_entra_authentication_with_the_deployer_as_admin() -> None:
    props = the(SQL, "Microsoft.Sql/servers")["properties"]
    admins = props["administrators"]
    assert admins["azureADOnlyAuthentication"] is True
    assert admins["administratorType"] == "ActiveDirectory"
    assert admins["sid"] == "adminPrincipalId"
    assert "administratorLogin" not in props and "administratorLoginPassword" not in props
    assert props["minimalTlsVersion"] == "1.2"
    assert props["publicNetworkAccess"] == "publicNetworkAccess"
    assert module("sql")["params"]["adminPrincipalId"] == "principalId"


def test_sql_database_is_serverless_and_pauses() -> None:
    db = the(SQL, "Microsoft.Sql/servers/databases")
    assert db["sku"]["name"] == "GP_S_Gen5"
    assert db["sku"]["tier"] == "GeneralPurpose"
    assert db["properties"]["autoPauseDelay"] == "autoPauseDelayMinutes"
    assert render(db["properties"]["minCapacity"]) == "json(0.5)"
    pause = param("main.bicep", "sqlAutoPauseDelayMinutes")
    assert pause["default"] == 60 and pause["decorators"]["min_value"] >= 15


def test_sql_firewall_admits_single_listed_addresses_and_nothing_broad() -> None:
    rules = resources(SQL, "Microsoft.Sql/servers/firewallRules")
    assert len(rules) == 1
    (rule,) = rules.values()
    loop = template(SQL)["resources"][next(iter(rules))]["config"]["loop_type"]["detail"]
    assert loop["array_name"] == "allowedClientIps"
    assert rule["properties"]["startIpAddress"] == rule["properties"]["endIpAddress"] == loop["item_name"]
    for relative in bicep_files():
        body = code(relative)
        assert "AllowAllWindowsAzureIps" not in body, relative
        assert not re.search(r"'0\.0\.0\.\d+'|255\.255\.255\.25\d", body), relative


def test_sql_server_is_audited_to_log_analytics() -> None:
    audit = the(SQL, "Microsoft.Sql/servers/auditingSettings")["properties"]
    assert audit["state"] == "Enabled"
    assert audit["isAzureMonitorTargetEnabled"] is True
    (diag,) = resources(SQL, "Microsoft.Insights/diagnosticSettings").values()
    assert diag["scope"] == "master"
    assert [log["category"] for log in diag["properties"]["logs"]] == ["SQLSecurityAuditEvents"]


# --- network -----------------------------------------------------------------------------------


def test_app_subnet_is_delegated_to_flex_consumption_and_data_services_have_private_endpoints() -> None:
    vnet = the(NETWORK, "Microsoft.Network/virtualNetworks")
    app_subnet = next(s for s in vnet["properties"]["subnets"] if s["name"] == "app")
    delegations = [d["properties"]["serviceName"] for d in app_subnet["properties"]["delegations"]]
    assert delegations == ["Microsoft.App/environments"]
    endpoints = {
        module(name)["params"]["groupId"]: render(module(name)["params"]["targetResourceId"])
        for name in template("main.bicep")["modules"]
        if module_path(name) == "app/private-endpoint.bicep"
    }
    assert endpoints == {
        "blob": "storage.outputs.id",
        "queue": "storage.outputs.id",
        "vault": "keyVault.outputs.id",
        "sqlServer": "sql.outputs.serverId",
    }
    assert render(module("app")["params"]["appSubnetId"]) == "network.outputs.appSubnetId"


# --- Function App ------------------------------------------------------------------------------


def test_function_app_runs_on_flex_consumption_linux_python_311() -> None:
    plan = the(APP, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True
    site = the(APP, "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert render(site["properties"]["serverFarmId"]) == "plan.id"


def test_function_app_is_https_only_tls12_without_ftp_or_basic_auth() -> None:
    site = the(APP, "Microsoft.Web/sites")["properties"]
    assert site["httpsOnly"] is True
    assert site["siteConfig"]["minTlsVersion"] == "1.2"
    assert site["siteConfig"]["scmMinTlsVersion"] == "1.2"
    assert site["siteConfig"]["ftpsState"] == "Disabled"
    policies = resources(APP, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {p["name"]: p["properties"]["allow"] for p in policies.values()} == {"ftp": False, "scm": False}


def test_function_app_runs_as_the_user_assigned_identity_everywhere() -> None:
    site = the(APP, "Microsoft.Web/sites")
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]
    props = site["properties"]
    assert props["keyVaultReferenceIdentity"] == "identityId"
    assert props["virtualNetworkSubnetId"] == "appSubnetId"
    deployment = props["functionAppConfig"]["deployment"]["storage"]
    assert deployment["type"] == "blobContainer"
    assert deployment["value"] == "${storage.properties.primaryEndpoints.blob}${deploymentContainerName}"
    assert deployment["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }
    assert main_value_of_app_param("identityId") == "identity.outputs.id"
    assert main_value_of_app_param("identityClientId") == "identity.outputs.clientId"


def test_host_storage_is_identity_based() -> None:
    settings = app_settings()
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert (
        render(settings["AzureWebJobsStorage__blobServiceUri"]) == "storage.properties.primaryEndpoints.blob"
    )
    assert (
        render(settings["AzureWebJobsStorage__queueServiceUri"])
        == "storage.properties.primaryEndpoints.queue"
    )
    assert "AzureWebJobsStorage" not in settings  # a connection string would carry a key
    assert not [n for n in settings if n.lower().endswith(("accountkey", "connectionstring"))]


def test_static_secrets_are_key_vault_references_to_the_vault_outputs() -> None:
    settings = app_settings()
    assert settings["EXACT_CLIENT_SECRET"] == "@Microsoft.KeyVault(SecretUri=${exactClientSecretUri})"
    assert settings["EXACT_WEBHOOK_SECRET"] == "@Microsoft.KeyVault(SecretUri=${exactWebhookSecretUri})"
    assert render(settings["NOTIFY_WEBHOOK_URL"]) == (
        "empty(notifyWebhookUrlSecretUri) ? '' : @Microsoft.KeyVault(SecretUri=${notifyWebhookUrlSecretUri})"
    )
    assert main_value_of_app_param("exactClientSecretUri") == "keyVault.outputs.exactClientSecretUri"
    assert main_value_of_app_param("exactWebhookSecretUri") == "keyVault.outputs.exactWebhookSecretUri"
    outputs = template(VAULT)["outputs"]
    assert render(outputs["exactClientSecretUri"]["value"]) == "exactClientSecretSecret.properties.secretUri"
    # Token secrets rotate: the app reads them through the SDK at KEY_VAULT_URL, never as references.
    assert main_value_of_app_param("keyVaultUri") == "keyVault.outputs.uri"
    assert render(outputs["uri"]["value"]) == "vault.properties.vaultUri"


# --- monitoring --------------------------------------------------------------------------------


def test_application_insights_accepts_only_entra_authenticated_telemetry() -> None:
    component = the(MONITORING, "Microsoft.Insights/components")["properties"]
    assert component["DisableLocalAuth"] is True
    assert render(component["WorkspaceResourceId"]) == "workspace.id"
    workspace = the(MONITORING, "Microsoft.OperationalInsights/workspaces")["properties"]
    assert workspace["features"]["disableLocalAuth"] is True
    # The SQL audit skip in infra/.checkov.yaml leans on this retention.
    assert param(MONITORING, "retentionInDays")["default"] >= 90
    settings = app_settings()
    assert (
        settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
        == "ClientId=${identityClientId};Authorization=AAD"
    )


def test_the_app_gets_the_connection_string_not_the_component_name() -> None:
    assert app_settings()["APPLICATIONINSIGHTS_CONNECTION_STRING"] == "applicationInsightsConnectionString"
    wired = main_value_of_app_param("applicationInsightsConnectionString")
    assert wired == "monitoring.outputs.applicationInsightsConnectionString"
    output = template(MONITORING)["outputs"]["applicationInsightsConnectionString"]["value"]
    assert render(output) == "applicationInsights.properties.ConnectionString"
    main_output = template("main.bicep")["outputs"]["APPLICATIONINSIGHTS_CONNECTION_STRING"]["value"]
    assert render(main_output) == wired


# --- tags --------------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", [f for f in bicep_files() if f.startswith("app/")])
def test_every_located_resource_carries_the_azd_tags(relative: str) -> None:
    located = 0
    for name, res in template(relative).get("resources", {}).items():
        body = res["config"]
        while "config" in body and ("condition" in body or "loop_type" in body):
            body = body["config"]
        if res.get("existing") or "location" not in body:
            continue  # child and extension resources (role assignments, settings) take no tags
        located += 1
        tags = render(body.get("tags"))
        assert tags == "tags" or tags.startswith("union(tags, "), f"{relative}: {name} tags are {tags}"
    if "tags" in template(relative).get("parameters", {}):
        assert located, f"{relative} takes tags but tags nothing"
        assert param(relative, "tags")["type"] == "object"
    else:
        assert not located, f"{relative} has located resources but takes no tags"


def test_tags_name_the_environment_and_the_site_names_its_service() -> None:
    assert variable("main.bicep", "tags") == {"'azd-env-name'": "environmentName"}
    for name in template("main.bicep")["modules"]:
        if "tags" in template(module_path(name))["parameters"]:
            assert module(name)["params"]["tags"] == "tags", name
    site_tags = the(APP, "Microsoft.Web/sites")["tags"]
    assert render(site_tags) == "union(tags, {'azd-service-name': app})"
