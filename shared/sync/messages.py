"""Load-step messages: the only thing that travels on the load queue.

A message names *what* to load (connection, division, entity), *how* (``full`` re-reads from the
start, ``incremental`` continues from the stored cursor) and *where the sender thought the load
stood* (``cursor``). The loader never trusts that cursor: it reads the real one from the
warehouse, in the same database the pages are committed to, so a redelivered or duplicated
message cannot load a page twice or skip one. The message cursor is there for people reading
the queue and to tell a run's first step (no cursor) from its continuations.

Messages come from our own planner, webhook and HTTP services, but the queue is shared storage:
anything could land on it. ``parse_step`` therefore checks every field strictly and rejects with
one clear reason. Reasons never echo long values, and a message has no field that could carry a
secret (no tokens, no credentials; a ``next_url`` with credentials in it is refused).

Schema (version 1), UTF-8 JSON, at most 32 KiB::

    {"schema_version": 1, "connection": "acme-nl", "division": 123456, "entity": "Accounts",
     "mode": "incremental", "cursor": null | {"timestamp": 123, "next_url": "https://…"},
     "run_id": "3f0c…", "requested_at": 1767225600.0}
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from shared.errors import ExactSyncError

SCHEMA_VERSION = 1
#: Azure Storage queues take 64 KiB of base64 text, i.e. 48 KiB of payload; stay well inside.
MAX_MESSAGE_BYTES = 32 * 1024
#: Exact's own limit on URL length.
MAX_URL_LENGTH = 6000
MAX_DIVISION = 2**31 - 1
MAX_TIMESTAMP = 2**63 - 1
#: The pseudo-entity of ``sync/Deleted``: one step per division applies every entity's deletions.
DELETED_ENTITY = "Deleted"

Mode = Literal["full", "incremental"]
MODES: tuple[Mode, ...] = ("full", "incremental")

_FIELDS = ("schema_version", "connection", "division", "entity", "mode", "cursor", "run_id", "requested_at")
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Query parameters that would mean someone put a credential into a URL.
_SECRET_PARAMS = frozenset(
    {"access_token", "refresh_token", "client_secret", "code", "token", "password", "sig", "signature"}
)


class InvalidStep(ExactSyncError):
    """A load-step message that cannot be run; ``reason`` is safe to log and to store."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid load-step message: {reason}")


@dataclass(frozen=True)
class StepCursor:
    """Where the sender believed the load stood: the last committed ``Timestamp`` and/or the
    ``__next`` link Exact gave for the page after it."""

    timestamp: int | None = None
    next_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp, "next_url": self.next_url}


@dataclass(frozen=True)
class LoadStep:
    connection: str
    division: int
    entity: str
    mode: Mode
    run_id: str
    cursor: StepCursor | None = None
    requested_at: float = 0.0
    schema_version: int = field(default=SCHEMA_VERSION)

    @property
    def key(self) -> tuple[str, int, str]:
        """What must never be loaded by two steps at once."""
        return (self.connection, self.division, self.entity)

    @property
    def is_continuation(self) -> bool:
        return self.cursor is not None

    def describe(self) -> str:
        return f"{self.connection}/{self.division}/{self.entity} ({self.mode}, run {self.run_id})"

    def continued(self, cursor: StepCursor) -> LoadStep:
        """The message that picks this run up where it stopped."""
        return replace(self, cursor=cursor)

    def to_json(self) -> str:
        document = {
            "schema_version": self.schema_version,
            "connection": self.connection,
            "division": self.division,
            "entity": self.entity,
            "mode": self.mode,
            "cursor": None if self.cursor is None else self.cursor.to_json(),
            "run_id": self.run_id,
            "requested_at": self.requested_at,
        }
        return json.dumps(document, separators=(",", ":"))

    def to_bytes(self) -> bytes:
        return self.to_json().encode("utf-8")


def new_run_id() -> str:
    return uuid.uuid4().hex


def make_step(
    *,
    connection: str,
    division: int,
    entity: str,
    mode: Mode = "incremental",
    run_id: str | None = None,
    requested_at: float = 0.0,
) -> LoadStep:
    """A run's first step, validated like a received message (so a sender fails early)."""
    step = LoadStep(
        connection=connection,
        division=division,
        entity=entity,
        mode=mode,
        run_id=run_id or new_run_id(),
        requested_at=requested_at,
    )
    return parse_step(step.to_bytes())


def known_entities() -> tuple[str, ...]:
    from shared.exact.catalog import CATALOG

    return (*(e.name for e in CATALOG), DELETED_ENTITY)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A short rendering of a rejected enum-like value; long values are not echoed (they could
    be anything, even a token pasted into the wrong field)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 24 else f"a {len(value)}-character string"
    return f"a JSON {_json_type(value)}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _check_next_url(url: Any, division: int) -> str:
    if not isinstance(url, str):
        raise InvalidStep(f"cursor.next_url must be a string or null, got a JSON {_json_type(url)}")
    if not url or len(url) > MAX_URL_LENGTH:
        raise InvalidStep(f"cursor.next_url must be 1-{MAX_URL_LENGTH} characters, got {len(url)}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidStep("cursor.next_url is not a valid URL") from None
    del port
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidStep("cursor.next_url must be an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidStep("cursor.next_url must not carry credentials")
    if parts.fragment:
        raise InvalidStep("cursor.next_url must not have a #fragment")
    if not parts.path.startswith(f"/api/v1/{division}/"):
        raise InvalidStep(
            f"cursor.next_url must be an Exact API URL of division {division} (/api/v1/{division}/…)"
        )
    names = {name.lower() for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    if names & _SECRET_PARAMS:
        raise InvalidStep("cursor.next_url must not carry credentials in its query string")
    return url


def _check_cursor(raw: Any, division: int) -> StepCursor | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidStep(f"cursor must be null or an object, got a JSON {_json_type(raw)}")
    unknown = sorted(set(raw) - {"timestamp", "next_url"})
    if unknown:
        raise InvalidStep(f"cursor has unknown field(s): {', '.join(map(repr, unknown[:5]))[:120]}")
    timestamp = raw.get("timestamp")
    next_url = raw.get("next_url")
    if timestamp is not None and (not _is_int(timestamp) or not 0 <= timestamp <= MAX_TIMESTAMP):
        raise InvalidStep("cursor.timestamp must be a whole number from 0 to 2^63-1, or null")
    if next_url is not None:
        next_url = _check_next_url(next_url, division)
    if timestamp is None and next_url is None:
        raise InvalidStep("cursor must hold a timestamp or a next_url (use null for no cursor)")
    return StepCursor(timestamp=timestamp, next_url=next_url)


def _document(body: bytes | str) -> dict[str, Any]:
    """The body as a JSON object with exactly the schema's field names."""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    if len(body) > MAX_MESSAGE_BYTES:
        raise InvalidStep(f"message is {len(body)} bytes; a load step is at most {MAX_MESSAGE_BYTES}")
    if not body.strip():
        raise InvalidStep("message is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidStep(
            "message is not UTF-8 text (a base64 body decoded twice, or not a load step at all)"
        ) from None
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise InvalidStep(f"message is not JSON{where}; is it still base64-encoded?") from None
    if not isinstance(document, dict):
        raise InvalidStep(f"message must be a JSON object, got a JSON {_json_type(document)}")
    unknown = sorted(set(document) - set(_FIELDS))
    if unknown:
        listed = ", ".join(repr(k) if len(k) <= 24 else f"a {len(k)}-character name" for k in unknown[:5])
        raise InvalidStep(f"unknown field(s): {listed}")
    missing = [name for name in _FIELDS if name not in document and name != "cursor"]
    if missing:
        raise InvalidStep(f"missing field(s): {', '.join(missing)}")
    return document


def _check_version(version: Any) -> int:
    if not _is_int(version):
        raise InvalidStep(f"schema_version must be a whole number, got {_shown(version)}")
    if version != SCHEMA_VERSION:
        raise InvalidStep(f"unsupported schema_version {version} (this loader reads {SCHEMA_VERSION})")
    return int(version)


def _check_connection(connection: Any) -> str:
    from shared.stores.base import is_connection_name

    if not isinstance(connection, str) or not is_connection_name(connection):
        raise InvalidStep(
            "connection must be a connection name (1-40 characters: lowercase letters, digits, '-')"
        )
    return connection


def _check_division(division: Any) -> int:
    if not _is_int(division) or not 1 <= division <= MAX_DIVISION:
        raise InvalidStep(f"division must be a whole number from 1 to {MAX_DIVISION}, got {_shown(division)}")
    return int(division)


def _check_entity(entity: Any) -> str:
    names = known_entities()
    if entity not in names:
        raise InvalidStep(f"entity {_shown(entity)} is not in the catalog; known: {', '.join(names)}")
    return str(entity)


def _check_mode(mode: Any) -> Mode:
    if mode == "full":
        return "full"
    if mode == "incremental":
        return "incremental"
    raise InvalidStep(f"mode must be 'full' or 'incremental', got {_shown(mode)}")


def _check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise InvalidStep("run_id must be 1-64 characters: letters, digits, '-' or '_'")
    return run_id


def _check_requested_at(requested_at: Any) -> float:
    if (
        isinstance(requested_at, bool)
        or not isinstance(requested_at, int | float)
        or not math.isfinite(requested_at)
        or requested_at < 0
    ):
        raise InvalidStep(f"requested_at must be epoch seconds (a number >= 0), got {_shown(requested_at)}")
    return float(requested_at)


def parse_step(body: bytes | str) -> LoadStep:
    """Validate a message body and return its step; ``InvalidStep`` names the first problem."""
    document = _document(body)
    version = _check_version(document["schema_version"])
    connection = _check_connection(document["connection"])
    division = _check_division(document["division"])
    return LoadStep(
        connection=connection,
        division=division,
        entity=_check_entity(document["entity"]),
        mode=_check_mode(document["mode"]),
        run_id=_check_run_id(document["run_id"]),
        requested_at=_check_requested_at(document["requested_at"]),
        cursor=_check_cursor(document.get("cursor"), division),
        schema_version=version,
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def redacted_excerpt(body: bytes | str, secrets: tuple[str, ...] = (), limit: int = 2000) -> str:
    """What of a rejected message may be stored or logged: the start of its text, with any
    configured secret value and any value under a credential-like key masked."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = text[: limit * 2]
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = re.sub(
        r'("(?:[A-Za-z_]*(?:token|secret|password|code|key|signature|authorization)[A-Za-z_]*)"\s*:\s*)'
        r'"(?:[^"\\]|\\.)*"',
        r'\1"***"',
        text,
        flags=re.IGNORECASE,
    )
    text = re.sub(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+", "Bearer ***", text)
    text = re.sub(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", "***", text)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
