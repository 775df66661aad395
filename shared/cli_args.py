"""``argparse`` value types the ``exactsync`` subcommands share (stdlib only: ``--help`` stays instant)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

_Number = TypeVar("_Number", int, float)


def _positive(text: str, parse: Callable[[str], _Number], kind: str) -> _Number:
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected {kind} above 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (worker counts, division codes)."""
    return _positive(text, int, "a whole number")


def positive_float(text: str) -> float:
    """A number > 0 (a time scale)."""
    return _positive(text, float, "a number")
