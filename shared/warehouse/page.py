"""Turning a loader's page into what both dialects write: validated, de-duplicated, keyed.

Everything that can be wrong with a page is found here, before any transaction starts, so a
bad page is refused (``InvalidPage``) with nothing written. The dialects then only encode
values (``encode_rows``) and run their statements.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from shared.exact.catalog import DELETED, Entity, FieldType
from shared.warehouse.base import Cursor, InvalidPage

Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]
ValueForm = Literal["sqlite", "json"]


@functools.cache
def has_timestamp(entity: Entity) -> bool:
    """Whether the entity carries Exact's row version (monotonic writes need it)."""
    return any(f.name == "Timestamp" and f.type in ("int", "int64") for f in entity.fields)


def key_type(entity: Entity) -> FieldType:
    return entity.field(entity.key).type


@dataclass(frozen=True)
class Deletion:
    """One deletion to apply: the entity table's typed key and the tombstone's text key."""

    entity: Entity
    key: Any  # as stored in the entity table (lower-case guid str, int, or str)
    key_text: str  # as stored in the tombstone table
    timestamp: int
    deleted_date: datetime | None


@dataclass(frozen=True)
class Page:
    entity: Entity
    division: int
    rows: list[Mapping[str, Any]]  # de-duplicated, in first-seen order of their keys
    keys: list[Any]  # normalised key of each row in ``rows``
    dropped_duplicates: int
    deletions: list[Deletion]
    cursor: Cursor


class BadValue(Exception):
    """A value does not fit its field; the text says what was expected."""


def normalise_key(kind: FieldType, value: Any, *, from_text: bool = False) -> Any:
    """A key value in its stored form; raises ``BadValue`` when it cannot be one.

    ``from_text``: deletion keys arrive as text (``sync/Deleted``'s ``EntityKey``), so an integer
    key may be given as its digits there; row values must already have their catalog type.
    """
    if kind == "guid":
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, str) and value:
            return value.lower()
        raise BadValue("a GUID string")
    if kind in ("int", "int64"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise BadValue("an integer")
    if isinstance(value, str) and value:
        return value
    raise BadValue("a non-empty string")


def prepare(
    *,
    entity: Entity,
    division: int,
    rows: Sequence[Mapping[str, Any]],
    deletions: Sequence[tuple[Entity, str]],
    cursor: Cursor,
) -> Page:
    """Validate and de-duplicate a page; raise ``InvalidPage`` naming the first problem."""
    if not isinstance(division, int) or isinstance(division, bool):
        raise InvalidPage(f"division must be an integer, got {type(division).__name__}")
    if cursor.division != division or cursor.entity != entity.name:
        raise InvalidPage(
            f"cursor is for division {cursor.division} entity {cursor.entity!r}, "
            f"but the page is division {division} entity {entity.name!r}"
        )
    if not cursor.connection:
        raise InvalidPage("cursor.connection is empty")
    kind = key_type(entity)
    stamped = has_timestamp(entity)
    chosen: dict[Any, tuple[int, Mapping[str, Any], int | None]] = {}
    for index, row in enumerate(rows):
        raw_key = row.get(entity.key)
        if raw_key is None:
            raise InvalidPage(f"{entity.name} row {index} has no {entity.key}")
        try:
            key = normalise_key(kind, raw_key)
        except BadValue as exc:
            raise InvalidPage(
                f"{entity.name} row {index}: {entity.key} must be {exc}, got {raw_key!r:.60}"
            ) from None
        stamp: int | None = None
        if stamped:
            value = row.get("Timestamp")
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidPage(
                    f"{entity.name} row {index} ({entity.key} {key}): Timestamp must be an integer, got {value!r:.40}"
                )
            stamp = value
        previous = chosen.get(key)
        if previous is None or stamp is None or previous[2] is None or stamp >= previous[2]:
            order = previous[0] if previous is not None else index
            chosen[key] = (order, row, stamp)
    kept = sorted(chosen.items(), key=lambda item: item[1][0])
    return Page(
        entity=entity,
        division=division,
        rows=[item[1][1] for item in kept],
        keys=[item[0] for item in kept],
        dropped_duplicates=len(rows) - len(kept),
        deletions=_deletions(entity, rows, deletions, cursor),
        cursor=cursor,
    )


def _deletions(
    entity: Entity, rows: Sequence[Mapping[str, Any]], pairs: Sequence[tuple[Entity, str]], cursor: Cursor
) -> list[Deletion]:
    if not pairs:
        return []
    # On a sync/Deleted page the records themselves say when each key was deleted.
    records: dict[str, list[tuple[int | None, int, datetime | None]]] = {}
    if entity.name == DELETED.name:
        for row in rows:
            entity_key, stamp = row.get("EntityKey"), row.get("Timestamp")
            if isinstance(entity_key, str) and isinstance(stamp, int) and not isinstance(stamp, bool):
                kind = row.get("EntityType")
                when = row.get("DeletedDate")
                records.setdefault(entity_key.lower(), []).append(
                    (
                        kind if isinstance(kind, int) else None,
                        stamp,
                        when if isinstance(when, datetime) else None,
                    )
                )
    out: dict[tuple[str, str], Deletion] = {}
    for index, pair in enumerate(pairs):
        try:
            target, raw_key = pair
        except (TypeError, ValueError):
            raise InvalidPage(f"deletion {index} must be an (entity, key) pair") from None
        if not isinstance(target, Entity):
            raise InvalidPage(f"deletion {index}: {target!r:.60} is not a catalog entity")
        try:
            key = normalise_key(key_type(target), raw_key, from_text=True)
        except BadValue as exc:
            raise InvalidPage(
                f"deletion {index} of {target.name}: key must be {exc}, got {raw_key!r:.60}"
            ) from None
        text = str(key)  # the tombstone's key: what both dialects compare as text
        matches = [
            (stamp, when)
            for kind, stamp, when in records.get(text.lower(), ())
            if kind is None or target.deleted_entity_type is None or kind == target.deleted_entity_type
        ]
        if matches:
            stamp, when = max(matches, key=lambda match: match[0])
        elif cursor.timestamp is not None:
            stamp, when = cursor.timestamp, None
        else:
            raise InvalidPage(
                f"deletion {index} of {target.name} {text}: no Timestamp (no sync/Deleted record for it "
                "in the page and no cursor.timestamp)"
            )
        slot = (target.name, text)
        existing = out.get(slot)
        if existing is None or stamp >= existing.timestamp:
            out[slot] = Deletion(target, key, text, stamp, when)
    return list(out.values())


# --- value encoders ---------------------------------------------------------------------------


def _guid(value: Any) -> Any:
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise BadValue("a GUID string")


def _str(value: Any) -> Any:
    if isinstance(value, str):
        return value
    raise BadValue("a string")


def _int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise BadValue("an integer")


def _float(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise BadValue("a finite number")


def _bool_sqlite(value: Any) -> Any:
    if isinstance(value, bool):
        return 1 if value else 0
    raise BadValue("a bool")


def _bool_json(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    raise BadValue("a bool")


def utc_millis(value: Any) -> datetime:
    """An aware datetime in UTC, cut to Exact's millisecond precision."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise BadValue("a timezone-aware datetime")
    moment: datetime = value if value.tzinfo is UTC else value.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def sqlite_time(value: Any) -> str:
    """ISO-8601 UTC with a Z: sorts as text, and SQLite's date functions read it."""
    return utc_millis(value).isoformat(timespec="milliseconds")[:-6] + "Z"


def json_time(value: Any) -> str:
    """Naive UTC text: what OPENJSON converts to DATETIME2(3) without a style number."""
    return utc_millis(value).replace(tzinfo=None).isoformat(timespec="milliseconds")


_ENCODERS: dict[ValueForm, dict[FieldType, Encoder]] = {
    "sqlite": {
        "guid": _guid,
        "str": _str,
        "int": _int,
        "int64": _int,
        "decimal": _float,
        "bool": _bool_sqlite,
        "datetime": sqlite_time,
    },
    "json": {
        "guid": _guid,
        "str": _str,
        "int": _int,
        "int64": _int,
        "decimal": _float,
        "bool": _bool_json,
        "datetime": json_time,
    },
}


def checked_time(value: Any, what: str) -> datetime:
    """``utc_millis`` for a bookkeeping time (cursor, failed step); ``InvalidPage`` naming ``what``."""
    try:
        return utc_millis(value)
    except BadValue:
        raise InvalidPage(f"{what} must be a timezone-aware datetime") from None


def cursor_time(cursor: Cursor, now: datetime) -> datetime:
    """When the cursor is recorded as written: its own ``updated_at`` (checked), else ``now``."""
    return now if cursor.updated_at is None else checked_time(cursor.updated_at, "cursor.updated_at")


def encode_rows(form: ValueForm, entity: Entity, names: Sequence[str], page: Page) -> list[list[Any]]:
    """Each kept row's values for ``names`` (catalog fields), in storage form; raise ``InvalidPage``."""
    plan = [(name, _ENCODERS[form][entity.field(name).type]) for name in names]
    out: list[list[Any]] = []
    for row, key in zip(page.rows, page.keys, strict=True):
        values: list[Any] = []
        for name, encode in plan:
            value = row.get(name)
            if value is None:
                values.append(None)
                continue
            try:
                values.append(encode(value))
            except BadValue as exc:
                raise InvalidPage(
                    f"{entity.name} {entity.key} {key}: {name} must be {exc}, got {type(value).__name__}"
                ) from None
        out.append(values)
    return out


def decode_rows(
    entity: Entity, rows: Sequence[Sequence[Any]], decoders: Mapping[FieldType, Decoder]
) -> list[dict[str, Any]]:
    """Stored rows (the catalog's fields, in order) back in the forms ``shared.exact.convert`` gives."""
    plan = [(f.name, decoders[f.type]) for f in entity.fields]
    return [
        {
            name: (None if value is None else decode(value))
            for (name, decode), value in zip(plan, row, strict=True)
        }
        for row in rows
    ]
