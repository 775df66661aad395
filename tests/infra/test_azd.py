"""azd wiring: azure.yaml, main.parameters.json, outputs, and the module contracts of main.bicep.

The Bicep compiler cannot run here, so the part of its job that catches wiring mistakes is done
by hand: every module file exists, gets every parameter it requires and nothing it does not
declare, and every `<module>.outputs.<name>` that main.bicep reads is an output of that module.
"""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

from tests.infra.bicep import (
    INFRA,
    ROOT,
    bicep_files,
    code,
    is_secure,
    module,
    module_path,
    param,
    render,
    template,
    unwrap,
)

MAIN = "main.bicep"


def _azure_yaml() -> dict[str, Any]:
    yaml: Any = importlib.import_module("yaml")  # PyYAML comes with checkov (dev extra); no stubs
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    return loaded


def _parameters() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    parameters: dict[str, Any] = loaded["parameters"]
    return parameters


def test_azure_yaml_deploys_the_python_function_app_from_infra() -> None:
    config = _azure_yaml()
    assert config["services"] == {"app": {"project": ".", "language": "python", "host": "function"}}
    assert config["infra"]["path"] == "infra" and config["infra"]["module"] == "main"
    assert (ROOT / "host.json").exists() and (ROOT / "requirements.txt").exists()


def test_the_postprovision_hook_runs_the_script() -> None:
    hook = _azure_yaml()["hooks"]["postprovision"]
    assert hook["run"] == "bash infra/hooks/postprovision.sh"
    assert hook.get("continueOnError", False) is False
    script = ROOT / "infra" / "hooks" / "postprovision.sh"
    assert script.exists() and script.stat().st_mode & 0o111


def test_every_parameter_without_default_is_supplied_and_nothing_unknown_is() -> None:
    declared = template(MAIN)["parameters"]
    supplied = _parameters()
    assert set(supplied) <= set(declared), f"unknown parameters: {set(supplied) - set(declared)}"
    required = {name for name in declared if param(MAIN, name)["default"] is None}
    assert required <= set(supplied), f"no value for: {required - set(supplied)}"
    assert supplied["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert supplied["location"]["value"] == "${AZURE_LOCATION}"
    assert supplied["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"


def test_secrets_come_from_the_azd_environment_never_from_the_file() -> None:
    secure = {name for name in template(MAIN)["parameters"] if is_secure(MAIN, name)}
    assert {name: entry["value"] for name, entry in _parameters().items() if name in secure} == {
        "exactClientSecret": "${EXACT_CLIENT_SECRET}",
        "exactWebhookSecret": "${EXACT_WEBHOOK_SECRET}",
        "notifyWebhookUrl": "${NOTIFY_WEBHOOK_URL=}",
    }


def test_outputs_are_upper_snake_case() -> None:
    for name in template(MAIN)["outputs"]:
        assert re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*", name), name


def test_no_output_leaks_the_app_identity_as_azure_client_id() -> None:
    # azd exports outputs to hooks and to `azd env get-values`: AZURE_CLIENT_ID there would make
    # the deployer's DefaultAzureCredential try the app's managed identity.
    assert "AZURE_CLIENT_ID" not in template(MAIN)["outputs"]


def test_the_hook_reads_only_outputs_azd_provides() -> None:
    script = (ROOT / "infra" / "hooks" / "postprovision.sh").read_text(encoding="utf-8")
    loop = re.search(r"for name in (.*?); do", script, re.DOTALL)
    assert loop is not None
    needed = set(loop.group(1).replace("\\\n", " ").split())
    provided_by_azd = {"AZURE_SUBSCRIPTION_ID"}  # azd's own environment value
    assert needed - provided_by_azd <= set(template(MAIN)["outputs"])
    assert {"SQL_SERVER", "SQL_DATABASE", "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID"} <= needed


def test_module_parameters_match_their_templates() -> None:
    for name, spec in template(MAIN)["modules"].items():
        relative = module_path(name)
        assert (INFRA / relative).exists(), relative
        declared = template(relative)["parameters"]
        passed = set(module(name)["params"])
        assert passed <= set(declared), f"{name}: {relative} has no parameters {passed - set(declared)}"
        required = {p for p in declared if param(relative, p)["default"] is None}
        assert required <= passed, f"{name}: {relative} requires {required - passed}"
        assert spec["type"] == "local"


def test_module_outputs_read_by_main_exist() -> None:
    modules = template(MAIN)["modules"]
    for symbol, output in set(re.findall(r"\b(\w+)\.outputs\.(\w+)", code(MAIN))):
        assert symbol in modules, symbol
        outputs = template(module_path(symbol)).get("outputs", {})
        assert output in outputs, f"{module_path(symbol)} has no output {output}"


def test_dependencies_of_the_site_exist_before_it() -> None:
    depends = set(module("app")["dependsOn"])
    assert {"roles", "blobEndpoint", "queueEndpoint", "vaultEndpoint", "sqlEndpoint"} <= depends
    assert render(module("roles")["params"]["identityPrincipalId"]) == "identity.outputs.principalId"


def test_decorators_are_not_repeated() -> None:
    # Two @description (or @allowed) on one parameter do not compile.
    for relative in bicep_files():
        for name, spec in template(relative).get("parameters", {}).items():
            kinds = [d["type"] for d in spec["decorators"]]
            assert len(kinds) == len(set(kinds)), f"{relative}: parameter {name} repeats a decorator: {kinds}"


def test_parents_scopes_and_dependencies_name_declared_symbols() -> None:
    for relative in bicep_files():
        parsed = template(relative)
        symbols = set(parsed.get("resources", {})) | set(parsed.get("modules", {}))
        bodies = [unwrap(r) for r in parsed.get("resources", {}).values()]
        bodies += [unwrap(m) for m in parsed.get("modules", {}).values()]
        for body in bodies:
            for ref in [body.get("parent"), body.get("scope"), *body.get("dependsOn", [])]:
                assert ref is None or ref in symbols, f"{relative}: {ref} is not declared"
