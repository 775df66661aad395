"""Pick the token store the settings ask for: Key Vault when ``KEY_VAULT_URL`` is set, else files."""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING

from shared.clock import Clock
from shared.settings import Settings
from shared.stores.base import TokenStore

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

_guard = threading.Lock()


@functools.lru_cache(maxsize=4)
def _default_credential(managed_identity_client_id: str | None) -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=managed_identity_client_id)


def key_vault_credential(settings: Settings) -> TokenCredential:
    """DefaultAzureCredential (the app's user-assigned identity in Azure, ``az login`` locally),
    created once per process so its token cache is shared."""
    with _guard:
        return _default_credential(settings.azure_client_id)


def make_token_store(settings: Settings, clock: Clock | None = None) -> TokenStore:
    """The configured ``TokenStore``. Builds no Azure client yet (that happens on first use).

    ``clock`` stamps the Key Vault ``written-at`` tag (simulated time in tests); the file store
    needs none.
    """
    if settings.key_vault_url:
        from shared.stores.keyvault import KeyVaultTokenStore

        return KeyVaultTokenStore(settings.key_vault_url, key_vault_credential(settings), clock=clock)
    from shared.stores.local_file import LocalFileTokenStore

    return LocalFileTokenStore(settings.home / "tokens")
