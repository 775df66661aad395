"""Providers are data: Exact on every country host, and a generic provider from configuration alone."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.errors import ConfigError
from shared.oauth.providers import Providers, exact_provider
from shared.settings import Settings, secret_values

HOSTS = ["nl", "be", "de", "fr", "es", "co.uk", "com"]
BASE_ENV = {
    "EXACT_CLIENT_ID": "exact-id",
    "EXACT_CLIENT_SECRET": "exact-secret-value",
    "EXACT_REDIRECT_URI": "https://app.example.com/api/oauth/callback",
    "EXACT_WEBHOOK_SECRET": "webhook-secret-value",
}
MICROSOFT = {
    "authorize_url": "https://login.microsoftonline.com/contoso/oauth2/v2.0/authorize",
    "token_url": "https://login.microsoftonline.com/contoso/oauth2/v2.0/token",
    "client_id": "11111111-2222-3333-4444-555555555555",
    "client_secret_setting": "MS_CLIENT_SECRET",
    "scopes": ["offline_access", "Files.Read"],
    "refresh_margin_s": 300,
    "access_lifetime_default_s": 3600,
    "refresh_lifetime_s": 7776000,
    "rotates_refresh_tokens": True,
    "extra_authorize_params": {"prompt": "select_account"},
}


def settings(**providers: object) -> Settings:
    env = dict(BASE_ENV, MS_CLIENT_SECRET="ms-secret-value")
    if providers:
        env["OAUTH_PROVIDERS"] = json.dumps(providers)
    return Settings.from_env(env)


@pytest.mark.parametrize("tld", HOSTS)
def test_exact_on_every_country_host(tld: str) -> None:
    base = f"https://start.exactonline.{tld}"
    p = exact_provider(base + "/", client_id="id", client_secret="s", redirect_uri="https://a.example/cb")
    assert p.authorize_url == f"{base}/api/oauth2/auth"
    assert p.token_url == f"{base}/api/oauth2/token"
    assert (p.refresh_margin_s, p.earliest_refresh_s, p.access_lifetime_default_s) == (30, 570, 600)
    assert p.refresh_lifetime_s == 30 * 86400 and p.rotates_refresh_tokens and not p.pkce
    assert p.client_auth == "form"


def test_exact_authorization_url() -> None:
    p = Providers.from_settings(settings()).get("exact")
    url = p.authorization_url("the-state")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://start.exactonline.nl/api/oauth2/auth"
    assert parse_qs(parts.query) == {
        "client_id": ["exact-id"],
        "redirect_uri": ["https://app.example.com/api/oauth/callback"],
        "response_type": ["code"],
        "force_login": ["0"],
        "state": ["the-state"],
    }
    assert "exact-secret-value" not in url and "exact-secret-value" not in repr(p)


def test_generic_provider_from_configuration_alone() -> None:
    registry = Providers.from_settings(settings(microsoft=MICROSOFT))
    assert registry.names() == ["exact", "microsoft"]
    ms = registry.get("microsoft")
    assert ms.client_secret == "ms-secret-value" and ms.pkce  # PKCE on by default for generic ones
    assert ms.refresh_margin_s == 300 and ms.earliest_refresh_s is None
    assert ms.redirect_uri == "https://app.example.com/api/oauth/callback"  # defaults to ours
    query = parse_qs(urlsplit(ms.authorization_url("st", code_challenge="chal")).query)
    assert query["scope"] == ["offline_access Files.Read"]
    assert query["prompt"] == ["select_account"]
    assert query["code_challenge"] == ["chal"] and query["code_challenge_method"] == ["S256"]
    with pytest.raises(ValueError, match="code_challenge"):
        ms.authorization_url("st")
    assert "ms-secret-value" in secret_values(settings(microsoft=MICROSOFT))


def test_another_exact_country_by_configuration() -> None:
    spec = {
        "kind": "exact",
        "base_url": "https://start.exactonline.be",
        "client_id": "be-id",
        "client_secret_setting": "MS_CLIENT_SECRET",
    }
    be = Providers.from_settings(settings(**{"exact-be": spec})).get("exact-be")
    assert be.token_url == "https://start.exactonline.be/api/oauth2/token" and be.earliest_refresh_s == 570


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({**MICROSOFT, "client_secret": "inline"}, "never inline"),
        ({**MICROSOFT, "client_secret_setting": "NOT_SET_ANYWHERE"}, "NOT_SET_ANYWHERE, which is not set"),
        ({**MICROSOFT, "token_url": "http://login.example.com/token"}, "token_url must be an https URL"),
        ({**MICROSOFT, "scopes": "offline_access", "pkce": "yes"}, "pkce must be true or false"),
        ({**MICROSOFT, "client_auth": "jwt"}, "client_auth must be"),
        ({**MICROSOFT, "colour": "blue"}, "unknown field"),
        ({**MICROSOFT, "refresh_margin_s": 4000}, "must exceed refresh_margin_s"),
        ({k: v for k, v in MICROSOFT.items() if k != "client_id"}, "client_id is required"),
    ],
)
def test_bad_provider_configuration_names_the_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        Providers.from_settings(settings(microsoft=spec))
    assert "OAUTH_PROVIDERS.microsoft" in str(raised.value) or "never inline" in message


def test_bad_json_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OAUTH_PROVIDERS is not valid JSON"):
        Settings.from_env({**BASE_ENV, "OAUTH_PROVIDERS": "{nope"})
    with pytest.raises(ConfigError, match="'exact' is built in"):
        Providers.from_settings(settings(exact=MICROSOFT))


def test_unknown_provider_lists_the_configured_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown OAuth provider 'google' \(configured: exact\)"):
        Providers.from_settings(settings()).get("google")
