"""The load queue: where load steps wait, locally and in Azure.

Two implementations of one small protocol:

- ``StorageQueue``: an Azure Storage queue (Azurite locally). In Azure the Functions host reads
  it (``load_step``); we only ``send`` there. Messages are base64 text
  (``TextBase64EncodePolicy``) because host.json keeps the host's default ``messageEncoding:
  base64``: a plain-text message would reach the trigger undecodable. Messages never expire
  (``time_to_live=-1``): a backfill continuation delayed to tomorrow's budget must not vanish.
- ``EmbeddedQueue``: a SQLite file in ``EXACTSYNC_HOME``, for ``exactsync sync/serve/demo`` with
  nothing configured. It behaves like the host + Storage pair on purpose: visibility timeouts,
  dequeue counts, at-least-once delivery, and a poison table after ``max_dequeue_count``
  deliveries. Worker processes share it (SQLite ``BEGIN IMMEDIATE`` serializes receivers).

Times are the injected clock's seconds, so a test running on a ``ScaledClock`` lives through a
rate-limit minute or a daily reset in a fraction of real time. The Storage queue counts real
seconds: a delay on a scaled clock is divided by its scale before it is sent.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shared.clock import Clock, SystemClock, clock_scale
from shared.sync.messages import LoadStep

if TYPE_CHECKING:
    import sqlite3

    from azure.storage.queue import QueueClient

    from shared.settings import Settings

#: Azure Storage refuses a visibility timeout beyond 7 days.
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600
#: The host's default and our host.json's ``maxDequeueCount``.
MAX_DEQUEUE_COUNT = 5
#: host.json's ``visibilityTimeout``: a delivery whose function raised comes back this much later.
RETRY_VISIBILITY_SECONDS = 30.0


@dataclass(frozen=True)
class Delivery:
    """One received message. ``receipt`` proves the receiver still owns it (Azure's pop receipt)."""

    id: str
    body: bytes
    dequeue_count: int
    receipt: str
    inserted_at: float | None = None


@dataclass(frozen=True)
class QueueStats:
    visible: int
    #: waiting for their visibility delay (continuations after a rate-limit reset, retries)
    delayed: int
    #: received and not yet completed (invisible for the receiver's lease)
    in_flight: int
    #: when the earliest not-yet-visible message becomes visible (clock seconds), if known
    next_visible_at: float | None
    poisoned: int = 0

    @property
    def total(self) -> int:
        return self.visible + self.delayed + self.in_flight


@dataclass(frozen=True)
class PoisonedMessage:
    id: str
    body: bytes
    dequeue_count: int
    poisoned_at: float


class Queue(Protocol):
    """What the planner, the webhook, the loader (continuations) and the local runner need."""

    name: str

    def send(self, step: LoadStep, *, visibility_timeout: float = 0) -> None:
        """Enqueue ``step``, invisible for ``visibility_timeout`` seconds (capped at 7 days)."""
        ...

    def send_text(self, text: str, *, visibility_timeout: float = 0) -> None:
        """Enqueue a raw body (what any other writer could put on the queue)."""
        ...

    def receive(
        self, *, visibility_timeout: float, divisions: Collection[int] | None = None
    ) -> Delivery | None:
        """The next visible message, now invisible to others for ``visibility_timeout`` seconds.

        ``divisions`` is a preference only the embedded queue can honour (it routes each
        division to one local worker); a Storage queue hands out any message.
        """
        ...

    def complete(self, delivery: Delivery) -> bool:
        """Delete a processed message; False when the receipt is stale (someone else owns it)."""
        ...

    def abandon(self, delivery: Delivery, *, visibility_timeout: float = 0) -> None:
        """Processing failed: visible again after ``visibility_timeout``, or to the poison store
        when this was its last allowed delivery."""
        ...

    def stats(self, *, divisions: Collection[int] | None = None) -> QueueStats: ...

    def poisoned(self) -> list[PoisonedMessage]: ...


def clamp_visibility(seconds: float) -> float:
    return min(max(0.0, float(seconds)), float(MAX_VISIBILITY_SECONDS))


# --- embedded ------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body BLOB NOT NULL,
    division INTEGER,
    visible_at REAL NOT NULL,
    inserted_at REAL NOT NULL,
    dequeue_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    owner_host TEXT,
    owner_pid INTEGER
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (queue, visible_at);
CREATE TABLE IF NOT EXISTS poison (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    body BLOB NOT NULL,
    division INTEGER,
    dequeue_count INTEGER NOT NULL,
    inserted_at REAL NOT NULL,
    poisoned_at REAL NOT NULL
);
"""


_STATS_SQL = (
    "SELECT COALESCE(SUM(visible_at <= ?), 0), COALESCE(SUM(visible_at > ? AND receipt IS NULL), 0), "
    "COALESCE(SUM(visible_at > ? AND receipt IS NOT NULL), 0), "
    "MIN(CASE WHEN visible_at > ? THEN visible_at END) FROM messages WHERE "
)


def _pid_alive(pid: int) -> bool:
    """Whether a local process still runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _division_filter(divisions: Collection[int] | None) -> tuple[str, list[Any]]:
    """The SQL condition (and its parameters) for messages of ``divisions``; messages without a
    known division (raw text) go to whoever asks first."""
    if divisions is None:
        return "", []
    wanted = sorted({int(d) for d in divisions})
    return f" AND (division IS NULL OR division IN ({','.join('?' * len(wanted)) or 'NULL'}))", list(wanted)


class EmbeddedQueue:
    """A load queue in a SQLite file, safe across threads and worker processes."""

    def __init__(
        self,
        path: Path,
        name: str = "load-steps",
        *,
        clock: Clock | None = None,
        max_dequeue_count: int = MAX_DEQUEUE_COUNT,
    ) -> None:
        import socket

        if max_dequeue_count < 1:
            raise ValueError("max_dequeue_count must be at least 1")
        self.path = Path(path)
        self.name = name
        self.clock: Clock = clock or SystemClock()
        self.max_dequeue_count = max_dequeue_count
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._host = socket.gethostname()

    # connection handling: one connection per process (never inherited across fork)
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            import sqlite3

            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
            self._pid = os.getpid()
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def _insert(self, body: bytes, division: int | None, visibility_timeout: float) -> None:
        now = self.clock.now()
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO messages (queue, body, division, visible_at, inserted_at) VALUES (?, ?, ?, ?, ?)",
                (self.name, body, division, now + clamp_visibility(visibility_timeout), now),
            )

    def send(self, step: LoadStep, *, visibility_timeout: float = 0) -> None:
        self._insert(step.to_bytes(), step.division, visibility_timeout)

    def send_text(self, text: str, *, visibility_timeout: float = 0) -> None:
        self._insert(text.encode("utf-8", "surrogatepass"), None, visibility_timeout)

    def _poison(self, conn: sqlite3.Connection, row_id: int, now: float) -> None:
        conn.execute(
            "INSERT INTO poison (id, queue, body, division, dequeue_count, inserted_at, poisoned_at) "
            "SELECT id, queue, body, division, dequeue_count, inserted_at, ? FROM messages WHERE id = ?",
            (now, row_id),
        )
        conn.execute("DELETE FROM messages WHERE id = ?", (row_id,))

    def receive(
        self, *, visibility_timeout: float, divisions: Collection[int] | None = None
    ) -> Delivery | None:
        if divisions is not None and not divisions:
            return None
        now = self.clock.now()
        where, params = _division_filter(divisions)
        where = "queue = ? AND visible_at <= ?" + where
        params = [self.name, now, *params]
        with self._transaction() as conn:
            while True:
                row = conn.execute(
                    f"SELECT id, body, dequeue_count, inserted_at FROM messages WHERE {where} "  # noqa: S608
                    "ORDER BY visible_at, id LIMIT 1",
                    params,
                ).fetchone()
                if row is None:
                    return None
                row_id, body, count, inserted_at = row
                if count >= self.max_dequeue_count:
                    # Delivered as often as allowed and never completed (its receivers died):
                    # what the host does with such a message.
                    self._poison(conn, row_id, now)
                    continue
                receipt = uuid.uuid4().hex
                conn.execute(
                    "UPDATE messages SET visible_at = ?, dequeue_count = dequeue_count + 1, receipt = ?, "
                    "owner_host = ?, owner_pid = ? WHERE id = ?",
                    (now + clamp_visibility(visibility_timeout), receipt, self._host, os.getpid(), row_id),
                )
                return Delivery(str(row_id), bytes(body), count + 1, receipt, inserted_at)

    def complete(self, delivery: Delivery) -> bool:
        with self._transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM messages WHERE id = ? AND receipt = ?", (int(delivery.id), delivery.receipt)
            )
            return cursor.rowcount == 1

    def abandon(self, delivery: Delivery, *, visibility_timeout: float = 0) -> None:
        now = self.clock.now()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT dequeue_count FROM messages WHERE id = ? AND receipt = ?",
                (int(delivery.id), delivery.receipt),
            ).fetchone()
            if row is None:
                return
            if row[0] >= self.max_dequeue_count:
                self._poison(conn, int(delivery.id), now)
                return
            conn.execute(
                "UPDATE messages SET visible_at = ?, receipt = NULL, owner_host = NULL, owner_pid = NULL "
                "WHERE id = ?",
                (now + clamp_visibility(visibility_timeout), int(delivery.id)),
            )

    def reclaim_orphans(self) -> int:
        """Make messages held by dead local processes visible now (a killed worker's step need
        not wait out its lease). Returns how many were reclaimed."""
        now = self.clock.now()
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT id, owner_pid FROM messages WHERE queue = ? AND receipt IS NOT NULL "
                "AND visible_at > ? AND owner_host = ?",
                (self.name, now, self._host),
            ).fetchall()
            dead = [row_id for row_id, pid in rows if pid is not None and not _pid_alive(int(pid))]
            for row_id in dead:
                conn.execute(
                    "UPDATE messages SET visible_at = ?, receipt = NULL, owner_pid = NULL WHERE id = ?",
                    (now, row_id),
                )
            return len(dead)

    def stats(self, *, divisions: Collection[int] | None = None) -> QueueStats:
        now = self.clock.now()
        where, params = _division_filter(divisions)
        where = "queue = ?" + where
        params = [self.name, *params]
        with self._lock:
            conn = self._connection()
            sql = _STATS_SQL + where  # placeholders only: values travel as parameters
            row = conn.execute(sql, [now, now, now, now, *params]).fetchone()
            poisoned = conn.execute("SELECT COUNT(*) FROM poison WHERE queue = ?", (self.name,)).fetchone()[0]
        return QueueStats(int(row[0]), int(row[1]), int(row[2]), row[3], int(poisoned))

    def poisoned(self) -> list[PoisonedMessage]:
        with self._lock:
            rows = (
                self._connection()
                .execute(
                    "SELECT id, body, dequeue_count, poisoned_at FROM poison WHERE queue = ? ORDER BY id",
                    (self.name,),
                )
                .fetchall()
            )
        return [PoisonedMessage(str(r[0]), bytes(r[1]), int(r[2]), float(r[3])) for r in rows]

    def peek_all(self) -> list[tuple[bytes, float, int]]:
        """Every waiting message as (body, visible_at, dequeue_count), oldest first (inspection)."""
        with self._lock:
            rows = (
                self._connection()
                .execute(
                    "SELECT body, visible_at, dequeue_count FROM messages WHERE queue = ? ORDER BY id",
                    (self.name,),
                )
                .fetchall()
            )
        return [(bytes(b), float(v), int(c)) for b, v, c in rows]


# --- Azure Storage -------------------------------------------------------------------------


class StorageQueue:
    """The load queue on Azure Storage (or Azurite), encoded the way the Functions host reads it."""

    def __init__(
        self,
        client: QueueClient,
        *,
        poison: QueueClient | None = None,
        clock: Clock | None = None,
        max_dequeue_count: int = MAX_DEQUEUE_COUNT,
        create: bool = True,
    ) -> None:
        self._client = client
        self._poison_client = poison
        self.name = client.queue_name
        self.clock: Clock = clock or SystemClock()
        self.max_dequeue_count = max_dequeue_count
        self._created = not create
        self._create_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock | None = None) -> StorageQueue:
        """The ``LOAD_QUEUE`` queue (and its ``-poison`` twin) of the app's storage account."""
        from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

        from shared.azure_storage import queue_service_client

        service = queue_service_client(settings)

        def make(queue: str) -> QueueClient:
            return service.get_queue_client(
                queue,
                message_encode_policy=TextBase64EncodePolicy(),
                message_decode_policy=TextBase64DecodePolicy(),
            )

        return cls(make(settings.load_queue), poison=make(f"{settings.load_queue}-poison"), clock=clock)

    def _real_seconds(self, seconds: float) -> int:
        """Storage counts real seconds; on a scaled test clock, convert. Whole seconds, capped."""
        real = clamp_visibility(seconds) / clock_scale(self.clock)
        return min(MAX_VISIBILITY_SECONDS, int(real) + (1 if real % 1 else 0))

    def _ensure(self) -> None:
        if self._created:
            return
        from azure.core.exceptions import ResourceExistsError

        with self._create_lock:
            if self._created:
                return
            for client in (self._client, self._poison_client):
                if client is None:
                    continue
                with suppress(ResourceExistsError):
                    client.create_queue()
            self._created = True

    def send(self, step: LoadStep, *, visibility_timeout: float = 0) -> None:
        self.send_text(step.to_json(), visibility_timeout=visibility_timeout)

    def send_text(self, text: str, *, visibility_timeout: float = 0) -> None:
        self._ensure()
        self._client.send_message(
            text, visibility_timeout=self._real_seconds(visibility_timeout), time_to_live=-1
        )

    def receive(
        self, *, visibility_timeout: float, divisions: Collection[int] | None = None
    ) -> Delivery | None:
        self._ensure()
        while True:
            message = self._client.receive_message(
                visibility_timeout=max(1, self._real_seconds(visibility_timeout))
            )
            if message is None:
                return None
            if message.dequeue_count is not None and message.dequeue_count > self.max_dequeue_count:
                self._move_to_poison(message.id, message.pop_receipt or "", message.content)
                continue
            content = message.content
            body = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else bytes(content)
            inserted = message.inserted_on.timestamp() if message.inserted_on else None
            return Delivery(
                message.id, body, int(message.dequeue_count or 1), message.pop_receipt or "", inserted
            )

    def _move_to_poison(self, message_id: str, receipt: str, content: Any) -> None:
        if self._poison_client is not None:
            text = content if isinstance(content, str) else bytes(content).decode("utf-8", "replace")
            self._poison_client.send_message(text, time_to_live=-1)
        self._client.delete_message(message_id, receipt)

    def complete(self, delivery: Delivery) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._client.delete_message(delivery.id, delivery.receipt)
        except ResourceNotFoundError:
            return False
        return True

    def abandon(self, delivery: Delivery, *, visibility_timeout: float = 0) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            if delivery.dequeue_count >= self.max_dequeue_count:
                self._move_to_poison(delivery.id, delivery.receipt, delivery.body.decode("utf-8", "replace"))
            else:
                self._client.update_message(
                    delivery.id, delivery.receipt, visibility_timeout=self._real_seconds(visibility_timeout)
                )
        except ResourceNotFoundError:
            return

    def stats(self, *, divisions: Collection[int] | None = None) -> QueueStats:
        """Storage only knows an approximate total (visible, delayed and in flight together)."""
        self._ensure()
        total = int(self._client.get_queue_properties().approximate_message_count or 0)
        visible = len(list(self._client.peek_messages(max_messages=32)))
        poisoned = 0
        if self._poison_client is not None:
            poisoned = int(self._poison_client.get_queue_properties().approximate_message_count or 0)
        return QueueStats(visible, max(0, total - visible), 0, None, poisoned)

    def poisoned(self) -> list[PoisonedMessage]:
        if self._poison_client is None:
            return []
        self._ensure()
        out = []
        for message in self._poison_client.peek_messages(max_messages=32):
            content = message.content
            body = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            moved = message.inserted_on.timestamp() if message.inserted_on else 0.0
            out.append(PoisonedMessage(message.id, body, int(message.dequeue_count or 0), moved))
        return out


def make_queue(settings: Settings, clock: Clock) -> Queue:
    """The load queue the settings describe: the app's Storage queue when storage is configured
    (a connection string such as Azurite's, or the queue endpoint with a managed identity), the
    embedded one in ``EXACTSYNC_HOME`` otherwise."""
    if settings.storage_connection_string or settings.storage_queue_url:
        return StorageQueue.from_settings(settings, clock=clock)
    return EmbeddedQueue(settings.home / "queue.sqlite3", settings.load_queue, clock=clock)
