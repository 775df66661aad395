"""The app's Azure credential, one per process and identity, shared by Key Vault and Azure SQL.

``DefaultAzureCredential`` is the user-assigned managed identity named by ``AZURE_CLIENT_ID`` in
Azure, and ``az login`` or environment credentials on a developer's machine. One instance per
client id means one token cache (azure-identity renews its tokens) for every client that uses it.
azure-identity is imported on first use only (cold start).
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

_guard = threading.Lock()


@functools.lru_cache(maxsize=4)
def _default_credential(client_id: str | None) -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id)


def app_credential(client_id: str | None) -> TokenCredential:
    """The process's one ``DefaultAzureCredential`` for ``client_id`` (``AZURE_CLIENT_ID``)."""
    with _guard:
        return _default_credential(client_id)
