"""Deterministic rows: every value is a pure function of (seed, division, entity, index, version).

Nothing is stored per row, so a division can hold a million TransactionLines at no memory cost;
only mutations live in an overlay (``data.py``). A cheap 64-bit mixer (splitmix64's finalizer)
stands in for a random generator. GUIDs carry a scrambled index in their last 48 bits so that a
key lookup (``ID eq guid'…'``, ``$skiptoken=guid'…'``) inverts in O(1) instead of scanning.

Rows are realistic on purpose: nulls, unicode, quotes, control characters, 18-character
left-padded account codes, long texts, amounts that sum to zero per journal entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date
from typing import Any

from shared.sandbox.dates import OFFSET_BY_HOUR, day_text, wall_ms

M64 = 0xFFFFFFFFFFFFFFFF
M48 = (1 << 48) - 1
GOLDEN = 0x9E3779B97F4A7C15
_K48 = 0x5DEECE66D  # odd: multiplication by it is a bijection mod 2**48
_K48_INV = pow(_K48, -1, 1 << 48)

#: base rows' modification times spread over this span (UTC seconds): fixed, so a seed
#: always yields the same data whatever day the sandbox starts
SPAN_START = 1_640_995_200  # 2022-01-01T00:00:00Z
SPAN_END = 1_751_241_600  # 2025-06-30T00:00:00Z
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def mix(x: int) -> int:
    x &= M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def salt_for(seed: int, division: int, entity: str) -> int:
    digest = hashlib.blake2b(f"{seed}/{division}/{entity}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


_VARIANT = "89ab"


_HIGH: dict[int, list[str]] = {}


def _high_parts(salt: int) -> list[str]:
    parts = []
    for k in range(4096):
        a = mix(salt ^ ((k * GOLDEN) & M64))
        h = f"{a:016x}"
        parts.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[a & 3]}{h[1:4]}-")
    _HIGH[salt] = parts
    return parts


def make_guid(salt: int, index: int) -> str:
    """A version-4-shaped GUID whose last 48 bits are the index, scrambled (see ``guid_index``).

    The first 80 bits come from a per-salt table of 4096 random prefixes: GUIDs are the most
    frequent generated value, and a table lookup plus one hex format is the cheapest way to
    make them.
    """
    high = _HIGH.get(salt) or _high_parts(salt)
    return high[index & 0xFFF] + "%012x" % (((index * _K48) ^ salt) & M48)


def guid_index(salt: int, text: str) -> int | None:
    """The index ``make_guid(salt, index) == text`` was made from, or None for a foreign GUID."""
    text = text.lower()
    if len(text) != 36:
        return None
    try:
        low = int(text[24:], 16)
    except ValueError:
        return None
    index = ((low ^ salt) * _K48_INV) & M48
    return index if make_guid(salt, index) == text else None


# --- text pools ----------------------------------------------------------------------------------

SURNAMES = (
    "Jansen", "de Vries", "van den Berg", "Bakker", "Visser", "Smit", "Meijer", "de Boer", "Mulder",
    "de Groot", "Bos", "Vos", "Peters", "Hendriks", "van Leeuwen", "Dekker", "Brouwer", "de Wit",
    "Dijkstra", "Smits", "de Graaf", "van der Meer", "Kok", "Jacobs", "Vermeulen", "Janssens",
)  # fmt: skip
TRADES = (
    "Bouw", "Techniek", "Logistiek", "Advies", "Installatie", "Handel", "Transport", "Catering",
    "Media", "Software", "Metaal", "Groothandel", "Accountants", "Zorg", "Design",
)  # fmt: skip
LEGAL = ("B.V.", "B.V.", "Holding B.V.", "& Zn.", "N.V.", "VOF", "GmbH", "Ltd", "BVBA", "SARL")
ODD_NAMES = (
    "Café Zoë B.V.",
    "Ærø Økonomi ApS",
    "北京贸易有限公司",
    'O\'Brien & "Sons" Ltd',
    "Müller–Lüdenscheidt GmbH",
    "Back\\slash <Tag> & Co",
    "🚀 Rocket Supplies",
    "  Leading and trailing spaces  ",
    "Tab\tand\nnewline B.V.",
    "Ελληνικά Α.Ε.",
    "“Curly” ‘quotes’ – dash — B.V.",
    "Ümlaut Straße 12 Ä/Ö",
    "ゼロ株式会社",
    "Zero\u200bWidth Space B.V.",
)
CITIES = ("Amsterdam", "Rotterdam", "Delft", "Den Haag", "Utrecht", "Groningen", "'s-Hertogenbosch",
          "Zwolle", "Antwerpen", "Köln", "Liège", "Enschede")  # fmt: skip
COUNTRIES = ("NL", "NL", "NL", "NL", "BE", "DE", "GB", "FR", None)
PHRASES = (
    "Levering volgens offerte",
    "Onderhoud installatie Q3",
    "Consultancy uren maart",
    'Licentie "Pro" jaarabonnement',
    "Reiskosten & verblijf",
    "Creditering retour – beschadigd",
    "Huur kantoorruimte",
    "Vooruitbetaling project 'Noord'",
    "Correctie BTW 21%",
    "Inkoop materialen ✓",
    "Prijsafspraak № 17 € 1.250,00",
)
UNITS = ("pc", "pc", "hr", "kg", "m", "l", "box")
GL_NAMES = (
    ("Kas", 10, "D", "B"), ("Bank", 12, "D", "B"), ("Debiteuren", 20, "D", "B"),
    ("Crediteuren", 22, "C", "B"), ("Te betalen btw", 24, "C", "B"), ("Voorraad", 32, "D", "B"),
    ("Omzet hoog tarief", 110, "C", "W"), ("Omzet laag tarief", 110, "C", "W"),
    ("Kostprijs verkopen", 111, "D", "W"), ("Huisvestingskosten", 121, "D", "W"),
    ("Autokosten", 121, "D", "W"), ("Afschrijvingen", 122, "D", "W"), ("Rente en bankkosten", 123, "D", "W"),
)  # fmt: skip
ITEM_WORDS = ("Bout", "Moer", "Kabel", "Schakelaar", "Adapter", "Licentie", "Service-uur", "Pomp", "Filter",
              "Sensor", "Stekker", "Montageset")  # fmt: skip


def _long_text(h: int) -> str:
    """1–2 kB with paragraphs, unicode, quotes and markup-like characters."""
    parts = [PHRASES[(h >> (k * 3)) % len(PHRASES)] for k in range(18)]
    body = ". ".join(parts) + "."
    return (
        f"Projectomschrijving (v{h % 97}):\n{body}\n\n"
        "Opmerkingen: <b>niet</b> vóór 1 januari factureren; \"spoed\" & 'vertrouwelijk'.\n"
        "Ünïcödé: Zoë, Ærø, 北京, 🚀, Ελληνικά — " + body[: 300 + h % 500]
    )


def _company(h: int, index: int) -> str:
    if index % 29 == 7:
        return ODD_NAMES[(index // 29) % len(ODD_NAMES)]
    if index % 113 == 50:
        return ("Internationale Groothandel in Bevestigingsmaterialen en Gereedschappen "
                "voor de Bouw- en Installatiebranche " + LEGAL[h % len(LEGAL)])  # fmt: skip
    return f"{SURNAMES[h % len(SURNAMES)]} {TRADES[(h >> 8) % len(TRADES)]} {LEGAL[(h >> 16) % len(LEGAL)]}"


_YEAR_MONTH: dict[int, tuple[int, int]] = {}


def _year_month(epoch_day: int) -> tuple[int, int]:
    found = _YEAR_MONTH.get(epoch_day)
    if found is None:
        when = date.fromordinal(_EPOCH_ORDINAL + epoch_day)
        found = _YEAR_MONTH[epoch_day] = (when.year, when.month)
    return found


def _epoch_day(utc_seconds: float) -> int:
    return int(utc_seconds // 86_400)


class Universe:
    """The generated world of one division: salts, base counts and the row generators."""

    def __init__(self, seed: int, division: int, base_counts: dict[str, int]) -> None:
        self.seed = seed
        self.division = division
        self.base_counts = dict(base_counts)
        self.salts = {name: salt_for(seed, division, name) for name in (*base_counts, "Entries", "Users")}
        self._guids: dict[tuple[str, int], str] = {}
        self._steps = {name: (SPAN_END - SPAN_START) / max(1, count) for name, count in base_counts.items()}
        self._entry_cache: tuple[int, tuple[list[Any], list[Any], list[Any]]] = (-1, ([], [], []))
        self._gl_sets: dict[int, tuple[tuple[str | None, ...], tuple[str | None, ...]]] = {}
        self.generators: dict[str, Callable[[int, int, int, int], list[Any]]] = {
            "Accounts": self.account,
            "Projects": self.project,
            "SalesInvoices": self.sales_invoice,
            "TransactionLines": self.transaction_line,
            "Items": self.item,
            "GLAccounts": self.gl_account,
        }

    # --- shared helpers ------------------------------------------------------------------------

    def ref_guid(self, entity: str, index: int) -> str:
        """GUID of a referenced row (cached: references repeat)."""
        key = (entity, index)
        found = self._guids.get(key)
        if found is None:
            found = make_guid(self.salts[entity], index)
            if len(self._guids) < 200_000:
                self._guids[key] = found
        return found

    def user_guid(self, n: int) -> str:
        return self.ref_guid("Users", n % 5)

    def row_hash(self, entity: str, index: int, version: int) -> int:
        return mix(self.salts[entity] ^ ((index * GOLDEN) & M64) ^ ((version * 0xD1B54A32D192ED03) & M64))

    def base_info(self, entity: str, index: int) -> tuple[int, int, int]:
        """(Timestamp jitter 0-2, created_ms, modified_ms) of one base row."""
        return self.base_infos(entity, index, index + 1)[0]

    def base_infos(self, entity: str, start: int, stop: int) -> list[tuple[int, int, int]]:
        """``base_info`` of every index in ``range(start, stop)``, each from one cheap hash.

        Modification times grow with the index, as row versions do, so ``Modified`` and
        ``Timestamp`` order agree within an entity. This is the hot path of every sync page:
        one loop with locals and the Amsterdam offsets read inline.
        """
        salt, step, offsets = self.salts[entity], self._steps[entity], OFFSET_BY_HOUR
        out = []
        for index in range(start, stop):
            h = ((index ^ salt) * GOLDEN) & M64
            h ^= h >> 29
            modified = SPAN_START + (index + ((h >> 8) & 1023) / 1024) * step
            created = modified - (h >> 20) % (200 * 86_400)
            m_off = offsets.get(int(modified) // 3600)
            if m_off is None:
                wall_ms(modified)  # fills the offset cache
                m_off = offsets[int(modified) // 3600]
            c_off = offsets.get(int(created) // 3600)
            if c_off is None:
                wall_ms(created)
                c_off = offsets[int(created) // 3600]
            out.append((h % 3, int((created + c_off) * 1000), int((modified + m_off) * 1000)))
        return out

    def account_code(self, index: int) -> str:
        return str(index + 1).rjust(18)

    def gl_code(self, index: int) -> str:
        return str(1000 + index * 10)

    # --- generators: (index, version, created_ms, modified_ms) -> values in field order --------

    def account(self, i: int, v: int, created: int, modified: int) -> list[Any]:
        h = self.row_hash("Accounts", i, v)
        email = (
            None if h % 7 == 0 else f"info{i}@{SURNAMES[h % len(SURNAMES)].replace(' ', '').lower()}.example"
        )
        remarks = _long_text(h) if i % 41 == 3 else (None if h % 3 else PHRASES[h % len(PHRASES)])
        return [
            make_guid(self.salts["Accounts"], i),
            self.account_code(i),
            _company(h, i) if v == 0 else f"{_company(h, i)} (gewijzigd {v})",
            ("C", "C", "C", "P", "S", "A")[(h >> 5) % 6],
            (h >> 9) % 23 == 0,
            (h >> 12) % 4 != 0,
            (h >> 14) % 5 == 0,
            email,
            COUNTRIES[(h >> 18) % len(COUNTRIES)],
            None if (h >> 22) % 9 == 0 else CITIES[(h >> 24) % len(CITIES)],
            remarks,
            f"/Date({created})/",
            f"/Date({modified})/",
        ]

    def project(self, i: int, v: int, created: int, modified: int) -> list[Any]:
        h = self.row_hash("Projects", i, v)
        accounts = self.base_counts.get("Accounts", 0)
        acc_index = (h >> 7) % accounts if accounts and (h % 10) else None
        start = _epoch_day(created / 1000) + (h >> 30) % 30
        end = None if (h >> 40) % 2 else start + 30 + (h >> 42) % 400
        description = (
            _long_text(h)
            if i % 37 == 5
            else f"{TRADES[h % len(TRADES)]} project {i + 1} – {CITIES[(h >> 3) % len(CITIES)]}"
        )
        return [
            make_guid(self.salts["Projects"], i),
            f"P{i + 1:05d}",
            description,
            None if acc_index is None else self.ref_guid("Accounts", acc_index),
            None if acc_index is None else self.account_code(acc_index),
            1 + (h >> 13) % 5,
            self.user_guid(h >> 17),
            day_text(start),
            None if end is None else day_text(end),
            f"/Date({created})/",
            f"/Date({modified})/",
        ]

    def sales_invoice(self, i: int, v: int, created: int, modified: int) -> list[Any]:
        h = self.row_hash("SalesInvoices", i, v)
        accounts = self.base_counts.get("Accounts", 0) or 1
        to_index = (h >> 5) % accounts
        by_index = to_index if (h >> 25) % 4 else (h >> 27) % accounts
        credit = (h >> 3) % 11 == 0
        net = ((h >> 33) % 2_500_000) / 100 + 0.01
        net = -net if credit else net
        vat = round(net * 0.21, 2)
        currency, rate = (("EUR", 1.0), ("EUR", 1.0), ("EUR", 1.0), ("USD", 1.0843), ("GBP", 0.8561))[
            (h >> 50) % 5
        ]
        invoice_day = _epoch_day(created / 1000)
        return [
            make_guid(self.salts["SalesInvoices"], i),
            20_700_001 + i,
            self.ref_guid("Accounts", to_index),
            self.ref_guid("Accounts", by_index),
            "70",
            (10, 20, 50, 50, 50)[(h >> 45) % 5],
            8021 if credit else 8020,
            round(net + vat, 2),
            round((net + vat) * rate, 2),
            vat,
            currency,
            day_text(invoice_day),
            day_text(invoice_day + (14, 30, 30, 60)[(h >> 55) % 4]),
            None if h % 6 == 0 else PHRASES[(h >> 11) % len(PHRASES)],
            f"/Date({created})/",
            f"/Date({modified})/",
        ]

    def _entry(self, entry: int) -> tuple[list[Any], list[Any], list[Any]]:
        """The three lines of one journal entry, without ID, Created and Modified (computed once).

        The lines sum to zero: receivable (with the customer), revenue (sometimes with a
        project), VAT.
        """
        he = mix(self.salts["Entries"] ^ ((entry * GOLDEN) & M64))
        gross = (he >> 8) % 1_000_000 + 121  # cents
        net = (gross * 100 + 60) // 121
        day = (
            int((SPAN_START + 3 * entry * self._steps.get("TransactionLines", 1.0)) // 86_400)
            - (he >> 52) % 60
        )
        year, month = _year_month(day)
        accounts = self.base_counts.get("Accounts", 0)
        projects = self.base_counts.get("Projects", 0)
        gl_guids, gl_codes = self._gl_set((he >> 50) % 3)
        description = None if (he >> 20) % 8 == 0 else f"{PHRASES[(he >> 24) % len(PHRASES)]} {entry + 1}"
        entry_id, number, day_value = (
            make_guid(self.salts["Entries"], entry),
            24_000_001 + entry,
            day_text(day),
        )
        account = self.ref_guid("Accounts", (he >> 30) % accounts) if accounts else None
        project = (
            self.ref_guid("Projects", (he >> 40) % projects) if projects and (he >> 60) % 4 == 0 else None
        )
        status = 50 if (he >> 33) % 10 else 20
        lines = []
        for line, cents in enumerate((gross, -net, net - gross)):
            lines.append([
                entry_id, number, line + 1, day_value, year, month, gl_guids[line], gl_codes[line],
                cents / 100, cents / 100, "EUR", account if line == 0 else None, project if line == 1 else None,
                status, 20, description,
            ])  # fmt: skip
        return lines[0], lines[1], lines[2]

    def transaction_line(self, i: int, v: int, created: int, modified: int) -> list[Any]:
        entry, line = divmod(i, 3)
        cached = self._entry_cache
        if cached[0] != entry:
            cached = (entry, self._entry(entry))
            self._entry_cache = cached
        row = [
            make_guid(self.salts["TransactionLines"], i),
            *cached[1][line],
            f"/Date({created})/",
            f"/Date({modified})/",
        ]
        if v:  # an updated line: a changed amount
            cents = round(row[9] * 100) + self.row_hash("TransactionLines", i, v) % 10_000
            row[9] = row[10] = cents / 100
        if i % 97 == 11:
            row[16] = ("Lange omschrijving: " + " / ".join(PHRASES))[:255]
        return row

    def _gl_set(self, variant: int) -> tuple[tuple[str | None, ...], tuple[str | None, ...]]:
        """GL accounts of (receivable, revenue, VAT) lines; three variants, cached."""
        found = self._gl_sets.get(variant)
        if found is None:
            count = self.base_counts.get("GLAccounts", 0)
            shift = variant * len(GL_NAMES)
            picks = [
                None if not count else (b + shift if b + shift < count else b % count) for b in (2, 6, 4)
            ]
            found = (
                tuple(None if g is None else self.ref_guid("GLAccounts", g) for g in picks),
                tuple(None if g is None else self.gl_code(g) for g in picks),
            )
            self._gl_sets[variant] = found
        return found

    def item(self, i: int, v: int, created: int, modified: int) -> list[Any]:
        h = self.row_hash("Items", i, v)
        stock_item = (h >> 3) % 3 != 0
        start = _epoch_day(created / 1000)
        word = ITEM_WORDS[h % len(ITEM_WORDS)]
        description = (
            _long_text(h)
            if i % 43 == 8
            else f'{word} {(h >> 20) % 90 + 10} mm – type "{chr(65 + (h >> 30) % 26)}"'
        )
        return [
            make_guid(self.salts["Items"], i),
            f"ITM-{i + 1:06d}",
            description,
            (h >> 5) % 10 != 0,
            stock_item,
            UNITS[(h >> 7) % len(UNITS)],
            float((h >> 11) % 5000) if stock_item else 0.0,
            ((h >> 25) % 100_000) / 100,
            day_text(start),
            day_text(start + 365 * 3) if (h >> 40) % 20 == 0 else None,
            f"/Date({created})/",
            f"/Date({modified})/",
        ]

    def gl_account(self, i: int, v: int, created: int, modified: int) -> list[Any]:
        h = self.row_hash("GLAccounts", i, v)
        name, kind, side, balance = GL_NAMES[i % len(GL_NAMES)]
        suffix = "" if i < len(GL_NAMES) else f" {i // len(GL_NAMES) + 1}"
        return [
            make_guid(self.salts["GLAccounts"], i),
            self.gl_code(i),
            name + suffix + ("" if v == 0 else f" (v{v})"),
            kind,
            side,
            balance,
            (h >> 9) % 31 == 0,
            f"/Date({created})/",
            f"/Date({modified})/",
        ]
