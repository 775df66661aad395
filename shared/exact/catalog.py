"""The entity catalog: what exactsync reads from Exact Online, as data.

One ``Entity`` row per entity: where to read it (``sync/…`` when Exact has a sync twin, else
``bulk/…``, else the regular endpoint), its key, the fields to ``$select`` with their types, the
target table and the ``EntityType`` number under which ``sync/Deleted`` reports its deletions.
Adding an entity is adding one row; the client, the warehouse DDL and the planner read this.

Field types: ``guid``, ``str``, ``int``, ``int64``, ``decimal``, ``bool``, ``datetime`` (Exact's
``/Date(ms)/`` in Europe/Amsterdam time, stored as UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FieldType = Literal["guid", "str", "int", "int64", "decimal", "bool", "datetime"]


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType


@dataclass(frozen=True)
class Entity:
    name: str
    table: str
    key: str
    fields: tuple[Field, ...]
    regular_path: str
    sync_path: str | None = None
    bulk_path: str | None = None
    #: the number ``sync/Deleted`` uses for this entity's deletions
    deleted_entity_type: int | None = None

    @property
    def read_path(self) -> str:
        """The endpoint loads read: the sync twin when there is one (a full load is a sync from 1)."""
        return self.sync_path or self.bulk_path or self.regular_path

    @property
    def incremental(self) -> bool:
        return self.sync_path is not None

    @property
    def page_size(self) -> int:
        return 1000 if (self.sync_path or self.bulk_path) else 60

    @property
    def select(self) -> str:
        return ",".join(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


def _fields(spec: str) -> tuple[Field, ...]:
    """``"ID:guid Code:str …"`` -> fields; keeps the table rows below readable."""
    out = []
    for item in spec.split():
        name, _, kind = item.partition(":")
        out.append(Field(name, kind))  # type: ignore[arg-type]
    return tuple(out)


DELETED = Entity(
    name="Deleted",
    table="exact_deleted",
    key="ID",
    fields=_fields(
        "ID:guid Timestamp:int64 DeletedBy:guid DeletedDate:datetime Division:int EntityKey:guid EntityType:int"
    ),
    regular_path="sync/Deleted",
    sync_path="sync/Deleted",
)

CATALOG: tuple[Entity, ...] = (
    Entity(
        name="Divisions",
        table="exact_divisions",
        key="Code",
        fields=_fields(
            "Code:int Description:str Current:bool Customer:guid CustomerName:str Country:str "
            "Currency:str Status:int BlockingStatus:int"
        ),
        regular_path="system/Divisions",
    ),
    Entity(
        name="Accounts",
        table="exact_accounts",
        key="ID",
        fields=_fields(
            "ID:guid Timestamp:int64 Code:str Name:str Status:str Blocked:bool IsSales:bool "
            "IsSupplier:bool Email:str Country:str Created:datetime Modified:datetime"
        ),
        regular_path="crm/Accounts",
        sync_path="sync/CRM/Accounts",
        bulk_path="bulk/CRM/Accounts",
        deleted_entity_type=2,
    ),
    Entity(
        name="Projects",
        table="exact_projects",
        key="ID",
        fields=_fields(
            "ID:guid Timestamp:int64 Code:str Description:str Account:guid AccountCode:str Type:int "
            "Manager:guid StartDate:datetime EndDate:datetime Modified:datetime"
        ),
        regular_path="project/Projects",
        sync_path="sync/Project/Projects",
        deleted_entity_type=21,
    ),
    Entity(
        name="SalesInvoices",
        table="exact_sales_invoices",
        key="InvoiceID",
        fields=_fields(
            "InvoiceID:guid Timestamp:int64 InvoiceNumber:int InvoiceTo:guid OrderedBy:guid Journal:str "
            "Status:int Type:int AmountDC:decimal AmountFC:decimal VATAmountDC:decimal Currency:str "
            "InvoiceDate:datetime DueDate:datetime Modified:datetime"
        ),
        regular_path="salesinvoice/SalesInvoices",
        sync_path="sync/SalesInvoice/SalesInvoices",
        bulk_path="bulk/SalesInvoice/SalesInvoices",
        deleted_entity_type=13,
    ),
    Entity(
        name="TransactionLines",
        table="exact_transaction_lines",
        key="ID",
        fields=_fields(
            "ID:guid Timestamp:int64 EntryID:guid EntryNumber:int LineNumber:int Date:datetime "
            "FinancialYear:int FinancialPeriod:int GLAccount:guid GLAccountCode:str AmountDC:decimal "
            "AmountFC:decimal Account:guid Project:guid Status:int Type:int Description:str Modified:datetime"
        ),
        regular_path="financialtransaction/TransactionLines",
        sync_path="sync/Financial/TransactionLines",
        bulk_path="bulk/Financial/TransactionLines",
        deleted_entity_type=1,
    ),
    Entity(
        name="Items",
        table="exact_items",
        key="ID",
        fields=_fields(
            "ID:guid Timestamp:int64 Code:str Description:str IsSalesItem:bool IsStockItem:bool Unit:str "
            "Stock:decimal StandardSalesPrice:decimal StartDate:datetime EndDate:datetime Modified:datetime"
        ),
        regular_path="logistics/Items",
        sync_path="sync/Logistics/Items",
        bulk_path="bulk/Logistics/Items",
        deleted_entity_type=9,
    ),
    Entity(
        name="GLAccounts",
        table="exact_gl_accounts",
        key="ID",
        fields=_fields(
            "ID:guid Timestamp:int64 Code:str Description:str Type:int BalanceSide:str BalanceType:str "
            "Blocked:bool Modified:datetime"
        ),
        regular_path="financial/GLAccounts",
        sync_path="sync/Financial/GLAccounts",
        deleted_entity_type=7,
    ),
)

_BY_NAME = {entity.name.lower(): entity for entity in CATALOG}


def entity(name: str) -> Entity:
    """Look an entity up by name, case-insensitively; raise ``KeyError`` naming the known ones."""
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        known = ", ".join(e.name for e in CATALOG)
        raise KeyError(f"unknown entity {name!r}; known: {known}") from None
