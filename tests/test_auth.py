"""An authenticated lattice, against the hub config ``drupelet lattice init`` writes.

Every test here runs that hub (operator, accounts, users with the permissions of their
role, TLS on the client and leafnode ports) in a real nats-server, and nodes enrolled by
``drupelet lattice enroll`` joining it as leaves, over TLS, with their credentials.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio

from drupelet.node.cli.main import main as cli_main
from drupelet.node.config import load
from drupelet.node.lattice import latticedir, subjects
from drupelet.node.lattice.artifacts import ArtifactStore
from drupelet.node.lattice.artifacts import bucket_name as artifacts_bucket
from drupelet.node.lattice.client import LatticeClient
from drupelet.node.lattice.errors import NotPermitted, Unreachable
from drupelet.node.lattice.natsserver import EmbeddedNatsServer, free_port
from drupelet.node.lattice.state import bucket_name as state_bucket
from drupelet.node.lattice.state import kv_subject, link_key
from drupelet.node.node import Node
from drupelet.node.security import claims, keys, tls

from test_host import wat
from waiting import wait_for_async

WAIT_S = 15.0
NO_TIMEOUT_S = 30.0
"""A request timeout far longer than any test here: a refusal that came from a time-out would show."""


@dataclass
class Secured:
    """A lattice directory and its hub, running."""

    dir: latticedir.LatticeDir
    hub: EmbeddedNatsServer
    tmp: Path

    async def client(self, creds: Path | None = None, **options: Any) -> LatticeClient:
        return await LatticeClient.connect(self.dir.client_url, self.dir.name, tls_ca=str(self.dir.ca),
                                           creds=str(creds or self.dir.admin_creds), **options)

    def user(self, name: str, role: str, **extra: Any) -> Path:
        out = self.tmp / f"{name}.creds"
        assert cli_main(["lattice", "user", name, "--role", role, "--lattice-dir", str(self.dir.path),
                         "-o", str(out), *extra.get("args", [])]) == 0
        return out

    def enroll(self, node: str, *args: str) -> Path:
        out = self.tmp / node
        assert cli_main(["lattice", "enroll", node, "--lattice-dir", str(self.dir.path), "-o", str(out), *args]) == 0
        return out

    def node(self, name: str, *enroll_args: str, **overrides: Any) -> Node:
        """A node from the node.toml its enrollment wrote: its embedded server a leaf of the hub."""
        cfg = load(self.enroll(name, *enroll_args) / "node.toml")
        cfg.data_dir = self.tmp / f"{name}-data"
        cfg.nats_embedded_port = 0
        cfg.compile_in_subprocess = False
        for key, value in overrides.items():
            setattr(cfg, key, value)
        return Node(cfg)

    def signed(self, name: str, *caps: str) -> bytes:
        issuer = keys.load_seed((self.dir.path / "issuer.nk").read_text())
        data, _ = claims.sign(wat(name), issuer, name=name, caps=caps)
        return data


@pytest_asyncio.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    client_port, leaf_port = free_port(), free_port()
    made = latticedir.init(tmp_path / "lattice", "home", hub_url=f"tls://127.0.0.1:{leaf_port}",
                           client_url=f"tls://127.0.0.1:{client_port}", listen="127.0.0.1")
    hub = latticedir.hub_server(made, tmp_path / "hub-run")
    await hub.start()
    try:
        yield Secured(made, hub, tmp_path)
    finally:
        await hub.stop()


async def joined(client: LatticeClient, *nodes: Node) -> None:
    """Wait until each node answers pings through the hub and follows the lattice state (which
    the admin's client makes: nodes wait for it)."""
    await client.writer.ensure()
    for node in nodes:
        await wait_for_async(lambda n=node: bool(n.state and n.state.connected), WAIT_S,  # type: ignore[misc]
                             f"{node.name} to follow the lattice state")

    async def answering() -> bool:
        names = {n["name"] for n in await client.ping(0.2)}
        return all(node.name in names for node in nodes)

    await wait_for_async(answering, WAIT_S, "the nodes to answer pings through the hub")


async def push(client: LatticeClient, secured: Secured, data: bytes, name: str) -> str:
    store = ArtifactStore(client.nc, client.lattice, secured.tmp / "push-cache")
    return (await store.put(data, name=name)).digest


# -- who may connect ---------------------------------------------------------------------------


async def test_a_client_without_credentials_is_refused_and_plaintext_or_the_wrong_ca_fail_clearly(
        secured: Secured) -> None:
    url = secured.dir.client_url
    with pytest.raises(Unreachable, match="refused the credentials .*Authorization Violation"):
        await LatticeClient.connect(url, "home", tls_ca=str(secured.dir.ca))
    plain = url.replace("tls://", "nats://")
    with pytest.raises(Unreachable, match="requires TLS and its certificate is not signed by a CA this client trusts"):
        await LatticeClient.connect(plain, "home", creds=str(secured.dir.admin_creds))
    other = secured.tmp / "other-ca.pem"
    other.write_bytes(tls.make_ca("elsewhere").cert_pem)
    with pytest.raises(Unreachable, match="not signed by the CA given"):
        await LatticeClient.connect(url, "home", creds=str(secured.dir.admin_creds), tls_ca=str(other))
    # the admin of this lattice, over TLS with its CA, is let in
    async with await secured.client() as admin:
        assert await admin.ping(0.1) == []


async def test_a_hub_with_certificates_the_user_brings(tmp_path: Path) -> None:
    ca = tls.make_ca("mine")
    server = tls.make_server_cert(ca, ["127.0.0.1"])
    brought = {}
    for name, data in (("cert", server.cert_pem), ("key", server.key_pem), ("ca", ca.cert_pem)):
        brought[name] = tmp_path / f"{name}.pem"
        brought[name].write_bytes(data)
    client_port, leaf_port = free_port(), free_port()
    made = latticedir.init(tmp_path / "lattice", "home", hub_url=f"tls://127.0.0.1:{leaf_port}",
                           client_url=f"tls://127.0.0.1:{client_port}", listen="127.0.0.1", tls_cert=brought["cert"],
                           tls_key=brought["key"], tls_ca=brought["ca"])
    assert made.ca.read_bytes() == ca.cert_pem and not (made.path / "ca.key").exists()
    hub = latticedir.hub_server(made, tmp_path / "hub-run")
    async with hub:
        async with await LatticeClient.connect(made.client_url, "home", creds=str(made.admin_creds),
                                               tls_ca=str(brought["ca"])) as admin:
            assert await admin.ping(0.1) == []


async def test_a_leaf_with_the_wrong_ca_does_not_join_and_says_why(secured: Secured,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    other = secured.tmp / "other-ca.pem"
    other.write_bytes(tls.make_ca("elsewhere").cert_pem)
    node = secured.node("pi-9", nats_hub_ca=str(other))
    async with node:
        await wait_for_async(lambda: any("leaf connection to the hub" in r.getMessage() and "certificate" in
                                         r.getMessage() for r in caplog.records), WAIT_S,
                             "the node to report why its leaf connection fails")
        assert node.state is not None and not node.state.connected


# -- the roles --------------------------------------------------------------------------------


async def test_a_viewer_reads_but_is_refused_at_once_what_changes_the_lattice(secured: Secured) -> None:
    pi = secured.node("pi-1")
    viewer_creds = secured.user("alice", "viewer")
    async with pi, await secured.client() as admin, await secured.client(viewer_creds,
                                                                        timeout_s=NO_TIMEOUT_S) as viewer:
        await joined(admin, pi)
        # an admin's work: push, start (a signed actor: the node trusts the lattice's issuer), link, call
        digest = await push(admin, secured, secured.signed("echo", "wasmcloud:messaging"), "echo")
        started = await admin.start_actor("pi-1", {"name": "echo", "digest": digest})
        assert started["signed"] is True
        await admin.lattice_request("link.put", {"source": "echo", "interface": "wasmcloud:messaging",
                                                 "target": "local/messaging"})
        await wait_for_async(lambda: pi.host.link_for("echo", "wasmcloud:messaging/consumer") is not None, WAIT_S,
                             "the node to apply the link")
        reply = await admin.nc.request(subjects.deliver("home", "echo"), b"hello", timeout=5)
        assert reply.data == b"hello"
        # a node writes its own record, through its leaf and the hub's domain: its labels
        assert await admin.node("pi-1", "labels.put", {"labels": {"room": "lab"}}) == {"room": "lab"}

        # the viewer reads
        assert [n["name"] for n in await viewer.ping()] == ["pi-1"]
        assert [a["name"] for a in await viewer.node("pi-1", "actor.list")] == ["echo"]
        assert (await viewer.node("pi-1", "inventory"))["name"] == "pi-1"
        assert [link["source"] for link in await viewer.lattice_request("link.list")] == ["echo"]
        # ... and is refused, with "not permitted", whatever would change the lattice
        refused = [viewer.node("pi-1", "actor.start", {"name": "e2", "digest": digest}),
                   viewer.start_actor("pi-1", {"name": "e2", "digest": digest}),
                   viewer.lattice_request("link.put", {"source": "echo", "interface": "wasi:keyvalue",
                                                       "target": "local/keyvalue"}),
                   viewer.node("pi-1", "gpio.simulate", {"pin": 17, "level": False}),
                   viewer.node("pi-1", "actor.stop", {"name": "echo"})]
        for attempt in refused:
            with pytest.raises(NotPermitted, match="^not permitted: viewer 'alice' may not send "):
                await attempt
        with pytest.raises(NotPermitted, match="write to the artifact store"):
            viewer.check_artifact_write("push")
        # the server refuses too, not only the client's own check: without it, the refusal
        # still comes at once (a permissions violation), not as a time-out
        viewer.grant = None
        with pytest.raises(NotPermitted, match="the NATS server refused publish on "
                                               "drupelet.home.ctl.node.pi-1.actor.start"):
            await viewer.node("pi-1", "actor.start", {"name": "e2", "digest": digest})
        assert set(pi.host.actors) == {"echo"}
        assert [link["interface"] for link in await admin.lattice_request("link.list")] == [
            "wasmcloud:messaging/consumer"]


async def test_a_node_s_credentials_cannot_control_another_node_write_the_state_or_read_its_calls(
        secured: Secured) -> None:
    pi = secured.node("pi-1")
    creds = secured.tmp / "pi-2" / "pi-2.creds"
    secured.enroll("pi-2")
    async with pi, await secured.client() as admin:
        await joined(admin, pi)
        await admin.lattice_request("link.put", {"source": "echo", "interface": "wasmcloud:messaging",
                                                 "target": "local/messaging"})
        stolen = await secured.client(creds, timeout_s=NO_TIMEOUT_S)
        stolen.grant = None  # what the server allows, not what the client's own check would
        try:
            with pytest.raises(NotPermitted, match="permissions violation"):
                await stolen.node("pi-1", "actor.stop", {"name": "echo"})
            with pytest.raises(NotPermitted, match="permissions violation"):
                await stolen.node("pi-1", "labels.put", {"labels": {"owner": "thief"}})
            state, objects = state_bucket("home"), artifacts_bucket("home")
            forged = {"source": "echo", "interface": "wasmcloud:messaging/consumer", "target": "pi-2/messaging",
                      "config": {}}
            attempts = [
                kv_subject(state, link_key("echo", "wasmcloud:messaging/consumer")),  # a link
                kv_subject(state, "actor.pi-1.miner"),  # another node's desired actor
                kv_subject(state, link_key("echo", "wasmcloud:messaging/consumer"), "hub"),  # through the domain
                subjects.object_store_meta(objects, "cmVmOmVjaG8"),  # move a name: ref:echo
                subjects.jetstream_api(f"STREAM.DELETE.KV_{state}"),  # delete the state bucket
                subjects.jetstream_api(f"STREAM.PURGE.OBJ_{objects}"),  # purge the artifacts
                subjects.events("home", "pi-1", "actor_stopped"),  # speak for another node
                subjects.provider_calls("home", "pi-1", "keyvalue", "pi-1"),  # call as another node
                subjects.http("home", "echo", "pi-1"),  # hand an HTTP request over as another node's listener
            ]
            before = len(stolen.violations)
            for subject in attempts:
                await stolen.nc.publish(subject, json.dumps(forged).encode())
            await wait_for_async(lambda: len(stolen.violations) == before + len(attempts), WAIT_S,
                                 "the server to refuse every one")
            refused = [v.lower() for v in stolen.violations[before:]]
            # (the hub reports a write through its own JetStream domain as the bucket's subject it maps to)
            assert refused == [a.lower() for a in attempts[:2]] + [attempts[0].lower()] + [
                a.lower() for a in attempts[3:]]
            # another Pi's provider calls cannot be read
            await stolen.nc.subscribe(subjects.provider_calls_all("home", "pi-1"))
            await wait_for_async(lambda: len(stolen.violations) == before + len(attempts) + 1, WAIT_S,
                                 "the server to refuse the subscription")
        finally:
            await stolen.close()
        assert await admin.lattice_request("link.list") == [
            {"source": "echo", "interface": "wasmcloud:messaging/consumer", "target": "local/messaging", "config": {}}]
        assert "owner" not in pi.host.labels


async def test_a_revoked_user_and_node_are_cut_off_without_a_hub_restart(secured: Secured) -> None:
    pi = secured.node("pi-1")
    viewer_creds = secured.user("bob", "viewer")
    async with pi, await secured.client() as admin:
        await joined(admin, pi)
        viewer = await secured.client(viewer_creds)
        try:
            assert [n["name"] for n in await viewer.ping()] == ["pi-1"]
            for name in ("bob", "pi-1"):
                # the CLI runs its own event loop: in a thread of its own here
                assert await asyncio.to_thread(cli_main, ["lattice", "revoke", name, "--lattice-dir",
                                                          str(secured.dir.path)]) == 0
            await wait_for_async(lambda: not viewer.nc.is_connected, WAIT_S, "the hub to drop the viewer")
        finally:
            await viewer.close()
        with pytest.raises(Unreachable, match="Authorization Violation"):
            await secured.client(viewer_creds)
        # the node's leaf connection is refused too: the hub side no longer sees it

        async def gone() -> bool:
            return not await admin.ping(0.2)

        await wait_for_async(gone, WAIT_S, "pi-1's leaf connection to be refused")
        assert secured.hub.running  # the same hub process throughout


# -- what an actor may reach -------------------------------------------------------------------------


async def test_an_actor_with_a_messaging_link_cannot_reach_a_control_subject_or_the_state_bucket(
        secured: Secured) -> None:
    pi = secured.node("pi-1", "--messaging", "svc.>")  # its actors' application subjects across the hub
    async with pi, await secured.client() as admin:
        await joined(admin, pi)
        digest = await push(admin, secured, secured.signed("relay", "wasmcloud:messaging"), "relay")
        await admin.start_actor("pi-1", {"name": "relay", "digest": digest})
        # a grant of everything: the lattice's own subjects stay out of reach all the same
        await admin.lattice_request("link.put", {"source": "relay", "interface": "wasmcloud:messaging",
                                                 "target": "local/messaging", "config": {"request": ">"}})
        await wait_for_async(lambda: pi.host.link_for("relay", "wasmcloud:messaging/consumer") is not None, WAIT_S,
                             "the node to apply the link")
        before = await admin.lattice_request("link.list")
        forged = json.dumps({"source": "relay", "interface": "wasi:keyvalue", "target": "local/keyvalue",
                             "config": {"buckets": "*"}}).encode()

        async def relay(subject: str, body: bytes) -> Any:
            return await admin.nc.request(subjects.deliver("home", "relay"), body, timeout=10,
                                          headers={subjects.HEADER_SUBJECT: subject})

        state = state_bucket("home")
        for subject in (subjects.lattice_control("home", "link.put"), kv_subject(state, link_key(
                "relay", "wasi:keyvalue/store")), subjects.jetstream_api(f"STREAM.DELETE.KV_{state}")):
            reply = await relay(subject, forged)
            assert reply.headers and reply.headers[subjects.HEADER_ERROR] == "handler-error", reply
            assert f"may not send a request on '{subject}': it is one of the lattice's own subjects" in \
                reply.headers[subjects.HEADER_MESSAGE]
        assert await admin.lattice_request("link.list") == before
        # what the grant allows works: a request on an application subject the node may use
        async def noon(msg: Any) -> None:
            await msg.respond(b"noon")

        answers = await admin.nc.subscribe("svc.time", cb=noon)
        await admin.nc.flush()
        try:
            assert (await relay("svc.time", b"")).data == b"noon"
        finally:
            await answers.unsubscribe()


# -- the lattice's own storage ---------------------------------------------------------------------


async def test_a_node_waits_for_an_admin_to_make_the_state_and_keeps_its_actors_when_it_is_deleted(
        secured: Secured, caplog: pytest.LogCaptureFixture) -> None:
    pi = secured.node("pi-1")
    async with pi, await secured.client() as admin:
        await wait_for_async(lambda: any("it does not exist: an admin's first write makes it" in r.getMessage()
                                         for r in caplog.records), WAIT_S, "the node to wait for the bucket")
        digest = await push(admin, secured, secured.signed("echo", "wasmcloud:messaging"), "echo")
        await admin.start_actor("pi-1", {"name": "echo", "digest": digest})  # the admin's write makes the bucket
        await joined(admin, pi)
        assert pi.state is not None
        state = pi.state
        await wait_for_async(lambda: state.places("pi-1", "echo"), WAIT_S, "the node to see its actor's record")
        js = admin.nc.jetstream()
        await js.delete_stream(f"KV_{state_bucket('home')}")  # an admin may
        await admin.lattice_request("config.put", {"name": "after", "values": {"a": "1"}})  # a new, empty bucket
        await wait_for_async(lambda: state.named_config("after") == {"a": "1"}, WAIT_S,
                             "the node to follow the new bucket")
        assert set(pi.host.actors) == {"echo"} and state.places("pi-1", "echo")
        assert any("no entry and no delete marker" in r.getMessage() for r in caplog.records)


# -- identity comes from NATS ----------------------------------------------------------------------


async def test_a_node_s_credentials_cannot_use_another_actor_s_bucket_and_a_forged_stop_changes_no_pin(
        secured: Secured, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="drupelet.node.lattice.provider_server")
    pi = secured.node("pi-1")
    laptop = secured.node("laptop")
    secured.enroll("pi-2")
    async with pi, laptop, await secured.client() as admin:
        await joined(admin, pi, laptop)
        digest = await push(admin, secured, secured.signed("kvloop", "wasi:keyvalue", "drupelet:hardware/gpio"),
                            "kvloop")
        await admin.start_actor("laptop", {"name": "kvloop", "digest": digest})
        await admin.lattice_request("link.put", {"source": "kvloop", "interface": "wasi:keyvalue",
                                                 "target": "pi-1/keyvalue"})
        await admin.lattice_request("link.put", {"source": "kvloop", "interface": "drupelet:hardware/gpio",
                                                 "target": "pi-1/gpio", "config": {"pins": "27"}})
        for node in (pi, laptop):
            await wait_for_async(lambda n=node: n.host.link_for("kvloop", "drupelet:hardware/gpio") is not None
                                 and n.state is not None and n.state.places("laptop", "kvloop"),  # type: ignore[misc]
                                 WAIT_S, f"{node.name} to apply the links and see the placement")
        # the actor the admin placed on the laptop uses the Pi's bucket and drives its pin
        assert await laptop.host.invoke("kvloop", "run", 5) == 5
        gpio = pi.host.providers["gpio"]
        call = {"source": "kvloop", "interface": "drupelet:hardware/gpio", "op": "configure_output",
                "args": [27, True]}
        assert json.loads((await admin.nc.request(subjects.provider_calls("home", "pi-1", "gpio", "laptop"),
                                                  json.dumps(call).encode(), timeout=5)).data)["ok"] is True
        assert gpio.describe()["pins"] == [{"pin": 27, "mode": "output", "owner": "kvloop", "value": True}]

        thief = await secured.client(secured.tmp / "pi-2" / "pi-2.creds", timeout_s=NO_TIMEOUT_S)
        thief.grant = None
        try:
            # as itself: the lattice state places kvloop on the laptop, not on pi-2
            opened = await thief.nc.request(subjects.provider_calls("home", "pi-1", "keyvalue", "pi-2"), json.dumps(
                {"source": "kvloop", "interface": "wasi:keyvalue/store", "op": "open", "args": [""]}).encode(),
                timeout=5)
            error = json.loads(opened.data)["error"]
            assert error["code"] == "denied" and "does not place on it" in error["message"]
            # a payload that names the laptop changes nothing: the subject is what counts
            named = await thief.nc.request(subjects.provider_calls("home", "pi-1", "keyvalue", "pi-2"), json.dumps(
                {"caller": "laptop", "source": "kvloop", "interface": "wasi:keyvalue/store", "op": "open",
                 "args": [""]}).encode(), timeout=5)
            assert json.loads(named.data)["error"]["code"] == "denied"
            # a stop in its own name for an actor it never ran releases nothing here ...
            await thief.nc.publish(subjects.events("home", "pi-2", "actor_stopped"),
                                   json.dumps({"source": "drupelet/home/pi-2", "data": {"actor": "kvloop"}}).encode())
            # ... and an event whose source names another node than its subject counts for nothing
            await thief.nc.publish(subjects.events("home", "pi-2", "actor_stopped"),
                                   json.dumps({"source": "drupelet/home/laptop", "data": {"actor": "kvloop"}}).encode())
            await wait_for_async(lambda: any("that says it comes from 'drupelet/home/laptop'" in r.getMessage()
                                             for r in caplog.records), WAIT_S, "the Pi to ignore the mismatch")
            # ... and one in the laptop's name is refused by the server
            await thief.nc.publish(subjects.events("home", "laptop", "actor_stopped"),
                                   json.dumps({"source": "drupelet/home/laptop", "data": {"actor": "kvloop"}}).encode())
            await wait_for_async(lambda: len(thief.violations) == 1, WAIT_S, "the server to refuse the forgery")
            # the Pi has weighed the stop in pi-2's name: it never served kvloop from there
            await wait_for_async(lambda: any("ignoring actor_stopped of kvloop from node pi-2" in r.getMessage()
                                             for r in caplog.records), WAIT_S, "the Pi to ignore the forged stop")
            assert gpio.describe()["pins"] == [{"pin": 27, "mode": "output", "owner": "kvloop", "value": True}]
        finally:
            await thief.close()
        # the laptop's own stop of the actor does release it: outputs to their safe state
        await admin.stop_actor("laptop", "kvloop")
        await wait_for_async(lambda: gpio.describe()["pins"] == [], WAIT_S, "the Pi to release the pin")


# -- enrolling a Pi --------------------------------------------------------------------------------


def test_enroll_writes_a_boot_file_firstboot_installs_as_a_secure_leaf(tmp_path: Path) -> None:
    made = latticedir.init(tmp_path / "lattice", "home", hub_url="tls://hub.example.org:7422")
    out = tmp_path / "pi-1"
    assert cli_main(["lattice", "enroll", "pi-1", "--lattice-dir", str(made.path), "-o", str(out),
                     "--label", "room=lab"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "drupelet.toml", "node.toml", "pi-1.creds"]
    assert (out / "drupelet.toml").stat().st_mode & 0o777 == 0o600  # it holds the node's seed
    etc, state = tmp_path / "etc", tmp_path / "state"
    assert cli_main(["firstboot", "--boot", str(out / "drupelet.toml"), "--etc", str(etc), "--state",
                     str(state)]) == 0
    cfg = load(etc / "node.toml")
    assert (cfg.name, cfg.lattice, cfg.labels, cfg.authenticated) == ("pi-1", "home", {"room": "lab"}, True)
    assert cfg.trust_keys == made.trust and cfg.trust_allow_unsigned is False
    assert (etc / "leaf.creds").read_text() == (out / "pi-1.creds").read_text()
    assert (etc / "hub-ca.pem").read_text() == made.ca.read_text()
    leaf = (etc / "nats-leaf.conf").read_text()
    assert 'urls: ["tls://hub.example.org:7422"]' in leaf and f'ca_file: "{etc / "hub-ca.pem"}"' in leaf
    assert '\nhost: "127.0.0.1"\n' in leaf  # the Pi's own server: loopback only
    # the node's credentials carry its role and its name's permissions
    user = json.loads((made.path / "users.json").read_text())["users"]["pi-1"]
    assert user["role"] == "node" and user["revoked_at"] is None


# -- the laptop default: open, on loopback only ---------------------------------------------------


async def test_the_embedded_server_is_open_on_loopback_only_and_says_so(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    from drupelet.node.config import NodeConfig
    from drupelet.node.lattice.errors import NatsUnavailable

    wide = NodeConfig(name="lap", lattice="home", data_dir=tmp_path / "wide", nats_embedded_host="0.0.0.0",
                      nats_embedded_port=0)
    with pytest.raises(NatsUnavailable, match="asks for no credentials, so it listens on loopback only"):
        await Node(wide).start()
    node = Node(NodeConfig(name="lap", lattice="home", data_dir=tmp_path / "open", nats_embedded_port=0))
    async with node:
        assert node.nats_server is not None and node.nats_server.config.host == "127.0.0.1"
    assert any(r.levelname == "WARNING" and "the lattice is open" in r.getMessage() for r in caplog.records)
