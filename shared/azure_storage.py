"""Blob and Queue service clients for the app's storage account, built from ``Settings``.

Three ways in, checked in this order (the same settings the Functions host reads, so the queue
trigger and our code always talk to the same account):

1. ``AzureWebJobsStorage`` holds a connection string: Azurite's ``UseDevelopmentStorage=true`` or
   a full ``DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...`` / ``BlobEndpoint=...``.
2. ``AzureWebJobsStorage__blobServiceUri`` / ``__queueServiceUri`` with a token credential: the
   user-assigned managed identity named by ``AzureWebJobsStorage__clientId`` when set, else
   ``DefaultAzureCredential`` (``az login``, environment credentials, a system identity).

The Azure SDKs are imported inside the functions (cold start), and a credential is created once
per process and client id, so its token cache is shared by every client.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

from shared.errors import ConfigError
from shared.settings import Settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import BlobServiceClient, ContainerClient
    from azure.storage.queue import QueueServiceClient

_credential_guard = threading.Lock()


@functools.lru_cache(maxsize=4)
def _credential(client_id: str | None) -> TokenCredential:
    if client_id:
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client_id)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def storage_credential(settings: Settings) -> TokenCredential:
    """The token credential for the storage account (one per process and client id)."""
    with _credential_guard:
        return _credential(settings.storage_client_id)


def blob_service_client(settings: Settings, **options: Any) -> BlobServiceClient:
    """A ``BlobServiceClient``; ``options`` go to the SDK (retry and timeout settings)."""
    from azure.storage.blob import BlobServiceClient

    if settings.storage_connection_string:
        return BlobServiceClient.from_connection_string(settings.storage_connection_string, **options)
    if settings.storage_blob_url:
        return BlobServiceClient(
            settings.storage_blob_url, credential=storage_credential(settings), **options
        )
    raise ConfigError(
        "no blob storage configured: set AzureWebJobsStorage (connection string) or "
        "AzureWebJobsStorage__blobServiceUri"
    )


def queue_service_client(settings: Settings, **options: Any) -> QueueServiceClient:
    """A ``QueueServiceClient``; ``options`` go to the SDK (e.g. ``message_encode_policy``)."""
    from azure.storage.queue import QueueServiceClient

    if settings.storage_connection_string:
        return QueueServiceClient.from_connection_string(settings.storage_connection_string, **options)
    if settings.storage_queue_url:
        return QueueServiceClient(
            settings.storage_queue_url, credential=storage_credential(settings), **options
        )
    raise ConfigError(
        "no queue storage configured: set AzureWebJobsStorage (connection string) or "
        "AzureWebJobsStorage__queueServiceUri"
    )


def container_client(settings: Settings, container: str, **options: Any) -> ContainerClient:
    """A ``ContainerClient`` for ``container`` in the app's storage account."""
    return blob_service_client(settings, **options).get_container_client(container)
