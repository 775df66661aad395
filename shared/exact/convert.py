"""Row conversion: Exact's OData v2 JSON values -> Python values, by the catalog's field types.

Why a converter per type instead of trusting JSON: Exact serialises the same logical type in
more than one way (``Edm.Int64`` and ``Edm.Decimal`` may arrive as strings, as OData v2 JSON
prescribes, or as numbers), GUIDs in any case, and dates as ``/Date(ms)/`` whose milliseconds
encode the *Dutch wall clock* (Europe/Amsterdam), not UTC. The warehouse must get one canonical
form per type so a MERGE compares like with like:

- ``guid``: lower-case ``8-4-4-4-12`` string.
- ``str``: kept exactly (Exact's ``Code`` values are left-padded with spaces: not stripped).
- ``int``, ``int64``: ``int`` from a JSON number or a decimal string.
- ``decimal``: ``float`` (a binary double). Exact amounts carry at most 15 significant digits
  in practice, which a double holds exactly enough for a round trip of the printed value; the
  warehouse stores them as FLOAT/REAL. Strings (``Edm.Decimal``) are accepted too.
- ``bool``: ``bool`` from JSON ``true``/``false`` (or the strings ``"true"``/``"false"``).
- ``datetime``: timezone-aware UTC ``datetime``. The milliseconds are read as a wall-clock time
  in Europe/Amsterdam and converted with ``zoneinfo``. An offset suffix (``/Date(ms+0100)/``)
  does not change that reading; it only picks the side of an autumn fold when it names one of
  the two offsets the wall time can have. Otherwise the rules are Python's (PEP 495, ``fold=0``):
  an ambiguous wall time (the repeated hour in October) is read as its first occurrence (CEST,
  UTC+2); a wall time that does not exist (the skipped hour in March) is read with the offset
  before the jump (CET, UTC+1), so ``02:30`` becomes ``01:30`` UTC. Deterministic either way.

``None`` passes through for every type. A value that fits no reading raises ``ConversionError``
naming the entity and field: bad input is reported, never silently stored as something else.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from shared.exact.catalog import Entity, FieldType
from shared.exact.catalog import entity as entity_by_name
from shared.exact.errors import ConversionError

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII)
_INT = re.compile(r"[+-]?\d+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_DATE = re.compile(r"/Date\((-?\d+)(?:([+-])(\d{2})(\d{2}))?\)/", re.ASCII)
_EPOCH = datetime(1970, 1, 1)


class _Missing:
    def __repr__(self) -> str:
        return "<field missing from the row>"


_MISSING: Any = _Missing()


class _Invalid(Exception):
    """Internal: a value does not fit; carries what was expected (wrapped into ConversionError)."""


@functools.cache
def amsterdam() -> tzinfo:
    """Europe/Amsterdam, loaded on first use (reads tzdata; not paid at import)."""
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Amsterdam")


_HOUR_MS = 3_600_000
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
#: wall-clock hour -> the Amsterdam offset (ms) in force for that whole hour, or None when the
#: hour holds a transition (gap or fold): then each value takes the exact, slower path.
_offset_by_wall_hour: dict[int, int | None] = {}


def _hour_offset(hour: int) -> int | None:
    if hour in _offset_by_wall_hour:
        return _offset_by_wall_hour[hour]
    zone = amsterdam()
    first = (_EPOCH + timedelta(milliseconds=hour * _HOUR_MS)).replace(tzinfo=zone)
    last = first + timedelta(milliseconds=_HOUR_MS - 1)
    offsets = {moment.replace(fold=fold).utcoffset() for moment in (first, last) for fold in (0, 1)}
    result: int | None = None
    if len(offsets) == 1:
        (offset,) = offsets
        if offset is not None:
            result = offset // timedelta(milliseconds=1)
    if len(_offset_by_wall_hour) > 200_000:
        _offset_by_wall_hour.clear()
    _offset_by_wall_hour[hour] = result
    return result


def amsterdam_ms_to_utc(ms: int, offset_minutes: int | None = None) -> datetime:
    """Exact's ``/Date(ms)/`` milliseconds (Amsterdam wall clock) -> aware UTC datetime.

    Fast path: the zone's offset is looked up once per wall-clock hour (loads convert millions
    of dates); hours around a transition take the exact ``zoneinfo`` path with the fold rules.
    """
    offset = _hour_offset(ms // _HOUR_MS)
    if offset is not None:
        return _EPOCH_UTC + timedelta(milliseconds=ms - offset)
    wall = _EPOCH + timedelta(milliseconds=ms)
    local = wall.replace(tzinfo=amsterdam())
    if offset_minutes is not None:
        other = local.replace(fold=1)
        wanted = timedelta(minutes=offset_minutes)
        if other.utcoffset() != local.utcoffset() and other.utcoffset() == wanted:
            local = other
    return local.astimezone(UTC)


def parse_exact_date(value: str) -> datetime:
    """``"/Date(1641034800000)/"`` or ``"/Date(1641034800000+0100)/"`` -> aware UTC datetime.

    Raises ``ValueError`` when ``value`` is not in that form or lies outside datetime's range.
    """
    match = _DATE.fullmatch(value)
    if match is None:
        raise ValueError("not an Exact /Date(ms)/ value")
    ms_text, sign, hours, minutes = match.groups()
    offset = None
    if sign is not None:
        offset = int(hours) * 60 + int(minutes)
        if sign == "-":
            offset = -offset
    try:
        return amsterdam_ms_to_utc(int(ms_text), offset)
    except (OverflowError, ValueError):
        raise ValueError("date outside the representable range") from None


def to_exact_date(moment: datetime) -> str:
    """The inverse, for tests and the sandbox: an aware datetime -> ``/Date(ms)/`` in Amsterdam wall time."""
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    wall = moment.astimezone(amsterdam()).replace(tzinfo=None)
    ms = (wall - _EPOCH) // timedelta(milliseconds=1)
    return f"/Date({ms})/"


def _guid(value: Any) -> str:
    if isinstance(value, str) and _GUID.fullmatch(value):
        return value.lower()
    raise _Invalid("a GUID (8-4-4-4-12 hex)")


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _Invalid("a string")


def _int(value: Any) -> int:
    if type(value) is int:
        return value
    if isinstance(value, bool):
        raise _Invalid("an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT.fullmatch(value):
        return int(value)
    raise _Invalid("an integer (number or decimal string)")


def _decimal(value: Any) -> float:
    if isinstance(value, bool):
        raise _Invalid("a decimal number")
    if isinstance(value, int | float) or (isinstance(value, str) and _DECIMAL.fullmatch(value)):
        result = float(value)
    else:
        raise _Invalid("a decimal number (number or numeric string)")
    if not math.isfinite(result):
        raise _Invalid("a finite decimal number")
    return result


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    raise _Invalid("a boolean")


def _datetime(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            return parse_exact_date(value)
        except ValueError:
            pass
    raise _Invalid("an Exact date /Date(ms)/ (Europe/Amsterdam wall clock)")


_BY_TYPE: Mapping[FieldType, Callable[[Any], Any]] = {
    "guid": _guid,
    "str": _str,
    "int": _int,
    "int64": _int,
    "decimal": _decimal,
    "bool": _bool,
    "datetime": _datetime,
}


def convert_value(field_type: FieldType, value: Any) -> Any:
    """One value by type; ``ValueError`` (no entity context) when it does not fit."""
    if value is None:
        return None
    try:
        return _BY_TYPE[field_type](value)
    except _Invalid as exc:
        raise ValueError(f"expected {exc}, got {value!r:.80}") from None


class RowConverter:
    """Converts raw rows of one entity; built once per entity, then cheap per row."""

    def __init__(self, entity: Entity) -> None:
        self.entity = entity
        self._plan = tuple((f.name, _BY_TYPE[f.type]) for f in entity.fields)

    def __call__(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, convert in self._plan:
            value = raw.get(name, _MISSING)
            if value is None:
                out[name] = None
                continue
            if value is _MISSING:
                raise ConversionError(self.entity.name, name, value, "a value (selected field absent)")
            try:
                out[name] = convert(value)
            except _Invalid as exc:
                raise ConversionError(self.entity.name, name, value, str(exc)) from None
        return out


_CONVERTERS: dict[int, RowConverter] = {}


def row_converter(entity: Entity | str) -> RowConverter:
    """The (cached) converter of an entity, given as catalog ``Entity`` or by name."""
    resolved = entity_by_name(entity) if isinstance(entity, str) else entity
    cached = _CONVERTERS.get(id(resolved))
    if cached is None or cached.entity is not resolved:
        cached = RowConverter(resolved)
        _CONVERTERS[id(resolved)] = cached
    return cached


def convert_row(entity: Entity | str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """One raw API row -> ``{field: value}`` in catalog order and canonical types.

    Fields outside the catalog (``__metadata``, deferred links) are dropped; a selected field
    missing from the row or a value of the wrong shape raises ``ConversionError``.
    """
    return row_converter(entity)(raw)


def timestamp_of(raw: Mapping[str, Any]) -> int:
    """A row's ``Timestamp`` (Int64 row version, as number or string) as ``int``."""
    value = raw.get("Timestamp", _MISSING)
    try:
        return _int(value)
    except _Invalid:
        raise ValueError(f"row Timestamp must be an integer (number or string), got {value!r:.80}") from None
