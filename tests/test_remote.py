"""An actor on one node calls a provider on another, through a lattice link."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drupelet.node.host.errors import HandlerError
from drupelet.node.lattice import subjects
from drupelet.node.lattice.client import LatticeClient
from drupelet.node.node import Node
from drupelet.node.lattice.natsserver import EmbeddedNatsServer
from drupelet.providers.base import Link
from drupelet.node.lattice.connect import synced

from test_host import node_config, wat
from test_keyvalue import ACCESS_DENIED, OTHER, kvloop
from test_lattice import wait_until


@pytest.fixture
async def lattice(tmp_path: Path, nats_server: EmbeddedNatsServer) -> AsyncIterator[tuple[Node, Node, LatticeClient]]:
    laptop = Node(node_config(tmp_path / "laptop", nats_server.url, name="laptop"))
    pi = Node(node_config(tmp_path / "pi", nats_server.url, name="pi-1", remote_call_timeout_ms=1000,
                          health_check_interval_s=0.05))
    await laptop.start()
    await pi.start()
    client = await LatticeClient.connect(nats_server.url, "test")
    try:
        yield laptop, pi, client
    finally:
        await client.close()
        await laptop.stop()
        await pi.stop()


async def link(client: LatticeClient, hosts: tuple[Node, ...], source: str, interface: str, target: str,
               **config: str) -> None:
    made = await client.lattice_request("link.put", {"source": source, "interface": interface, "target": target,
                                                      "config": config})
    for host in hosts:
        for entry in made:
            await wait_until(lambda h=host, e=entry: (h.host.links.get(source, e["interface"]) is not None  # type: ignore[misc]
                                                      and h.host.links.get(source, e["interface"]).config == config),
                             f"{host.name} to apply {entry['interface']}")


async def test_keyvalue_on_another_node(lattice: tuple[Node, Node, LatticeClient]) -> None:
    laptop, pi, client = lattice
    await laptop.host.start_actor("kv", kvloop())
    await link(client, (laptop, pi), "kv", "wasi:keyvalue", "pi-1/keyvalue")
    assert await laptop.host.invoke("kv", "set", 9) == 0
    # the value lives in the Pi's bucket, not the laptop's
    stored = pi.host.providers["keyvalue"].open(Link("kv", "wasi:keyvalue/store", "pi-1/keyvalue"), "")  # type: ignore[attr-defined]
    assert stored.get("k") == (9).to_bytes(4, "little")
    local = laptop.host.providers["keyvalue"].open(Link("kv", "wasi:keyvalue/store", "local/keyvalue"), "")  # type: ignore[attr-defined]
    assert local.get("k") is None
    assert await laptop.host.invoke("kv", "run", 25) == 25
    # every handle the guest dropped was released on the Pi
    assert pi.provider_server.handles == 0
    # the Pi enforces the link's grants
    await link(client, (laptop, pi), "kv", "wasi:keyvalue/store", "pi-1/keyvalue", buckets="other")
    assert await laptop.host.invoke("kv", "probe") == ACCESS_DENIED
    assert laptop.host.actors["kv"].traps == 0


async def test_unreachable_node_is_an_error_value_not_a_hang(lattice: tuple[Node, Node, LatticeClient]) -> None:
    laptop, pi, client = lattice
    await laptop.host.start_actor("kv", kvloop())
    await link(client, (laptop, pi), "kv", "wasi:keyvalue/store", "pi-9/keyvalue")
    started = time.monotonic()
    assert await laptop.host.invoke("kv", "probe") == OTHER
    assert time.monotonic() - started < 1.0  # no responders: fails fast
    assert laptop.host.actors["kv"].traps == 0


async def test_messaging_through_another_nodes_provider(lattice: tuple[Node, Node, LatticeClient]) -> None:
    laptop, pi, client = lattice
    await laptop.host.start_actor("echo", wat("echo"))
    await link(client, (laptop, pi), "echo", "wasmcloud:messaging", "pi-1/messaging")
    assert await laptop.call("echo", "s", b"via the pi") == b"via the pi"
    stopped = await client.node("pi-1", "provider.stop", {"name": "messaging"})
    assert stopped is None
    with pytest.raises(HandlerError, match="unavailable: no provider 'messaging' runs on node pi-1"):
        await laptop.host.deliver("echo", "s", b"x", reply_to="nowhere")


async def test_a_call_without_a_lattice_link_is_denied(lattice: tuple[Node, Node, LatticeClient],
                                                       nats_server: EmbeddedNatsServer) -> None:
    import json

    import nats

    laptop, pi, client = lattice
    nc = await nats.connect(nats_server.url)
    try:
        reply = await nc.request(subjects.provider_calls("test", "pi-1", "keyvalue", "intruder"), json.dumps({
            "source": "kv", "interface": "wasi:keyvalue/store", "op": "open", "args": [""]}).encode(), timeout=5)
        bad = await nc.request(subjects.provider_calls("test", "pi-1", "keyvalue", "intruder"), b"{not json",
                               timeout=5)
    finally:
        await nc.close()
    assert json.loads(reply.data)["error"]["code"] == "denied"
    assert json.loads(bad.data)["error"]["code"] == "bad-request"
    assert pi.provider_server.handles == 0


async def test_provider_events_reach_an_actor_on_another_node(lattice: tuple[Node, Node, LatticeClient],
                                                              nats_server: EmbeddedNatsServer) -> None:
    import nats

    laptop, pi, client = lattice
    await laptop.host.start_actor("echo", wat("echo"))
    # the Pi's messaging provider subscribes; the actor runs only on the laptop
    await link(client, (laptop, pi), "echo", "wasmcloud:messaging", "pi-1/messaging", subscriptions="demo.remote")
    nc = await nats.connect(nats_server.url)
    try:
        reply = await nc.request("demo.remote", b"from a sensor", timeout=5)
    finally:
        await nc.close()
    assert reply.data == b"from a sensor"
    await wait_until(lambda: laptop.host.actors["echo"].calls == 1, "the laptop's instance to count the call")
    assert "echo" not in pi.host.actors


async def test_handles_of_a_vanished_node_are_swept(lattice: tuple[Node, Node, LatticeClient],
                                                   nats_server: EmbeddedNatsServer) -> None:
    import json

    import nats

    laptop, pi, client = lattice
    await pi.host.put_link("kv", "wasi:keyvalue/store", "pi-1/keyvalue")
    nc = await nats.connect(nats_server.url)
    try:
        for caller in ("laptop", "ghost"):  # "ghost" opened a bucket, then its node died without a word
            reply = await nc.request(subjects.provider_calls("test", "pi-1", "keyvalue", caller), json.dumps({
                "source": "kv", "interface": "wasi:keyvalue/store", "op": "open", "args": [""]}).encode(), timeout=5)
            assert json.loads(reply.data)["ok"] is True
    finally:
        await nc.close()
    assert pi.provider_server.handles == 2
    assert await pi.provider_server.sweep() == 1  # the laptop answers pings; the ghost does not
    assert pi.provider_server.handles == 1
    # a node that stops says so, and its handles go at once
    await laptop.stop()
    await wait_until(lambda: pi.provider_server.handles == 0, "the laptop's handle to be released")


async def test_provider_health_changes_are_events(lattice: tuple[Node, Node, LatticeClient],
                                                  nats_server: EmbeddedNatsServer) -> None:
    import json

    import nats

    from drupelet.providers.base import Health

    laptop, pi, client = lattice
    seen: list[dict[str, object]] = []
    nc = await nats.connect(nats_server.url)

    async def on_event(msg: nats.aio.msg.Msg) -> None:
        seen.append(json.loads(msg.data))

    try:
        await nc.subscribe("drupelet.test.evt.pi-1.provider_health_changed", cb=on_event)
        await synced(nc)
        provider = pi.host.providers["keyvalue"]
        healthy = provider.health
        readings: list[Health] = []

        def reading() -> Health:
            readings.append(healthy())
            return readings[-1]

        provider.health = reading  # type: ignore[method-assign]
        await wait_until(lambda: len(readings) >= 2, "a few readings of the healthy provider")
        provider.health = lambda: Health("degraded", "disk almost full")  # type: ignore[method-assign]
        await wait_until(lambda: bool(seen), "a provider_health_changed event")
    finally:
        await nc.close()
    assert seen[0]["data"] == {"provider": "keyvalue", "health": "degraded", "message": "disk almost full",
                               "previous": "ok"}
