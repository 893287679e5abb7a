"""The NATS control interface, driven with a plain NATS client and with LatticeClient."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from drupelet.node.lattice import subjects
from drupelet.node.runtime.errors import Trapped
from drupelet.node.lattice.client import LatticeClient, LatticeError
from drupelet.node.node import Node
from drupelet.node.lattice.natsserver import EmbeddedNatsServer
from drupelet.node.lattice.connect import synced

from test_host import node_config, wat


@pytest.fixture
async def two_nodes(tmp_path: Path, nats_server: EmbeddedNatsServer) -> AsyncIterator[tuple[Node, Node]]:
    a = Node(node_config(tmp_path / "a", nats_server.url, name="pi-1", labels={"room": "lab"},
                         heartbeat_interval_s=0.2))
    b = Node(node_config(tmp_path / "b", nats_server.url, name="laptop", labels={"room": "desk"}))
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await b.stop()
        await a.stop()


@pytest.fixture
async def client(nats_server: EmbeddedNatsServer) -> AsyncIterator[LatticeClient]:
    c = await LatticeClient.connect(nats_server.url, "test", timeout_s=5)
    try:
        yield c
    finally:
        await c.close()


async def test_ping_lists_every_node_with_labels(two_nodes: tuple[Node, Node], client: LatticeClient) -> None:
    nodes = await client.ping()
    assert [(n["name"], n["labels"]) for n in nodes] == [("laptop", {"room": "desk"}), ("pi-1", {"room": "lab"})]
    assert await client.select(None, {"room": "lab"}) == ["pi-1"]
    with pytest.raises(LatticeError, match="no node in lattice 'test' matches labels room=garage"):
        await client.select(None, {"room": "garage"})


async def test_inventory_and_actor_verbs(two_nodes: tuple[Node, Node], client: LatticeClient) -> None:
    pi, _ = two_nodes
    await pi.host.start_actor("echo", wat("echo"))
    inv = await client.node("pi-1", "inventory")
    assert inv["name"] == "pi-1" and [a["name"] for a in inv["actors"]] == ["echo"]
    assert {p["name"] for p in inv["providers"]} >= {"keyvalue", "messaging"}
    scaled = await client.node("pi-1", "actor.scale", {"name": "echo", "instances": 3})
    assert scaled["instances"] == 3 and pi.host.actors["echo"].instances == 3
    assert [a["name"] for a in await client.node("pi-1", "actor.list")] == ["echo"]
    await client.node("pi-1", "actor.stop", {"name": "echo"})
    assert "echo" not in pi.host.actors
    with pytest.raises(LatticeError, match="no actor named 'echo' runs on node pi-1") as info:
        await client.node("pi-1", "actor.stop", {"name": "echo"})
    assert info.value.code == "actor-not-found"
    with pytest.raises(LatticeError, match="no node named 'pi-9'"):
        await client.node("pi-9", "inventory")


async def test_labels_and_providers(two_nodes: tuple[Node, Node], client: LatticeClient) -> None:
    pi, _ = two_nodes
    assert await client.node("pi-1", "labels.put", {"labels": {"shelf": "top"}}) == {"room": "lab", "shelf": "top"}
    assert await client.select(None, {"shelf": "top"}) == ["pi-1"]
    assert await client.node("pi-1", "labels.del", {"keys": ["room"]}) == {"shelf": "top"}
    await client.node("pi-1", "provider.stop", {"name": "keyvalue"})
    assert "keyvalue" not in pi.host.providers
    started = await client.node("pi-1", "provider.start", {"name": "keyvalue"})
    assert started["name"] == "keyvalue" and "wasi:keyvalue/store" in started["interfaces"]
    with pytest.raises(LatticeError, match="no provider 'gps' is installed"):
        await client.node("pi-1", "provider.start", {"name": "gps"})


@pytest.mark.parametrize("verb,body,code,needle", [
    ("inventory", b"{not json", "bad-request", "not JSON"),
    ("inventory", b"[1, 2]", "bad-request", "must be a JSON object"),
    ("actor.scale", b'{"name": "echo", "instances": "many"}', "bad-request", "instances: must be an integer"),
    ("actor.scale", b'{"name": "echo", "instances": 0}', "bad-request", "instances: must be between 1 and 1000"),
    ("actor.stop", b'{"name": "echo", "force": true}', "bad-request", "unknown field(s) force"),
    ("actor.stop", b'{}', "bad-request", "name: is required"),
    ("actor.stop", b'{"name": "../etc"}', "bad-request", "name: '../etc' is not valid"),
    ("actor.start", b'{"name": "x", "digest": "abc"}', "bad-request", "digest: 'abc' is not valid"),
    ("actor.explode", b'{}', "unknown-request", "unknown request 'actor.explode'"),
    ("labels.put", b'{"labels": {"k": 1}}', "bad-request", "labels: must be an object of strings"),
    ("labels.put", json.dumps({"labels": {"note": "x" * 300}}).encode(), "bad-request",
     "labels: the value of 'note' must be at most 256 bytes (UTF-8), got 300"),
    # the node has a label already ("room"): 64 more would make 65
    ("labels.put", json.dumps({"labels": {f"k{i}": "v" for i in range(64)}}).encode(), "bad-request",
     "labels: the node would have 65 labels; at most 64 are allowed"),
    ("actor.start", json.dumps({"name": "big", "reference": "echo", "config": {"pem": "x" * 5000}}).encode(),
     "bad-request", "config: the value of 'pem' must be at most 4096 bytes (UTF-8), got 5000"),
])
async def test_bad_requests_get_an_error_and_change_nothing(two_nodes: tuple[Node, Node],
                                                            nats_server: EmbeddedNatsServer, verb: str,
                                                            body: bytes, code: str, needle: str) -> None:
    pi, _ = two_nodes
    await pi.host.start_actor("echo", wat("echo"), instances=2)
    before = pi.host.inventory()
    nc = await nats.connect(nats_server.url)
    try:
        msg = await nc.request(subjects.node_control("test", "pi-1", verb), body, timeout=5)
    finally:
        await nc.close()
    reply = json.loads(msg.data)
    assert reply["ok"] is False and reply["error"]["code"] == code
    assert needle in reply["error"]["message"]
    after = pi.host.inventory()
    assert after["actors"] == before["actors"] and after["labels"] == before["labels"]
    assert after["providers"] == before["providers"]


async def test_events_are_cloudevents(two_nodes: tuple[Node, Node], nats_server: EmbeddedNatsServer) -> None:
    pi, _ = two_nodes
    nc = await nats.connect(nats_server.url)
    seen: list[dict[str, object]] = []

    async def on_event(msg: nats.aio.msg.Msg) -> None:
        seen.append(json.loads(msg.data) | {"_subject": msg.subject})

    try:
        await nc.subscribe(subjects.events_all("test"), cb=on_event)
        await synced(nc)
        await pi.host.start_actor("echo", wat("echo"))
        await pi.host.put_link("echo", "wasmcloud:messaging", "local/messaging")
        with pytest.raises(Trapped):
            await pi.host.deliver("echo", "s", b"trap")
        await pi.host.stop_actor("echo")
        for _ in range(100):
            kinds = {e["type"] for e in seen}
            if {"dev.drupelet.actor_stopped", "dev.drupelet.heartbeat"} <= kinds:
                break
            await asyncio.sleep(0.02)
    finally:
        await nc.close()
    by_type = {e["type"]: e for e in seen}
    started = by_type["dev.drupelet.actor_started"]
    assert started["specversion"] == "1.0" and started["source"] == "drupelet/test/pi-1"
    assert started["_subject"] == "drupelet.test.evt.pi-1.actor_started"
    assert started["data"]["actor"] == "echo" and len(started["data"]["digest"]) == 64  # type: ignore[index]
    assert by_type["dev.drupelet.link_put"]["data"]["target"] == "local/messaging"  # type: ignore[index]
    assert by_type["dev.drupelet.actor_failed"]["data"]["code"] == "trap"  # type: ignore[index]
    heartbeat = by_type["dev.drupelet.heartbeat"]["data"]
    assert heartbeat["name"] == "pi-1" and "actors" in heartbeat  # type: ignore[operator,index]
