"""Pick the token store the settings ask for: Key Vault when ``KEY_VAULT_URL`` is set, else files."""

from __future__ import annotations

from shared.clock import Clock
from shared.settings import Settings
from shared.stores.base import TokenStore


def make_token_store(settings: Settings, clock: Clock | None = None) -> TokenStore:
    """The configured ``TokenStore``. Builds no Azure client yet (that happens on first use).

    ``clock`` stamps the Key Vault ``written-at`` tag (simulated time in tests); the file store
    needs none.
    """
    if settings.key_vault_url:
        from shared.credentials import app_credential
        from shared.stores.keyvault import KeyVaultTokenStore

        return KeyVaultTokenStore(
            settings.key_vault_url, app_credential(settings.azure_client_id), clock=clock
        )
    from shared.stores.local_file import LocalFileTokenStore

    return LocalFileTokenStore(settings.home / "tokens")
