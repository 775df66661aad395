"""Role assignments, held against what each trigger needs (least privilege, both directions).

The needs are written per function in function_app.py, each with its reason; the roles follow
from them. A new trigger fails here until its needs are listed; a role nobody needs fails too.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from tests.infra.bicep import ROOT, render, resources, variable

ROLES_FILE = "app/role-assignments.bicep"

# Built-in role definition ids (the same in every tenant).
ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Queue Data Message Sender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}
# A role granted anyway makes the narrower one redundant.
SUBSUMED_BY = {
    "Storage Blob Data Contributor": "Storage Blob Data Owner",
    "Storage Queue Data Message Sender": "Storage Queue Data Contributor",
    "Key Vault Secrets User": "Key Vault Secrets Officer",
}

# What the app's identity must be able to do, as (role, scope symbol in role-assignments.bicep).
BLOB_OWNER = ("Storage Blob Data Owner", "storage")
BLOB = ("Storage Blob Data Contributor", "storage")
QUEUE = ("Storage Queue Data Contributor", "storage")
QUEUE_SEND = ("Storage Queue Data Message Sender", "storage")
SECRETS_RW = ("Key Vault Secrets Officer", "vault")
SECRETS_READ = ("Key Vault Secrets User", "vault")
TELEMETRY = ("Monitoring Metrics Publisher", "applicationInsights")

# Every function runs in the Functions host, which needs these for itself.
HOST_NEEDS = {
    # AzureWebJobsStorage: host keys, timer schedule status and the singleton lease that runs a
    # timer on one instance; Flex Consumption reads the app package from the deployment
    # container. Microsoft documents Blob Data Owner for the host's identity-based storage.
    BLOB_OWNER,
    # App Insights has local auth off: the host sends telemetry as the identity.
    TELEMETRY,
}

TRIGGER_NEEDS: dict[str, set[tuple[str, str]]] = {
    # Reads the Exact client id/secret (Key Vault reference, resolved by the platform) and
    # records the consent state's single-use nonce as a blob.
    "oauth_start": {SECRETS_READ, BLOB},
    # Claims the nonce (blob), exchanges the code and writes the new token set (Key Vault) under
    # the connection's lock (blob lease).
    "oauth_callback": {BLOB, SECRETS_RW},
    # Reads the connection's token record to report its health.
    "connection_status": {SECRETS_READ},
    # Keeps token chains alive: lock (blob lease), read and rotate token secrets.
    "rotate_tokens": {BLOB, SECRETS_RW},
    # Plans loads (lists divisions with a token; a refresh writes the rotated token under the
    # lock) and enqueues load steps.
    "request_sync": {BLOB, SECRETS_RW, QUEUE_SEND},
    # Verifies the HMAC with the webhook secret (Key Vault reference) and enqueues a load step.
    "exact_webhook": {SECRETS_READ, QUEUE_SEND},
    # The timer's plan: same as request_sync.
    "schedule_syncs": {BLOB, SECRETS_RW, QUEUE_SEND},
    # The queue trigger peeks, deletes and moves messages to load-steps-poison (creating that
    # queue); the loader enqueues continuations, calls Exact with tokens (lock + rotation) and
    # writes SQL (a contained database user made by the postprovision hook, not an Azure role).
    "load_step": {QUEUE, BLOB, SECRETS_RW},
}

# What `exactsync` commands run on the deployer's machine against the cloud need.
DEPLOYER_NEEDS = {
    # Token-lock leases and consent nonces (blobs); no ownership (ACLs) needed.
    BLOB,
    # `exactsync sync` enqueues load steps, and a local loader may drain the queue.
    QUEUE,
    # Token commands (authorize, status, rotate) read and write the token secrets.
    SECRETS_RW,
}


@functools.cache
def _function_names() -> tuple[str, ...]:
    # function_app.py loaded as a private module: get_functions() raises on a second call on the
    # same app object (azure-functions 1.26), whatever other tests in this process did with it.
    spec = importlib.util.spec_from_file_location("_function_app_for_infra_roles", ROOT / "function_app.py")
    assert spec is not None and spec.loader is not None
    private = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(private)
    return tuple(str(f.get_function_name()) for f in private.app.get_functions())


def _least(needs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    roles = {role for role, _ in needs}
    return {(role, scope) for role, scope in needs if SUBSUMED_BY.get(role) not in roles}


def _assignments(principal: str) -> dict[tuple[str, str], dict[str, Any]]:
    role_vars: dict[str, str] = variable(ROLES_FILE, "roles")
    by_id = {role_id: name for name, role_id in ROLE_IDS.items()}
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for symbol, body in resources(ROLES_FILE, "Microsoft.Authorization/roleAssignments").items():
        props = body["properties"]
        if props["principalId"] != principal:
            continue
        definition = render(props["roleDefinitionId"])
        prefix = "subscription_resource_id(Microsoft.Authorization/roleDefinitions, roles."
        assert definition.startswith(prefix) and definition.endswith(")"), f"{symbol}: {definition}"
        role_var = definition[len(prefix) : -1]
        key = (by_id[role_vars[role_var]], body["scope"])
        assert key not in found, f"{symbol} repeats {key}"
        # Deterministic, collision-free names: guid(scope id, principal, role).
        assert render(body["name"]) == f"guid({body['scope']}.id, {principal}, roles.{role_var})", symbol
        found[key] = props
    return found


def test_role_ids_are_the_built_in_ones() -> None:
    role_vars: dict[str, str] = variable(ROLES_FILE, "roles")
    assert set(role_vars.values()) <= set(ROLE_IDS.values()), role_vars


def test_every_trigger_has_its_needs_listed() -> None:
    assert set(_function_names()) == set(TRIGGER_NEEDS), "list the needs of every function in function_app.py"


def test_the_app_identity_has_exactly_what_its_triggers_need() -> None:
    needed = _least(HOST_NEEDS.union(*TRIGGER_NEEDS.values()))
    granted = _assignments("identityPrincipalId")
    assert set(granted) == needed
    assert all(props["principalType"] == "ServicePrincipal" for props in granted.values())


def test_the_deployer_has_exactly_what_local_runs_need() -> None:
    granted = _assignments("deployerPrincipalId")
    assert set(granted) == _least(DEPLOYER_NEEDS)
    assert all(props["principalType"] == "deployerPrincipalType" for props in granted.values())


def test_nothing_broad_is_granted() -> None:
    # Only the app's own storage account, vault and App Insights component are scopes: no
    # resource group or subscription, and no Owner/Contributor-style role (ROLE_IDS lists all).
    scopes = {
        name
        for type_ in (
            "Microsoft.Storage/storageAccounts",
            "Microsoft.KeyVault/vaults",
            "Microsoft.Insights/components",
        )
        for name in resources(ROLES_FILE, type_)
    }
    bodies = resources(ROLES_FILE, "Microsoft.Authorization/roleAssignments").values()
    assert {b["scope"] for b in bodies} == scopes == {"storage", "vault", "applicationInsights"}
    assert {b["properties"]["principalId"] for b in bodies} == {"identityPrincipalId", "deployerPrincipalId"}
