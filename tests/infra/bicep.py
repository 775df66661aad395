"""The Bicep templates under infra/, parsed with pycep, and small readers over pycep's JSON.

Neither the Bicep CLI nor Azure runs here, so the infra tests read the templates the way
checkov does: pycep turns each ``.bicep`` file into JSON (``parameters``, ``variables``,
``resources``, ``modules``, ``outputs``). In that JSON a bare identifier and a string literal
look alike (``principalId`` vs ``'User'``); ``render`` turns expressions back into Bicep-like
text so assertions can name exactly the expression they expect.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def bicep_files() -> list[str]:
    """Every template, relative to infra/ (``main.bicep``, ``app/storage.bicep``, ...)."""
    return sorted(p.relative_to(INFRA).as_posix() for p in INFRA.rglob("*.bicep"))


@functools.cache
def template(relative: str) -> dict[str, Any]:
    from pycep import BicepParser

    return cast("dict[str, Any]", BicepParser().parse(file_path=INFRA / relative))


def text(relative: str) -> str:
    return (INFRA / relative).read_text(encoding="utf-8")


def code(relative: str) -> str:
    """A template without its ``//`` comments (which may name what the code must not contain)."""
    return re.sub(r"(^|\s)//.*$", "", text(relative), flags=re.MULTILINE)


def unwrap(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's (or module's) body, looking through ``if (...)`` and ``[for ...]``."""
    body: dict[str, Any] = resource["config"]
    while "config" in body and ("condition" in body or "loop_type" in body):
        body = body["config"]
    return body


def resources(relative: str, type_: str) -> dict[str, dict[str, Any]]:
    """Name -> body of the resources of one type declared in a template (``existing`` ones too)."""
    found = template(relative).get("resources", {})
    return {name: unwrap(res) for name, res in found.items() if res["type"] == type_}


def the(relative: str, type_: str) -> dict[str, Any]:
    """The body of the single resource of ``type_`` in a template (fails on none or several)."""
    found = {n: b for n, b in resources(relative, type_).items() if not _is_existing(relative, n)}
    assert len(found) == 1, f"{relative}: expected one {type_}, found {sorted(found)}"
    return next(iter(found.values()))


def _is_existing(relative: str, name: str) -> bool:
    return bool(template(relative)["resources"][name].get("existing"))


def module(name: str) -> dict[str, Any]:
    """A module declared in main.bicep: its body (``params``, ``scope``, ``dependsOn``)."""
    return unwrap(template("main.bicep")["modules"][name])


def module_path(name: str) -> str:
    """The template a main.bicep module deploys, relative to infra/."""
    return str(template("main.bicep")["modules"][name]["detail"]["path"])


def param(relative: str, name: str) -> dict[str, Any]:
    """A parameter: ``type``, ``default`` and ``decorators`` (as a dict: type -> argument, with
    pycep's names: ``secure``, ``allowed``, ``min_value``, ``max_value``, ``description``...)."""
    spec = template(relative)["parameters"][name]
    decorators = {d["type"]: d.get("argument") for d in spec["decorators"]}
    return {"type": spec["type"], "default": spec.get("default"), "decorators": decorators}


def is_secure(relative: str, name: str) -> bool:
    return "secure" in param(relative, name)["decorators"]


def variable(relative: str, name: str) -> Any:
    return template(relative)["variables"][name]["value"]


def render(value: Any) -> str:
    """Bicep-like text of a pycep expression: ``storage.properties.primaryEndpoints.blob``,
    ``empty(x) ? 'a' : 'b'``, ``subscription_resource_id(...)``. Strings come back bare (pycep
    does not keep quotes; the empty string shows as ``''``), which is what comparisons against
    identifiers need."""
    if isinstance(value, str):
        return value or "''"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, dict):
        return _render_dict(value)
    return str(value)


def _render_dict(value: dict[str, Any]) -> str:
    if "operator" in value:
        return _render_operator(value["operator"])
    if "function" in value:
        fn = value["function"]
        args = [render(v) for v in fn.get("parameters", {}).values() if v is not None]
        return f"{fn['type']}(" + ", ".join(args) + ")"
    return "{" + ", ".join(f"{k}: {render(v)}" for k, v in value.items()) + "}"


def _render_operator(op: dict[str, Any]) -> str:
    args = op["operands"]
    if op["type"] == "property_accessor":
        return f"{render(args['operand_1'])}.{render(args['operand_2'])}"
    if op["type"] == "conditional":
        return f"{render(args['condition'])} ? {render(args['true_value'])} : {render(args['false_value'])}"
    if op["type"] == "not":
        return "!" + render(next(iter(args.values())))
    return f"{op['type']}(" + ", ".join(render(v) for v in args.values()) + ")"


def app_settings() -> dict[str, Any]:
    """The Function App's app settings (name -> pycep value), as written in the site."""
    site = the("app/function-app.bicep", "Microsoft.Web/sites")
    entries = site["properties"]["siteConfig"]["appSettings"]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"app settings listed twice: {sorted(names)}"
    return {entry["name"]: entry["value"] for entry in entries}


def main_value_of_app_param(name: str) -> str:
    """What main.bicep passes for a function-app.bicep parameter, rendered."""
    return render(module("app")["params"][name])
