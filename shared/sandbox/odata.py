"""OData v2 as Exact speaks it: query options, ``$filter`` grammar, verbose JSON and Atom XML.

Parsing is strict where Exact is strict (``$select`` on bulk/sync, unknown properties, literal
types: an Int64 compares only with an ``L`` literal) and refuses what the sandbox does not
implement with a 400 naming it, never by silently ignoring an option.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape, quoteattr

from shared.sandbox import entities as E
from shared.sandbox.dates import date_ms, parse_datetime_literal, wall_iso

SELECT_MISSING = "Please add a $select or a $top=1 statement to the query string."
FILTER_MISSING = (
    "Please add a $filter to the query string: this endpoint has a sync twin; "
    "read it through the sync endpoint instead."
)
SYNC_FILTER_MISSING = "Please add a $filter on Timestamp (for example Timestamp gt 1L) to the query string."
MAX_URL = 6000
SUPPORTED_OPTIONS = frozenset({"$select", "$filter", "$top", "$skiptoken"})

JSON_TYPE = "application/json; charset=utf-8"
ATOM_FEED_TYPE = "application/atom+xml;type=feed;charset=utf-8"
ATOM_ENTRY_TYPE = "application/atom+xml;type=entry;charset=utf-8"
XML_TYPE = "application/xml;charset=utf-8"


class ODataError(Exception):
    """An answer in OData's error shape: status, message text, an optional ``Reason`` header and,
    for a 405, the ``Allow`` header (the methods the resource does take, as RFC 9110 requires)."""

    def __init__(
        self, status: int, message: str, reason: str | None = None, *, allow: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.allow = allow


def error_json(message: str) -> dict[str, Any]:
    return {"error": {"code": "", "message": {"lang": "", "value": message}}}


def error_xml(message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8" standalone="yes"?>'
        '<error xmlns="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">'
        f'<code></code><message xml:lang="">{escape(message)}</message></error>'
    ).encode()


# --- query options ---------------------------------------------------------------------------------


@dataclass
class Query:
    select: list[str] | None  # None: every field
    select_text: str | None
    filter_text: str | None
    top: int | None
    skiptoken: str | None
    extra: list[tuple[str, str]]  # non-$ parameters, kept for __next


def parse_params(query_string: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(query_string, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError:
        raise ODataError(400, "The query string is not valid UTF-8.") from None


def parse_query(query_string: str) -> Query:
    seen: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for name, value in parse_params(query_string):
        if not name.startswith("$"):
            extra.append((name, value))
            continue
        if name not in SUPPORTED_OPTIONS:
            raise ODataError(400, f"The query parameter '{name}' is not supported by this endpoint.")
        if name in seen:
            raise ODataError(
                400,
                f"Query option '{name}' was specified more than once, but it must be specified at most once.",
            )
        seen[name] = value
    select_text = seen.get("$select")
    select = None
    if select_text is not None:
        select = [part.strip() for part in select_text.split(",")]
        if not select_text.strip() or any(not part for part in select):
            raise ODataError(400, "Syntax error in $select: empty property name.")
    top = None
    if "$top" in seen:
        raw = seen["$top"].strip()
        if not raw.isdigit():
            raise ODataError(
                400,
                f"Invalid value '{seen['$top']}' for $top query option found. The $top query option requires a non-negative integer value.",
            )
        top = int(raw)
    return Query(select, select_text, seen.get("$filter"), top, seen.get("$skiptoken"), extra)


# --- $filter ------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<open>\() | (?P<close>\)) |
      (?P<guid>guid'(?P<guidv>[^']*)') |
      (?P<datetime>datetime'(?P<dtv>[^']*)') |
      (?P<string>'(?P<strv>(?:[^']|'')*)') |
      (?P<number>-?\d+(?:\.\d+)?(?P<suffix>[LlMmDdFf])?) |
      (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}

Vector = Sequence[Any]
Predicate = Callable[[Vector], bool]


@dataclass(frozen=True)
class Literal:
    kind: str  # guid | datetime | string | int | int64 | decimal | bool | null
    value: Any


@dataclass
class Compiled:
    predicate: Predicate
    #: seek hints from top-level ``and`` conjuncts: ``Timestamp gt n`` and ``<key> eq guid'…'``
    timestamp_after: int | None
    #: (property, lower-case guid) of a top-level ``<guid property> eq guid'…'``
    key_equals: tuple[str, str] | None
    #: the filter is nothing but ``Timestamp gt/ge n`` conjuncts: the seek applies it entirely
    only_timestamp: bool = False


class _Parser:
    def __init__(self, text: str, fields: dict[str, tuple[int, str]], type_name: str) -> None:
        self.text = text
        self.fields = fields
        self.type_name = type_name
        self.tokens = self._tokenize(text)
        self.pos = 0

    def _tokenize(self, text: str) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        position = 0
        while text[position:].strip():
            m = _TOKEN.match(text, position)
            if not m or m.end() == position:
                raise ODataError(400, f"Syntax error at position {position} in '{text}'.")
            position = m.end()
            out.append(self._token(m))
        return out

    def _token(self, m: re.Match[str]) -> tuple[str, Any]:
        kind = m.lastgroup
        if kind in ("open", "close"):
            return ("(" if kind == "open" else ")"), None
        if kind != "word":
            return "lit", self._literal(kind, m)
        word = m.group("word")
        if word in ("true", "false", "null"):
            return "lit", Literal("null", None) if word == "null" else Literal("bool", word == "true")
        if word in ("and", "or", "not") or word in _OPS:
            return word, None
        return "name", word

    def _literal(self, kind: str | None, m: re.Match[str]) -> Literal:
        if kind == "guid":
            value = m.group("guidv")
            if not _GUID.fullmatch(value):
                raise ODataError(400, f"Unrecognized 'Edm.Guid' literal 'guid'{value}'' in '{self.text}'.")
            return Literal("guid", value.lower())
        if kind == "datetime":
            try:
                return Literal("datetime", parse_datetime_literal(m.group("dtv")))
            except ValueError:
                message = (
                    f"Unrecognized 'Edm.DateTime' literal 'datetime'{m.group('dtv')}'' in '{self.text}'."
                )
                raise ODataError(400, message) from None
        if kind == "string":
            return Literal("string", m.group("strv").replace("''", "'"))
        return self._number(m.group("number"), (m.group("suffix") or "").upper())

    def _number(self, raw: str, suffix: str) -> Literal:
        digits = raw[:-1] if suffix else raw
        if suffix == "L":
            if "." in digits:
                raise ODataError(400, f"Unrecognized 'Edm.Int64' literal '{raw}' in '{self.text}'.")
            return Literal("int64", int(digits))
        if suffix or "." in digits:
            return Literal("decimal", float(digits))
        return Literal("int", int(digits))

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, Any]:
        if self.pos >= len(self.tokens):
            raise ODataError(400, f"Expression expected at the end of '{self.text}'.")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> Compiled:
        hints: dict[str, Any] = {}
        predicate = self.or_expr(hints, top=True)
        if self.pos != len(self.tokens):
            raise ODataError(
                400,
                f"Syntax error: unexpected '{self.tokens[self.pos][1] or self.tokens[self.pos][0]}' in '{self.text}'.",
            )
        only = "timestamp_after" in hints and hints.get("conjuncts") == hints.get("timestamp_comparisons")
        return Compiled(predicate, hints.get("timestamp_after"), hints.get("key_equals"), only)

    def or_expr(self, hints: dict[str, Any], top: bool = False) -> Predicate:
        left = self.and_expr(hints if top else {}, top)
        if self.peek() != "or":
            return left
        hints.clear()  # an 'or' at the top level makes every seek hint unsafe
        parts = [left]
        while self.peek() == "or":
            self.take()
            parts.append(self.and_expr({}, False))
        return lambda row: any(p(row) for p in parts)

    def and_expr(self, hints: dict[str, Any], top: bool) -> Predicate:
        parts = [self.unary(hints, top)]
        while self.peek() == "and":
            self.take()
            parts.append(self.unary(hints, top))
        if top:
            hints["conjuncts"] = len(parts)
        if len(parts) == 1:
            return parts[0]
        return lambda row: all(p(row) for p in parts)

    def unary(self, hints: dict[str, Any], top: bool) -> Predicate:
        if self.peek() == "not":
            self.take()
            inner = self.unary({}, False)
            return lambda row: not inner(row)
        if self.peek() == "(":
            self.take()
            inner = self.or_expr({}, False)
            if self.take()[0] != ")":
                raise ODataError(400, f"')' or operator expected in '{self.text}'.")
            return inner
        return self.comparison(hints, top)

    def comparison(self, hints: dict[str, Any], top: bool) -> Predicate:
        kind, name = self.take()
        if kind != "name":
            raise ODataError(400, f"Syntax error: property name expected in '{self.text}'.")
        if name not in self.fields:
            raise ODataError(400, f"No property '{name}' exists in type '{self.type_name}'.")
        op_kind, _ = self.take()
        if op_kind not in _OPS:
            raise ODataError(
                400, f"Syntax error: comparison operator expected after '{name}' in '{self.text}'."
            )
        lit_kind, literal = self.take()
        if lit_kind != "lit":
            raise ODataError(
                400, f"Syntax error: literal expected after '{name} {op_kind}' in '{self.text}'."
            )
        index, edm = self.fields[name]
        value = self._coerce(name, edm, op_kind, literal)
        if top and name == "Timestamp" and op_kind in ("gt", "ge") and value is not None:
            hints["timestamp_comparisons"] = hints.get("timestamp_comparisons", 0) + 1
            bound = value if op_kind == "gt" else value - 1
            hints["timestamp_after"] = max(bound, hints.get("timestamp_after", bound))
        if top and op_kind == "eq" and edm == E.GUID and isinstance(value, str):
            hints.setdefault("key_equals", (name, value))
        compare = _OPS[op_kind]
        if value is None:
            wanted_null = op_kind == "eq"
            return lambda row: (row[index] is None) == wanted_null
        if edm == E.GUID:
            return lambda row: row[index] is not None and compare(str(row[index]).lower(), value)
        if edm == E.DATETIME:  # rows hold "/Date(ms)/"
            if op_kind == "ne":
                return lambda row: row[index] is None or date_ms(row[index]) != value
            return lambda row: row[index] is not None and compare(date_ms(row[index]), value)
        if op_kind == "ne":
            return lambda row: row[index] != value
        return lambda row: row[index] is not None and compare(row[index], value)

    def _coerce(self, name: str, edm: str, op: str, literal: Literal) -> Any:
        if literal.kind == "null":
            if op not in ("eq", "ne"):
                raise ODataError(
                    400, f"Operator '{op}' incompatible with operand types '{edm}' and '<null>'."
                )
            return None
        allowed = {
            E.GUID: ("guid",),
            E.INT64: ("int64",),
            E.INT: ("int", "int64"),
            E.DOUBLE: ("int", "int64", "decimal"),
            E.STR: ("string",),
            E.BOOL: ("bool",),
            E.DATETIME: ("datetime",),
        }[edm]
        if literal.kind not in allowed:
            shown = {"int": "Edm.Int32", "int64": "Edm.Int64", "decimal": "Edm.Decimal", "string": "Edm.String",
                     "guid": "Edm.Guid", "datetime": "Edm.DateTime", "bool": "Edm.Boolean"}[literal.kind]  # fmt: skip
            raise ODataError(
                400,
                f"Operator '{op}' incompatible with operand types '{edm}' and '{shown}' for property '{name}'.",
            )
        if edm in (E.GUID, E.BOOL) and op not in ("eq", "ne"):
            raise ODataError(400, f"Operator '{op}' incompatible with operand types '{edm}' and '{edm}'.")
        return literal.value


def compile_filter(text: str, fields: dict[str, tuple[int, str]], type_name: str) -> Compiled:
    if not text.strip():
        raise ODataError(400, "Expression expected at position 0 in ''.")
    return _Parser(text, fields, type_name).parse()


# --- rendering -------------------------------------------------------------------------------------


def key_literal(edm: str, value: Any) -> str:
    return f"guid'{value}'" if edm == E.GUID else str(value)


def next_link(endpoint: str, query: Query, skiptoken: str, top_left: int | None) -> str:
    parts = [f"{quote(name, safe='')}={quote(value, safe=',')}" for name, value in query.extra]
    if query.select_text is not None:
        parts.append("$select=" + quote(query.select_text, safe=","))
    if query.filter_text is not None:
        parts.append("$filter=" + quote(query.filter_text, safe="'(),:"))
    if top_left is not None:
        parts.append(f"$top={top_left}")
    parts.append("$skiptoken=" + quote(skiptoken, safe="'"))
    return endpoint + "?" + "&".join(parts)


@dataclass(frozen=True)
class Column:
    name: str
    index: int
    edm: str


@dataclass(frozen=True)
class Uris:
    """How a row's ``__metadata.uri`` is made: ``prefix + key + suffix`` (or just ``prefix``)."""

    prefix: str
    key_index: int | None = None
    suffix: str = ""
    text_key: bool = True

    @classmethod
    def for_key(cls, collection_url: str, key_index: int, key_edm: str) -> Uris:
        if key_edm == E.GUID:
            return cls(f"{collection_url}(guid'", key_index, "')")
        return cls(f"{collection_url}(", key_index, ")", text_key=False)

    def of(self, row: Vector) -> str:
        if self.key_index is None:
            return self.prefix
        return f"{self.prefix}{row[self.key_index]}{self.suffix}"

    def expression(self) -> str:
        if self.key_index is None:
            return "P"
        key = f"r[{self.key_index}]" if self.text_key else f"str(r[{self.key_index}])"
        return f"P + {key} + S"


_BUILDERS: dict[tuple[Any, ...], Callable[[Vector], dict[str, Any]]] = {}


def _row_builder(
    columns: Sequence[Column], type_name: str, uris: Uris, timestamp_as_string: bool
) -> Callable[[Vector], dict[str, Any]]:
    """``row vector -> dict`` for one column list, compiled once and cached.

    A generated dict display is the cheapest row builder CPython offers (twice as fast as a
    ``zip``), and this is the hot path of every page. Column names come from the entity tables
    (a ``$select`` naming anything else is refused earlier) and are checked to be identifiers;
    the URI parts and the type name are passed as values, so the generated source holds no
    request text.
    """
    key = (tuple((c.name, c.index, c.edm) for c in columns), type_name, uris, timestamp_as_string)
    builder = _BUILDERS.get(key)
    if builder is None:
        parts = []
        for c in columns:
            if not c.name.isidentifier():
                raise ValueError(f"bad column name {c.name!r}")
            value = f"r[{c.index}]"
            if c.edm == E.INT64 and timestamp_as_string:
                value = f"(None if r[{c.index}] is None else str(r[{c.index}]))"
            parts.append(f"{c.name!r}: {value}")
        source = f"lambda r: {{'__metadata': {{'uri': {uris.expression()}, 'type': T}}, {', '.join(parts)}}}"
        namespace = {"T": type_name, "P": uris.prefix, "S": uris.suffix}
        builder = eval(source, namespace)  # noqa: S307 (built from checked names only)
        if len(_BUILDERS) > 512:
            _BUILDERS.clear()
        _BUILDERS[key] = builder
    return builder


def render_json_rows(
    rows: Sequence[Vector], columns: Sequence[Column], uris: Uris, type_name: str, timestamp_as_string: bool
) -> list[dict[str, Any]]:
    build = _row_builder(columns, type_name, uris, timestamp_as_string)
    return [build(row) for row in rows]


def _xml_value(edm: str, value: Any) -> str:
    if edm == E.DATETIME:
        return wall_iso(date_ms(value))
    if edm == E.BOOL:
        return "true" if value else "false"
    if edm == E.DOUBLE:
        return repr(float(value))
    return escape(str(value))


def _xml_properties(row: Vector, columns: Sequence[Column]) -> str:
    parts = []
    for c in columns:
        value = row[c.index]
        type_attr = "" if c.edm == E.STR else f' m:type="{c.edm}"'
        if value is None:
            parts.append(f'<d:{c.name}{type_attr} m:null="true" />')
        else:
            parts.append(f"<d:{c.name}{type_attr}>{_xml_value(c.edm, value)}</d:{c.name}>")
    return "".join(parts)


_NS = (
    'xmlns="http://www.w3.org/2005/Atom" '
    'xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" '
    'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"'
)


def _xml_entry(
    row: Vector, columns: Sequence[Column], uri: str, type_name: str, updated: str, *, namespaces: bool
) -> str:
    ns = " " + _NS if namespaces else ""
    return (
        f'<entry{ns}><id>{escape(uri)}</id><title type="text" /><updated>{updated}</updated>'
        f'<author><name /></author><link rel="edit" title={quoteattr(type_name.rsplit(".", 1)[-1])} href={quoteattr(uri)} />'
        f'<category term={quoteattr(type_name)} scheme="http://schemas.microsoft.com/ado/2007/08/dataservices/scheme" />'
        f'<content type="application/xml"><m:properties>{_xml_properties(row, columns)}</m:properties></content></entry>'
    )


def render_atom_feed(
    *, title: str, feed_uri: str, rows: Sequence[Vector], columns: Sequence[Column],
    uris: Uris, type_name: str, next_url: str | None, updated: str,
) -> bytes:  # fmt: skip
    entries = "".join(
        _xml_entry(row, columns, uris.of(row), type_name, updated, namespaces=False) for row in rows
    )
    nxt = f'<link rel="next" href={quoteattr(next_url)} />' if next_url else ""
    return (
        f'<?xml version="1.0" encoding="utf-8" standalone="yes"?><feed xml:base={quoteattr(feed_uri)} {_NS}>'
        f'<title type="text">{escape(title)}</title><id>{escape(feed_uri)}</id><updated>{updated}</updated>'
        f'<link rel="self" title={quoteattr(title)} href={quoteattr(title)} />{entries}{nxt}</feed>'
    ).encode()


def render_atom_entry(
    row: Vector, columns: Sequence[Column], uri: str, type_name: str, updated: str
) -> bytes:
    body = _xml_entry(row, columns, uri, type_name, updated, namespaces=True)
    return ('<?xml version="1.0" encoding="utf-8" standalone="yes"?>' + body).encode()
