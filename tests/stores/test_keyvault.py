"""KeyVaultTokenStore through the real SecretClient pipeline, against the Key Vault double."""

from __future__ import annotations

import logging
import traceback

import pytest

from shared.stores.base import TokenStoreError
from shared.stores.keyvault import KeyVaultTokenStore
from shared.tokens import TokenStatus
from tests.doubles.clock import ManualClock
from tests.doubles.keyvault import VAULT_RESOURCE, FakeTokenCredential, KeyVaultDouble
from tests.stores.records import ACCESS_MARK, REFRESH_MARK, record

SECRET = "exactsync-conn-acme-nl"


@pytest.fixture
def vault(request: pytest.FixtureRequest) -> KeyVaultDouble:
    # A vault host of its own per test: the SDK caches the auth challenge per host, process-wide.
    name = "".join(c for c in request.node.name.lower() if c.isalnum())[:20]
    return KeyVaultDouble(f"https://kv{name}{id(request) % 10_000}.vault.azure.net")


@pytest.fixture
def credential() -> FakeTokenCredential:
    return FakeTokenCredential()


@pytest.fixture
def store(vault: KeyVaultDouble, credential: FakeTokenCredential) -> KeyVaultTokenStore:
    return KeyVaultTokenStore(
        vault.vault_url, credential, transport=vault, clock=ManualClock(1_800_000_100.0)
    )


def _secret_texts(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def test_round_trip_one_version_per_save_and_none_when_missing(
    store: KeyVaultTokenStore, vault: KeyVaultDouble, credential: FakeTokenCredential
) -> None:
    assert store.load("acme-nl") is None
    first = record(generation=1)
    store.save(first)
    assert vault.version_count(SECRET) == 1
    assert store.load("acme-nl") == first

    second = record(generation=2, status=TokenStatus.REFRESHING)
    store.save(second)
    assert store.load("acme-nl") == second
    assert store.load("acme-nl") == second  # reads never write
    assert vault.version_count(SECRET) == 2

    # The bearer challenge ran once, and the token was asked for the vault's scope and tenant.
    assert [r.status for r in vault.requests][:2] == [401, 404]
    assert credential.requests[0] == ((f"{VAULT_RESOURCE}/.default",), vault.tenant_id)
    assert all(r.authorized for r in vault.requests[1:])


def test_secret_layout_content_type_tags_and_expiry(store: KeyVaultTokenStore, vault: KeyVaultDouble) -> None:
    death = 1_800_000_000.0 + 30 * 86400
    saved = record(generation=3, status=TokenStatus.IN_DOUBT).with_changes(
        last_error="token endpoint answered 503", subject="someone@example.com", refresh_expires_at=death
    )
    store.save(saved)
    stored = vault.latest(SECRET)
    assert stored is not None
    assert stored.value == saved.to_json()
    assert stored.content_type == "application/json"
    assert stored.expires == int(death)  # expires_on = the refresh token's death
    assert stored.tags == {
        "managed-by": "exactsync",
        "connection": "acme-nl",
        "provider": "exact",
        "status": "in_doubt",
        "generation": "3",
        "access-expires": "2027-01-15T08:10:00Z",
        "refresh-issued": "2027-01-15T08:00:00Z",
        "refresh-expires": "2027-02-14T08:00:00Z",
        "written-at": "2027-01-15T08:01:40Z",
    }
    tag_text = repr(stored.tags)
    for secret in (saved.access_token, saved.refresh_token, ACCESS_MARK, REFRESH_MARK, "503", "someone"):
        assert secret not in tag_text


def test_expiry_without_a_known_death_follows_refresh_lifetime(vault: KeyVaultDouble) -> None:
    unknown = record(generation=1)  # refresh_expires_at is None: the provider's rule is unknown
    KeyVaultTokenStore(vault.vault_url, FakeTokenCredential(), transport=vault).save(unknown)
    latest = vault.latest(SECRET)
    assert latest is not None and latest.expires is None  # no guessed expiry by default

    lifetime = 90 * 86400.0
    store = KeyVaultTokenStore(
        vault.vault_url, FakeTokenCredential(), transport=vault, refresh_lifetime=lifetime
    )
    store.save(unknown)
    latest = vault.latest(SECRET)
    assert latest is not None and latest.expires == int(unknown.refresh_issued_at + lifetime)


@pytest.mark.parametrize("strict", [False, True])
def test_a_secret_past_its_expiry_reads_as_dead_chain_or_as_stored(
    vault: KeyVaultDouble, strict: bool
) -> None:
    vault.refuse_expired_reads = strict
    store = KeyVaultTokenStore(vault.vault_url, FakeTokenCredential(), transport=vault)
    dead = record(generation=4).with_changes(refresh_expires_at=1_000_000_000.0)  # long past
    store.save(dead)
    loaded = store.load("acme-nl")
    if not strict:  # what the service does: the stored record comes back as it is
        assert loaded == dead
        return
    # The strict reading refuses the get (403 SecretExpired): the tags tell what we need.
    assert loaded is not None
    assert loaded.status is TokenStatus.NEEDS_REAUTH
    assert (loaded.connection, loaded.provider, loaded.generation) == ("acme-nl", "exact", 4)
    assert loaded.refresh_issued_at == dead.refresh_issued_at
    assert loaded.refresh_expires_at == dead.refresh_expires_at
    assert loaded.access_token == loaded.refresh_token == ""
    assert loaded.last_error is not None and "consent again" in loaded.last_error
    assert [r.status for r in vault.requests if r.path == f"/secrets/{SECRET}/"] == [403]

    store.save(record(generation=5).with_changes(refresh_expires_at=4_000_000_000.0))  # a new consent
    assert store.load("acme-nl").generation == 5  # type: ignore[union-attr]


def test_throttling_honours_retry_after_and_the_write_succeeds(
    store: KeyVaultTokenStore, vault: KeyVaultDouble
) -> None:
    store.save(record(generation=1))
    vault.throttle_next(2, retry_after=7)
    store.save(record(generation=2))
    assert store.load("acme-nl").generation == 2  # type: ignore[union-attr]
    assert vault.version_count(SECRET) == 2  # the throttled attempts wrote nothing
    assert [r.status for r in vault.requests if r.method == "PUT"][-3:] == [429, 429, 200]
    assert vault.slept.count(7) == 2  # the SDK waited exactly Retry-After, twice
    assert vault.early_retries == 0  # and never came back before it


def test_a_retry_after_beyond_the_cap_fails_fast_as_transient(vault: KeyVaultDouble) -> None:
    store = KeyVaultTokenStore(vault.vault_url, FakeTokenCredential(), transport=vault, max_retry_after=30)
    vault.throttle_next(1, retry_after=3600)
    with pytest.raises(TokenStoreError) as info:
        store.save(record(generation=1))
    assert info.value.transient and info.value.retry_after == 3600
    assert "429" in str(info.value) and "retry after 3600 s" in str(info.value)
    assert vault.slept == []  # did not sleep an hour
    assert vault.version_count(SECRET) == 0


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried(store: KeyVaultTokenStore, vault: KeyVaultDouble, status: int) -> None:
    vault.fail_next(2, status=status)
    store.save(record(generation=1))
    assert [r.status for r in vault.requests if r.method == "PUT" and r.authorized] == [status, status, 200]
    assert vault.version_count(SECRET) == 1
    assert vault.slept and sum(vault.slept) > 0  # with exponential backoff (the first retry is immediate)


def test_transport_errors_are_retried_and_a_lost_answer_costs_one_extra_version(
    store: KeyVaultTokenStore, vault: KeyVaultDouble
) -> None:
    vault.raise_next(1)
    store.save(record(generation=1))
    assert vault.version_count(SECRET) == 1

    vault.lose_next_responses(1)  # applied by the vault, answer lost, SDK retries the PUT
    store.save(record(generation=2))
    versions = vault.versions(SECRET)
    assert len(versions) == 3
    assert versions[-1].value == versions[-2].value == record(generation=2).to_json()
    assert store.load("acme-nl") == record(generation=2)


def test_persistent_failure_raises_a_transient_error_without_secrets(
    vault: KeyVaultDouble, caplog: pytest.LogCaptureFixture
) -> None:
    store = KeyVaultTokenStore(vault.vault_url, FakeTokenCredential(), transport=vault, retry_total=2)
    caplog.set_level(logging.DEBUG)
    vault.fail_next(10, status=503)
    doomed = record(generation=5)
    with pytest.raises(TokenStoreError) as info:
        store.save(doomed)
    error = info.value
    assert error.transient and error.connection == "acme-nl"
    assert "503" in str(error) and SECRET in str(error)
    everything = _secret_texts(error) + caplog.text
    for secret in (doomed.access_token, doomed.refresh_token, ACCESS_MARK, REFRESH_MARK):
        assert secret not in everything
    assert vault.version_count(SECRET) == 0

    vault.clear_faults()
    vault.raise_next(10)
    with pytest.raises(TokenStoreError, match="unreachable") as info:
        store.save(doomed)
    assert info.value.transient
    assert ACCESS_MARK not in _secret_texts(info.value)


def test_forbidden_is_not_transient_and_names_the_role(vault: KeyVaultDouble) -> None:
    store = KeyVaultTokenStore(vault.vault_url, FakeTokenCredential(), transport=vault)
    store.save(record())
    vault.fail_next(1, status=403, writes_only=False)
    with pytest.raises(TokenStoreError, match="Key Vault Secrets Officer") as info:
        store.load("acme-nl")
    assert not info.value.transient


def test_a_damaged_secret_value_gives_a_clear_error(store: KeyVaultTokenStore, vault: KeyVaultDouble) -> None:
    store.client.set_secret(SECRET, '{"connection": "acme-nl", "access_token": "AT-SECRET-VALUE-x"')
    with pytest.raises(TokenStoreError, match="invalid JSON") as info:
        store.load("acme-nl")
    assert ACCESS_MARK not in _secret_texts(info.value)
    store.client.set_secret(SECRET, '{"connection": "acme-nl", "access_token": "AT-SECRET-VALUE-x"}')
    with pytest.raises(TokenStoreError, match="not a complete token record") as info:
        store.load("acme-nl")
    assert ACCESS_MARK not in _secret_texts(info.value)


def test_list_connections_pages_and_ignores_foreign_secrets(vault: KeyVaultDouble) -> None:
    vault.page_size = 3
    store = KeyVaultTokenStore(vault.vault_url, FakeTokenCredential(), transport=vault)
    names = [f"client-{i:02d}" for i in range(8)]
    for name in reversed(names):
        store.save(record(name))
    store.client.set_secret("exact-client-secret", "not a connection")
    store.client.set_secret("exactsync-conn-" + "x" * 41, "{}")  # not a valid connection name
    assert store.list_connections() == names
    list_calls = [r for r in vault.requests if r.path == "/secrets" and r.method == "GET"]
    assert len(list_calls) == 4  # 11 secrets, 3 a page: the nextLink chain was followed


def test_delete_then_consent_again_reuses_the_name(store: KeyVaultTokenStore, vault: KeyVaultDouble) -> None:
    store.save(record(generation=1))
    store.save(record(generation=2))
    store.delete("acme-nl")
    assert vault.is_deleted(SECRET)
    assert store.load("acme-nl") is None
    assert store.list_connections() == []
    store.delete("acme-nl")  # deleting what is gone is fine

    fresh = record(generation=1).with_changes(consented_at=1_800_000_500.0)
    store.save(fresh)  # soft-deleted name: recovered, then written
    assert store.load("acme-nl") == fresh
    assert not vault.is_deleted(SECRET)
    assert vault.version_count(SECRET) == 3


def test_constructing_the_store_needs_a_vault_and_a_credential() -> None:
    with pytest.raises(ValueError, match="vault_url and credential"):
        KeyVaultTokenStore("https://x.vault.azure.net", None)
    with pytest.raises(ValueError, match="secret_prefix"):
        KeyVaultTokenStore("https://x.vault.azure.net", FakeTokenCredential(), secret_prefix="bad_prefix")


def test_a_ready_secret_client_can_be_given(vault: KeyVaultDouble) -> None:
    from azure.keyvault.secrets import SecretClient

    client = SecretClient(vault.vault_url, FakeTokenCredential(), transport=vault)
    store = KeyVaultTokenStore(client=client, secret_prefix="tokens-")
    store.save(record())
    assert vault.secret_names() == ["tokens-acme-nl"]
    assert store.list_connections() == ["acme-nl"]
