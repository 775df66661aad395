"""``/_sandbox/…``: the admin API for tests and demos (JSON in, JSON out, never rate limited).

Clock, counters, mutations, dumps, faults, limits and the unconfirmed-behaviour switches. It
never reveals the client secret, the webhook secret or any token.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from shared.sandbox import entities as E
from shared.sandbox.odata import Column, Uris, render_json_rows
from shared.sandbox.reply import Reply, json_reply

if TYPE_CHECKING:
    from shared.sandbox.api import Request
    from shared.sandbox.server import Sandbox

BLOCK_REASONS = ("BlockedUser", "InactiveUser", "BlockedCustomer", "LicenseExpired", "DivisionBlocked")
CONFIG_KEYS = (
    "timestamp_as_string",
    "scope_violation_endpoints",
    "division_blocks",
    "maintenance_window",
    "token_calls_per_day",
    "reuse_kills_chain",
    "rotation_revokes_access_token",
    "consent_divisions",
)


class AdminError(Exception):
    pass


def _number(body: dict[str, Any], name: str, *, minimum: float = 0, integer: bool = False) -> Any:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise AdminError(f"{name} must be a number >= {minimum}")
    if integer and not isinstance(value, int):
        raise AdminError(f"{name} must be a whole number")
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    if not isinstance(body[name], bool):
        raise AdminError(f"{name} must be true or false")
    return bool(body[name])


class Admin:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox

    def handle(self, req: Request) -> Reply:
        name = req.path[len("/_sandbox/") :].strip("/")
        method = req.method
        try:
            body: dict[str, Any] = {}
            if method == "POST" and req.body.strip():
                loaded = orjson.loads(req.body)
                if not isinstance(loaded, dict):
                    raise AdminError("the body must be a JSON object")
                body = loaded
            route = getattr(self, f"{method.lower()}_{name.replace('/', '_') or 'index'}", None)
            if route is None:
                return json_reply({"error": f"no admin endpoint {method} /_sandbox/{name}"}, 404)
            params = dict(parse_qsl(req.query, keep_blank_values=True))
            result = route(body) if method == "POST" else route(params)
        except orjson.JSONDecodeError:
            return json_reply({"error": "the body is not valid JSON"}, 400)
        except (AdminError, ValueError, KeyError) as exc:
            message = exc.args[0] if exc.args else str(exc)
            return json_reply({"error": str(message)}, 400)
        return json_reply(result)

    # --- overview -------------------------------------------------------------------------------

    def get_index(self, _params: dict[str, str]) -> dict[str, Any]:
        sb = self.sb
        return {
            "base_url": sb.base_url,
            "admin_url": f"{sb.base_url}/_sandbox",
            "client_id": sb.app.client_id,
            "redirect_uri": sb.app.redirect_uri,
            "divisions": list(sb.data.division_codes),
            "row_counts": sb.data.row_counts,
            "seed": sb.data.seed,
            "endpoints": [*sorted(E.ROUTES), "webhooks/WebhookSubscriptions", "current/Me"],
        }

    # --- clock ----------------------------------------------------------------------------------

    def get_clock(self, _params: dict[str, str]) -> dict[str, Any]:
        return {"now": self.sb.clock.now(), **self.sb.clock.spec()}

    def post_clock(self, body: dict[str, Any]) -> dict[str, Any]:
        clock = self.sb.clock
        unknown = set(body) - {"advance", "scale", "to"}
        if unknown or not body:
            raise AdminError(
                'POST /_sandbox/clock takes {"advance": seconds}, {"to": epoch seconds} or {"scale": factor}'
            )
        if "advance" in body:
            clock.advance(float(_number(body, "advance")))
        if "to" in body:
            target = float(_number(body, "to"))
            if target < clock.now():
                raise AdminError("the sandbox clock only moves forward")
            clock.advance(target - clock.now())
        if "scale" in body:
            scale = float(_number(body, "scale"))
            if scale <= 0:
                raise AdminError("scale must be positive")
            with clock._lock:  # re-anchor so that simulated time stays continuous
                now_real = time.time()
                now_sim = clock.anchor_sim + (now_real - clock.anchor_real) * clock.scale + clock.offset
                clock.anchor_real, clock.anchor_sim, clock.offset, clock.scale = now_real, now_sim, 0.0, scale
        return self.get_clock({})

    # --- counters -----------------------------------------------------------------------------------

    def get_counters(self, _params: dict[str, str]) -> dict[str, Any]:
        snapshot = self.sb.counters.snapshot()
        snapshot["token_calls_today"] = self.sb.oauth.token_calls_today()
        snapshot["rate_limits"] = self.sb.limits.usage(self.sb.clock.now())
        snapshot["error_blocks"] = self.sb.errors.active(self.sb.clock.now())
        return snapshot

    def post_counters_reset(self, _body: dict[str, Any]) -> dict[str, Any]:
        self.sb.counters.reset()
        return self.get_counters({})

    # --- data ---------------------------------------------------------------------------------------

    def post_mutate(self, body: dict[str, Any]) -> dict[str, Any]:
        allowed = {"division", "entity", "insert", "update", "delete", "update_keys", "delete_keys"}
        unknown = set(body) - allowed
        if unknown:
            raise AdminError(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        division = body.get("division")
        if not isinstance(division, int) or isinstance(division, bool):
            raise AdminError("division must be a division code (a number)")
        entity = body.get("entity")
        if not isinstance(entity, str):
            raise AdminError('entity must be an entity name such as "Accounts"')
        changes = self.sb.data.mutate(
            division, entity,
            insert=body.get("insert", 0), update=body.get("update", 0), delete=body.get("delete", 0),
            update_keys=list(body.get("update_keys", [])), delete_keys=list(body.get("delete_keys", [])),
            now=self.sb.clock.now(),
        )  # fmt: skip
        spec = E.BY_NAME[entity]
        out: dict[str, Any] = {
            "inserted": [],
            "updated": [],
            "deleted": [],
            "timestamps": {},
            "webhooks_queued": 0,
        }
        for change in changes:
            out[{"Create": "inserted", "Update": "updated", "Delete": "deleted"}[change.action]].append(
                change.key
            )
            out["timestamps"][change.key] = change.timestamp
            if spec.topic and spec.regular:
                endpoint = f"{self.sb.base_url}/api/v1/{division}/{spec.regular}(guid'{change.key}')"
                out["webhooks_queued"] += self.sb.webhooks.notify(
                    division, spec.topic, change.action, change.key, endpoint
                )
        return out

    def get_dump(self, params: dict[str, str]) -> dict[str, Any]:
        sb = self.sb
        try:
            division = int(params["division"])
            entity = params["entity"]
        except (KeyError, ValueError):
            raise AdminError("dump needs ?division=<code>&entity=<name>") from None
        if division not in sb.data.universes:
            raise AdminError(f"unknown division {division}")
        spec = E.BY_NAME.get(entity)
        if spec is None:
            raise AdminError(f"unknown entity {entity!r}; known: {', '.join(E.BY_NAME)}")
        columns = [Column(f.name, i, f.edm) for i, f in enumerate(spec.fields)]
        as_string = bool(sb.config["timestamp_as_string"])
        if spec is E.DIVISIONS:
            # ``Current`` as the API shows it to the default consent (whose current division is
            # the first one), so a dump compares equal to what a client reads.
            current = sb.data.division_codes[0]
            rows = [list(info.values) for _, info in sorted(sb.data.divisions.items())]
            for values in rows:
                values[2] = values[0] == current
        else:
            columns.insert(1, Column("Timestamp", len(spec.fields), E.INT64))
            if spec is E.DELETED:
                rows = sb.data.deleted[division].page(-1, 1 << 62, None)
            else:
                rows = sb.data.table(division, entity).page_by_timestamp(-1, 1 << 62, None)
        key_index = next(i for i, f in enumerate(spec.fields) if f.name == spec.key)
        rows.sort(key=lambda r: str(r[key_index]).lower() if spec.key_edm == E.GUID else r[key_index])
        rendered = render_json_rows(rows, columns, Uris(""), "", as_string)
        for row in rendered:
            del row["__metadata"]
        return {"rows": rendered, "count": len(rendered), "last_timestamp": sb.data.last_timestamp}

    # --- behaviour ----------------------------------------------------------------------------------

    def get_faults(self, _params: dict[str, str]) -> dict[str, Any]:
        return self.sb.faults.snapshot()

    def post_faults(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.pop("reset", False) is True:
            self.sb.faults.reset()
        self.sb.faults.configure(body)
        return self.sb.faults.snapshot()

    def get_limits(self, _params: dict[str, str]) -> dict[str, Any]:
        sb = self.sb
        return {
            "enabled": sb.limits.enabled,
            "minutely": sb.limits.minutely,
            "daily": sb.limits.daily,
            "errors_per_hour": sb.errors.threshold,
            "error_block_seconds": sb.errors.block_seconds,
            "usage": sb.limits.usage(sb.clock.now()),
            "error_blocks": sb.errors.active(sb.clock.now()),
        }

    def post_limits(self, body: dict[str, Any]) -> dict[str, Any]:
        allowed = {"enabled", "minutely", "daily", "errors_per_hour", "error_block_seconds", "reset"}
        unknown = set(body) - allowed
        if unknown:
            raise AdminError(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        enabled = _flag(body, "enabled") if "enabled" in body else None
        minutely = _number(body, "minutely", minimum=1, integer=True) if "minutely" in body else None
        daily = _number(body, "daily", minimum=1, integer=True) if "daily" in body else None
        threshold = _number(body, "errors_per_hour", integer=True) if "errors_per_hour" in body else None
        block = _number(body, "error_block_seconds", minimum=1) if "error_block_seconds" in body else None
        reset = _flag(body, "reset") if "reset" in body else False
        self.sb.limits.configure(enabled=enabled, minutely=minutely, daily=daily)
        self.sb.errors.configure(threshold=threshold, block_seconds=block)
        if reset:
            self.sb.limits.reset()
            self.sb.errors.reset()
        return self.get_limits({})

    def get_config(self, _params: dict[str, str]) -> dict[str, Any]:
        policy = self.sb.oauth.policy
        return {
            "timestamp_as_string": self.sb.config["timestamp_as_string"],
            "scope_violation_endpoints": list(self.sb.config["scope_violation_endpoints"]),
            "division_blocks": dict(self.sb.config["division_blocks"]),
            "maintenance_window": policy.maintenance_window,
            "token_calls_per_day": policy.token_calls_per_day,
            "reuse_kills_chain": policy.reuse_kills_chain,
            "rotation_revokes_access_token": policy.rotation_revokes_access_token,
            "consent_divisions": None if policy.consent_divisions is None else list(policy.consent_divisions),
        }

    def post_config(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - set(CONFIG_KEYS)
        if unknown:
            raise AdminError(f"unknown field(s) {sorted(unknown)}; allowed: {list(CONFIG_KEYS)}")
        updates = {name: self._config_value(name, body) for name in body}  # all checked before any change
        policy = self.sb.oauth.policy
        for name, value in updates.items():
            if name in ("timestamp_as_string", "scope_violation_endpoints", "division_blocks"):
                self.sb.config[name] = value
            else:
                setattr(policy, name, value)
        return self.get_config({})

    def _config_value(self, name: str, body: dict[str, Any]) -> Any:
        value = body[name]
        codes = self.sb.data.division_codes
        if name == "token_calls_per_day":
            return _number(body, name, minimum=1, integer=True)
        if name == "scope_violation_endpoints":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise AdminError(
                    'scope_violation_endpoints must be a list of endpoint prefixes such as "crm/"'
                )
            return list(value)
        if name == "division_blocks":
            if not isinstance(value, dict) or any(
                str(k) not in {str(d) for d in codes} or v not in BLOCK_REASONS for k, v in value.items()
            ):
                raise AdminError(f"division_blocks maps division codes to one of {list(BLOCK_REASONS)}")
            return {str(k): v for k, v in value.items()}
        if name == "consent_divisions":
            if value is not None and (
                not isinstance(value, list) or not value or any(v not in codes for v in value)
            ):
                raise AdminError(f"consent_divisions must be null or a non-empty list of {list(codes)}")
            return None if value is None else tuple(value)
        return _flag(body, name)

    def get_chains(self, _params: dict[str, str]) -> dict[str, Any]:
        return {"chains": self.sb.oauth.chains()}

    def post_chains_revoke(self, body: dict[str, Any]) -> dict[str, Any]:
        chain = body.get("chain")
        if chain is not None and not isinstance(chain, str):
            raise AdminError("chain must be a chain id or null (every chain)")
        return {"revoked": self.sb.oauth.revoke(chain)}

    def get_webhooks(self, _params: dict[str, str]) -> dict[str, Any]:
        return self.sb.webhooks.snapshot()
