"""Every setting exactsync reads, typed, from the environment.

The same names serve as Function App settings in Azure and as environment variables locally.
Unset, most settings fall back to embedded local defaults under ``EXACTSYNC_HOME`` so that
``exactsync demo`` runs with nothing configured. Against the real Exact Online (a non-loopback
``EXACT_BASE_URL``) the app credentials have no defaults: a missing one fails fast, naming it.

``SETTINGS`` is the single table of names. The Bicep templates are tested against it: every
setting marked ``in_azure`` must be set by ``infra/``, and ``infra/`` sets nothing else.
Add a setting by adding a row here and a field on ``Settings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.errors import ConfigError

#: Defaults the local sandbox registers its one app with; only used against a loopback base URL.
LOCAL_CLIENT_ID = "exactsync-local-client"
LOCAL_CLIENT_SECRET = "local-client-secret-not-for-production"  # noqa: S105 (sandbox-only default)
LOCAL_WEBHOOK_SECRET = "local-webhook-secret-not-for-production"  # noqa: S105 (sandbox-only default)
LOCAL_SERVE_PORT = 7071
LOCAL_REDIRECT_URI = f"http://127.0.0.1:{LOCAL_SERVE_PORT}/api/oauth/callback"
DEFAULT_BASE_URL = "https://start.exactonline.nl"


@dataclass(frozen=True)
class SettingSpec:
    name: str
    doc: str
    #: True when the deployed Function App must receive this setting from infra/.
    in_azure: bool = False
    secret: bool = False


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("EXACTSYNC_HOME", "Folder for local state (token file, SQLite, locks). Default ./.exactsync"),
    SettingSpec(
        "EXACT_BASE_URL", "Exact Online host of the country, e.g. https://start.exactonline.nl", in_azure=True
    ),
    SettingSpec("EXACT_CLIENT_ID", "Client id of the app registered in the Exact App Center", in_azure=True),
    SettingSpec(
        "EXACT_CLIENT_SECRET",
        "Client secret of that app (Key Vault reference in Azure)",
        in_azure=True,
        secret=True,
    ),
    SettingSpec(
        "EXACT_REDIRECT_URI", "Redirect URI registered for the app: <site>/api/oauth/callback", in_azure=True
    ),
    SettingSpec(
        "EXACT_WEBHOOK_SECRET",
        "Webhook secret of the app, verifies HashCode (Key Vault reference in Azure)",
        in_azure=True,
        secret=True,
    ),
    SettingSpec(
        "KEY_VAULT_URL", "Set: tokens live in this Key Vault. Unset: a local file store", in_azure=True
    ),
    SettingSpec(
        "SQL_SERVER", "Azure SQL server host (xxx.database.windows.net). Unset: SQLite", in_azure=True
    ),
    SettingSpec("SQL_DATABASE", "Azure SQL database name", in_azure=True),
    SettingSpec(
        "SQL_DRIVER", "ODBC driver name or path to libmsodbcsql. Default: ODBC Driver 18 for SQL Server"
    ),
    SettingSpec(
        "AZURE_CLIENT_ID", "Client id of the user-assigned managed identity the app runs as", in_azure=True
    ),
    # The app's storage account, read under the names the Functions host reads for its own
    # identity-based connection, so the queue trigger and our code can never disagree.
    SettingSpec(
        "AzureWebJobsStorage",
        "Connection string (Azurite: UseDevelopmentStorage=true). Unset with no URIs: local files and an embedded queue",
    ),
    SettingSpec(
        "AzureWebJobsStorage__blobServiceUri",
        "Blob endpoint: token-lock leases and OAuth state (managed identity)",
        in_azure=True,
    ),
    SettingSpec(
        "AzureWebJobsStorage__queueServiceUri", "Queue endpoint: load steps (managed identity)", in_azure=True
    ),
    SettingSpec("AzureWebJobsStorage__credential", "managedidentity", in_azure=True),
    SettingSpec("AzureWebJobsStorage__clientId", "Client id of the identity used for storage", in_azure=True),
    SettingSpec(
        "LOCK_CONTAINER",
        "Blob container holding one lease blob per connection. Default token-locks",
        in_azure=True,
    ),
    SettingSpec("LOAD_QUEUE", "Queue of load steps. Default load-steps", in_azure=True),
    SettingSpec(
        "ROTATE_SCHEDULE", "NCRONTAB of the rotate_tokens timer. Default every 5 minutes", in_azure=True
    ),
    SettingSpec("SYNC_SCHEDULE", "NCRONTAB of the schedule_syncs timer. Default hourly", in_azure=True),
    SettingSpec(
        "KEEPALIVE_AFTER_HOURS",
        "Refresh an idle chain when its refresh token is older than this. Default 72",
        in_azure=True,
    ),
    SettingSpec(
        "NOTIFY_WEBHOOK_URL",
        "Optional Teams/Slack-style URL told when a connection needs consent",
        in_azure=True,
    ),
    SettingSpec(
        "PUBLIC_BASE_URL", "Public https base of the app, for re-consent links. Default from WEBSITE_HOSTNAME"
    ),
    SettingSpec(
        "SYNC_DIVISIONS",
        "Comma-separated division codes to sync. Unset: every division the consent allows",
        in_azure=True,
    ),
    SettingSpec(
        "SYNC_ENTITIES", "Comma-separated entity names to sync. Unset: the whole catalog", in_azure=True
    ),
    SettingSpec("DELETE_MODE", "hard (delete rows) or soft (set DeletedAt). Default hard", in_azure=True),
    SettingSpec(
        "DAILY_CALL_RESERVE",
        "API calls per division and day kept for incremental syncs. Default 500",
        in_azure=True,
    ),
    SettingSpec(
        "STEP_TIME_BUDGET_SECONDS",
        "How long one load step runs pages before handing over. Default 300",
        in_azure=True,
    ),
    SettingSpec("LOG_LEVEL", "Python log level. Default INFO"),
    SettingSpec(
        "OAUTH_PROVIDERS",
        "Optional JSON object: more OAuth providers by name (each names its client-secret setting in client_secret_setting)",
    ),
)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (where plain http and the local defaults are fine)."""
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


def _https_or_loopback(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError(f"{name} must be an absolute http(s) URL, got {url!r}")
    if parts.scheme == "http" and not is_loopback(url):
        raise ConfigError(f"{name} must use https (http only for 127.0.0.1/localhost), got {url!r}")
    return url.rstrip("/")


def _int(
    env: Mapping[str, str], name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


def _csv(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    home: Path
    exact_base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    webhook_secret: str = field(repr=False)
    key_vault_url: str | None = None
    sql_server: str | None = None
    sql_database: str | None = None
    sql_driver: str = "ODBC Driver 18 for SQL Server"
    azure_client_id: str | None = None
    storage_blob_url: str | None = None
    storage_queue_url: str | None = None
    storage_connection_string: str | None = field(default=None, repr=False)
    storage_client_id: str | None = None
    lock_container: str = "token-locks"
    load_queue: str = "load-steps"
    rotate_schedule: str = "0 */5 * * * *"
    sync_schedule: str = "0 0 * * * *"
    keepalive_after_hours: int = 72
    notify_webhook_url: str | None = field(default=None, repr=False)
    public_base_url: str | None = None
    sync_divisions: tuple[int, ...] = ()
    sync_entities: tuple[str, ...] = ()
    delete_mode: str = "hard"
    daily_call_reserve: int = 500
    step_time_budget_seconds: int = 300
    log_level: str = "INFO"
    oauth_providers: str | None = None
    #: values of the settings that OAUTH_PROVIDERS names as client secrets: (setting name, value)
    oauth_provider_secrets: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def is_local_sandbox(self) -> bool:
        return is_loopback(self.exact_base_url)

    @property
    def uses_key_vault(self) -> bool:
        return self.key_vault_url is not None

    @property
    def uses_azure_sql(self) -> bool:
        return self.sql_server is not None

    @property
    def uses_azure_storage(self) -> bool:
        return bool(self.storage_blob_url or self.storage_connection_string)

    @property
    def sqlite_path(self) -> Path:
        return self.home / "warehouse.sqlite3"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, need_app: bool = True) -> Settings:
        """Read and validate every setting; raise ``ConfigError`` naming the first bad one.

        ``need_app=False`` serves deploy-time commands (``exactsync migrate``) that touch only
        the warehouse: the Exact app credentials may then be absent (they read as empty).
        """
        env = os.environ if env is None else env
        home = Path(env.get("EXACTSYNC_HOME", "").strip() or "./.exactsync")
        base_url = _https_or_loopback(
            "EXACT_BASE_URL", env.get("EXACT_BASE_URL", "").strip() or DEFAULT_BASE_URL
        )
        local = is_loopback(base_url)

        def credential(name: str, local_default: str) -> str:
            value = env.get(name, "").strip()
            if value:
                return value
            if local:
                return local_default
            if not need_app:
                return local_default if name == "EXACT_REDIRECT_URI" else ""
            raise ConfigError(f"{name} is not set (required when EXACT_BASE_URL is {base_url})")

        client_id = credential("EXACT_CLIENT_ID", LOCAL_CLIENT_ID)
        client_secret = credential("EXACT_CLIENT_SECRET", LOCAL_CLIENT_SECRET)
        redirect_uri = _https_or_loopback(
            "EXACT_REDIRECT_URI", credential("EXACT_REDIRECT_URI", LOCAL_REDIRECT_URI)
        )
        webhook_secret = credential("EXACT_WEBHOOK_SECRET", LOCAL_WEBHOOK_SECRET)
        sql_server = env.get("SQL_SERVER", "").strip() or None
        sql_database = env.get("SQL_DATABASE", "").strip() or None
        if bool(sql_server) != bool(sql_database):
            missing = "SQL_DATABASE" if sql_server else "SQL_SERVER"
            raise ConfigError(f"{missing} is not set: SQL_SERVER and SQL_DATABASE go together")
        key_vault_url = env.get("KEY_VAULT_URL", "").strip() or None
        if key_vault_url:
            key_vault_url = _https_or_loopback("KEY_VAULT_URL", key_vault_url)
        delete_mode = env.get("DELETE_MODE", "").strip().lower() or "hard"
        if delete_mode not in {"hard", "soft"}:
            raise ConfigError(f"DELETE_MODE must be 'hard' or 'soft', got {delete_mode!r}")
        divisions: list[int] = []
        for raw in _csv(env, "SYNC_DIVISIONS"):
            try:
                divisions.append(int(raw))
            except ValueError:
                raise ConfigError(f"SYNC_DIVISIONS must list division codes (numbers), got {raw!r}") from None
        public_base = env.get("PUBLIC_BASE_URL", "").strip()
        if not public_base and env.get("WEBSITE_HOSTNAME", "").strip():
            public_base = "https://" + env["WEBSITE_HOSTNAME"].strip()
        log_level = env.get("LOG_LEVEL", "").strip().upper() or "INFO"
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}")

        def optional(name: str) -> str | None:
            return env.get(name, "").strip() or None

        return cls(
            home=home,
            exact_base_url=base_url,
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            webhook_secret=webhook_secret,
            key_vault_url=key_vault_url,
            sql_server=sql_server,
            sql_database=sql_database,
            sql_driver=optional("SQL_DRIVER") or "ODBC Driver 18 for SQL Server",
            azure_client_id=optional("AZURE_CLIENT_ID"),
            storage_blob_url=optional("AzureWebJobsStorage__blobServiceUri"),
            storage_queue_url=optional("AzureWebJobsStorage__queueServiceUri"),
            storage_connection_string=optional("AzureWebJobsStorage"),
            storage_client_id=optional("AzureWebJobsStorage__clientId"),
            lock_container=optional("LOCK_CONTAINER") or "token-locks",
            load_queue=optional("LOAD_QUEUE") or "load-steps",
            rotate_schedule=optional("ROTATE_SCHEDULE") or "0 */5 * * * *",
            sync_schedule=optional("SYNC_SCHEDULE") or "0 0 * * * *",
            keepalive_after_hours=_int(env, "KEEPALIVE_AFTER_HOURS", 72, minimum=1, maximum=24 * 20),
            notify_webhook_url=optional("NOTIFY_WEBHOOK_URL"),
            public_base_url=public_base.rstrip("/") or None,
            sync_divisions=tuple(divisions),
            sync_entities=_csv(env, "SYNC_ENTITIES"),
            delete_mode=delete_mode,
            daily_call_reserve=_int(env, "DAILY_CALL_RESERVE", 500),
            step_time_budget_seconds=_int(env, "STEP_TIME_BUDGET_SECONDS", 300, minimum=10),
            log_level=log_level,
            oauth_providers=optional("OAUTH_PROVIDERS"),
            oauth_provider_secrets=_named_secrets(env, optional("OAUTH_PROVIDERS")),
        )


def _named_secrets(env: Mapping[str, str], providers_json: str | None) -> tuple[tuple[str, str], ...]:
    """Read the settings OAUTH_PROVIDERS names as client secrets (validated in shared.oauth.providers)."""
    if not providers_json:
        return ()
    found: list[tuple[str, str]] = []
    for spec in oauth_providers_object(providers_json).values():
        name = spec.get("client_secret_setting") if isinstance(spec, dict) else None
        if isinstance(name, str) and env.get(name, "").strip():
            found.append((name, env[name].strip()))
    return tuple(found)


def oauth_providers_object(raw: str) -> dict[str, Any]:
    """``OAUTH_PROVIDERS`` decoded: a JSON object (its fields are checked in shared.oauth.providers)."""
    import json

    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"OAUTH_PROVIDERS is not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ConfigError("OAUTH_PROVIDERS must be a JSON object mapping provider names to their fields")
    return data


def secret_values(settings: Settings) -> tuple[str, ...]:
    """The configured secret values, for redaction filters."""
    values = (
        settings.client_secret,
        settings.webhook_secret,
        settings.storage_connection_string,
        *(value for _, value in settings.oauth_provider_secrets),
    )
    return tuple(v for v in values if v)
