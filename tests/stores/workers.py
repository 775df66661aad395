"""Functions run in separate OS processes (multiprocessing 'spawn') by the store tests."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from shared.stores.local_file import LocalFileTokenStore
from tests.stores.records import record


def write_generations(directory: str, connection: str, count: int, pad: int) -> None:
    store = LocalFileTokenStore(directory)
    for generation in range(1, count + 1):
        store.save(record(connection, generation=generation, pad=pad))


def read_until(directory: str, connection: str, stop_file: str, out: str) -> None:
    """Read the record in a tight loop until ``stop_file`` exists; report what was seen."""
    store = LocalFileTokenStore(directory)
    reads = 0
    errors: list[str] = []
    generations: list[int] = []
    while not Path(stop_file).exists():
        try:
            found = store.load(connection)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        reads += 1
        if found is not None:
            ok = found.access_token.startswith(f"AT-SECRET-VALUE-{connection}-{found.generation}")
            if not ok:
                errors.append(f"mixed record at generation {found.generation}")
            generations.append(found.generation)
    Path(out).write_text(json.dumps({"reads": reads, "errors": errors[:5], "generations": generations}))


def claim_nonces(kind: str, location: dict[str, Any], nonces: list[str], barrier: Any, out: str) -> None:
    """Claim every nonce (after all processes are ready); write the ones this process won."""
    from shared.stores.nonces import BlobNonceStore, FileNonceStore, NonceStore

    store: NonceStore
    if kind == "file":
        store = FileNonceStore(location["directory"])
    else:
        from azure.storage.blob import ContainerClient

        store = BlobNonceStore(
            ContainerClient.from_connection_string(location["connection_string"], location["container"])
        )
    expires = time.time() + 600
    barrier.wait(timeout=60)
    won = [nonce for nonce in nonces if store.claim(nonce, expires)]
    Path(out).write_text(json.dumps(won))
