"""HTTP across the lattice: a request taken by the Pi's http provider, answered by an actor
on the laptop (hub and leaf servers), and one served on the Pi through ``local/http``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from drupelet.node.lattice.client import LatticeClient
from drupelet.node.lattice.natsserver import free_port, start_hub_and_leaf
from drupelet.node.node import Node
from drupelet.node.runtime import read_component

from test_host import node_config
from test_http import HTTP_LIMITS, get, hello
from test_lattice import wait_until, wait_until_leaf_sees

Nodes = tuple[Node, Node, LatticeClient]


@pytest.fixture
async def lattice(tmp_path: Path, shared_compile_cache: Path) -> AsyncIterator[Nodes]:
    hub, leaf = await start_hub_and_leaf(tmp_path, "pi1")
    # a 600 KiB body crosses in ~1 s (wasmtime-py lowers a list<u8> byte by byte): the default time
    http = {"http": {**HTTP_LIMITS, "max_body_bytes": 2 << 20, "request_timeout_ms": 30_000}}
    laptop = Node(node_config(tmp_path / "laptop", hub.url, name="laptop", nats_jetstream_domain="hub",
                              call_deadline_ms=5000, providers=http, cache_dir=shared_compile_cache))
    pi = Node(node_config(tmp_path / "pi", leaf.url, name="pi-1", nats_jetstream_domain="hub",
                          call_deadline_ms=5000, providers=http, cache_dir=shared_compile_cache))
    client = await LatticeClient.connect(hub.url, "test")
    try:
        await pi.start()
        await laptop.start()
        await wait_until_leaf_sees(client, "pi-1")
        yield laptop, pi, client
    finally:
        await client.close()
        await laptop.stop()
        await pi.stop()
        await leaf.stop()
        await hub.stop()


async def link(client: LatticeClient, nodes: tuple[Node, ...], actor: str, interface: str, target: str,
               **config: str) -> None:
    await client.lattice_request("link.put", {"source": actor, "interface": interface, "target": target,
                                              "config": config})
    for node in nodes:
        await wait_until(lambda n=node: (n.host.links.get(actor, interface) is not None  # type: ignore[misc]
                                         and n.host.links.get(actor, interface).config == config),
                         f"{node.name} to apply the link of {actor}")


@pytest.fixture
async def web() -> AsyncIterator[aiohttp.ClientSession]:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
    try:
        yield session
    finally:
        await session.close()


@pytest.mark.slow
async def test_an_actor_on_the_laptop_answers_requests_arriving_at_the_pi(
        lattice: Nodes, web: aiohttp.ClientSession, http_probe_wasm: Path) -> None:
    laptop, pi, client = lattice
    await laptop.host.start_actor("probe", read_component(http_probe_wasm))
    address = f"127.0.0.1:{free_port()}"
    await link(client, (laptop, pi), "probe", "wasi:http/incoming-handler", "pi-1/http", address=address)
    await wait_until(lambda: address in pi.host.provider("http").describe()["listeners"],  # type: ignore[union-attr]
                     "the Pi to listen")
    # the listener is the Pi's; the answer comes from the laptop
    assert laptop.host.provider("http").describe()["listeners"] == []  # type: ignore[union-attr]
    assert await get(web, f"http://{address}/hello?x=1") == (200, "probe GET /hello\n")
    # a body larger than one lattice chunk both ways: read and written through the Pi's provider
    body = bytes(range(256)) * 2400  # 600 KiB: three chunks
    async with web.post(f"http://{address}/echo", data=body) as response:
        assert response.status == 200
        assert response.headers["x-body-bytes"] == str(len(body))
        assert await response.read() == body
    # a trap on the laptop is a 500 at the Pi, and the next request works
    assert await get(web, f"http://{address}/trap") == (500, "Internal Server Error\n")
    assert await get(web, f"http://{address}/") == (200, "probe GET /\n")
    assert laptop.host.actors["probe"].traps == 1
    # no actor anywhere: 503 from the Pi
    await laptop.host.stop_actor("probe")
    await wait_until(lambda: address in pi.host.provider("http").describe()["listeners"],  # type: ignore[union-attr]
                     "the Pi to keep listening")
    assert (await get(web, f"http://{address}/"))[0] == 503


async def test_an_actor_on_the_pi_linked_to_local_http_is_served_on_the_pi_only(
        lattice: Nodes, web: aiohttp.ClientSession) -> None:
    laptop, pi, client = lattice
    address = f"127.0.0.1:{free_port()}"
    await link(client, (laptop, pi), "hello", "wasi:http/incoming-handler", "local/http", address=address)
    # no node runs the actor: nobody listens yet
    for node in (laptop, pi):
        assert node.host.provider("http").describe()["waiting"] == ["hello"]  # type: ignore[union-attr]
    await pi.host.start_actor("hello", hello())
    await wait_until(lambda: address in pi.host.provider("http").describe()["listeners"],  # type: ignore[union-attr]
                     "the Pi to listen as the actor starts there")
    assert await get(web, f"http://{address}/") == (200, "hello\n")
    assert laptop.host.provider("http").describe()["listeners"] == []  # type: ignore[union-attr]
    await pi.host.stop_actor("hello")
    await wait_until(lambda: pi.host.provider("http").describe()["listeners"] == [],  # type: ignore[union-attr]
                     "the Pi to stop listening as the actor stops")


async def test_a_malformed_http_delivery_gets_an_error_reply_and_changes_nothing(lattice: Nodes,
                                                                                 web: aiohttp.ClientSession) -> None:
    import json

    laptop, pi, client = lattice
    await laptop.host.start_actor("hello", hello())
    address = f"127.0.0.1:{free_port()}"
    await link(client, (laptop, pi), "hello", "wasi:http/incoming-handler", "pi-1/http", address=address)
    for body in (b"{not json", json.dumps({"node": "pi-1", "exchange": 0, "method": "GET", "path": "/"}).encode(),
                 json.dumps({"node": "pi-1", "exchange": 1, "method": "GET", "path": "/", "extra": 1}).encode()):
        reply = await client.nc.request("drupelet.test.http.hello.pi-1", body, timeout=5)
        assert (reply.headers or {}).get("Drupelet-Error") == "bad-request", (body, reply.headers)
    # a request whose body names another node than its subject: NATS says who sent it
    named = json.dumps({"node": "laptop", "exchange": 5, "method": "GET", "path": "/"}).encode()
    reply = await client.nc.request("drupelet.test.http.hello.pi-1", named, timeout=5)
    assert (reply.headers or {}).get("Drupelet-Error") == "bad-request", reply.headers
    # a well-formed one for a request the Pi never took: the body read is refused there, by the link's rules
    forged = json.dumps({"node": "laptop", "exchange": 5, "method": "GET", "path": "/"}).encode()
    reply = await client.nc.request("drupelet.test.http.hello.laptop", forged, timeout=5)
    assert (reply.headers or {}).get("Drupelet-Error") == "not-linked", reply.headers
    await wait_until(lambda: address in pi.host.provider("http").describe()["listeners"],  # type: ignore[union-attr]
                     "the Pi to listen")
    assert await get(web, f"http://{address}/") == (200, "hello\n")
    assert laptop.host.actors["hello"].traps == 0
