"""The factories pick the store, lock and nonce store from Settings; Azure parts against Azurite."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from shared import azure_storage
from shared.errors import ConfigError
from shared.locks import make_lock
from shared.locks.blob_lease import BlobLeaseLock
from shared.locks.file_lock import FileLock
from shared.settings import Settings
from shared.stores import make_nonce_store, make_token_store
from shared.stores.keyvault import KeyVaultTokenStore
from shared.stores.local_file import LocalFileTokenStore
from shared.stores.nonces import BlobNonceStore, FileNonceStore
from tests.fixtures.azurite import AzuriteHandle
from tests.stores.records import record


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"EXACTSYNC_HOME": str(tmp_path), "EXACT_BASE_URL": "http://127.0.0.1:9", **env})


def test_local_defaults_use_files_under_home(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = make_token_store(settings)
    assert isinstance(store, LocalFileTokenStore) and store.directory == tmp_path / "tokens"
    store.save(record())
    assert store.load("acme-nl") == record()

    lock = make_lock(settings)
    assert isinstance(lock, FileLock) and lock.directory == tmp_path / "locks"
    with lock.hold("acme-nl", timeout=1):
        pass

    nonces = make_nonce_store(settings)
    assert isinstance(nonces, FileNonceStore) and nonces.directory == tmp_path / "nonces"


def test_key_vault_url_selects_the_key_vault_store(tmp_path: Path) -> None:
    settings = _settings(tmp_path, KEY_VAULT_URL="https://exactsync-kv.vault.azure.net/")
    store = make_token_store(settings)
    assert isinstance(store, KeyVaultTokenStore)
    assert store.client.vault_url == "https://exactsync-kv.vault.azure.net"
    assert store.secret_name("acme-nl") == "exactsync-conn-acme-nl"


@pytest.mark.azurite
def test_storage_connection_string_selects_blob_lease_and_blob_nonces(
    tmp_path: Path, azurite: AzuriteHandle
) -> None:
    container = f"locks-{uuid.uuid4().hex[:10]}"
    settings = _settings(tmp_path, AzureWebJobsStorage=azurite.connection_string, LOCK_CONTAINER=container)
    lock = make_lock(settings, lease_seconds=15)
    assert isinstance(lock, BlobLeaseLock)
    with lock.hold("acme-nl", timeout=5):
        blob = azure_storage.container_client(settings, container).get_blob_client("acme-nl")
        assert blob.get_blob_properties().lease.state == "leased"
    nonces = make_nonce_store(settings)
    assert isinstance(nonces, BlobNonceStore)
    assert nonces.claim("n-1", 4_000_000_000) is True
    assert nonces.claim("n-1", 4_000_000_000) is False


@pytest.mark.azurite
def test_storage_clients_from_connection_string(tmp_path: Path, azurite: AzuriteHandle) -> None:
    settings = _settings(tmp_path, AzureWebJobsStorage=azurite.connection_string)
    blobs = azure_storage.blob_service_client(settings)
    assert blobs.url.rstrip("/") == azurite.blob_url
    queues = azure_storage.queue_service_client(settings)
    queue = queues.create_queue(f"q-{uuid.uuid4().hex[:10]}")
    queue.send_message("hello")
    assert [m.content for m in queue.receive_messages()] == ["hello"]


def test_storage_clients_for_the_emulator_shorthand_and_for_identity(tmp_path: Path) -> None:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    dev = _settings(tmp_path, AzureWebJobsStorage="UseDevelopmentStorage=true")
    assert azure_storage.blob_service_client(dev).url.startswith("http://127.0.0.1:10000/devstoreaccount1")
    assert azure_storage.queue_service_client(dev).url.startswith("http://127.0.0.1:10001/devstoreaccount1")

    with_identity = _settings(
        tmp_path,
        AzureWebJobsStorage__blobServiceUri="https://acct.blob.core.windows.net",
        AzureWebJobsStorage__queueServiceUri="https://acct.queue.core.windows.net",
        AzureWebJobsStorage__clientId="00000000-0000-0000-0000-000000000001",
    )
    blobs = azure_storage.blob_service_client(with_identity)
    assert blobs.url.startswith("https://acct.blob.core.windows.net")
    assert isinstance(blobs.credential, ManagedIdentityCredential)
    queues = azure_storage.queue_service_client(with_identity)
    assert queues.url.startswith("https://acct.queue.core.windows.net")
    assert queues.credential is blobs.credential  # one credential (and token cache) per process

    no_client_id = _settings(
        tmp_path, AzureWebJobsStorage__blobServiceUri="https://acct.blob.core.windows.net"
    )
    assert isinstance(azure_storage.blob_service_client(no_client_id).credential, DefaultAzureCredential)
    with pytest.raises(ConfigError, match="AzureWebJobsStorage__queueServiceUri"):
        azure_storage.queue_service_client(no_client_id)
    with pytest.raises(ConfigError, match="AzureWebJobsStorage"):
        azure_storage.blob_service_client(_settings(tmp_path))
