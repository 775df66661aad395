"""The live data set: generated base rows plus an overlay of mutations, with row versions.

Base rows are never stored (see ``generate.py``); an entity table keeps only what changed:
updated and inserted rows (their new ``Timestamp``, version and times) and deleted indices.
``Timestamp`` is one global Int64 counter, like SQL Server's rowversion: base rows get
increasing values in per-table blocks, every insert, update and delete after start takes the
next value, so ``Timestamp gt n`` always finds exactly what changed after ``n``.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.sandbox import entities as E
from shared.sandbox.dates import date_text, wall_ms
from shared.sandbox.generate import Universe, guid_index, make_guid, mix, salt_for

#: the first base Timestamp; large like Exact's, far above the first load's ``gt 1L``
TIMESTAMP_START = 100_000_000
DELETED_BASE_PER_DIVISION = 12

Values = list[Any]
Predicate = Callable[[Values], bool]


@dataclass
class Change:
    """One mutation, for the admin answer and the webhook deliveries."""

    division: int
    entity: str
    action: str  # "Create" | "Update" | "Delete"
    key: str
    timestamp: int


class Table:
    """One entity in one division: base rows by index, overlay of changes, sync order by Timestamp."""

    def __init__(self, universe: Universe, spec: E.EntitySpec, base_count: int, block_start: int) -> None:
        self.universe = universe
        self.spec = spec
        self.name = spec.name
        self.base_count = base_count
        self.count = base_count
        self.block_start = block_start
        self.block_end = block_start + 3 * base_count
        self.salt = universe.salts[spec.name]
        self._generate = universe.generators[spec.name]
        self.lock = threading.RLock()
        #: index -> (timestamp, version, created_ms, modified_ms) for updated and inserted rows
        self.override: dict[int, tuple[int, int, int, int]] = {}
        self.deleted: set[int] = set()
        #: (timestamp, index) of every overlay write, in Timestamp order; stale entries skipped
        self._log_ts: list[int] = []
        self._log_index: list[int] = []

    # --- reading -----------------------------------------------------------------------------------

    def live(self, index: int) -> bool:
        return 0 <= index < self.count and index not in self.deleted

    def row(self, index: int) -> Values | None:
        """The vector of a live row: its values in field order, then its Timestamp."""
        if not self.live(index):
            return None
        state = self.override.get(index)
        if state is None:
            jitter, created, modified = self.universe.base_info(self.name, index)
            vector = self._generate(index, 0, created, modified)
            vector.append(self.block_start + 3 * index + jitter)
            return vector
        vector = self._generate(index, state[1], state[2], state[3])
        vector.append(state[0])
        return vector

    def find(self, key: str) -> int | None:
        index = guid_index(self.salt, key)
        return index if index is not None and self.live(index) else None

    def page_by_index(self, after: int, limit: int, match: Predicate | None) -> list[Values]:
        """Vectors of live rows with index > ``after``, in index order (regular and bulk endpoints)."""
        out: list[Values] = []
        with self.lock:
            index = max(0, after + 1)
            while index < self.count and len(out) < limit:
                vector = self.row(index)
                if vector is not None and (match is None or match(vector)):
                    out.append(vector)
                index += 1
        return out

    def page_by_timestamp(self, after: int, limit: int, match: Predicate | None) -> list[Values]:
        """Vectors of live rows with Timestamp > ``after``, in Timestamp order (sync endpoints).

        Base rows come first (their Timestamps are below every later write), then the overlay
        log, skipping entries a later write superseded.
        """
        out: list[Values] = []
        with self.lock:
            if after < self.block_end:
                self._base_page(after, limit, match, out)
            position = bisect.bisect_right(self._log_ts, after)
            while position < len(self._log_ts) and len(out) < limit:
                ts, index = self._log_ts[position], self._log_index[position]
                position += 1
                state = self.override.get(index)
                if state is None or state[0] != ts or index in self.deleted:
                    continue
                vector = self._generate(index, state[1], state[2], state[3])
                vector.append(ts)
                if match is None or match(vector):
                    out.append(vector)
        return out

    def _base_page(self, after: int, limit: int, match: Predicate | None, out: list[Values]) -> None:
        # the hot loop of every sync read: locals only, and ``Universe.base_infos`` works a
        # chunk of indices at a time
        index = max(0, (after - self.block_start - 2) // 3)
        touched = self.override.keys() | self.deleted if (self.override or self.deleted) else ()
        infos, name, generate, start, stop = (
            self.universe.base_infos, self.name, self._generate, self.block_start, self.base_count
        )  # fmt: skip
        append = out.append
        while index < stop and len(out) < limit:
            chunk_end = min(stop, index + limit - len(out) + 2)
            for offset, (jitter, created, modified) in enumerate(infos(name, index, chunk_end)):
                i = index + offset
                ts = start + 3 * i + jitter
                if ts > after and i not in touched:
                    vector = generate(i, 0, created, modified)
                    vector.append(ts)
                    if match is None or match(vector):
                        append(vector)
                        if len(out) >= limit:
                            return
            index = chunk_end

    def live_indices(self) -> Iterable[int]:
        return (i for i in range(self.count) if i not in self.deleted)

    # --- writing (the caller holds the dataset's lock, which orders Timestamps) -------------------

    def _log(self, ts: int, index: int) -> None:
        self._log_ts.append(ts)
        self._log_index.append(index)

    def insert(self, ts: int, now_ms: int) -> int:
        with self.lock:
            index = self.count
            self.count += 1
            self.override[index] = (ts, 1, now_ms, now_ms)
            self._log(ts, index)
            return index

    def update(self, index: int, ts: int, now_ms: int) -> None:
        with self.lock:
            state = self.override.get(index)
            if state is None:
                _, created, _ = self.universe.base_info(self.name, index)
                self.override[index] = (ts, 1, created, now_ms)
            else:
                self.override[index] = (ts, state[1] + 1, state[2], now_ms)
            self._log(ts, index)

    def delete(self, index: int) -> None:
        with self.lock:
            self.deleted.add(index)
            self.override.pop(index, None)

    def key_of(self, index: int) -> str:
        return make_guid(self.salt, index)


@dataclass
class DeletedLog:
    """``sync/Deleted`` of one division: stored rows (deletions are few), Timestamp order."""

    timestamps: list[int] = field(default_factory=list)
    rows: list[Values] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ts: int, values: Values) -> None:
        with self.lock:
            self.timestamps.append(ts)
            self.rows.append(values)

    def page(self, after: int, limit: int, match: Predicate | None) -> list[Values]:
        out: list[Values] = []
        with self.lock:
            position = bisect.bisect_right(self.timestamps, after)
            while position < len(self.rows) and len(out) < limit:
                vector = [*self.rows[position], self.timestamps[position]]
                if match is None or match(vector):
                    out.append(vector)
                position += 1
        return out


@dataclass(frozen=True)
class DivisionInfo:
    code: int
    values: Values  # in DIVISIONS field order, ``Current`` filled per request


class Dataset:
    """Every division's tables, the global Timestamp counter and the mutation API."""

    def __init__(self, seed: int, divisions: Iterable[int], row_counts: dict[str, int] | None = None) -> None:
        counts = {spec.name: spec.default_rows for spec in E.DATA_ENTITIES}
        for name, value in (row_counts or {}).items():
            if name not in counts:
                raise ValueError(f"unknown entity {name!r} in row_counts; known: {', '.join(counts)}")
            if value < 0:
                raise ValueError(f"row count for {name} must be >= 0")
            counts[name] = int(value)
        self.seed = seed
        self.row_counts = counts
        self.division_codes = tuple(int(d) for d in divisions)
        if not self.division_codes:
            raise ValueError("at least one division is needed")
        self._lock = threading.Lock()
        self.tables: dict[tuple[int, str], Table] = {}
        self.deleted: dict[int, DeletedLog] = {}
        self.universes: dict[int, Universe] = {}
        self.divisions: dict[int, DivisionInfo] = {}
        self._mutations = 0
        cursor = TIMESTAMP_START
        for position, code in enumerate(self.division_codes):
            universe = Universe(seed, code, counts)
            self.universes[code] = universe
            log = DeletedLog()
            for k in range(DELETED_BASE_PER_DIVISION):
                spec = E.DATA_ENTITIES[k % len(E.DATA_ENTITIES)]
                when = 1_650_000_000 + k * 86_400 * 20
                log.add(
                    cursor,
                    self._deleted_values(
                        universe, spec, make_guid(universe.salts[spec.name], 10**12 + k), when, k
                    ),
                )
                cursor += 1 + k % 3
            self.deleted[code] = log
            cursor += 1000
            for spec in E.DATA_ENTITIES:
                self.tables[(code, spec.name)] = Table(universe, spec, counts[spec.name], cursor)
                cursor += 3 * counts[spec.name] + 1000
            customer = salt_for(seed, code, "Customer")
            self.divisions[code] = DivisionInfo(
                code,
                [
                    code,
                    ("Sandbox Holding B.V.", "Sandbox Handel B.V.", "Zandbak & Zn. VOF", "Sandkasten GmbH")[
                        position % 4
                    ]
                    + ("" if position < 4 else f" {position + 1}"),
                    False,
                    make_guid(customer, 0),
                    "Sandbox Klant B.V.",
                    "NL" if position % 4 != 3 else "DE",
                    "EUR",
                    1,
                    0,
                    date_text(wall_ms(1_577_836_800 + position * 86_400)),
                    date_text(wall_ms(1_700_000_000 + position * 86_400)),
                ],
            )
        self._timestamp = cursor

    def _deleted_values(
        self, universe: Universe, spec: E.EntitySpec, key: str, when: float, n: int
    ) -> Values:
        return [
            make_guid(universe.salts.get("Users", 0) ^ 0xDE1E7ED, n + 10_000 * (spec.deleted_type or 0)),
            universe.user_guid(n),
            date_text(wall_ms(when)),
            universe.division,
            key,
            spec.deleted_type,
        ]

    def table(self, division: int, entity: str) -> Table:
        return self.tables[(division, entity)]

    def next_timestamp(self) -> int:
        """The next row version; gaps stand for writes to tables the sandbox does not serve."""
        self._mutations += 1
        self._timestamp += 1 + self._mutations % 3
        return self._timestamp

    @property
    def last_timestamp(self) -> int:
        return self._timestamp

    def mutate(
        self,
        division: int,
        entity: str,
        *,
        insert: int = 0,
        update: int = 0,
        delete: int = 0,
        update_keys: Iterable[str] = (),
        delete_keys: Iterable[str] = (),
        now: float,
    ) -> list[Change]:
        """Apply inserts, then updates, then deletes; raise ``ValueError`` on bad input, before any change."""
        if division not in self.universes:
            raise ValueError(f"unknown division {division}")
        if (division, entity) not in self.tables:
            known = ", ".join(spec.name for spec in E.DATA_ENTITIES)
            raise ValueError(f"entity {entity!r} cannot be mutated; known: {known}")
        for name, value in (("insert", insert), ("update", update), ("delete", delete)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0")
        table = self.tables[(division, entity)]
        now_ms = wall_ms(now)
        changes: list[Change] = []
        with self._lock, table.lock:
            explicit_update = [self._index_of(table, key) for key in update_keys]
            explicit_delete = [self._index_of(table, key) for key in delete_keys]
            live = table.count - len(table.deleted)
            if update + delete + len(explicit_delete) > live + insert:
                raise ValueError(f"{entity} in division {division} has only {live} live rows")
            for _ in range(insert):
                ts = self.next_timestamp()
                index = table.insert(ts, now_ms)
                changes.append(Change(division, entity, "Create", table.key_of(index), ts))
            picked = set(explicit_delete)
            for index in explicit_update + self._pick(table, update, set(picked)):
                ts = self.next_timestamp()
                table.update(index, ts, now_ms)
                changes.append(Change(division, entity, "Update", table.key_of(index), ts))
                picked.add(index)
            for index in explicit_delete + self._pick(table, delete, picked):
                ts = self.next_timestamp()
                key = table.key_of(index)
                table.delete(index)
                spec = table.spec
                self.deleted[division].add(
                    ts, self._deleted_values(self.universes[division], spec, key, now, self._mutations)
                )
                changes.append(Change(division, entity, "Delete", key, ts))
        return changes

    def _index_of(self, table: Table, key: str) -> int:
        index = table.find(str(key))
        if index is None:
            raise ValueError(f"no live {table.name} row with key {key!r}")
        return index

    def _pick(self, table: Table, n: int, avoid: set[int]) -> list[int]:
        """n live rows chosen deterministically from the seed and the mutation count."""
        chosen: list[int] = []
        attempt = 0
        while len(chosen) < n:
            attempt += 1
            index = mix(table.salt ^ (self._mutations * 7919 + attempt)) % max(1, table.count)
            if attempt > 50 * (n + 10):  # dense deletions: fall back to a scan
                index = next(i for i in table.live_indices() if i not in avoid and i not in chosen)
            if table.live(index) and index not in avoid and index not in chosen:
                chosen.append(index)
        return chosen
