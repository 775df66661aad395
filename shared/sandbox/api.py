"""``/api/v1/…``: the REST API with Exact's checks, in Exact's order.

URL length, then the bearer token (401), the error block, division access (403), the rate
limits (429), injected faults, then the endpoint itself. Every counted answer on a division URL
carries the six ``X-RateLimit-*`` headers; ``current/Me`` counts toward nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from shared.sandbox import entities as E
from shared.sandbox.dates import wall_iso, wall_ms
from shared.sandbox.generate import guid_index
from shared.sandbox.oauth import Grant
from shared.sandbox.odata import (
    ATOM_ENTRY_TYPE,
    ATOM_FEED_TYPE,
    FILTER_MISSING,
    JSON_TYPE,
    MAX_URL,
    SELECT_MISSING,
    SYNC_FILTER_MISSING,
    XML_TYPE,
    Column,
    Compiled,
    ODataError,
    Query,
    Uris,
    compile_filter,
    error_json,
    error_xml,
    key_literal,
    next_link,
    parse_query,
    render_atom_entry,
    render_atom_feed,
    render_json_rows,
)
from shared.sandbox.reply import Reply, html_reply

if TYPE_CHECKING:
    from shared.sandbox.server import Sandbox

_KEYED = re.compile(r"^(?P<path>[A-Za-z/]+)\((?P<key>[^)]*)\)$")
GUID_KEY = re.compile(r"^guid'([0-9a-fA-F-]{36})'$")
_SYNC_TOKEN = re.compile(r"^(\d+)L$")
WEBHOOKS_PATH = "webhooks/WebhookSubscriptions"
ME_TYPE = "Exact.Web.Api.System.Me"


@dataclass
class Request:
    method: str
    path: str  # percent-decoded, without the query string
    query: str  # raw
    headers: dict[str, str]  # lower-case names
    body: bytes
    url_length: int  # of the absolute URL, as Exact counts it

    @property
    def wants_json(self) -> bool:
        return "application/json" in self.headers.get("accept", "").lower()


@dataclass
class Call:
    """One authorised call on a division endpoint."""

    req: Request
    grant: Grant
    division: int
    route: E.Route
    path: str

    @property
    def endpoint_url(self) -> str:
        return f"/api/v1/{self.division}/{self.path}"


class Refused(Exception):
    """A check answered instead of the endpoint."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def odata_error(status: int, message: str, wants_json: bool, reason: str | None = None) -> Reply:
    headers = [("Reason", reason)] if reason else []
    if wants_json:
        return Reply(status, orjson.dumps(error_json(message)), JSON_TYPE, headers)
    return Reply(status, error_xml(message), XML_TYPE, headers)


def method_not_allowed(method: str, path: str, allow: str) -> ODataError:
    """405 with an OData error body and ``Allow`` (the REST API is read-only here but for webhooks)."""
    return ODataError(
        405, f"The requested resource does not support http method '{method}' on {path}.", allow=allow
    )


def endpoint_of(rest: str) -> str:
    """The error block's endpoint: the path without a ``(key)`` segment, case-folded."""
    match = _KEYED.match(rest)
    return (match.group("path") if match else rest).lower()


def field_map(route: E.Route) -> dict[str, tuple[int, str]]:
    """Property name -> (position in a row vector, Edm type); ``Timestamp`` sits after the fields."""
    fields = {f.name: (i, f.edm) for i, f in enumerate(route.entity.fields)}
    if route.has_timestamp:
        fields["Timestamp"] = (len(route.entity.fields), E.INT64)
    return fields


def columns_for(
    query: Query, route: E.Route, fields: dict[str, tuple[int, str]], type_name: str
) -> list[Column]:
    if query.select == ["*"] and route.needs_select:
        raise ODataError(400, SELECT_MISSING)
    names = list(fields) if query.select is None or query.select == ["*"] else query.select
    columns = []
    for name in names:
        if name not in fields:
            raise ODataError(400, f"No property '{name}' exists in type '{type_name}'.")
        columns.append(Column(name, *fields[name]))
    return columns


class Api:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox

    # --- the checks -------------------------------------------------------------------------------

    def handle(self, req: Request) -> Reply:
        division_part, _, endpoint = req.path[len("/api/v1/") :].partition("/")
        self.sb.counters.api_call(f"{division_part} {endpoint}")
        try:
            return self._checked(req, division_part, endpoint)
        except Refused as refused:
            return refused.reply

    def _checked(self, req: Request, division_part: str, endpoint: str) -> Reply:
        sb = self.sb
        if req.url_length > MAX_URL:
            message = f"The URL is too long: {req.url_length} characters, at most {MAX_URL} are allowed."
            raise Refused(odata_error(400, message, req.wants_json))
        grant, why, user = sb.oauth.grant_for(req.headers.get("authorization"))
        division = int(division_part) if division_part.isdigit() else None
        block_key = (sb.app.client_id, user or "anonymous", division or 0, endpoint_of(endpoint))
        now = sb.clock.now()
        if grant is None:
            reply = odata_error(401, "Unauthorized", req.wants_json)
            challenge = f'Bearer error="invalid_token",error_description="{quote(why)}"'
            reply.headers.append(("WWW-Authenticate", challenge))
            if division is not None and user is not None:
                sb.errors.record(block_key, 401, now)
            raise Refused(reply)
        if division_part == "current" and endpoint == "Me":
            return self._guarded(req, lambda: self.me(req, grant))
        if division is None:
            raise Refused(odata_error(404, "Not found", req.wants_json))
        blocked = sb.errors.blocked_until(block_key, now)
        if blocked is not None:
            sb.counters.add("error_blocked")
            message = (
                "Too many errors: this endpoint is blocked for this app, user and division until "
                f"{wall_iso(wall_ms(blocked))} (Europe/Amsterdam)."
            )
            raise Refused(odata_error(429, message, req.wants_json, "ErrorLimitExceeded"))
        reason = (
            "NoDivisionAccess"
            if division not in grant.divisions
            else sb.config["division_blocks"].get(str(division))
        )
        if reason:
            sb.errors.record(block_key, 403, now)
            raise Refused(odata_error(403, "Forbidden", req.wants_json, reason))
        decision = sb.limits.check(sb.app.client_id, division, now)
        if not decision.allowed:
            sb.counters.add("rate_limited_429")
            raise Refused(Reply(429, b"", None, decision.headers))
        reply = self._faulted(req) or self._guarded(
            req, lambda: self.division_call(req, grant, division, endpoint)
        )
        sb.errors.record(block_key, reply.status, now)
        reply.headers.extend(decision.headers)
        return reply

    def _faulted(self, req: Request) -> Reply | None:
        faults, reply = self.sb.faults, None
        if faults.take("api_dropped"):
            reply = Reply(500, drop=True)
        elif faults.take("api_5xx"):
            reply = odata_error(503, "The service is temporarily unavailable.", req.wants_json)
        elif faults.take("api_html_error"):
            reply = html_reply(500, "Runtime Error", "An application error occurred on the server.")
        if reply is not None:
            self.sb.counters.add("faults_injected")
            reply.delay = faults.delay("api_latency")
        return reply

    def _guarded(self, req: Request, call: Callable[[], Reply]) -> Reply:
        try:
            reply = call()
        except ODataError as exc:
            reply = odata_error(exc.status, exc.message, req.wants_json, exc.reason)
            if exc.allow:
                reply.headers.append(("Allow", exc.allow))
        reply.delay = max(reply.delay, self.sb.faults.delay("api_latency"))
        return reply

    # --- routing ----------------------------------------------------------------------------------

    def division_call(self, req: Request, grant: Grant, division: int, endpoint: str) -> Reply:
        for prefix in self.sb.config["scope_violation_endpoints"]:
            if endpoint.lower().startswith(str(prefix).lower()):
                raise ODataError(403, "Forbidden - Application Scope Violated")
        keyed = _KEYED.match(endpoint)
        path, key = (keyed.group("path"), keyed.group("key")) if keyed else (endpoint, None)
        if path == WEBHOOKS_PATH:
            return self.sb.webhook_api.handle(req, grant, division, key)
        route = E.ROUTES.get(path)
        if route is None:
            raise ODataError(404, "Not found")
        if req.method != "GET":
            raise method_not_allowed(req.method, path, "GET")
        call = Call(req, grant, division, route, path)
        return self.single(call, key) if key is not None else self.collection(call)

    # --- collections ------------------------------------------------------------------------------

    def collection(self, call: Call) -> Reply:
        route = call.route
        query = parse_query(call.req.query)
        if route.needs_select and query.select is None and query.top != 1:
            raise ODataError(400, SELECT_MISSING)
        fields = field_map(route)
        columns = columns_for(query, route, fields, route.type_name)
        if route.needs_filter and query.filter_text is None:
            raise ODataError(400, FILTER_MISSING)
        compiled = (
            compile_filter(query.filter_text, fields, route.type_name)
            if query.filter_text is not None
            else None
        )
        if route.form == "sync" and (compiled is None or compiled.timestamp_after is None):
            # the reference always reads sync endpoints with Timestamp gt n: the stricter reading demands it
            raise ODataError(400, SYNC_FILTER_MISSING)
        limit = route.page_size if query.top is None else min(route.page_size, query.top)
        if route.entity in E.DIVISION_LISTS:
            rows, token = self._divisions_page(call, query, compiled, limit)
        elif route.form == "sync":
            rows, token = self._sync_page(call, query, compiled, limit)
        else:
            rows, token = self._index_page(call, query, compiled, limit, fields[route.entity.key][0])
        top_left = None if query.top is None else query.top - len(rows)
        base = self.sb.base_url + call.endpoint_url
        next_url = None
        if token is not None and len(rows) == limit and limit and (top_left is None or top_left > 0):
            next_url = next_link(base, query, token, top_left)
        return self._render_feed(call, columns, rows, next_url, fields[route.entity.key][0])

    def _divisions_page(
        self, call: Call, query: Query, compiled: Compiled | None, limit: int
    ) -> tuple[list[list[Any]], str | None]:
        after = None
        if query.skiptoken is not None:
            if not query.skiptoken.isdigit():
                raise ODataError(400, f"The skip token '{query.skiptoken}' is not valid.")
            after = int(query.skiptoken)
        match = compiled.predicate if compiled else None
        rows = self._division_rows(call.grant, every=call.route.entity is E.ALL_DIVISIONS)
        rows = [r for r in rows if (after is None or r[0] > after) and (match is None or match(r))][:limit]
        return rows, (str(rows[-1][0]) if rows else None)

    def _sync_page(
        self, call: Call, query: Query, compiled: Compiled | None, limit: int
    ) -> tuple[list[list[Any]], str | None]:
        after = compiled.timestamp_after if compiled and compiled.timestamp_after is not None else -1
        if query.skiptoken is not None:
            found = _SYNC_TOKEN.match(query.skiptoken)
            if not found:
                raise ODataError(400, f"The skip token '{query.skiptoken}' is not valid.")
            after = max(after, int(found.group(1)))
        match = compiled.predicate if compiled else None
        data = self.sb.data
        if compiled is not None and compiled.only_timestamp:
            match = None  # the seek already applied the whole filter
        if call.route.entity is E.DELETED:
            page = data.deleted[call.division].page(after, limit, match)
        else:
            page = data.table(call.division, call.route.entity.name).page_by_timestamp(after, limit, match)
        return page, (f"{page[-1][-1]}L" if page else None)

    def _index_page(
        self, call: Call, query: Query, compiled: Compiled | None, limit: int, key_index: int
    ) -> tuple[list[list[Any]], str | None]:
        table = self.sb.data.table(call.division, call.route.entity.name)
        after_index = -1
        if query.skiptoken is not None:
            found = GUID_KEY.match(query.skiptoken)
            position = guid_index(table.salt, found.group(1)) if found else None
            if position is None:
                raise ODataError(400, f"The skip token '{query.skiptoken}' is not valid.")
            after_index = position
        match = compiled.predicate if compiled else None
        if compiled and compiled.key_equals and compiled.key_equals[0] == call.route.entity.key:
            index = table.find(compiled.key_equals[1])
            page = (
                table.page_by_index(index - 1, 1, match) if index is not None and index > after_index else []
            )
        else:
            page = table.page_by_index(after_index, limit, match)
        return page, (f"guid'{page[-1][key_index]}'" if page else None)

    def _render_feed(
        self, call: Call, columns: list[Column], rows: list[list[Any]], next_url: str | None, key_index: int
    ) -> Reply:
        sb, route = self.sb, call.route
        base = sb.base_url + call.endpoint_url
        key_edm = route.entity.key_edm

        uris = Uris.for_key(base, key_index, key_edm)
        if call.req.wants_json:
            as_string = bool(sb.config["timestamp_as_string"])
            d: dict[str, Any] = {"results": render_json_rows(rows, columns, uris, route.type_name, as_string)}
            if next_url:
                d["__next"] = next_url
            return Reply(200, orjson.dumps({"d": d}), JSON_TYPE)
        body = render_atom_feed(
            title=call.path.rsplit("/", 1)[-1],
            feed_uri=base,
            rows=rows,
            columns=columns,
            uris=uris,
            type_name=route.type_name,
            next_url=next_url,
            updated=wall_iso(wall_ms(sb.clock.now())),
        )
        return Reply(200, body, ATOM_FEED_TYPE)

    # --- single resources -------------------------------------------------------------------------

    def single(self, call: Call, key: str) -> Reply:
        sb, route = self.sb, call.route
        query = parse_query(call.req.query)
        if query.filter_text is not None or query.skiptoken is not None or query.top is not None:
            raise ODataError(
                400, "Query options $filter, $top and $skiptoken are not allowed on a single resource."
            )
        if route.form != "regular":
            raise ODataError(400, f"{call.path} does not support key lookups.")
        fields = field_map(route)
        columns = columns_for(query, route, fields, route.type_name)
        row = self._find_single(call, key)
        if row is None:
            raise ODataError(
                404, "Resource not found for the segment '" + call.path.rsplit("/", 1)[-1] + "'."
            )
        key_index = fields[route.entity.key][0]
        uri = f"{sb.base_url}{call.endpoint_url}({key_literal(route.entity.key_edm, row[key_index])})"
        if call.req.wants_json:
            as_string = bool(sb.config["timestamp_as_string"])
            item = render_json_rows([row], columns, Uris(uri), route.type_name, as_string)[0]
            return Reply(200, orjson.dumps({"d": item}), JSON_TYPE)
        updated = wall_iso(wall_ms(sb.clock.now()))
        return Reply(200, render_atom_entry(row, columns, uri, route.type_name, updated), ATOM_ENTRY_TYPE)

    def _find_single(self, call: Call, key: str) -> list[Any] | None:
        if call.route.entity in E.DIVISION_LISTS:
            if not key.isdigit():
                raise ODataError(400, f"Bad Request - Error in query syntax: '{key}' is not an Int32 key.")
            every = call.route.entity is E.ALL_DIVISIONS
            return next((r for r in self._division_rows(call.grant, every=every) if r[0] == int(key)), None)
        found = GUID_KEY.match(key)
        if not found:
            raise ODataError(400, f"Bad Request - Error in query syntax: '{key}' is not a guid key.")
        table = self.sb.data.table(call.division, call.route.entity.name)
        index = table.find(found.group(1))
        return table.row(index) if index is not None else None

    def _division_rows(self, grant: Grant, *, every: bool) -> list[list[Any]]:
        current = grant.divisions[0] if grant.divisions else None
        rows = []
        for code, info in sorted(self.sb.data.divisions.items()):
            if every or code in grant.divisions:
                values = list(info.values)
                values[2] = code == current
                rows.append(values)
        return rows

    def me(self, req: Request, grant: Grant) -> Reply:
        sb = self.sb
        if req.method != "GET":
            raise method_not_allowed(req.method, "current/Me", "GET")
        query = parse_query(req.query)
        if query.filter_text is not None or query.skiptoken is not None:
            raise ODataError(400, "Query options $filter and $skiptoken are not supported on current/Me.")
        fields = {f.name: (i, f.edm) for i, f in enumerate(E.ME_FIELDS)}
        names = list(fields) if query.select is None or query.select == ["*"] else query.select
        columns = []
        for name in names:
            if name not in fields:
                raise ODataError(400, f"No property '{name}' exists in type '{ME_TYPE}'.")
            columns.append(Column(name, *fields[name]))
        current = grant.divisions[0]
        info = sb.data.divisions[current].values
        row = [grant.user, current, "sandbox.user@example.com", "Sandy Box", "sandbox.user@example.com", "nl-NL",
               info[3], info[4], "NL"]  # fmt: skip
        uri = f"{sb.base_url}/api/v1/current/Me(guid'{grant.user}')"
        if req.wants_json:
            rows = render_json_rows([row], columns, Uris(uri), ME_TYPE, False)
            return Reply(200, orjson.dumps({"d": {"results": rows}}), JSON_TYPE)
        body = render_atom_feed(
            title="Me",
            feed_uri=f"{sb.base_url}/api/v1/current/Me",
            rows=[row],
            columns=columns,
            uris=Uris(uri),
            type_name=ME_TYPE,
            next_url=None,
            updated=wall_iso(wall_ms(sb.clock.now())),
        )
        return Reply(200, body, ATOM_FEED_TYPE)
