"""Token records as local files: one ``<connection>.json`` per connection.

Used when no Key Vault is configured (local runs, the demo, tests). The file holds live refresh
tokens, so it is created 0600 inside a 0700 directory. A save writes a temporary file in the same
directory, fsyncs it, renames it over the old one and fsyncs the directory: after a crash or power
loss the file is the old record or the new one, never half of each, and a concurrent reader
(another process) always opens a complete file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

from shared.stores.base import TokenStoreError, is_connection_name, validate_connection_name
from shared.tokens import TokenRecord

_SUFFIX = ".json"


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ensure_private_directory(directory: Path) -> None:
    """Create ``directory`` (0700) if needed and tighten it to 0700 when we may."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        os.chmod(directory, 0o700)


def write_private_file_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` by a 0600 file holding ``data``: temp file, fsync, rename, fsync directory."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a umask cannot widen it, but an inherited ACL default might
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


class LocalFileTokenStore:
    """``TokenStore`` over a directory of JSON files (see the module docstring)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def path_for(self, connection: str) -> Path:
        return self.directory / f"{validate_connection_name(connection)}{_SUFFIX}"

    def load(self, connection: str) -> TokenRecord | None:
        path = self.path_for(connection)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TokenStoreError(
                connection, f"cannot read {path}: {exc.strerror or type(exc).__name__}", transient=True
            ) from None
        record = _parse(connection, path, data)
        if record.connection != connection:
            raise TokenStoreError(
                connection, f"{path} holds the record of connection {record.connection!r}; fix or remove it"
            )
        return record

    def save(self, record: TokenRecord) -> None:
        path = self.path_for(record.connection)
        try:
            ensure_private_directory(self.directory)
            write_private_file_atomically(path, record.to_json().encode("utf-8"))
        except OSError as exc:
            raise TokenStoreError(
                record.connection,
                f"cannot write {path}: {exc.strerror or type(exc).__name__}",
                transient=True,
            ) from None

    def list_connections(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = (name[: -len(_SUFFIX)] for name in names if name.endswith(_SUFFIX))
        return sorted(name for name in found if is_connection_name(name))

    def delete(self, connection: str) -> None:
        path = self.path_for(connection)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise TokenStoreError(
                connection, f"cannot delete {path}: {exc.strerror or type(exc).__name__}"
            ) from None
        fsync_directory(self.directory)


def _parse(connection: str, path: Path, data: bytes) -> TokenRecord:
    """Parse a record; a damaged file gets an error naming the file and the damage, not its content."""
    if not data.strip():
        raise TokenStoreError(
            connection, f"{path} is empty (an interrupted write?); re-consent or restore it"
        )
    try:
        return TokenRecord.from_json(data.decode("utf-8"))
    except UnicodeDecodeError:
        problem = "is not UTF-8 text"
    except json.JSONDecodeError as exc:
        problem = f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    except (TypeError, ValueError, KeyError):
        problem = "is not a complete token record (fields missing or of the wrong type)"
    raise TokenStoreError(connection, f"{path} is corrupted: it {problem}; re-consent or restore it")
