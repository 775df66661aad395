"""Exact's ``/Date(ms)/``: epoch milliseconds of the Europe/Amsterdam *wall clock*, not UTC.

Exact writes a moment as the Dutch local time read as if it were UTC, so a client has to map it
back through the Amsterdam zone. The sandbox does the forward mapping with ``zoneinfo``; the
offset is cached per UTC hour because daylight-saving switches happen on whole hours.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
#: UTC hour -> Amsterdam offset in seconds, filled on first use (generators read it inline)
OFFSET_BY_HOUR: dict[int, int] = {}


def _offset_seconds(hour: int) -> int:
    offset = OFFSET_BY_HOUR.get(hour)
    if offset is None:
        moment = datetime.fromtimestamp(hour * 3600, AMSTERDAM).utcoffset()
        offset = int(moment.total_seconds()) if moment is not None else 0
        OFFSET_BY_HOUR[hour] = offset
    return offset


def wall_ms(utc_seconds: float) -> int:
    """The ``/Date(…)/`` number Exact sends for the UTC instant ``utc_seconds``."""
    return int((utc_seconds + _offset_seconds(int(utc_seconds // 3600))) * 1000)


def date_text(ms: int) -> str:
    """The JSON form Exact sends: ``/Date(ms)/``. Rows hold dates in this form, ready to render."""
    return f"/Date({ms})/"


def day_text(epoch_day: int) -> str:
    """A date-only value (midnight, local): the wall-clock date's midnight read as UTC."""
    return f"/Date({epoch_day * 86_400_000})/"


def date_ms(text: str) -> int:
    """``/Date(ms)/`` -> ms (filters and Atom XML need the number back)."""
    return int(text[6:-2])


def wall_iso(ms: int) -> str:
    """Atom XML renders Edm.DateTime as the same wall-clock time without an offset."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text


def parse_datetime_literal(text: str) -> int:
    """``datetime'2024-05-31T00:00:00'``'s inside -> wall-clock ms (compared with ``/Date/`` values)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        raise ValueError("datetime literals carry no offset")
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)
