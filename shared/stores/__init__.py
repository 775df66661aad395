"""Where token records and single-use nonces live (Key Vault / blobs in Azure, files locally).

Import the concrete stores from their modules; the factories pick one from ``Settings``.
"""

from shared.stores.base import InvalidConnectionName, TokenStore, TokenStoreError, validate_connection_name
from shared.stores.factory import make_token_store
from shared.stores.nonces import NonceStore, make_nonce_store

__all__ = [
    "InvalidConnectionName",
    "NonceStore",
    "TokenStore",
    "TokenStoreError",
    "make_nonce_store",
    "make_token_store",
    "validate_connection_name",
]
