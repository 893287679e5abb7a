"""NATS JWTs, .creds files and the roles' permissions, without a server (test_auth.py runs them
against one)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import nkeys
import pytest

from drupelet.node.cli.main import main as cli_main
from drupelet.node.errors import DrupeletError
from drupelet.node.lattice import latticedir, requests, roles, subjects
from drupelet.node.lattice.errors import AuthError
from drupelet.node.lattice.statekeys import OWN_KEYS, WRITERS, bucket_name, kv_subject
from drupelet.node.security import keys, natsjwt
from drupelet.node.security.errors import BadSignature


def parts(token: str) -> list[dict[str, Any]]:
    return [json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in token.split(".")[:2]]


def test_a_user_jwt_is_nats_v2_signed_by_its_account() -> None:
    account, user = keys.generate("account"), keys.generate("user")
    permissions = natsjwt.Permissions(pub_allow=("a.>",), sub_allow=("_INBOX.u.>",), responses=1,
                                      response_ttl_s=2.5)
    token = natsjwt.encode(natsjwt.USER, user.public, "u", natsjwt.user_claims(permissions, {"role": "Viewer"}),
                           account, now=1700000000)
    header, claims = parts(token)
    assert header == {"typ": "JWT", "alg": "ed25519-nkey"}
    assert (claims["iss"], claims["sub"], claims["name"], claims["iat"]) == (account.public, user.public, "u",
                                                                             1700000000)
    assert claims["nats"] == {"pub": {"allow": ["a.>"]}, "sub": {"allow": ["_INBOX.u.>"]},
                              "resp": {"max": 1, "ttl": 2_500_000_000}, "subs": -1, "data": -1, "payload": -1,
                              "tags": ["role:viewer"], "type": "user", "version": 2}
    assert len(claims["jti"]) == 52  # base32 of a SHA-512/256, as nats-io/jwt makes it
    # the signature is the account's, by the nkeys package's own key pair (what nats-py signs with)
    signed, signature = token.rsplit(".", 1)
    assert nkeys.from_seed(account.seed.encode()).verify(
        signed.encode(), base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    decoded = natsjwt.decode(token)
    decoded.verify()
    assert decoded.permissions == permissions and decoded.tag("role") == "viewer"


def test_a_jwt_signed_by_the_wrong_kind_of_key_or_changed_is_refused() -> None:
    operator, account, user = keys.generate("operator"), keys.generate("account"), keys.generate("user")
    with pytest.raises(DrupeletError, match="a user JWT is signed by an account key, not a operator key"):
        natsjwt.encode(natsjwt.USER, user.public, "u", {}, operator)
    token = natsjwt.encode(natsjwt.ACCOUNT, account.public, "a", natsjwt.account_claims(jetstream=True), operator)
    head, body, sig = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged["nats"]["limits"]["conn"] = 1
    changed = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    with pytest.raises(BadSignature, match="not its issuer's"):
        natsjwt.decode(f"{head}.{changed}.{sig}").verify()
    with pytest.raises(BadSignature, match="not a JWT"):
        natsjwt.decode("one.two")


def test_a_creds_file_is_the_decorated_jwt_and_seed_and_reads_back(tmp_path: Path) -> None:
    account, user = keys.generate("account"), keys.generate("user")
    token = natsjwt.encode(natsjwt.USER, user.public, "pi-1", natsjwt.user_claims(natsjwt.Permissions()), account)
    text = natsjwt.creds_text(token, user.seed)
    assert text.startswith("-----BEGIN NATS USER JWT-----\n" + token + "\n------END NATS USER JWT------\n")
    assert "-----BEGIN USER NKEY SEED-----\n" + user.seed + "\n------END USER NKEY SEED------" in text
    path = tmp_path / "pi-1.creds"
    path.write_text(text)
    creds = natsjwt.read_creds(path)
    assert (creds.jwt.name, creds.key.public) == ("pi-1", user.public)
    other = keys.generate("user")
    path.write_text(natsjwt.creds_text(token, other.seed))
    with pytest.raises(BadSignature, match="not the user JWT of the seed beside it"):
        natsjwt.read_creds(path)


def test_revocations_and_jetstream_are_in_the_account_jwt() -> None:
    claims = natsjwt.account_claims(jetstream=True, revocations={"UB": 2, "UA": 1})
    assert claims["revocations"] == {"UA": 1, "UB": 2}
    assert claims["limits"]["mem_storage"] == -1 and claims["limits"]["disk_storage"] == -1
    assert "mem_storage" not in natsjwt.account_claims(jetstream=False)["limits"]


# -- the roles ----------------------------------------------------------------------------------


def test_a_viewer_may_send_exactly_the_requests_that_read() -> None:
    viewer = roles.Grant("alice", "viewer", roles.permissions("viewer", "home", "alice"))
    for verb, cls in requests.NODE_REQUESTS.items():
        assert viewer.may_publish(subjects.node_control("home", "pi-1", verb)) is cls.reads, verb
    for verb, cls in requests.LATTICE_REQUESTS.items():
        assert viewer.may_publish(subjects.lattice_control("home", verb)) is cls.reads, verb
    assert viewer.may_publish(subjects.ping("home"))
    assert not viewer.may_publish(subjects.deliver("home", "counter"))
    assert not viewer.may_publish(kv_subject(bucket_name("home"), "link.x.y"))
    assert not viewer.may_publish(subjects.jetstream_api("STREAM.DELETE.KV_drupelet-home-state"))
    with pytest.raises(roles.NotPermitted, match="^not permitted: viewer 'alice' may not send actor.start"):
        viewer.check_publish(subjects.node_control("home", "pi-1", "actor.start"), "actor.start")


def test_a_node_publishes_as_itself_and_writes_only_its_own_keys() -> None:
    node = roles.Grant("pi-1", "node", roles.permissions("node", "home", "pi-1", messaging=["sensors.>"]))
    assert node.may_publish(subjects.events("home", "pi-1", "actor_stopped"))
    assert not node.may_publish(subjects.events("home", "pi-2", "actor_stopped"))
    assert node.may_publish(subjects.provider_calls("home", "pi-2", "gpio", "pi-1"))
    assert not node.may_publish(subjects.provider_calls("home", "pi-2", "gpio", "laptop"))
    assert not node.may_publish(subjects.node_control("home", "pi-1", "actor.start"))  # not even its own
    assert node.may_publish("sensors.kitchen") and not node.may_publish("alerts.x")
    bucket = bucket_name("home")
    for kind, writer in WRITERS.items():
        own = OWN_KEYS.get(kind)
        if writer == "node":
            assert own is not None and node.may_publish(kv_subject(bucket, own("pi-1")))
            assert node.may_publish(kv_subject(bucket, own("pi-1"), "hub"))  # from a leaf, through the domain
            assert not node.may_publish(kv_subject(bucket, own("pi-2")))
        else:
            assert own is None and not node.may_publish(kv_subject(bucket, f"{kind}.pi-1.x"))
    assert set(OWN_KEYS) == {kind for kind, writer in WRITERS.items() if writer == "node"}


@pytest.mark.parametrize("subject", [">", "drupelet.>", "_INBOX.>", "$KV.>", "*.>", "a..b"])
def test_messaging_subjects_that_reach_the_lattice_are_refused(subject: str) -> None:
    with pytest.raises(AuthError, match="--messaging"):
        roles.permissions("node", "home", "pi-1", messaging=[subject])


# -- the lattice directory on the command line ------------------------------------------------------


def test_lattice_commands_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made = latticedir.init(tmp_path / "home", "home", hub_url="tls://hub.example.org:7422")
    cases = [
        (["lattice", "enroll", "pi-1", "-o", str(tmp_path / "x")], "which lattice? give --lattice-dir"),
        (["lattice", "init", "home", "--hub-url", "tls://h:7422", "-o", str(made.path)], "already holds a lattice"),
        (["lattice", "init", "home", "--hub-url", "nats-leaf://h:7422", "-o", str(tmp_path / "p")],
         "a lattice's hub is reached over TLS"),
        (["lattice", "revoke", "nobody", "--lattice-dir", str(made.path)], "no user or node named 'nobody'"),
        (["lattice", "user", "admin", "--role", "viewer", "-o", str(tmp_path / "a.creds"), "--lattice-dir",
          str(made.path)], "'admin' already has credentials"),
        (["lattice", "user", "eve", "--role", "viewer", "--messaging", "x.>", "-o", str(tmp_path / "e.creds"),
          "--lattice-dir", str(made.path)], "--messaging is for a node or a client"),
        (["--lattice-dir", str(tmp_path), "nodes"], "is not a lattice directory"),
    ]
    for argv, message in cases:
        assert cli_main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, (argv, err)
