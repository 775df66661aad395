"""The consent state: signed, expiring, bound to its starter, single use (real nonce store on disk)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from shared.clock import ScaledClock
from shared.oauth.consent import Redirect, pkce_challenge
from shared.oauth.state import (
    STATE_LIFETIME,
    Channel,
    StateError,
    StateProblem,
    StateSigner,
    binding_hash,
    clear_cookie_header,
    set_cookie_header,
)
from shared.stores.nonces import FileNonceStore

SECRET = "client-secret-for-state-tests"


@pytest.fixture
def clock() -> ScaledClock:
    return ScaledClock.starting_now(scale=1.0, sim_start=1_750_000_000.0)


@pytest.fixture
def signer(clock: ScaledClock) -> StateSigner:
    return StateSigner.from_secret(SECRET, clock)


@pytest.fixture
def nonces(tmp_path: Path, clock: ScaledClock) -> FileNonceStore:
    return FileNonceStore(tmp_path / "nonces", clock=clock)


def _problem(excinfo: pytest.ExceptionInfo[StateError]) -> StateProblem:
    return excinfo.value.problem


def test_issue_and_verify_round_trip(signer: StateSigner, clock: ScaledClock) -> None:
    issued = signer.issue(connection="acme-nl", provider="exact", channel=Channel.BROWSER, pkce=False)
    state = signer.verify(issued.token)
    assert state == issued.state
    assert state.connection == "acme-nl" and state.provider == "exact"
    assert state.expires_at == pytest.approx(clock.now() + STATE_LIFETIME, abs=1)
    assert state.binding_hash == binding_hash(issued.binding)
    # the state is public (it travels in URLs): the binding secret is not in it
    assert issued.binding not in issued.token
    payload = json.loads(base64.urlsafe_b64decode(issued.token.split(".")[1] + "=="))
    assert issued.binding not in json.dumps(payload)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature changed
        lambda t: (
            "s1." + base64.urlsafe_b64encode(b'{"c":"evil"}').decode().rstrip("=") + "." + t.split(".")[2]
        ),
        lambda t: "s2." + t.split(".", 1)[1],  # unknown version
        lambda t: t.split(".")[0] + "." + t.split(".")[1],  # no signature
        lambda t: "garbage",
        lambda t: "",
        lambda t: "s1." + "A" * 3000 + ".x",
    ],
)
def test_forged_states_are_refused(signer: StateSigner, mangle: object) -> None:
    issued = signer.issue(connection="acme-nl", provider="exact", channel=Channel.BROWSER, pkce=False)
    with pytest.raises(StateError) as excinfo:
        signer.verify(mangle(issued.token))  # type: ignore[operator]
    assert _problem(excinfo) is StateProblem.FORGED


def test_a_state_signed_with_another_secret_is_forged(signer: StateSigner, clock: ScaledClock) -> None:
    other = StateSigner.from_secret("another-apps-secret", clock)
    issued = other.issue(connection="acme-nl", provider="exact", channel=Channel.BROWSER, pkce=False)
    with pytest.raises(StateError) as excinfo:
        signer.verify(issued.token)
    assert _problem(excinfo) is StateProblem.FORGED


def test_state_expires_after_its_lifetime(signer: StateSigner, clock: ScaledClock) -> None:
    issued = signer.issue(connection="acme-nl", provider="exact", channel=Channel.BROWSER, pkce=False)
    clock.advance(STATE_LIFETIME - 5)
    signer.verify(issued.token)
    clock.advance(10)
    with pytest.raises(StateError) as excinfo:
        signer.verify(issued.token)
    assert _problem(excinfo) is StateProblem.EXPIRED
    assert "expired" in str(excinfo.value)


def test_binding_must_match(signer: StateSigner, nonces: FileNonceStore) -> None:
    issued = signer.issue(connection="acme-nl", provider="exact", channel=Channel.BROWSER, pkce=False)
    for wrong in (None, "", "someone-elses-cookie-value"):
        with pytest.raises(StateError) as excinfo:
            signer.redeem(issued.token, wrong, nonces)
        assert _problem(excinfo) is StateProblem.UNBOUND
    # a refused attempt burns nothing: the rightful browser still finishes
    assert signer.redeem(issued.token, issued.binding, nonces).nonce == issued.state.nonce


def test_state_is_single_use(signer: StateSigner, nonces: FileNonceStore, tmp_path: Path) -> None:
    issued = signer.issue(connection="acme-nl", provider="exact", channel=Channel.CLI, pkce=False)
    signer.redeem(issued.token, issued.binding, nonces)
    with pytest.raises(StateError) as excinfo:
        signer.redeem(issued.token, issued.binding, nonces)
    assert _problem(excinfo) is StateProblem.REPLAYED
    # another process (another store object on the same folder) sees the claim too
    again = FileNonceStore(tmp_path / "nonces")
    with pytest.raises(StateError):
        signer.redeem(issued.token, issued.binding, again)


def test_pkce_verifier_is_derived_from_the_binding(signer: StateSigner, clock: ScaledClock) -> None:
    first = signer.issue(connection="a", provider="ms", channel=Channel.BROWSER, pkce=True)
    second = signer.issue(connection="a", provider="ms", channel=Channel.BROWSER, pkce=True)
    verifier = signer.pkce_verifier(first.binding)
    assert verifier == signer.pkce_verifier(first.binding)
    assert verifier != signer.pkce_verifier(second.binding)
    assert verifier != StateSigner.from_secret("other", clock).pkce_verifier(first.binding)
    assert 43 <= len(verifier) <= 128 and all(c.isalnum() or c in "-._~" for c in verifier)
    assert verifier not in first.token and pkce_challenge(verifier) != verifier
    assert signer.verify(first.token).pkce is True


def test_cookie_attributes(signer: StateSigner) -> None:
    issued = signer.issue(connection="a", provider="exact", channel=Channel.BROWSER, pkce=False)
    local = set_cookie_header(issued, "http://127.0.0.1:7071/api/oauth/callback")
    assert local.startswith(f"{issued.state.cookie_name}={issued.binding};")
    assert "HttpOnly" in local and "SameSite=Lax" in local and "Path=/api/oauth/callback" in local
    assert "Max-Age=600" in local and "Secure" not in local
    public = set_cookie_header(issued, "https://app.example.net/api/oauth/callback")
    assert "; Secure" in public
    cleared = clear_cookie_header(
        issued.state.cookie_name, "https://app.example.net/api/oauth/callback?code=x"
    )
    assert cleared.startswith(f"{issued.state.cookie_name}=;") and "Max-Age=0" in cleared
    assert "Path=/api/oauth/callback;" in cleared and "; Secure" in cleared


# --- the redirect's parameters: URL-decoded exactly once ------------------------------------------


def test_redirect_query_is_decoded_exactly_once() -> None:
    assert Redirect.from_query("code=stamp.abc%21IAAAA&state=s1.x.y").code == "stamp.abc!IAAAA"
    # %2521 is an encoded "%21": one decode gives "%21", a second would wrongly give "!"
    assert Redirect.from_query("code=abc%2521def").code == "abc%21def"
    assert Redirect.from_query("?code=a%2Bb&state=z").code == "a+b"


def test_redirect_params_from_the_host_are_not_decoded_again() -> None:
    # Functions' req.params are decoded once by the host already
    redirect = Redirect.from_params({"code": "abc%21def", "state": "s", "error": ""})
    assert redirect.code == "abc%21def" and redirect.error is None


def test_redirect_from_a_copied_url() -> None:
    url = "https://app.example.net/api/oauth/callback?code=ab%21cd&state=s1.p.q"
    assert Redirect.from_url(url) == Redirect(state="s1.p.q", code="ab!cd")
    assert Redirect.from_url("  code=ab%21cd&state=s1.p.q ").code == "ab!cd"
    denied = Redirect.from_url("https://x/cb?error=access_denied&error_description=User+said+no&state=s")
    assert denied.error == "access_denied" and denied.error_description == "User said no"
