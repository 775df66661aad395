"""Masking secrets in text: known values, token-looking fields, and a logging filter.

Our own messages are built from public facts, so masking is the second line of defence: it catches
what a provider echoes back (an ``error_description`` quoting the refresh token), what a library
logs (httpx/azure-core request lines), and what a ``--trace`` printer shows. Peers leaked refresh
tokens exactly there (Airbyte #3670/#16836: only *access* tokens were in its filter; dlt: tokens in
traces; ossobv: request bodies in error text), so every value that passes through the OAuth code
is registered here, refresh tokens and codes included, in raw and URL-encoded spelling.

Masking is deliberately greedy: a false positive hides a harmless string, a false negative leaks a
chain.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

MASK = "[REDACTED]"

#: Values shorter than this are not registered: masking "abc" everywhere would shred logs and
#: such a value is no credential anyway.
MIN_SECRET_LENGTH = 6

#: Field names whose values are secret wherever they appear (JSON, form, query, headers).
SECRET_FIELDS = (
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "code",
    "code_verifier",
    "client_assertion",
    "assertion",
    "password",
    "webhook_secret",
    "hashcode",
)
#: ``SECRET_FIELDS`` as compared: field names match case-insensitively.
SECRET_FIELD_NAMES = frozenset(name.lower() for name in SECRET_FIELDS)
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-functions-key", "x-ms-authorization"}
)

_FIELD_ALT = "|".join(re.escape(f) for f in SECRET_FIELDS)
# "field": "value"  /  'field': 'value'
_JSON_FIELD = re.compile(rf"""(?i)(["']?(?:{_FIELD_ALT})["']?\s*[:=]\s*["'])([^"']*)(["'])""")
# field=value in forms and query strings (stops at & or whitespace or quote)
_FORM_FIELD = re.compile(rf"""(?i)(?<![A-Za-z0-9_])((?:{_FIELD_ALT})=)([^&\s"'<>]+)""")
# Authorization: Bearer xxx / Basic xxx
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+([A-Za-z0-9._~+/!%=-]{8,})")


class Redactor:
    """Masks registered secret values and secret-looking fields.

    Thread-safe; remembers the last ``capacity`` registered values (a busy chain registers two
    tokens every ten minutes, so memory stays bounded while every live token is covered).
    """

    def __init__(self, values: Iterable[str] = (), *, capacity: int = 512) -> None:
        self._guard = threading.Lock()
        self._values: deque[str] = deque(maxlen=capacity)
        self._pinned: set[str] = set()
        for value in values:
            self.pin(value)

    def pin(self, value: str | None) -> None:
        """Register a long-lived secret (client secret, webhook secret): never forgotten."""
        for variant in _variants(value):
            with self._guard:
                self._pinned.add(variant)

    def add(self, value: str | None) -> None:
        """Register a short-lived secret (a token, a code, a PKCE verifier)."""
        for variant in _variants(value):
            with self._guard:
                if variant not in self._values:
                    self._values.append(variant)

    def known(self) -> list[str]:
        with self._guard:
            values = set(self._pinned) | set(self._values)
        # longest first, so a token is masked whole before a secret that is a part of it
        return sorted(values, key=len, reverse=True)

    def redact(self, text: str, extra: Iterable[str | None] = ()) -> str:
        """``text`` with every known value (and ``extra`` values) and secret field masked."""
        if not text:
            return text
        values = self.known()
        for value in extra:
            values.extend(_variants(value))
        for value in sorted(set(values), key=len, reverse=True):
            if value in text:
                text = text.replace(value, MASK)
        return redact_fields(text)


def _variants(value: str | None) -> list[str]:
    if not value or len(value) < MIN_SECRET_LENGTH:
        return []
    found = {value, quote(value, safe=""), quote_plus(value, safe=""), quote(value)}
    return [v for v in found if len(v) >= MIN_SECRET_LENGTH]


def redact_fields(text: str) -> str:
    """Mask the values of secret-named fields and credentials after an auth scheme."""
    text = _JSON_FIELD.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    text = _FORM_FIELD.sub(lambda m: m.group(1) + MASK, text)
    return _AUTH_SCHEME.sub(lambda m: m.group(1) + " " + MASK, text)


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Header pairs with credential headers masked (what a trace printer shows)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    shown: list[tuple[str, str]] = []
    for name, value in pairs:
        if name.lower() in SECRET_HEADERS:
            scheme = value.split(" ", 1)[0] if " " in value else ""
            shown.append((name, f"{scheme} {MASK}".strip()))
        else:
            shown.append((name, DEFAULT.redact(value)))
    return shown


def redact_form(
    fields: Mapping[str, str] | Iterable[tuple[str, str]], redactor: Redactor | None = None
) -> list[tuple[str, str]]:
    """Form or query fields with secret fields masked (the token request as a person may see it)."""
    pairs = fields.items() if isinstance(fields, Mapping) else fields
    shown = redactor or DEFAULT
    return [
        (name, MASK if name.lower() in SECRET_FIELD_NAMES else shown.redact(value)) for name, value in pairs
    ]


class RedactingFilter(logging.Filter):
    """A logging filter that formats the message and the exception text, then masks them.

    Attach it to handlers (it then sees every record that reaches them, propagated ones included)
    or to a logger (it then sees only that logger's own records: see ``get_logger``).
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or DEFAULT

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not break logging
            message = str(record.msg)
        record.msg = self.redactor.redact(message)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.redactor.redact(text)
        elif record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        return True


#: The process-wide redactor every OAuth module registers values with.
DEFAULT = Redactor()
_FILTER = RedactingFilter(DEFAULT)


def redact(text: str, extra: Iterable[str | None] = ()) -> str:
    """Mask known secrets (plus ``extra``) and secret fields in ``text``."""
    return DEFAULT.redact(text, extra)


def get_logger(name: str) -> logging.Logger:
    """A logger whose own records always pass through the redacting filter."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def install(*, root: bool = True, loggers: Iterable[str] = ("httpx", "httpcore", "azure")) -> None:
    """Add the redacting filter to the root logger's handlers and to chatty libraries' loggers.

    Idempotent. Called by the runtime when it builds the OAuth components, so a secret that some
    library logs at DEBUG is masked in every handler configured before that.
    """
    if root:
        for handler in logging.getLogger().handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
    for name in loggers:
        get_logger(name)
