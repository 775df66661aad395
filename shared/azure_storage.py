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
from typing import TYPE_CHECKING, Any, TypeVar

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

    return _service_client(BlobServiceClient, settings, settings.storage_blob_url, "blob", options)


def queue_service_client(settings: Settings, **options: Any) -> QueueServiceClient:
    """A ``QueueServiceClient``; ``options`` go to the SDK (e.g. ``message_encode_policy``)."""
    from azure.storage.queue import QueueServiceClient

    return _service_client(QueueServiceClient, settings, settings.storage_queue_url, "queue", options)


_Client = TypeVar("_Client", "BlobServiceClient", "QueueServiceClient")


def _service_client(
    client_type: type[_Client],
    settings: Settings,
    service_url: str | None,
    kind: str,
    options: dict[str, Any],
) -> _Client:
    """The connection string when there is one, else the service URL with the storage credential."""
    if settings.storage_connection_string:
        return client_type.from_connection_string(settings.storage_connection_string, **options)
    if service_url:
        return client_type(service_url, credential=storage_credential(settings), **options)
    raise ConfigError(
        f"no {kind} storage configured: set AzureWebJobsStorage (connection string) or "
        f"AzureWebJobsStorage__{kind}ServiceUri"
    )


def container_client(settings: Settings, container: str, **options: Any) -> ContainerClient:
    """A ``ContainerClient`` for ``container`` in the app's storage account."""
    return blob_service_client(settings, **options).get_container_client(container)
