"""A counting token source for the client's unit tests (the clock is ``tests.doubles.clock``).

It replaces an injected dependency (the ``TokenSource`` protocol), not our code: the client,
governor and parsers under test run unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CountingTokens:
    """A ``TokenSource`` handing out ``token-<n>``; a rejection moves to the next number."""

    generation: int = 1
    gets: int = 0
    rejections: list[str] = field(default_factory=list)
    fail_with: Exception | None = None

    @property
    def current(self) -> str:
        return f"token-{self.generation}-abcdefghijklmnop"

    def get_access_token(self, connection: str, *, min_validity: float = 0.0) -> str:
        self.gets += 1
        if self.fail_with is not None:
            raise self.fail_with
        return self.current

    def refresh_after_rejection(self, connection: str, rejected_token: str) -> str:
        self.rejections.append(rejected_token)
        if rejected_token == self.current:
            self.generation += 1
        return self.current
