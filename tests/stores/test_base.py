from __future__ import annotations

import pytest

from shared.errors import ExactSyncError
from shared.stores.base import (
    InvalidConnectionName,
    TokenStoreError,
    is_connection_name,
    validate_connection_name,
)


@pytest.mark.parametrize("name", ["a", "acme-nl", "0", "client-42", "a-", "x" * 40, "a--b"])
def test_valid_names(name: str) -> None:
    assert validate_connection_name(name) == name
    assert is_connection_name(name)


@pytest.mark.parametrize(
    "name", ["", "Acme", "acme_nl", "acme.nl", "-acme", "x" * 41, "a b", "é", "acme/nl", "acme\n"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidConnectionName) as info:
        validate_connection_name(name)
    assert isinstance(info.value, ExactSyncError)
    assert "1-40 characters" in str(info.value)
    assert not is_connection_name(name)


def test_store_error_carries_retry_facts() -> None:
    error = TokenStoreError("acme-nl", "Key Vault answered 429", transient=True, retry_after=7)
    assert isinstance(error, ExactSyncError)
    assert (error.connection, error.transient, error.retry_after) == ("acme-nl", True, 7)
    assert str(error) == "token store, connection 'acme-nl': Key Vault answered 429"
