"""Links and desired actors shared through the lattice state; a node restarted with the hub
down comes back from its disk copy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from drupelet.node.lattice.artifacts import ArtifactStore
from drupelet.node.lattice.client import LatticeClient, LatticeError
from drupelet.node.node import Node
from drupelet.node.lattice.natsserver import EmbeddedNatsServer, NatsServerConfig, start_hub_and_leaf

from test_host import node_config, wat

WAIT_S = 10.0


async def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def push_echo(client: LatticeClient, tmp_path: Path, domain: str | None = None) -> str:
    store = ArtifactStore(client.nc, "test", tmp_path / "push-cache", domain=domain)
    return (await store.put(wat("echo"), name="echo")).digest


async def test_links_put_once_reach_every_node(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    a = Node(node_config(tmp_path / "a", nats_server.url, name="pi-1"))
    b = Node(node_config(tmp_path / "b", nats_server.url, name="laptop"))
    await a.start()
    await b.start()
    client = await LatticeClient.connect(nats_server.url, "test")
    try:
        digest = await push_echo(client, tmp_path)
        await client.node("pi-1", "actor.start", {"name": "echo", "digest": digest})
        await client.node("laptop", "actor.start", {"name": "echo", "digest": digest, "instances": 2})
        made = await client.lattice_request("link.put", {"source": "echo", "interface": "wasmcloud:messaging",
                                                          "target": "local/messaging"})
        assert [l["interface"] for l in made] == ["wasmcloud:messaging/consumer"]
        for host in (a, b):
            await wait_until(lambda h=host: h.host.links.get("echo", "wasmcloud:messaging/consumer") is not None,  # type: ignore[misc]
                             f"{host.name} to apply the link")
        # deliveries share the actor's queue group across both nodes, and each answers
        replies = {await a.call("echo", "s", f"m{i}".encode()) for i in range(6)}
        assert replies == {f"m{i}".encode() for i in range(6)}
        assert a.host.actors["echo"].calls + b.host.actors["echo"].calls >= 6
        assert await client.lattice_request("link.list") == made
        with pytest.raises(LatticeError, match="links only|is served by the node itself"):
            await client.lattice_request("link.put", {"source": "echo", "interface": "wasi:logging",
                                                      "target": "local/keyvalue"})
        await client.lattice_request("link.del", {"source": "echo", "interface": "wasmcloud:messaging"})
        for host in (a, b):
            await wait_until(lambda h=host: h.host.links.all() == [], f"{host.name} to drop the link")  # type: ignore[misc]
        # named config is stored in the lattice too
        await client.lattice_request("config.put", {"name": "sensors", "values": {"period_s": "5"}})
        assert await client.lattice_request("config.get", {"name": "sensors"}) == {"period_s": "5"}
    finally:
        await client.close()
        await b.stop()
        await a.stop()


async def test_node_restarted_with_the_hub_down_restores_actors_and_links(tmp_path: Path) -> None:
    hub, leaf = await start_hub_and_leaf(tmp_path, "pi1")
    cfg = node_config(tmp_path / "pi", leaf.url, name="pi-1", nats_jetstream_domain="hub")
    client = await LatticeClient.connect(hub.url, "test")
    try:
        # the Pi node follows the leaf server; the lattice's artifacts and state live in the hub
        async with Node(cfg) as pi:
            await wait_until(lambda: bool(pi.state and pi.state.connected), "the node to reach the hub's state")
            await wait_until_leaf_sees(client, "pi-1")
            digest = await push_echo(client, tmp_path, domain="hub")
            await client.start_actor("pi-1", {"name": "echo", "digest": digest})  # and records it
            await client.lattice_request("link.put", {"source": "echo", "interface": "wasmcloud:messaging",
                                                      "target": "local/messaging"})
            await wait_until(lambda: pi.host.links.get("echo", "wasmcloud:messaging/consumer") is not None, "the link")
            assert await pi.call("echo", "s", b"before") == b"before"
        await client.close()
        await hub.stop()
        # the hub is gone: the node starts from its disk copy and its artifact cache
        async with Node(cfg) as pi:
            assert pi.state is not None and not pi.state.connected
            assert pi.host.actors["echo"].loaded.digest == digest
            assert pi.host.links.get("echo", "wasmcloud:messaging/consumer") is not None
            assert await pi.call("echo", "s", b"hub down") == b"hub down"
    finally:
        await client.close()
        await leaf.stop()
        await hub.stop()


async def wait_until_leaf_sees(client: LatticeClient, node: str) -> None:
    """The leaf connection is up when the hub-side client can ping the node."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not any(n["name"] == node for n in await client.ping(0.2)):
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{node} never answered a ping through the hub")


async def test_hub_outage_local_calls_keep_working_remote_calls_fail_fast_then_resume(tmp_path: Path) -> None:
    from test_keyvalue import OTHER, kvloop

    hub, leaf = await start_hub_and_leaf(tmp_path, "pi1")
    laptop = Node(node_config(tmp_path / "laptop", hub.url, name="laptop", nats_jetstream_domain="hub"))
    # a remote call's deadline inside the actor's own (400 ms): a call that waits it out while the
    # hub is going down returns the interface's error value instead of trapping the instance
    pi = Node(node_config(tmp_path / "pi", leaf.url, name="pi-1", nats_jetstream_domain="hub",
                          remote_call_timeout_ms=300))
    client = await LatticeClient.connect(hub.url, "test")
    try:
        await laptop.start()
        await pi.start()
        await wait_until(lambda: bool(pi.state and pi.state.connected), "the Pi node to reach the hub's state")
        await wait_until_leaf_sees(client, "pi-1")
        await pi.host.start_actor("local-kv", kvloop())
        await pi.host.start_actor("hub-kv", kvloop())
        for source, target in (("local-kv", "pi-1/keyvalue"), ("hub-kv", "laptop/keyvalue")):
            await client.lattice_request("link.put", {"source": source, "interface": "wasi:keyvalue",
                                                      "target": target})
        await wait_until(lambda: len(pi.host.links.all()) == 6, "the Pi node to apply both links")
        assert await pi.host.invoke("local-kv", "run", 20) == 20
        assert await pi.host.invoke("hub-kv", "run", 20) == 20
        await client.close()

        await hub.stop()
        # the leaf notices the hub is gone within a moment (calls made while it is going
        # down may still wait out their deadline); from then on, calls fail fast
        deadline = time.monotonic() + 20
        while await pi.host.invoke("hub-kv", "probe") != OTHER:
            assert time.monotonic() < deadline, "the leaf never noticed the hub was gone"
        for _ in range(5):
            # the actor and the provider on the leaf side keep working
            assert await pi.host.invoke("local-kv", "run", 20) == 20
            # a call that needs the hub fails fast with the interface's error value
            started = time.monotonic()
            assert await pi.host.invoke("hub-kv", "probe") == OTHER
            assert time.monotonic() - started < 2.0
        assert pi.host.actors["hub-kv"].traps == 0

        await hub.restart()
        deadline = time.monotonic() + 20
        while await pi.host.invoke("hub-kv", "probe") != 0:
            assert time.monotonic() < deadline, "remote calls did not resume after the hub came back"
            await asyncio.sleep(0.2)
        assert await pi.host.invoke("hub-kv", "run", 20) == 20
    finally:
        await client.close()
        await pi.stop()
        await laptop.stop()
        await leaf.stop()
        await hub.stop()


async def test_recorded_state_follows_the_rules(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    from drupelet.node.lattice.state import actor_key

    cfg = node_config(tmp_path / "pi", nats_server.url, name="pi-1", labels={"room": "lab"})
    client = await LatticeClient.connect(nats_server.url, "test")
    try:
        async with Node(cfg) as pi:
            await client.node("pi-1", "labels.put", {"labels": {"room": "garage", "shelf": "top"}})
            digest = await push_echo(client, tmp_path)
            await client.start_actor("pi-1", {"name": "echo", "digest": digest, "config": {"a": "1"}})
            # a config change in the state applies to the running actor, without a restart
            assert pi.state is not None
            state = pi.state
            await wait_until(lambda: state.get(actor_key("pi-1", "echo")) is not None, "the client's record")
            want = state.get(actor_key("pi-1", "echo"))
            assert want is not None
            await pi.state.put(actor_key("pi-1", "echo"), want | {"config": {"a": "2"}})
            await wait_until(lambda: pi.host.actors["echo"].config == {"a": "2"}, "the new config")
            # a desired actor whose artifact is missing is tried again until it starts
            pi.reconcile_interval_s = 0.1
            missing = "ab" * 32
            await pi.state.put(actor_key("pi-1", "later"), {"name": "later", "digest": missing, "instances": 1,
                                                            "config": {}, "node": "pi-1"})
            await asyncio.sleep(0.3)  # the behaviour under test: three reconcile rounds, and it stays absent
            assert "later" not in pi.host.actors
            noop_store = ArtifactStore(client.nc, "test", tmp_path / "c2")
            from test_host import wat as wat_bytes
            real = (await noop_store.put(wat_bytes("noop"), name="noop")).digest
            await pi.state.put(actor_key("pi-1", "later"), {"name": "later", "digest": real, "instances": 1,
                                                            "config": {}, "node": "pi-1"})
            await wait_until(lambda: "later" in pi.host.actors, "the desired actor to start")
        # at the next start the node config's labels win over recorded ones; others stay
        async with Node(cfg) as pi:
            assert pi.host.config.labels == {"room": "lab", "shelf": "top"}
            assert set(pi.host.actors) == {"echo", "later"}
    finally:
        await client.close()


async def test_a_failed_state_write_changes_nothing(tmp_path: Path) -> None:
    no_jetstream = EmbeddedNatsServer(NatsServerConfig(jetstream=False))
    await no_jetstream.start()
    try:
        async with Node(node_config(tmp_path, no_jetstream.url, name="pi-1", labels={"room": "lab"})) as pi:
            client = await LatticeClient.connect(no_jetstream.url, "test")
            try:
                with pytest.raises(LatticeError) as info:
                    await client.node("pi-1", "labels.put", {"labels": {"room": "garage"}})
                assert info.value.code == "state-unavailable"
                assert pi.host.config.labels == {"room": "lab"}
                with pytest.raises(LatticeError, match="state"):
                    await client.lattice_request("link.put", {"source": "a", "interface": "wasi:keyvalue",
                                                              "target": "local/keyvalue"})
                assert pi.host.links.all() == []
            finally:
                await client.close()
    finally:
        await no_jetstream.stop()


async def test_deleting_a_lattice_link_gives_back_the_node_configs_own(tmp_path: Path,
                                                                    nats_server: EmbeddedNatsServer) -> None:
    from drupelet.node.config import LinkSpec

    cfg = node_config(tmp_path, nats_server.url, name="pi-1",
                      links=[LinkSpec(source="kv", interface="wasi:keyvalue", target="local/keyvalue",
                                      config={"buckets": "mine"})])
    client = await LatticeClient.connect(nats_server.url, "test")
    try:
        async with Node(cfg) as pi:
            assert pi.host.links.get("kv", "wasi:keyvalue/store").config == {"buckets": "mine"}  # type: ignore[union-attr]
            await client.lattice_request("link.put", {"source": "kv", "interface": "wasi:keyvalue/store",
                                                      "target": "local/keyvalue", "config": {"buckets": "shared"}})
            await wait_until(lambda: pi.host.links.get("kv", "wasi:keyvalue/store").config == {"buckets": "shared"},  # type: ignore[union-attr]
                             "the lattice link to replace the config's")
            await client.lattice_request("link.del", {"source": "kv", "interface": "wasi:keyvalue/store"})
            await wait_until(lambda: (pi.host.links.get("kv", "wasi:keyvalue/store") is not None and
                                      pi.host.links.get("kv", "wasi:keyvalue/store").config == {"buckets": "mine"}),  # type: ignore[union-attr]
                             "the config's link to come back")
    finally:
        await client.close()
