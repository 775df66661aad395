"""What the sandbox serves: entities, their fields (Exact's names and OData types) and paths.

The sandbox keeps its own table rather than reading ``shared.exact.catalog``: it stands for
Exact Online, not for our client, so a mistake in the client's catalog must show up as an error
here instead of being mirrored. ``Timestamp`` is not listed per entity: it exists only on the
``sync/…`` form, where the data layer adds it.
"""

from __future__ import annotations

from dataclasses import dataclass

GUID = "Edm.Guid"
STR = "Edm.String"
INT = "Edm.Int32"
INT64 = "Edm.Int64"
DOUBLE = "Edm.Double"
BOOL = "Edm.Boolean"
DATETIME = "Edm.DateTime"

PAGE_REGULAR = 60
PAGE_BULK_SYNC = 1000


@dataclass(frozen=True)
class FieldSpec:
    name: str
    edm: str


@dataclass(frozen=True)
class EntitySpec:
    name: str
    key: str
    fields: tuple[FieldSpec, ...]
    #: the model name in ``__metadata.type`` (``Exact.Web.Api.Models.<model>``)
    model: str
    regular: str | None
    sync: str | None = None
    bulk: str | None = None
    #: the number ``sync/Deleted`` reports this entity's deletions under
    deleted_type: int | None = None
    default_rows: int = 0
    #: the webhook topic announcing changes to this entity (None: no topic)
    topic: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def key_edm(self) -> str:
        return next(f.edm for f in self.fields if f.name == self.key)


def _fields(spec: str) -> tuple[FieldSpec, ...]:
    kinds = {
        "guid": GUID,
        "str": STR,
        "int": INT,
        "int64": INT64,
        "dbl": DOUBLE,
        "bool": BOOL,
        "dt": DATETIME,
    }
    out = []
    for item in spec.split():
        name, _, kind = item.partition(":")
        out.append(FieldSpec(name, kinds[kind]))
    return tuple(out)


ACCOUNTS = EntitySpec(
    name="Accounts",
    key="ID",
    fields=_fields(
        "ID:guid Code:str Name:str Status:str Blocked:bool IsSales:bool IsSupplier:bool Email:str "
        "Country:str City:str Remarks:str Created:dt Modified:dt"
    ),
    model="Account",
    regular="crm/Accounts",
    sync="sync/CRM/Accounts",
    bulk="bulk/CRM/Accounts",
    deleted_type=2,
    default_rows=150,
    topic="Accounts",
)
PROJECTS = EntitySpec(
    name="Projects",
    key="ID",
    fields=_fields(
        "ID:guid Code:str Description:str Account:guid AccountCode:str Type:int Manager:guid "
        "StartDate:dt EndDate:dt Created:dt Modified:dt"
    ),
    model="Project",
    regular="project/Projects",
    sync="sync/Project/Projects",
    bulk="bulk/Project/Projects",
    deleted_type=21,
    default_rows=70,
)
SALES_INVOICES = EntitySpec(
    name="SalesInvoices",
    key="InvoiceID",
    fields=_fields(
        "InvoiceID:guid InvoiceNumber:int InvoiceTo:guid OrderedBy:guid Journal:str Status:int Type:int "
        "AmountDC:dbl AmountFC:dbl VATAmountDC:dbl Currency:str InvoiceDate:dt DueDate:dt "
        "Description:str Created:dt Modified:dt"
    ),
    model="SalesInvoice",
    regular="salesinvoice/SalesInvoices",
    sync="sync/SalesInvoice/SalesInvoices",
    bulk="bulk/SalesInvoice/SalesInvoices",
    deleted_type=13,
    default_rows=130,
    topic="SalesInvoices",
)
TRANSACTION_LINES = EntitySpec(
    name="TransactionLines",
    key="ID",
    fields=_fields(
        "ID:guid EntryID:guid EntryNumber:int LineNumber:int Date:dt FinancialYear:int FinancialPeriod:int "
        "GLAccount:guid GLAccountCode:str AmountDC:dbl AmountFC:dbl Currency:str Account:guid Project:guid "
        "Status:int Type:int Description:str Created:dt Modified:dt"
    ),
    model="TransactionLine",
    regular="financialtransaction/TransactionLines",
    sync="sync/Financial/TransactionLines",
    bulk="bulk/Financial/TransactionLines",
    deleted_type=1,
    default_rows=2500,
    topic="FinancialTransactions",
)
ITEMS = EntitySpec(
    name="Items",
    key="ID",
    fields=_fields(
        "ID:guid Code:str Description:str IsSalesItem:bool IsStockItem:bool Unit:str Stock:dbl "
        "StandardSalesPrice:dbl StartDate:dt EndDate:dt Created:dt Modified:dt"
    ),
    model="Item",
    regular="logistics/Items",
    sync="sync/Logistics/Items",
    bulk="bulk/Logistics/Items",
    deleted_type=9,
    default_rows=90,
    topic="Items",
)
GL_ACCOUNTS = EntitySpec(
    name="GLAccounts",
    key="ID",
    fields=_fields(
        "ID:guid Code:str Description:str Type:int BalanceSide:str BalanceType:str Blocked:bool "
        "Created:dt Modified:dt"
    ),
    model="GLAccount",
    regular="financial/GLAccounts",
    sync="sync/Financial/GLAccounts",
    bulk="bulk/Financial/GLAccounts",
    deleted_type=7,
    default_rows=80,
)
DELETED = EntitySpec(
    name="Deleted",
    key="ID",
    fields=_fields("ID:guid DeletedBy:guid DeletedDate:dt Division:int EntityKey:guid EntityType:int"),
    model="Deleted",
    regular=None,
    sync="sync/Deleted",
)
DIVISIONS = EntitySpec(
    name="Divisions",
    key="Code",
    fields=_fields(
        "Code:int Description:str Current:bool Customer:guid CustomerName:str Country:str Currency:str "
        "Status:int BlockingStatus:int Created:dt Modified:dt"
    ),
    model="Division",
    regular="system/Divisions",
)
ALL_DIVISIONS = EntitySpec(
    name="AllDivisions",
    key="Code",
    fields=DIVISIONS.fields,
    model="AllDivision",
    regular="system/AllDivisions",
)
HRM_DIVISIONS = EntitySpec(
    name="HrmDivisions",
    key="Code",
    fields=DIVISIONS.fields,
    model="HRM.Division",
    regular="hrm/Divisions",
)
#: the division lists: system/Divisions and hrm/Divisions show the consented divisions,
#: system/AllDivisions every division of the licence
DIVISION_LISTS = (DIVISIONS, ALL_DIVISIONS, HRM_DIVISIONS)
ME_FIELDS = _fields(
    "UserID:guid CurrentDivision:int UserName:str FullName:str Email:str LanguageCode:str "
    "DivisionCustomer:guid DivisionCustomerName:str Legislation:str"
)

#: entities with generated rows, in the order their Timestamp blocks are laid out
DATA_ENTITIES: tuple[EntitySpec, ...] = (
    GL_ACCOUNTS,
    ACCOUNTS,
    ITEMS,
    PROJECTS,
    SALES_INVOICES,
    TRANSACTION_LINES,
)
BY_NAME: dict[str, EntitySpec] = {e.name: e for e in (*DATA_ENTITIES, DELETED, DIVISIONS)}

#: every topic Exact documents; deliveries exist for those an entity above names
KNOWN_TOPICS = frozenset(
    {
        "Accounts",
        "Contacts",
        "Items",
        "SalesInvoices",
        "SalesOrders",
        "FinancialTransactions",
        "PurchaseOrders",
        "StockPositions",
        "Documents",
        "Quotations",
        "BankAccounts",
    }
)


@dataclass(frozen=True)
class Route:
    entity: EntitySpec
    form: str  # "regular" | "bulk" | "sync"

    @property
    def page_size(self) -> int:
        return PAGE_REGULAR if self.form == "regular" else PAGE_BULK_SYNC

    @property
    def type_name(self) -> str:
        if self.form == "regular":
            return f"Exact.Web.Api.Models.{self.entity.model}"
        group = (self.entity.sync or self.entity.bulk or "").split("/")[1]
        prefix = "Sync" if self.form == "sync" else "Bulk"
        return f"Exact.Web.Api.Models.{prefix}.{group}.{self.entity.model}"

    @property
    def has_timestamp(self) -> bool:
        return self.form == "sync"

    @property
    def needs_select(self) -> bool:
        return self.form in ("bulk", "sync")

    @property
    def needs_filter(self) -> bool:
        """Exact demands a $filter on the regular and bulk forms of entities with a sync twin."""
        return self.form in ("regular", "bulk") and self.entity.sync is not None


def _routes() -> dict[str, Route]:
    table: dict[str, Route] = {}
    for spec in (*DATA_ENTITIES, DELETED, *DIVISION_LISTS):
        for form, path in (("regular", spec.regular), ("bulk", spec.bulk), ("sync", spec.sync)):
            if path:
                table[path] = Route(spec, form)
    return table


ROUTES = _routes()
