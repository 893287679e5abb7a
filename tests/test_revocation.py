"""Revoked keys in the lattice state: every node stops the actors they cover, and a node
restarted with the hub down keeps them revoked from its disk copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drupelet.node.lattice.artifacts import ArtifactStore
from drupelet.node.lattice.client import LatticeClient
from drupelet.node.lattice.natsserver import start_hub_and_leaf
from drupelet.node.node import Node
from drupelet.node.security import claims as wc
from drupelet.node.security import keys

from test_host import node_config, wat
from test_lattice import wait_until, wait_until_leaf_sees

A = keys.generate("account")


async def push_signed_echo(client: LatticeClient, tmp_path: Path) -> tuple[str, wc.Claims]:
    data, made = wc.sign(wat("echo"), A, name="echo", caps=("wasmcloud:messaging",))
    store = ArtifactStore(client.nc, "test", tmp_path / "push-cache", domain="hub")
    return (await store.put(data, name="echo")).digest, made


async def test_revoking_a_subject_stops_it_on_hub_and_leaf_nodes(tmp_path: Path) -> None:
    hub, leaf = await start_hub_and_leaf(tmp_path, "pi1")
    laptop = Node(node_config(tmp_path / "laptop", hub.url, name="laptop", nats_jetstream_domain="hub"))
    pi = Node(node_config(tmp_path / "pi", leaf.url, name="pi-1", nats_jetstream_domain="hub"))
    client = await LatticeClient.connect(hub.url, "test")
    events: dict[str, list[tuple[str, dict[str, Any]]]] = {"laptop": [], "pi-1": []}
    try:
        await laptop.start()
        await pi.start()
        for n in (laptop, pi):
            n.host.on_event(lambda kind, data, name=n.name: events[name].append((kind, data)))  # type: ignore[misc]
        await wait_until(lambda: bool(pi.state and pi.state.connected), "the Pi node to reach the hub's state")
        await wait_until_leaf_sees(client, "pi-1")
        digest, made = await push_signed_echo(client, tmp_path)
        for node in ("laptop", "pi-1"):
            await client.node(node, "actor.start", {"name": "echo", "digest": digest})
        assert laptop.host.actors["echo"].identity.claims == pi.host.actors["echo"].identity.claims
        value = await client.lattice_request("revocation.put", {"key": made.subject})
        assert value["key"] == made.subject
        for n in (laptop, pi):
            await wait_until(lambda h=n: "echo" not in h.host.actors, f"{n.name} to stop the revoked actor")  # type: ignore[misc]
            revoked = [d for k, d in events[n.name] if k == "actor_revoked"]
            assert revoked and revoked[0]["actor"] == "echo" and revoked[0]["subject"] == made.subject
            await wait_until(lambda e=events[n.name]: any(k == "actor_stopped" for k, _ in e),  # type: ignore[misc]
                             f"{n.name}'s actor_stopped event")
        assert [v["key"] for v in await client.lattice_request("revocation.list")] == [made.subject]
        # an issuer key is revoked the same way; a seed or a malformed key is refused
        await client.lattice_request("revocation.put", {"key": A.public})
        assert len(await client.lattice_request("revocation.list")) == 2
        try:
            await client.lattice_request("revocation.put", {"key": A.seed[:56]})
        except Exception as exc:  # LatticeError with the reason
            assert "seed" in str(exc) or "key" in str(exc)
        else:
            raise AssertionError("a seed was accepted as a revoked key")
    finally:
        await client.close()
        await pi.stop()
        await laptop.stop()
        await leaf.stop()
        await hub.stop()


async def test_a_revoked_actor_is_not_restored_at_boot_with_the_hub_down(tmp_path: Path) -> None:
    hub, leaf = await start_hub_and_leaf(tmp_path, "pi1")
    cfg = node_config(tmp_path / "pi", leaf.url, name="pi-1", nats_jetstream_domain="hub")
    client = await LatticeClient.connect(hub.url, "test")
    try:
        async with Node(cfg) as pi:
            await wait_until(lambda: bool(pi.state and pi.state.connected), "the node to reach the hub's state")
            await wait_until_leaf_sees(client, "pi-1")
            digest, made = await push_signed_echo(client, tmp_path)
            await client.start_actor("pi-1", {"name": "echo", "digest": digest})  # and records it
            await wait_until(lambda: bool(pi.state and pi.state.actors_for("pi-1")), "the node to see the record")
            await client.lattice_request("revocation.put", {"key": made.subject})
            await wait_until(lambda: "echo" not in pi.host.actors, "the revoked actor to stop")
            await wait_until(lambda: bool(pi.state and made.subject in pi.state.revoked()), "the state to have it")
        await client.close()
        await hub.stop()
        async with Node(cfg) as pi:
            assert pi.state is not None and not pi.state.connected
            assert made.subject in pi.state.revoked()
            assert "echo" not in pi.host.actors
            assert pi.state.actors_for("pi-1")  # still desired: refused, not forgotten
    finally:
        await client.close()
        await leaf.stop()
        await hub.stop()
