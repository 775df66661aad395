"""A Key Vault secrets service behind an azure-core ``HttpTransport``, for the real ``SecretClient``.

Key Vault and managed identity cannot run here, so this double sits at the transport boundary:
``SecretClient(vault_url, FakeTokenCredential(), transport=KeyVaultDouble(vault_url))`` runs the
SDK's whole pipeline (challenge authentication, retry policy with Retry-After, serialization,
paging, the delete poller) against an in-memory vault that answers like the REST API
(api-version 7.x / 2025+):

- ``PUT /secrets/{name}`` creates a NEW version every time and answers the secret bundle;
- ``GET /secrets/{name}/`` (latest) and ``/secrets/{name}/{version}``; 404 ``SecretNotFound``;
- ``GET /secrets`` lists the latest attributes of each secret, paged by ``nextLink``;
- ``DELETE /secrets/{name}`` soft-deletes (``recoveryId``); the name is then a 409 ``Conflict`` for
  ``PUT`` until recovered (``POST /deletedsecrets/{name}/recover``) or purged;
- ``refuse_expired_reads=True``: a get of a secret past its ``exp`` answers 403 ``SecretExpired``
  (the documentation's strict reading; the service itself answers such gets);
- the bearer challenge: a request without a valid ``Authorization`` header gets 401 with
  ``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"``, which the SDK's ``ChallengeAuthPolicy`` must answer with a
  token from the credential for ``https://vault.azure.net/.default``.

Faults are injected for the next N requests: ``throttle_next`` (429 + ``Retry-After``; a retry
that comes back before the stated time is throttled again and counted in
``early_retries``), ``fail_next`` (5xx), ``raise_next`` (a ``ServiceRequestError``: the request never
left) and ``lose_next_responses`` (the vault applies the request, then the answer is lost: a
``ServiceResponseError``).

``sleep`` (which azure-core's retry policy and pollers call on the transport) does not block: it
advances the double's own clock and records the duration in ``slept``, so throttling tests take
milliseconds while still proving how long the SDK would have waited.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.core.credentials import AccessToken
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest, HttpResponse
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict

DEFAULT_VAULT_URL = "https://exactsync-test.vault.azure.net"
DEFAULT_TENANT = "72f988bf-0000-4000-8000-2d7cd011db47"
VAULT_RESOURCE = "https://vault.azure.net"
_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
_WRITE_METHODS = frozenset({"PUT", "PATCH", "POST", "DELETE"})
_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
MAX_VALUE_CHARS = 25 * 1024
_Answer = Callable[..., HttpResponse]


class FakeTokenCredential:
    """The managed identity's side: hands out one bearer token and records what was asked."""

    def __init__(self, token: str = "fake-managed-identity-access-token", lifetime: float = 3600) -> None:
        self.token = token
        self.lifetime = lifetime
        self.requests: list[tuple[tuple[str, ...], str | None]] = []

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.requests.append((scopes, tenant_id))
        return AccessToken(self.token, int(time.time() + self.lifetime))


@dataclass
class SecretVersion:
    name: str
    version: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    expires: int | None
    not_before: int | None
    created: int
    updated: int


@dataclass
class RecordedRequest:
    method: str
    path: str
    status: int | str
    authorized: bool
    at: float


@dataclass
class _Fault:
    kind: str  # "throttle" | "status" | "raise" | "lose"
    remaining: int
    status: int = 503
    retry_after: float = 0.0
    writes_only: bool = True


@dataclass
class _Deleted:
    versions: list[SecretVersion]
    deleted_date: int
    visible_after_polls: int


@dataclass
class _State:
    secrets: dict[str, list[SecretVersion]] = field(default_factory=dict)
    deleted: dict[str, _Deleted] = field(default_factory=dict)


class _RawResponse:
    def close(self) -> None:
        pass


class KeyVaultDouble(HttpTransport[HttpRequest, HttpResponse]):
    """An in-memory Key Vault (secrets) answering over azure-core's transport interface."""

    def __init__(
        self,
        vault_url: str = DEFAULT_VAULT_URL,
        *,
        tenant_id: str = DEFAULT_TENANT,
        accepted_token: str = "fake-managed-identity-access-token",
        page_size: int = 25,
        soft_delete: bool = True,
        deletion_polls: int = 1,
        refuse_expired_reads: bool = False,
    ) -> None:
        self.vault_url = vault_url.rstrip("/")
        self.host = urlsplit(self.vault_url).netloc.lower()
        self.tenant_id = tenant_id
        self.accepted_token = accepted_token
        self.page_size = page_size
        self.soft_delete = soft_delete
        self.deletion_polls = deletion_polls
        #: the strict reading of the docs ("operations outside the exp window are disallowed"):
        #: a get of an expired secret answers 403 SecretExpired (the service itself answers 200)
        self.refuse_expired_reads = refuse_expired_reads
        self.requests: list[RecordedRequest] = []
        self.slept: list[float] = []
        self.early_retries = 0
        self._state = _State()
        self._faults: list[_Fault] = []
        self._throttled_until = 0.0
        self._slept_total = 0.0
        self._lock = threading.RLock()

    # --- HttpTransport --------------------------------------------------------------------------

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> KeyVaultDouble:
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def sleep(self, duration: float) -> None:
        with self._lock:
            self.slept.append(duration)
            self._slept_total += duration

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        with self._lock:
            return self._send(request)

    # --- inspection and faults ------------------------------------------------------------------

    def now(self) -> float:
        """The double's clock: real time plus every (skipped) sleep the SDK asked for."""
        return time.time() + self._slept_total

    def versions(self, name: str) -> list[SecretVersion]:
        with self._lock:
            return list(self._state.secrets.get(name.lower(), []))

    def version_count(self, name: str) -> int:
        return len(self.versions(name))

    def latest(self, name: str) -> SecretVersion | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def secret_names(self) -> list[str]:
        with self._lock:
            return sorted(v[-1].name for v in self._state.secrets.values())

    def is_deleted(self, name: str) -> bool:
        with self._lock:
            return name.lower() in self._state.deleted

    def throttle_next(self, n: int, *, retry_after: float = 2.0, writes_only: bool = True) -> None:
        """The next ``n`` matching requests get 429 with ``Retry-After: retry_after``."""
        self._add(_Fault("throttle", n, status=429, retry_after=retry_after, writes_only=writes_only))

    def fail_next(self, n: int, *, status: int = 503, writes_only: bool = True) -> None:
        """The next ``n`` matching requests get ``status`` (a 5xx) without touching the vault."""
        self._add(_Fault("status", n, status=status, writes_only=writes_only))

    def raise_next(self, n: int, *, writes_only: bool = True) -> None:
        """The next ``n`` matching requests never arrive: ``ServiceRequestError``."""
        self._add(_Fault("raise", n, writes_only=writes_only))

    def lose_next_responses(self, n: int, *, writes_only: bool = True) -> None:
        """The next ``n`` matching requests are applied, then their answers are lost."""
        self._add(_Fault("lose", n, writes_only=writes_only))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._throttled_until = 0.0

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and (not fault.writes_only or method in _WRITE_METHODS):
                fault.remaining -= 1
                return fault
        return None

    # --- the service ----------------------------------------------------------------------------

    def _send(self, request: HttpRequest) -> HttpResponse:
        parts = urlsplit(request.url)
        method = request.method.upper()
        if parts.netloc.lower() != self.host:
            raise ServiceRequestError(f"name resolution failed for {parts.netloc}")
        query = parse_qs(parts.query)
        path = parts.path
        authorized = request.headers.get("Authorization") == f"Bearer {self.accepted_token}"

        def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> HttpResponse:
            self.requests.append(RecordedRequest(method, path, status, authorized, time.time()))
            return _response(request, status, body, headers)

        if not authorized:
            return answer(
                401,
                _error("Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."),
                {
                    "WWW-Authenticate": (
                        f'Bearer authorization="https://login.microsoftonline.com/{self.tenant_id}", '
                        f'resource="{VAULT_RESOURCE}"'
                    )
                },
            )
        if "api-version" not in query:
            return answer(400, _error("BadParameter", "The 'api-version' query parameter is missing."))

        is_write = method in _WRITE_METHODS
        if is_write and self.now() < self._throttled_until:
            # Came back before the Retry-After it was given: still throttled.
            self.early_retries += 1
            wait = self._throttled_until - self.now()
            return answer(429, _throttled(), {"Retry-After": str(max(1, round(wait)))})
        fault = self._take_fault(method)
        if fault is not None:
            if fault.kind == "raise":
                self.requests.append(RecordedRequest(method, path, "raised", authorized, time.time()))
                raise ServiceRequestError("connection reset before the request was sent (injected)")
            if fault.kind == "throttle":
                self._throttled_until = self.now() + fault.retry_after
                return answer(429, _throttled(), {"Retry-After": f"{fault.retry_after:g}"})
            if fault.kind == "status":
                return answer(fault.status, _error("InternalServerError", "Transient failure (injected)."))

        response = self._route(method, path, query, request, answer)
        if fault is not None and fault.kind == "lose":
            self.requests[-1].status = f"lost {self.requests[-1].status}"
            raise ServiceResponseError("connection reset while reading the response (injected)")
        return response

    def _route(  # noqa: PLR0911 (one return per REST route)
        self, method: str, path: str, query: dict[str, list[str]], request: HttpRequest, answer: _Answer
    ) -> HttpResponse:
        segments = path.split("/")
        # "/secrets/name/" -> ["", "secrets", "name", ""]
        head = segments[1] if len(segments) > 1 else ""
        rest = segments[2:]
        if head == "secrets":
            if not rest or rest == [""]:
                if method == "GET":
                    return self._list(query, answer)
            elif len(rest) == 1 and method in ("PUT", "DELETE"):
                return (
                    self._set(rest[0], request, answer) if method == "PUT" else self._delete(rest[0], answer)
                )
            elif len(rest) == 2 and method == "GET":
                if rest[1] == "versions":
                    return self._list(query, answer, name=rest[0])
                return self._get(rest[0], rest[1], answer)
        if head == "deletedsecrets" and rest:
            name = rest[0]
            if len(rest) == 1 and method == "GET":
                return self._get_deleted(name, answer)
            if len(rest) == 1 and method == "DELETE":
                return self._purge(name, answer)
            if len(rest) == 2 and rest[1] == "recover" and method == "POST":
                return self._recover(name, answer)
        return answer(400, _error("BadParameter", f"Unsupported {method} {path}"))

    def _set(self, name: str, request: HttpRequest, answer: _Answer) -> HttpResponse:  # noqa: PLR0911
        if not _NAME.match(name):
            return answer(400, _error("BadParameter", "The request URI contains an invalid name: " + name))
        key = name.lower()
        if key in self._state.deleted:
            return answer(
                409,
                _error(
                    "Conflict",
                    f"Secret {name} is currently in a deleted but recoverable state, and its name cannot "
                    "be reused; in this state, the secret can only be recovered or purged.",
                ),
            )
        raw = request.content
        try:
            body = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw or "")
        except ValueError:
            return answer(400, _error("BadParameter", "The request body is not valid JSON."))
        value = body.get("value")
        if not isinstance(value, str):
            return answer(400, _error("BadParameter", "Property 'value' is required."))
        if len(value) > MAX_VALUE_CHARS:
            return answer(400, _error("BadParameter", "Secret value exceeds the maximum size."))
        tags = body.get("tags")
        if tags is not None and (len(tags) > 15 or any(len(str(v)) > 256 for v in tags.values())):
            return answer(400, _error("BadParameter", "Too many tags or a tag value is too long."))
        attributes = body.get("attributes") or {}
        now = int(self.now())
        existing = self._state.secrets.setdefault(key, [])
        stored = SecretVersion(
            name=existing[0].name if existing else name,
            version=uuid.uuid4().hex,
            value=value,
            content_type=body.get("contentType"),
            tags=dict(tags) if tags is not None else None,
            enabled=attributes.get("enabled", True) is not False,
            expires=attributes.get("exp"),
            not_before=attributes.get("nbf"),
            created=now,
            updated=now,
        )
        existing.append(stored)
        return answer(200, self._bundle(stored))

    def _get(self, name: str, version: str, answer: _Answer) -> HttpResponse:
        versions = self._state.secrets.get(name.lower())
        if not versions:
            return answer(404, _not_found(name))
        if version:
            found = next((v for v in versions if v.version == version), None)
            if found is None:
                return answer(
                    404, _error("SecretNotFound", f"A secret with (name/id) {name}/{version} was not found.")
                )
        else:
            found = versions[-1]
        if not found.enabled:
            return answer(403, _error("Forbidden", "Operation get is not allowed on a disabled secret."))
        if self.refuse_expired_reads and found.expires is not None and found.expires <= self.now():
            body = _error("Forbidden", "Operation get is not allowed on an expired secret.")
            body["error"]["innererror"] = {"code": "SecretExpired"}
            return answer(403, body)
        return answer(200, self._bundle(found))

    def _list(self, query: dict[str, list[str]], answer: _Answer, name: str | None = None) -> HttpResponse:
        if name is not None:
            found = self._state.secrets.get(name.lower())
            if not found:
                return answer(404, _not_found(name))
            items = [self._item(v, with_version=True) for v in found]
        else:
            items = [self._item(v[-1]) for _, v in sorted(self._state.secrets.items())]
        size = int(query.get("maxresults", [str(self.page_size)])[0])
        start = int(query.get("$skiptoken", ["0"])[0])
        page = items[start : start + size]
        body: dict[str, Any] = {"value": page, "nextLink": None}
        if start + size < len(items):
            base = f"{self.vault_url}/secrets" + (f"/{name}/versions" if name else "")
            body["nextLink"] = f"{base}?api-version=7.6&$skiptoken={start + size}&maxresults={size}"
        return answer(200, body)

    def _delete(self, name: str, answer: _Answer) -> HttpResponse:
        key = name.lower()
        versions = self._state.secrets.pop(key, None)
        if not versions:
            return answer(404, _not_found(name))
        body = self._bundle(versions[-1])
        if self.soft_delete:
            now = int(self.now())
            self._state.deleted[key] = _Deleted(versions, now, self.deletion_polls)
            body.update(self._deleted_fields(versions[-1].name, now))
        return answer(200, body)

    def _get_deleted(self, name: str, answer: _Answer) -> HttpResponse:
        entry = self._state.deleted.get(name.lower())
        if entry is None:
            return answer(404, _error("SecretNotFound", f"Deleted Secret not found: {name}"))
        if entry.visible_after_polls > 0:  # deletion still in progress
            entry.visible_after_polls -= 1
            return answer(404, _error("SecretNotFound", f"Deleted Secret not found: {name}"))
        body = self._bundle(entry.versions[-1])
        body.update(self._deleted_fields(entry.versions[-1].name, entry.deleted_date))
        return answer(200, body)

    def _recover(self, name: str, answer: _Answer) -> HttpResponse:
        key = name.lower()
        entry = self._state.deleted.get(key)
        if entry is None or entry.visible_after_polls > 0:
            return answer(404, _error("SecretNotFound", f"Deleted Secret not found: {name}"))
        del self._state.deleted[key]
        self._state.secrets[key] = entry.versions
        return answer(200, self._bundle(entry.versions[-1]))

    def _purge(self, name: str, answer: _Answer) -> HttpResponse:
        if self._state.deleted.pop(name.lower(), None) is None:
            return answer(404, _error("SecretNotFound", f"Deleted Secret not found: {name}"))
        return answer(204)

    def _attributes(self, v: SecretVersion) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.updated,
            "recoveryLevel": "Recoverable+Purgeable" if self.soft_delete else "Purgeable",
            "recoverableDays": 90 if self.soft_delete else 0,
        }
        if v.expires is not None:
            attributes["exp"] = v.expires
        if v.not_before is not None:
            attributes["nbf"] = v.not_before
        return attributes

    def _bundle(self, v: SecretVersion) -> dict[str, Any]:
        return {"value": v.value, **self._item(v, with_version=True)}

    def _item(self, v: SecretVersion, *, with_version: bool = False) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": f"{self.vault_url}/secrets/{v.name}" + (f"/{v.version}" if with_version else ""),
            "attributes": self._attributes(v),
        }
        if v.content_type is not None:
            item["contentType"] = v.content_type
        if v.tags is not None:
            item["tags"] = v.tags
        return item

    def _deleted_fields(self, name: str, deleted_date: int) -> dict[str, Any]:
        return {
            "recoveryId": f"{self.vault_url}/deletedsecrets/{name}",
            "deletedDate": deleted_date,
            "scheduledPurgeDate": deleted_date + 90 * 86400,
        }


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _not_found(name: str) -> dict[str, Any]:
    return _error("SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")


def _throttled() -> dict[str, Any]:
    return _error("Throttled", "Request was not processed because too many requests were received.")


def _response(request: HttpRequest, status: int, body: Any, headers: dict[str, str] | None) -> HttpResponse:
    data = b"" if body is None else json.dumps(body).encode("utf-8")
    all_headers = case_insensitive_dict(
        {
            "Content-Type": "application/json; charset=utf-8",
            "Content-Length": str(len(data)),
            "x-ms-request-id": str(uuid.uuid4()),
            "x-ms-keyvault-service-version": "1.9.0.0",
        }
    )
    all_headers.update(headers or {})

    def download(**_: Any) -> Iterator[bytes]:
        yield data

    response = HttpResponseImpl(
        request=request,
        internal_response=_RawResponse(),
        status_code=status,
        reason=_REASONS.get(status, "Unknown"),
        content_type=all_headers.get("Content-Type"),
        headers=all_headers,
        stream_download_generator=download,
    )
    response._content = data
    return response
