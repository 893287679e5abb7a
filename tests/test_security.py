"""node/security: nkeys, the claims section, wascap claims, the trust policy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import wasmtime

from drupelet.node.runtime import read_component
from drupelet.node.security import claims as wc
from drupelet.node.security import keys, wasm
from drupelet.node.security.errors import BadKey, CapsMissing, Revoked, UnknownIssuer
from drupelet.node.security.policy import TrustPolicy, admit, caps_allow, check_caps

WAT = Path(__file__).resolve().parent.parent / "actors" / "wat"
MODULE = bytes(wasmtime.wat2wasm('(module (func (export "f") (result i32) i32.const 7))'))


def component() -> bytes:
    return read_component(WAT / "echo.wat")


@pytest.fixture(scope="module")
def issuer() -> keys.KeyPair:
    return keys.generate("account")


def test_keys_have_their_role_letter_and_seed_round_trips() -> None:
    for role, letter in (("account", "A"), ("actor", "M"), ("operator", "O"), ("user", "U")):
        pair = keys.generate(role)
        assert pair.public[0] == letter and pair.seed.startswith("S" + letter) and len(pair.public) == 56
        again = keys.load_seed(pair.seed)
        assert (again.role, again.public) == (role, pair.public)
        assert keys.decode_public(pair.public)[0] == role


def test_nkeys_package_reads_our_seeds() -> None:
    import nkeys

    pair = keys.generate("account")
    assert nkeys.from_seed(pair.seed.encode()).public_key.decode() == pair.public


def test_bad_keys_say_what_is_wrong() -> None:
    pair = keys.generate("account")
    typo = pair.public[:10] + ("B" if pair.public[10] != "B" else "C") + pair.public[11:]
    with pytest.raises(BadKey, match="checksum"):
        keys.decode_public(typo)
    with pytest.raises(BadKey, match="seed"):
        keys.decode_public(pair.seed)
    with pytest.raises(BadKey, match="user key"):
        keys.decode_public(keys.generate("user").public, roles=keys.ISSUER_ROLES)
    with pytest.raises(BadKey, match="actor seed"):
        keys.load_seed(pair.seed, role="actor")


@pytest.mark.parametrize("make", [lambda: MODULE, component], ids=["module", "component"])
def test_signing_round_trips(make, issuer: keys.KeyPair) -> None:  # type: ignore[no-untyped-def]
    data = make()
    signed, made = wc.sign(data, issuer, name="echo", ver="1.2.0", rev=3, caps=("wasi:keyvalue",),
                           expires_in_s=3600)
    found = wc.inspect(signed)
    assert found.valid and found.reason is None
    assert found.claims is not None
    c = found.claims
    assert (c.issuer, c.subject, c.name, c.ver, c.rev, c.caps) == (issuer.public, made.subject, "echo", "1.2.0", 3,
                                                                   ("wasi:keyvalue",))
    assert c.subject.startswith("M") and c.hash == wasm.content_hash(data) == found.hash
    assert c.revision == wc.WASCAP_REVISION and c.expires == c.issued_at + 3600
    assert wasm.strip(signed) == wasm.strip(data)
    engine = wasmtime.Engine(wasmtime.Config())
    if wasm.is_component(data):
        wasmtime.component.Component(engine, signed)
    else:
        wasmtime.Module(engine, signed)


def test_jwt_has_wascap_shape(issuer: keys.KeyPair) -> None:
    signed, _ = wc.sign(MODULE, issuer, name="m", caps=("wasmcloud:messaging",))
    jwt = wasm.find_jwt(signed)
    assert jwt is not None
    head, body, _sig = jwt.split(".")
    assert json.loads(wc._unb64(head)) == {"typ": "jwt", "alg": "Ed25519"}
    claims = json.loads(wc._unb64(body))
    assert list(claims) == ["jti", "iat", "iss", "sub", "wascap", "wascap_revision"]
    assert list(claims["wascap"]) == ["name", "hash", "tags", "caps", "prov"]
    assert claims["wascap"]["hash"] == claims["wascap"]["hash"].upper() and len(claims["wascap"]["hash"]) == 64


def test_signing_replaces_an_existing_signature(issuer: keys.KeyPair) -> None:
    other = keys.generate("account")
    once, first = wc.sign(component(), other, name="a")
    twice, second = wc.sign(once, issuer, name="b", caps=("wasi:i2c",))
    assert twice.count(wasm.SECTION.encode()) == 1
    found = wc.inspect(twice)
    assert found.valid and found.claims is not None
    assert (found.claims.issuer, found.claims.name, found.claims.subject) == (issuer.public, "b", first.subject)
    assert second.hash == first.hash


def test_changed_byte_fails_on_the_hash(issuer: keys.KeyPair) -> None:
    signed, _ = wc.sign(MODULE, issuer, name="m")
    i = signed.index(b"\x41\x07")  # i32.const 7
    tampered = signed[:i] + b"\x41\x08" + signed[i + 2:]
    assert wc.inspect(tampered).reason == "hash-mismatch"


def test_unsigned_and_forged_signatures_are_reasons(issuer: keys.KeyPair) -> None:
    assert wc.inspect(MODULE).reason == "unsigned"
    signed, made = wc.sign(MODULE, issuer, name="m")
    forger = keys.generate("account")
    jwt = wasm.find_jwt(signed)
    assert jwt is not None
    forged = wc.encode(made, forger)  # claims say iss=issuer, signed by forger
    assert wc.inspect(wasm.embed(MODULE, forged)).reason == "bad-signature"
    assert wc.inspect(wasm.embed(MODULE, "not.a-jwt")).reason == "bad-signature"


def test_validity_dates_with_skew(issuer: keys.KeyPair) -> None:
    now = time.time()
    expired, _ = wc.sign(MODULE, issuer, expires_in_s=10, now=now - 100)
    assert wc.inspect(expired, now=now).reason == "expired"
    assert wc.inspect(expired, now=now, skew_s=200).valid
    early, _ = wc.sign(MODULE, issuer, not_before_in_s=1000, now=now)
    assert wc.inspect(early, now=now).reason == "not-yet-valid"
    assert wc.inspect(early, now=now, skew_s=2000).valid


def test_policy_trusts_its_keys_and_refuses_revoked(issuer: keys.KeyPair) -> None:
    signed, made = wc.sign(MODULE, issuer, name="m", caps=("wasi:keyvalue",))
    policy = TrustPolicy(keys=(issuer.public,), allow_unsigned=False)
    ident = admit(signed, policy, actor="m")
    assert ident.signed and ident.describe()["issuer"] == issuer.public
    other, _ = wc.sign(MODULE, keys.generate("account"), name="m")
    with pytest.raises(UnknownIssuer, match="does not trust"):
        admit(other, policy, actor="m")
    with pytest.raises(Revoked, match="subject"):
        admit(signed, policy.with_revoked({made.subject}), actor="m")
    with pytest.raises(Revoked, match="issuer"):
        admit(signed, policy.with_revoked({issuer.public}), actor="m")
    with pytest.raises(Exception, match="unsigned") as err:
        admit(MODULE, policy, actor="m")
    assert getattr(err.value, "code", "") == "unsigned"


def test_unsigned_allowed_warns_naming_the_actor(caplog: pytest.LogCaptureFixture) -> None:
    ident = admit(MODULE, TrustPolicy(allow_unsigned=True), actor="blinky")
    assert not ident.signed
    assert any("blinky" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_caps_cover_packages_interfaces_and_contract_ids(issuer: keys.KeyPair) -> None:
    assert caps_allow(["wasi:keyvalue"], "wasi:keyvalue/atomics@0.2.0-draft")
    assert caps_allow(["wasi:keyvalue/store"], "wasi:keyvalue/store")
    assert not caps_allow(["wasi:keyvalue/store"], "wasi:keyvalue/atomics")
    assert caps_allow(["wasmcloud:keyvalue"], "wasi:keyvalue/store")
    assert caps_allow(["wasmcloud:builtin:logging"], "wasi:logging/logging")
    assert caps_allow(["wasi:i2c"], "drupelet:hardware/i2c-bus@0.1.0")
    assert not caps_allow(["wasi:i2c"], "drupelet:hardware/gpio")
    signed, _ = wc.sign(MODULE, issuer, caps=("wasi:keyvalue",))
    ident = admit(signed, TrustPolicy(), actor="m")
    check_caps(ident, ["wasi:keyvalue/store@0.2.0-draft"], actor="m", what="imports")
    with pytest.raises(CapsMissing, match=r"wasi:i2c/i2c.*they allow: wasi:keyvalue") as err:
        check_caps(ident, ["wasi:i2c/i2c@0.2.0-draft"], actor="m", what="imports")
    assert err.value.missing == ("wasi:i2c/i2c",) and err.value.allowed == ("wasi:keyvalue",)
