"""Errors shared across areas.

Every error type that can reach a trigger or the CLI derives from ``ExactSyncError`` so the
edges can turn it into a clear message (and a status code) without a stack trace. Messages
must never contain secret values: callers build them from names and public facts only.
"""

from __future__ import annotations


class ExactSyncError(Exception):
    """Base for every error exactsync raises on purpose."""


class ConfigError(ExactSyncError):
    """A setting is missing or malformed; the message names the setting."""
