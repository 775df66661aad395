"""The Exact Online REST client: one connection's authenticated, rate-governed, paged reads.

Imported on first use only (it imports httpx): ``function_app.py`` never imports it at load.

What it guarantees, and why:

- ``Accept: application/json`` on every request (without it Exact answers Atom XML), one
  ``httpx.Client`` per instance kept alive across pages, redirects never followed (a redirect
  is reported, and the bearer token never travels to a host we did not choose), ``__next``
  links followed only on the configured host.
- The access token comes from the token source (the OAuth area's ``TokenKeeper``) per request.
  A 401 carrying ``WWW-Authenticate: … invalid_token`` triggers ONE
  ``refresh_after_rejection`` and ONE retry; a second 401 is raised. Never a loop: every error
  answer counts toward Exact's 10-errors-an-hour endpoint block.
- Other 4xx answers are raised at once as typed ``ExactApiError`` s (message from the OData
  body, ``Reason`` header): retrying them blindly would get the endpoint blocked.
- 5xx answers and transport failures (connect errors, timeouts, dropped connections: all on
  idempotent GETs) are retried with exponential backoff and jitter, ``max_retries`` times.
- Calls on division URLs go through the ``RateGovernor`` (see ``rate.py``). A 429 is retried
  only after the minutely reset it announced, on Exact's clock (the governor waits for it and
  learns how far our clock is off from each answer's ``Date`` and send time); a 429 without a
  reset header is raised, a daily 429 becomes ``DailyBudgetExhausted``.
- A 2xx body that is not OData JSON (Atom/XML, HTML, empty, truncated) is an
  ``ExactResponseError`` naming the endpoint, status and content type.
- No secret in errors, logs or traces: the Authorization header is never logged, and URLs carry
  no credentials (errors name the endpoint path without its query).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx

from shared.clock import Clock
from shared.exact.catalog import Entity
from shared.exact.catalog import entity as entity_by_name
from shared.exact.convert import timestamp_of
from shared.exact.errors import (
    DailyBudgetExhausted,
    ExactApiError,
    ExactForbidden,
    ExactNotFound,
    ExactRateLimited,
    ExactResponseError,
    ExactServerError,
    ExactTransportError,
    ExactUnauthorized,
)
from shared.exact.odata import error_message, parse_page, parse_single
from shared.exact.rate import RateGovernor, RateSnapshot

log = logging.getLogger(__name__)

#: Exact refuses longer URLs.
MAX_URL_LENGTH = 6000
#: What a first (full) load filters on: the reference says ``Timestamp gt 1L``.
FIRST_TIMESTAMP = 1
_QUERY_SAFE = "$,'()*:/"
#: Long read timeout: a 1000-row page of a big entity can take a while to produce.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=15.0)


class TokenSource(Protocol):
    """What the client needs from the OAuth area (``shared.oauth.keeper.TokenKeeper``)."""

    def get_access_token(self, connection: str, *, min_validity: float = 0.0) -> str: ...

    def refresh_after_rejection(self, connection: str, rejected_token: str) -> str: ...


@dataclass(frozen=True)
class TraceEvent:
    """One HTTP exchange with Exact, for ``--trace`` and tests. Holds no header and no token."""

    method: str
    #: path and query, without scheme and host
    target: str
    division: int | None
    status: int | None
    outcome: str
    attempt: int
    #: clock time when the answer (or failure) arrived, and real seconds the exchange took
    at: float
    elapsed: float
    #: clock time when the request was sent
    sent_at: float = 0.0
    minutely_remaining: int | None = None
    daily_remaining: int | None = None

    def __str__(self) -> str:
        status = self.status if self.status is not None else "---"
        budget = ""
        if self.minutely_remaining is not None or self.daily_remaining is not None:
            budget = f" [minutely left {self.minutely_remaining}, daily left {self.daily_remaining}]"
        return f"exact {self.method} {self.target} -> {status} {self.outcome} in {self.elapsed * 1000:.0f} ms{budget}"


@dataclass(frozen=True)
class Page:
    """One answer's rows (raw API dicts without ``__metadata``) and where the next page is."""

    rows: list[dict[str, Any]]
    next_url: str | None
    #: the division's budget as reported with this page (``None`` for calls without a division)
    rate: RateSnapshot | None
    #: HTTP requests this page took (retries and the 401 refresh-retry included)
    calls: int
    endpoint: str
    division: int | None

    @property
    def has_more(self) -> bool:
        return self.next_url is not None

    def max_timestamp(self) -> int | None:
        """The highest ``Timestamp`` on the page (number or string in the JSON), or ``None``."""
        if not self.rows:
            return None
        return max(timestamp_of(row) for row in self.rows)


def _endpoint(method: str, url: str) -> str:
    return f"{method} {urlsplit(url).path}"


def _target(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class ExactClient:
    """Reads one connection's Exact Online data. Thread-safe for concurrent pages.

    ``tokens`` gives access tokens per connection (``TokenSource``). ``governor`` can be shared
    by the clients of several connections (Exact's budgets are per app and division); without
    one the client makes its own. ``daily_reserve`` sets that own governor's reserve.
    ``on_trace`` receives a ``TraceEvent`` per exchange (no headers, no token); ``event_hooks``
    go to the ``httpx.Client`` (e.g. the OAuth area's redacting ``TracePrinter`` for ``--trace``).
    ``timeout`` is real time; ``clock`` drives every wait (rate limits, backoff).
    """

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        *,
        connection: str,
        clock: Clock,
        transport: httpx.BaseTransport | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 4,
        on_trace: Callable[[TraceEvent], None] | None = None,
        governor: RateGovernor | None = None,
        daily_reserve: int = 0,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        token_min_validity: float = 5.0,
        rng: random.Random | None = None,
        event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.api_root = f"{self.base_url}/api/v1"
        self.tokens = tokens
        self.connection = connection
        self.clock = clock
        self.max_retries = max_retries
        self.on_trace = on_trace
        self.governor = governor if governor is not None else RateGovernor(clock, daily_reserve=daily_reserve)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.token_min_validity = token_min_validity
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._origin = _origin(self.base_url)
        self._http = httpx.Client(
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "exactsync"},
            event_hooks=dict(event_hooks) if event_hooks else None,
        )

    # --- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ExactClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reads -------------------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        """``/api/v1/current/Me``: who consented and their current division (not rate-counted)."""
        url = f"{self.api_root}/current/Me"
        response, _calls, _rate = self._send(url, division=None)
        return parse_single(
            response.content,
            endpoint=_endpoint("GET", url),
            status=response.status_code,
            content_type=response.headers.get("content-type"),
        )

    def divisions(self, division: int) -> list[dict[str, Any]]:
        """Every division the consent lets this app read (``system/Divisions``, all pages)."""
        rows: list[dict[str, Any]] = []
        for page in self.read_full(division, "Divisions"):
            rows.extend(page.rows)
        return rows

    def entity_url(self, division: int, entity: Entity | str, *, since: int | None = None) -> str:
        """The first page's URL of a load: ``sync/…`` from ``since`` (``Timestamp gt {since}L``,
        a first load from 1) for entities with a sync twin, else ``bulk/…`` or the regular path."""
        resolved = _entity(entity)
        if resolved.incremental:
            timestamp = FIRST_TIMESTAMP if since is None else since
            if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
                raise ValueError(f"timestamp must be a non-negative int, got {timestamp!r}")
            return self._url(
                division, resolved.read_path, select=resolved.select, filter=f"Timestamp gt {timestamp}L"
            )
        if since is not None:
            raise ValueError(f"{resolved.name} has no sync endpoint: it cannot be read from a Timestamp")
        return self._url(division, resolved.read_path, select=resolved.select)

    def get_page(
        self,
        division: int,
        path_or_next_url: str,
        *,
        select: str | None = None,
        filter: str | None = None,
        top: int | None = None,
        daily_reserve: int | None = None,
        max_wait: float | None = None,
    ) -> Page:
        """One page: ``path_or_next_url`` is a path under ``/api/v1/{division}/`` (with the
        query options given here) or an absolute ``__next`` URL (options already inside).

        ``daily_reserve`` overrides the governor's reserve for this call (a backfill keeps the
        configured reserve; an incremental sync may use it). ``max_wait`` bounds how long the
        call may wait for the minutely reset before raising ``MinutelyBudgetSpent``.
        """
        if path_or_next_url.lower().startswith(("http://", "https://")):
            if select is not None or filter is not None or top is not None:
                raise ValueError("a __next URL already carries its query options")
            url = self._checked_next(division, path_or_next_url)
        else:
            url = self._url(division, path_or_next_url, select=select, filter=filter, top=top)
        response, calls, rate = self._send(
            url, division=division, daily_reserve=daily_reserve, max_wait=max_wait
        )
        endpoint = _endpoint("GET", url)
        odata = parse_page(
            response.content,
            endpoint=endpoint,
            status=response.status_code,
            content_type=response.headers.get("content-type"),
        )
        next_url = self._checked_next(division, odata.next_url) if odata.next_url else None
        return Page(odata.rows, next_url, rate, calls, endpoint, division)

    def iter_pages(
        self,
        division: int,
        path_or_next_url: str,
        *,
        select: str | None = None,
        filter: str | None = None,
        top: int | None = None,
        daily_reserve: int | None = None,
        max_wait: float | None = None,
    ) -> Iterator[Page]:
        """Pages in order, following ``__next`` one request at a time (Exact pages sequentially)."""
        page = self.get_page(
            division,
            path_or_next_url,
            select=select,
            filter=filter,
            top=top,
            daily_reserve=daily_reserve,
            max_wait=max_wait,
        )
        yield page
        while page.next_url is not None:
            page = self.get_page(division, page.next_url, daily_reserve=daily_reserve, max_wait=max_wait)
            yield page

    def read_since(
        self,
        division: int,
        entity: Entity | str,
        timestamp: int | None = None,
        *,
        daily_reserve: int | None = None,
        max_wait: float | None = None,
    ) -> Iterator[Page]:
        """A sync read: ``sync/…?$select=…&$filter=Timestamp gt {timestamp}L`` and its ``__next``
        pages. ``timestamp=None`` is a first load (``Timestamp gt 1L``)."""
        resolved = _entity(entity)
        if not resolved.incremental:
            raise ValueError(f"{resolved.name} has no sync endpoint; use read_full")
        url = self.entity_url(division, resolved, since=FIRST_TIMESTAMP if timestamp is None else timestamp)
        return self.iter_pages(division, url, daily_reserve=daily_reserve, max_wait=max_wait)

    def read_full(
        self,
        division: int,
        entity: Entity | str,
        *,
        daily_reserve: int | None = None,
        max_wait: float | None = None,
    ) -> Iterator[Page]:
        """Every row of an entity: from ``Timestamp gt 1L`` when it has a sync twin, else its
        ``bulk/…`` or regular endpoint with ``$select``."""
        url = self.entity_url(division, entity)
        return self.iter_pages(division, url, daily_reserve=daily_reserve, max_wait=max_wait)

    # --- rate budget ---------------------------------------------------------------------------

    def rate(self, division: int) -> RateSnapshot:
        return self.governor.snapshot(division)

    # --- internals ---------------------------------------------------------------------------

    def _url(
        self,
        division: int,
        path: str,
        *,
        select: str | None = None,
        filter: str | None = None,
        top: int | None = None,
    ) -> str:
        if isinstance(division, bool) or not isinstance(division, int):
            raise TypeError(f"division must be an int, got {division!r}")
        path = path.strip("/")
        if not path or "?" in path or "#" in path:
            raise ValueError(f"path must be an endpoint path like 'sync/CRM/Accounts', got {path!r}")
        query = []
        if select is not None:
            query.append(f"$select={quote(select, safe=_QUERY_SAFE)}")
        if filter is not None:
            query.append(f"$filter={quote(filter, safe=_QUERY_SAFE)}")
        if top is not None:
            query.append(f"$top={int(top)}")
        url = f"{self.api_root}/{division}/{path}" + ("?" + "&".join(query) if query else "")
        if len(url) > MAX_URL_LENGTH:
            raise ValueError(
                f"URL for {path} is {len(url)} characters; Exact accepts at most {MAX_URL_LENGTH}"
            )
        return url

    def _checked_next(self, division: int, url: str) -> str:
        """A ``__next`` link is followed with our bearer token: only on our host and division."""
        prefix = f"/api/v1/{division}/"
        if _origin(url) != self._origin or not urlsplit(url).path.startswith(prefix):
            raise ExactResponseError(
                f"GET {prefix}…",
                f"__next link points outside {self.base_url}{prefix} ({urlsplit(url).netloc}{urlsplit(url).path})",
            )
        if len(url) > MAX_URL_LENGTH:
            raise ValueError(f"__next URL is {len(url)} characters; Exact accepts at most {MAX_URL_LENGTH}")
        return url

    def _trace(
        self,
        url: str,
        attempts: _Attempts,
        *,
        status: int | None,
        outcome: str,
        rate: RateSnapshot | None = None,
    ) -> None:
        if self.on_trace is None:
            return
        self.on_trace(
            TraceEvent(
                method="GET",
                target=_target(url),
                division=attempts.division,
                status=status,
                outcome=outcome,
                attempt=attempts.calls,
                at=self.clock.now(),
                elapsed=time.perf_counter() - attempts.started,
                sent_at=attempts.sent_at,
                minutely_remaining=rate.minutely_remaining if rate else None,
                daily_remaining=rate.daily_remaining if rate else None,
            )
        )

    def _backoff(self, retry: int) -> float:
        base = min(self.backoff_max, self.backoff_base * (2**retry))
        return float(base * self._rng.uniform(0.5, 1.0))

    def _send(
        self,
        url: str,
        *,
        division: int | None,
        daily_reserve: int | None = None,
        max_wait: float | None = None,
    ) -> tuple[httpx.Response, int, RateSnapshot | None]:
        """GET ``url`` until a 2xx answer, applying the retry rules; returns it with the number
        of requests made and the rate snapshot after the last one."""
        attempts = _Attempts(_endpoint("GET", url), division)
        while True:
            sent = self._request_once(url, attempts, daily_reserve=daily_reserve, max_wait=max_wait)
            if sent is None:
                continue  # no answer; backed off, try again
            response, token = sent
            status = response.status_code
            if division is not None:
                rate = self.governor.record(division, response.headers, status, sent_at=attempts.sent_at)
            else:
                rate = None
                self.governor.observe(response.headers)  # its Date still tells Exact's time
            if 200 <= status < 300:
                self._trace(url, attempts, status=status, outcome="ok", rate=rate)
                return response, attempts.calls, rate
            self._handle_error(url, attempts, response, token, rate)

    def _request_once(
        self, url: str, attempts: _Attempts, *, daily_reserve: int | None, max_wait: float | None
    ) -> tuple[httpx.Response, str] | None:
        """One request under the governor; ``None`` after a transport failure that is retried."""
        division = attempts.division
        if division is not None:
            self.governor.acquire(division, daily_reserve=daily_reserve, max_wait=max_wait)
        try:
            if attempts.renewed is not None:
                token, attempts.renewed = attempts.renewed, None
            else:
                token = self.tokens.get_access_token(self.connection, min_validity=self.token_min_validity)
        except BaseException:
            if division is not None:
                self.governor.release(division, spent=False)
            raise
        attempts.started = time.perf_counter()
        attempts.sent_at = self.clock.now()
        try:
            response = self._http.get(url, headers={"Authorization": f"Bearer {token}"})
        except httpx.TransportError as exc:
            if division is not None:
                self.governor.release(division)
            attempts.calls += 1
            self._trace(url, attempts, status=None, outcome=f"no answer ({type(exc).__name__})")
            if attempts.retries >= self.max_retries:
                cause = f"{type(exc).__name__}: {exc}"[:300]
                raise ExactTransportError(attempts.endpoint, cause, attempts.calls) from None
            self._pause(attempts, type(exc).__name__)
            return None
        except httpx.RequestError as exc:  # e.g. an undecodable content encoding
            if division is not None:
                self.governor.release(division)
            attempts.calls += 1
            raise ExactResponseError(attempts.endpoint, f"{type(exc).__name__}: {exc}"[:300]) from None
        except BaseException:
            if division is not None:
                self.governor.release(division)
            raise
        attempts.calls += 1
        return response, token

    def _pause(self, attempts: _Attempts, what: str) -> None:
        delay = self._backoff(attempts.retries)
        attempts.retries += 1
        log.warning(
            "Exact Online: %s on %s; retry %d/%d in %.1f s",
            what,
            attempts.endpoint,
            attempts.retries,
            self.max_retries,
            delay,
        )
        self.clock.sleep(delay)

    def _handle_error(
        self, url: str, attempts: _Attempts, response: httpx.Response, token: str, rate: RateSnapshot | None
    ) -> None:
        """Raise the typed error of a non-2xx answer, or return when the request may be retried
        (after the one token refresh, a 429's reset, or a 5xx backoff)."""
        status = response.status_code
        endpoint = attempts.endpoint
        content_type = response.headers.get("content-type")
        reason = response.headers.get("Reason")
        if status == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            if not attempts.refreshed and "invalid_token" in challenge:
                self._trace(url, attempts, status=status, outcome="token rejected: refresh once", rate=rate)
                attempts.refreshed = True
                attempts.renewed = self.tokens.refresh_after_rejection(self.connection, token)
                return
            self._trace(url, attempts, status=status, outcome="unauthorized", rate=rate)
            message = error_message(response.content, content_type) or _challenge_text(challenge)
            raise ExactUnauthorized(status, endpoint, message, reason, content_type=content_type)
        if status == 429:
            self._trace(url, attempts, status=status, outcome="rate limited", rate=rate)
            self._check_429(attempts, response, reason)
            attempts.retries += 1
            return  # the governor waits for the announced reset before the retry
        message = error_message(response.content, content_type)
        if status >= 500:
            if attempts.retries < self.max_retries:
                self._trace(url, attempts, status=status, outcome="server error: retry", rate=rate)
                self._pause(attempts, f"HTTP {status}")
                return
            self._trace(url, attempts, status=status, outcome="server error", rate=rate)
            raise ExactServerError(status, endpoint, message, reason, content_type=content_type)
        self._trace(url, attempts, status=status, outcome="error (not retried)", rate=rate)
        if 300 <= status < 400:
            where = urlsplit(response.headers.get("Location", "")).netloc or "?"
            raise ExactResponseError(
                endpoint, f"redirect to {where} not followed", status=status, content_type=content_type
            )
        error_type: type[ExactApiError] = {403: ExactForbidden, 404: ExactNotFound}.get(status, ExactApiError)
        raise error_type(status, endpoint, message, reason, content_type=content_type)

    def _check_429(self, attempts: _Attempts, response: httpx.Response, reason: str | None) -> None:
        """A 429 may be retried only after a reset it announced, within the retry budget."""
        division = attempts.division
        headers = response.headers
        daily_remaining = _header_int(headers, "X-RateLimit-Remaining")
        if division is not None and daily_remaining == 0:
            reset = _header_int(headers, "X-RateLimit-Reset")
            # Exact's midnight, on our clock (as the governor reports resets)
            reset_at = reset / 1000.0 + self.governor.clock_ahead() if reset is not None else None
            raise DailyBudgetExhausted(division, reset_at, 0)
        reset_ms = _header_int(headers, "X-RateLimit-Minutely-Reset")
        detail = error_message(response.content, headers.get("content-type"))
        if division is None or reset_ms is None:
            raise ExactRateLimited(
                attempts.endpoint,
                division,
                None,
                "429 without a minutely reset to wait for; not retried" + (f": {detail}" if detail else ""),
                reason,
            )
        if attempts.retries >= self.max_retries:
            raise ExactRateLimited(
                attempts.endpoint, division, reset_ms / 1000.0, "429 again after retries", reason
            )


@dataclass
class _Attempts:
    """The retry bookkeeping of one logical request."""

    endpoint: str
    division: int | None
    calls: int = 0
    retries: int = 0
    refreshed: bool = False
    renewed: str | None = None
    started: float = 0.0
    sent_at: float = 0.0


def _header_int(headers: httpx.Headers, name: str) -> int | None:
    raw = headers.get(name)
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw.strip())


def _challenge_text(challenge: str) -> str:
    from urllib.parse import unquote_plus

    return unquote_plus(challenge)[:300]


def _entity(entity: Entity | str) -> Entity:
    return entity_by_name(entity) if isinstance(entity, str) else entity
