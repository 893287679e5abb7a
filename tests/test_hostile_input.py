"""Hostile input changes nothing: each test is one request or one message that once took
a node (or the lattice) down, sent the way an attacker or a buggy client would, over a
real nats-server.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from drupelet.node.lattice import subjects
from drupelet.node.lattice.client import LatticeClient
from drupelet.node.lattice.desired import DesiredState
from drupelet.node.lattice.errors import BadRequest, ErrorReply
from drupelet.node.lattice.natsserver import EmbeddedNatsServer
from drupelet.node.node import Node

from test_host import node_config, wat
from test_races import client, node, push  # noqa: F401  (fixtures: a node pi-1, a lattice client)
from waiting import wait_for_async

KV = "wasi:keyvalue/store"


async def call(nc: Any, node: str, body: dict[str, Any] | bytes, provider: str = "keyvalue") -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    caller = body.get("caller", "x") if isinstance(body, dict) else "x"  # the subject names the calling node
    msg = await nc.request(subjects.provider_calls("test", node, provider, caller), data, timeout=5)
    reply: dict[str, Any] = json.loads(msg.data)
    return reply


def b64(data: bytes) -> dict[str, str]:
    import base64

    return {"$b": base64.b64encode(data).decode()}


async def open_bucket(nc: Any, node: Node, name: str = "poison") -> int:
    await node.host.put_link("a", "wasi:keyvalue", f"{node.name}/keyvalue")
    reply = await call(nc, node.name, {"caller": "x", "source": "a", "interface": KV, "op": "open", "args": [name]})
    assert reply["ok"], reply
    handle: int = reply["result"]["$h"]
    return handle


# -- buckets --------------------------------------------------------------------------------


@pytest.mark.parametrize("items", [
    [["big", 50_000_000]],  # once: a 130-byte request that wrote a 67 MB bucket file
    [["big", "text"]],
    [["big", [1, 2, 3]]],
    [["ok", b64(b"fine")], ["big", 7]],
    [["k"]],
    "kv",
])
async def test_set_many_takes_bytes_only_and_a_refused_batch_writes_nothing(
        node: Node, nats_client: Any, items: Any) -> None:
    handle = await open_bucket(nats_client, node)
    base = {"caller": "x", "source": "a", "interface": "wasi:keyvalue/batch", "handle": handle}
    reply = await call(nats_client, "pi-1", {**base, "op": "handle.set_many", "args": [items]})
    assert reply["ok"] is False and reply["error"]["code"] in ("bad-request", "other", "keyvalue"), reply
    bucket_file = node.config.data_dir / "providers" / "keyvalue" / "poison.json"
    assert not bucket_file.exists() or bucket_file.stat().st_size < 1000
    reply = await call(nats_client, "pi-1", {**base, "op": "handle.get", "args": ["ok"]})
    assert reply == {"ok": True, "result": None}, "part of a refused batch was written"


async def test_a_refused_write_leaves_the_bucket_writable(node: Node, nats_client: Any) -> None:
    """Once, a non-bytes value was refused yet landed in memory, and every later valid
    write to the bucket failed until a restart."""
    handle = await open_bucket(nats_client, node)
    base = {"caller": "x", "source": "a", "interface": KV, "handle": handle}
    for bad in ({"x": 1}, 12, None, [1, 2], "text", True):
        reply = await call(nats_client, "pi-1", {**base, "op": "handle.set", "args": ["k", bad]})
        assert reply["ok"] is False, (bad, reply)
    reply = await call(nats_client, "pi-1", {**base, "op": "handle.set", "args": ["k", b64(b"v")]})
    assert reply == {"ok": True, "result": None}, reply
    reply = await call(nats_client, "pi-1", {**base, "op": "handle.get", "args": ["k"]})
    assert reply == {"ok": True, "result": b64(b"v")}


async def test_every_bucket_write_path_checks_the_size(node: Node, nats_client: Any) -> None:
    handle = await open_bucket(nats_client, node)
    limit = node.config.max_payload_bytes
    big = b64(b"x" * (limit // 2 + 1))
    base = {"caller": "x", "source": "a", "interface": KV, "handle": handle}
    for op, args in (("handle.set", ["k", b64(b"x" * (limit + 1))]),
                     ("handle.set_many", [[["a", big], ["b", big]]])):
        reply = await call(nats_client, "pi-1", {**base, "op": op, "args": args})
        assert reply["ok"] is False and reply["error"]["code"] == "payload-too-large", (op, reply)


# -- what every node repeats stays small ----------------------------------------------------


async def test_an_oversized_label_or_config_is_refused_and_the_node_stays_visible(
        node: Node, client: LatticeClient) -> None:
    for verb, body in (("labels.put", {"labels": {"big": "x" * 1_000_000}}),):
        with pytest.raises(ErrorReply) as refused:
            await client.node("pi-1", verb, body)
        assert refused.value.code == "bad-request" and "labels" in refused.value.message
    for verb, body in (("link.put", {"source": "a", "interface": KV, "target": "local/keyvalue",
                                     "config": {"big": "x" * 1_000_000}}),
                       ("link.put", {"source": "a", "interface": KV, "target": "local/keyvalue",
                                     "config": {f"k{i}": "x" * 4000 for i in range(10)}}),
                       ("config.put", {"name": "big", "values": {"big": "x" * 100_000}})):
        with pytest.raises(BadRequest) as checked:  # the admin's client checks before it writes
            await client.lattice_request(verb, body)
        assert checked.value.code == "bad-request", checked.value.message
    assert [n["name"] for n in await client.ping()] == ["pi-1"]
    assert (await client.node("pi-1", "inventory"))["name"] == "pi-1"
    assert await client.lattice_request("link.list") == []


async def test_a_reply_past_the_servers_max_payload_says_so(node: Node, client: LatticeClient) -> None:
    node.host.logbook.add("e1", "info", "", "x" * 200_000)  # lines a node already holds
    for _ in range(6):
        node.host.logbook.add("e1", "info", "", "y" * 200_000)
    with pytest.raises(ErrorReply) as refused:
        await client.node("pi-1", "logs.recent", {"lines": 10})
    assert refused.value.code == "reply-too-large" and "max_payload" in refused.value.message
    assert len(await client.node("pi-1", "logs.recent", {"lines": 2})) == 2  # the node goes on answering


# -- the start-up window ----------------------------------------------------------------------


async def test_requests_during_a_restart_see_the_restored_state_or_are_told_it_is_starting(
        tmp_path: Path, nats_server: EmbeddedNatsServer, client: LatticeClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    first = Node(node_config(tmp_path, nats_server.url, name="pi-1"))
    await first.start()
    try:
        digest = await push(client, "echo", tmp_path / "cli-cache")
        await client.start_actor("pi-1", {"name": "e1", "digest": digest})  # started and recorded
        await client.lattice_request("link.put", {"source": "e1", "interface": "wasmcloud:messaging",
                                                  "target": "local/messaging"})
        await wait_for_async(lambda: len(first.host.list_links()) == 1, 5, "the link applied")
    finally:
        await first.stop()

    restore = DesiredState.restore
    gate = asyncio.Event()

    async def slow_restore(self: DesiredState) -> None:  # a restore that takes a while (a compile, say)
        await gate.wait()
        await restore(self)

    monkeypatch.setattr(DesiredState, "restore", slow_restore)
    second = Node(node_config(tmp_path, nats_server.url, name="pi-1"))
    starting = asyncio.ensure_future(second.start())
    try:
        await wait_for_async(lambda: second.control is not None and second.provider_server is not None
                             and second.provider_server.handles == 0, 10, "the control plane up")
        seen = await client.ping(0.3)
        assert [(n["name"], n.get("starting")) for n in seen] == [("pi-1", True)]
        with pytest.raises(ErrorReply) as early:
            await client.node("pi-1", "inventory", timeout_s=5)
        assert early.value.code == "starting", early.value.message
        waiting = asyncio.ensure_future(client.node("pi-1", "inventory", timeout_s=5))
        await asyncio.sleep(0)  # the request is on its way before the restore ends
        gate.set()
        inventory = await waiting
        assert [a["name"] for a in inventory["actors"]] == ["e1"]
        assert [link["source"] for link in inventory["links"]] == ["e1"]
        await starting
        assert "starting" not in (await client.ping(0.3))[0]
    finally:
        gate.set()
        await asyncio.gather(starting, return_exceptions=True)
        await second.stop()


# -- a wildcard subscription storm ----------------------------------------------------------


async def test_wildcard_subscriptions_are_refused_and_no_delivery_is_forwarded_onto_another(
        tmp_path: Path, nats_server: EmbeddedNatsServer, client: LatticeClient, nats_client: Any) -> None:
    """Two nodes: a messaging link that would receive everything (``>``) or every reply
    (``_INBOX.>``) is refused by the node that answers and applied by neither; a delivery
    subject is never forwarded onto another delivery subject."""
    one = Node(node_config(tmp_path / "one", nats_server.url, name="pi-1"))
    two = Node(node_config(tmp_path / "two", nats_server.url, name="pi-2"))
    await one.start()
    await two.start()
    try:
        digest = await push(client, "echo", tmp_path / "cli-cache")
        for node in ("pi-1", "pi-2"):
            await client.node(node, "actor.start", {"name": "e1", "digest": digest})
        for pattern in (">", "_INBOX.>", "drupelet.>", "drupelet.test.deliver.*", "*.>"):
            await client.lattice_request("link.put", {"source": "e1", "interface": "wasmcloud:messaging",
                                                      "target": "local/messaging",
                                                      "config": {"subscriptions": pattern}})
            for n in (one, two):  # a link from the lattice state that a node's provider refuses is not applied
                await wait_for_async(lambda n=n: not n.host.providers["messaging"].describe()["subscriptions"], 5,
                                     f"no subscription on {n.name}")
        seen: list[str] = []

        async def on_deliver(msg: Any) -> None:
            seen.append(msg.subject)

        spy = await nats_client.subscribe(subjects.deliver_prefix("test") + ">", cb=on_deliver)
        await nats_client.flush()
        for _ in range(20):
            await nats_client.publish(subjects.deliver("test", "e1"), b"hello")
        await nats_client.flush()
        await wait_for_async(lambda: len(seen) >= 20, 5, "the deliveries")
        await wait_for_async(lambda: all(n.host.actors["e1"].calls >= 0 and n.host.actors["e1"].queue.qsize() == 0
                                         for n in (one, two)), 5, "the deliveries handled")
        for n in (one, two):  # anything a node forwarded has reached the server, and the spy after it
            assert n.nats is not None
            await n.nats.flush()
        await nats_client.flush()
        await spy.unsubscribe()
        assert len(seen) == 20 and set(seen) == {subjects.deliver("test", "e1")}, seen
    finally:
        await two.stop()
        await one.stop()
