"""OAuth providers as data.

Everything that differs between providers is a field here, so the keeper, the consent flow and
the token endpoint client have no ``if provider == "exact"`` anywhere. Exact Online comes built
in (one host per country: ``exact_provider(base_url)``); any other OAuth 2.0 authorization-code
provider (Microsoft identity platform, ...) is configured with the ``OAUTH_PROVIDERS`` setting
alone, a JSON object mapping a provider name to its fields::

    {"microsoft": {
        "authorize_url": "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/authorize",
        "token_url": "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token",
        "client_id": "<application id>",
        "client_secret_setting": "MS_CLIENT_SECRET",
        "scopes": ["offline_access", "Files.Read"],
        "pkce": true,
        "refresh_margin_s": 300,
        "access_lifetime_default_s": 3600,
        "refresh_lifetime_s": 7776000,
        "rotates_refresh_tokens": true,
        "extra_authorize_params": {"prompt": "select_account"}},
     "exact-be": {"kind": "exact", "base_url": "https://start.exactonline.be",
                  "client_id": "<be app id>", "client_secret_setting": "EXACT_BE_CLIENT_SECRET"}}

The client secret is never inline: ``client_secret_setting`` names another setting (a Key Vault
reference in Azure) whose value the settings layer reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from shared.errors import ConfigError
from shared.settings import Settings, is_loopback, oauth_providers_object

ClientAuth = Literal["form", "basic"]

EXACT = "exact"

#: Exact Online's rules (see shared/reference/exact-online-api.md).
EXACT_ACCESS_LIFETIME = 600.0
EXACT_EARLIEST_REFRESH = 570.0
EXACT_REFRESH_MARGIN = 30.0
EXACT_REFRESH_LIFETIME = 30 * 24 * 3600.0


@dataclass(frozen=True)
class Provider:
    """One OAuth 2.0 authorization-code provider and our app's registration with it.

    Timing rules, all in seconds:

    - ``refresh_margin_s``: refresh when the access token has less than this left (Exact: 30).
    - ``earliest_refresh_s``: the provider refuses a refresh sooner than this after the current
      token was issued (Exact: 570). None: no such rule.
    - ``access_lifetime_default_s``: assumed when a token answer has no ``expires_in``.
    - ``refresh_lifetime_s``: a refresh token dies this long after it was issued (Exact: 30 days).
      None: unknown.
    """

    name: str
    authorize_url: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    scopes: tuple[str, ...] = ()
    client_auth: ClientAuth = "form"
    pkce: bool = False
    refresh_margin_s: float = 60.0
    earliest_refresh_s: float | None = None
    access_lifetime_default_s: float = 3600.0
    refresh_lifetime_s: float | None = None
    rotates_refresh_tokens: bool = False
    extra_authorize_params: tuple[tuple[str, str], ...] = ()

    def authorization_url(
        self,
        state: str,
        *,
        code_challenge: str | None = None,
        redirect_uri: str | None = None,
    ) -> str:
        """The URL a person opens to consent. ``code_challenge`` (S256) when ``pkce`` is on."""
        params: list[tuple[str, str]] = [
            ("client_id", self.client_id),
            ("redirect_uri", redirect_uri or self.redirect_uri),
            ("response_type", "code"),
        ]
        if self.scopes:
            params.append(("scope", " ".join(self.scopes)))
        params.extend(self.extra_authorize_params)
        params.append(("state", state))
        if self.pkce:
            if not code_challenge:
                raise ValueError(f"provider {self.name!r} uses PKCE: a code_challenge is required")
            params.extend([("code_challenge", code_challenge), ("code_challenge_method", "S256")])
        separator = "&" if urlsplit(self.authorize_url).query else "?"
        return self.authorize_url + separator + urlencode(params)

    def refresh_expires_at(self, issued_at: float) -> float | None:
        return None if self.refresh_lifetime_s is None else issued_at + self.refresh_lifetime_s

    def earliest_refresh_at(self, issued_at: float) -> float | None:
        return None if self.earliest_refresh_s is None else issued_at + self.earliest_refresh_s

    @property
    def host(self) -> str:
        """The token endpoint as shown in messages (scheme, host and path; never a query)."""
        parts = urlsplit(self.token_url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"


def exact_provider(
    base_url: str,
    *,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    name: str = EXACT,
) -> Provider:
    """Exact Online on one country host (``https://start.exactonline.nl``, ``.be``, ``.co.uk``...)."""
    base = base_url.rstrip("/")
    return Provider(
        name=name,
        authorize_url=f"{base}/api/oauth2/auth",
        token_url=f"{base}/api/oauth2/token",
        client_id=client_id,
        client_secret=client_secret,
        redirect_uri=redirect_uri,
        scopes=(),  # set on the app registration, not per request
        client_auth="form",
        pkce=False,  # unconfirmed for Exact: send it only where known to be supported
        refresh_margin_s=EXACT_REFRESH_MARGIN,
        earliest_refresh_s=EXACT_EARLIEST_REFRESH,
        access_lifetime_default_s=EXACT_ACCESS_LIFETIME,
        refresh_lifetime_s=EXACT_REFRESH_LIFETIME,
        rotates_refresh_tokens=True,
        extra_authorize_params=(("force_login", "0"),),
    )


class Providers:
    """The registry of configured providers, by name."""

    def __init__(self, providers: Mapping[str, Provider] | list[Provider]) -> None:
        items = providers.values() if isinstance(providers, Mapping) else providers
        self._by_name: dict[str, Provider] = {}
        for provider in items:
            if provider.name in self._by_name:
                raise ConfigError(f"provider {provider.name!r} is configured twice")
            self._by_name[provider.name] = provider

    def get(self, name: str) -> Provider:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise ConfigError(f"unknown OAuth provider {name!r} (configured: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __iter__(self) -> Iterator[Provider]:
        return iter(self._by_name.values())

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def secret_values(self) -> list[str]:
        return [p.client_secret for p in self if p.client_secret]

    @classmethod
    def from_settings(cls, settings: Settings) -> Providers:
        """Exact Online from ``EXACT_*`` plus every provider of ``OAUTH_PROVIDERS``."""
        providers = [
            exact_provider(
                settings.exact_base_url,
                client_id=settings.client_id,
                client_secret=settings.client_secret,
                redirect_uri=settings.redirect_uri,
            )
        ]
        secrets = dict(settings.oauth_provider_secrets)
        for name, spec in parse_provider_config(settings.oauth_providers).items():
            providers.append(_provider_from_spec(name, spec, settings, secrets))
        return cls(providers)


_SETTING = "OAUTH_PROVIDERS"
_FIELDS = {
    "kind",
    "base_url",
    "authorize_url",
    "token_url",
    "client_id",
    "client_secret_setting",
    "redirect_uri",
    "scopes",
    "client_auth",
    "pkce",
    "refresh_margin_s",
    "earliest_refresh_s",
    "access_lifetime_default_s",
    "refresh_lifetime_s",
    "rotates_refresh_tokens",
    "extra_authorize_params",
}


def parse_provider_config(raw: str | None) -> dict[str, dict[str, Any]]:
    """The ``OAUTH_PROVIDERS`` JSON as ``{name: fields}``; ConfigError naming what is wrong."""
    if not raw or not raw.strip():
        return {}
    data = oauth_providers_object(raw)
    for name, spec in data.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{_SETTING}.{name} must be a JSON object")
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise ConfigError(f"{_SETTING}: provider name {name!r} may hold only letters, digits, '-', '_'")
        if name == EXACT:
            raise ConfigError(f"{_SETTING}: {EXACT!r} is built in (EXACT_* settings); use another name")
        if "client_secret" in spec:
            raise ConfigError(
                f"{_SETTING}.{name}: put the client secret in its own setting and name that setting "
                "in client_secret_setting (never inline)"
            )
        unknown = set(spec) - _FIELDS
        if unknown:
            raise ConfigError(f"{_SETTING}.{name}: unknown field(s) {', '.join(sorted(unknown))}")
    return data


def _provider_from_spec(
    name: str, spec: dict[str, Any], settings: Settings, secrets: Mapping[str, str]
) -> Provider:
    where = f"{_SETTING}.{name}"

    def text(key: str, default: str | None = None) -> str:
        value = spec.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}.{key} is required (a non-empty string)")
        return value.strip()

    def url(key: str, default: str | None = None) -> str:
        value = text(key, default)
        scheme = urlsplit(value).scheme
        if scheme != "https" and not (scheme == "http" and is_loopback(value)):
            raise ConfigError(f"{where}.{key} must be an https URL (http only for loopback), got {value!r}")
        return value

    def number(key: str, default: float | None) -> float | None:
        value = spec.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where}.{key} must be a non-negative number of seconds")
        return float(value)

    def flag(key: str, default: bool) -> bool:
        value = spec.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}.{key} must be true or false")
        return value

    secret_setting = text("client_secret_setting")
    secret = secrets.get(secret_setting, "")
    if not secret:
        raise ConfigError(f"{where}.client_secret_setting names {secret_setting}, which is not set")
    client_id = text("client_id")
    redirect_uri = url("redirect_uri", settings.redirect_uri)

    kind = spec.get("kind", "oauth2")
    if kind == EXACT:
        return exact_provider(
            url("base_url"),
            client_id=client_id,
            client_secret=secret,
            redirect_uri=redirect_uri,
            name=name,
        )
    if kind != "oauth2":
        raise ConfigError(f"{where}.kind must be 'oauth2' (default) or 'exact', got {kind!r}")

    scopes = spec.get("scopes", [])
    if isinstance(scopes, str):
        scopes = scopes.split()
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s for s in scopes):
        raise ConfigError(f"{where}.scopes must be a list of strings")
    client_auth = spec.get("client_auth", "form")
    if client_auth not in ("form", "basic"):
        raise ConfigError(f"{where}.client_auth must be 'form' or 'basic', got {client_auth!r}")
    extra = spec.get("extra_authorize_params", {})
    if not isinstance(extra, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
    ):
        raise ConfigError(f"{where}.extra_authorize_params must be an object of strings")
    margin = number("refresh_margin_s", 60.0)
    lifetime = number("access_lifetime_default_s", 3600.0)
    assert margin is not None and lifetime is not None
    if lifetime <= margin:
        raise ConfigError(f"{where}: access_lifetime_default_s must exceed refresh_margin_s")
    return Provider(
        name=name,
        authorize_url=url("authorize_url"),
        token_url=url("token_url"),
        client_id=client_id,
        client_secret=secret,
        redirect_uri=redirect_uri,
        scopes=tuple(scopes),
        client_auth=client_auth,
        pkce=flag("pkce", True),
        refresh_margin_s=margin,
        earliest_refresh_s=number("earliest_refresh_s", None),
        access_lifetime_default_s=lifetime,
        refresh_lifetime_s=number("refresh_lifetime_s", None),
        rotates_refresh_tokens=flag("rotates_refresh_tokens", False),
        extra_authorize_params=tuple(extra.items()),
    )
