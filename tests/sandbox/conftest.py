"""Helpers for the sandbox's own tests: a plain httpx client and an authorised API caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from shared.sandbox.server import SandboxHandle
from tests.fixtures.sandbox import obtain_tokens

#: the ``sandbox_factory`` fixture's type
Factory = Callable[..., SandboxHandle]


class Api:
    """Calls one sandbox's REST API with a bearer token, as a client would."""

    def __init__(self, handle: SandboxHandle, http: httpx.Client, tokens: dict[str, Any]) -> None:
        self.handle = handle
        self.http = http
        self.tokens = tokens
        self.division = handle.divisions[0]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}

    def get(self, path: str, params: dict[str, str] | None = None, *, json: bool = True, division: int | None = None,
            headers: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
        """GET ``/api/v1/{division}/{path}``; ``path`` may also be an absolute ``__next`` URL."""
        url = (
            path
            if path.startswith("http")
            else f"{self.handle.base_url}/api/v1/{division or self.division}/{path}"
        )
        merged = {**self.auth, **({"Accept": "application/json"} if json else {}), **(headers or {})}
        return self.http.get(url, params=params, headers=merged)

    def me(self) -> httpx.Response:
        return self.http.get(
            f"{self.handle.base_url}/api/v1/current/Me", headers={**self.auth, "Accept": "application/json"}
        )

    def admin(self, method: str, name: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        answer = self.http.request(
            method, f"{self.handle.admin_url}/{name}", json=body, params=params or None
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def sync_all(
        self, path: str, select: str, after: int = 1, division: int | None = None
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        answer = self.get(path, {"$select": select, "$filter": f"Timestamp gt {after}L"}, division=division)
        while True:
            assert answer.status_code == 200, answer.text
            d = answer.json()["d"]
            rows.extend(d["results"])
            if not d.get("__next"):
                return rows
            answer = self.get(d["__next"])


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture
def api(sandbox: SandboxHandle, http: httpx.Client) -> Api:
    return Api(sandbox, http, obtain_tokens(sandbox, http))


def error_text(answer: httpx.Response) -> str:
    """The message of an OData JSON error body (asserting its exact shape)."""
    body = answer.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == ""
    assert body["error"]["message"]["lang"] == ""
    text: str = body["error"]["message"]["value"]
    return text
