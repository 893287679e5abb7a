"""HTTP into actors on one node: standard wasi:http components behind the http provider,
against real components (a WAT one, componentize-py ones, a componentize-js one) and a
real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from drupelet.node.lattice.natsserver import EmbeddedNatsServer, free_port
from drupelet.node.node import Node
from drupelet.node.runtime import read_component

from test_host import WAT, node_config
from waiting import wait_for_async

HTTP_LIMITS = {"max_body_bytes": 256 << 10, "max_headers": 50, "header_timeout_ms": 400,
               "request_timeout_ms": 3000}


def hello() -> bytes:
    return read_component(WAT / "http-hello.wat")


@pytest.fixture
def compile_cache(shared_compile_cache: Path) -> Path:
    """The session's compile cache: each 18 MB componentize-py actor is compiled once."""
    return shared_compile_cache


def http_node(tmp_path: Path, url: str, cache: Path, **http: Any) -> Node:
    return Node(node_config(tmp_path, url, call_deadline_ms=5000, cache_dir=cache,
                            providers={"http": {**HTTP_LIMITS, **http}}))


@pytest.fixture
async def node(tmp_path: Path, nats_server: EmbeddedNatsServer, compile_cache: Path) -> AsyncIterator[Node]:
    n = http_node(tmp_path, nats_server.url, compile_cache)
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
    try:
        yield session
    finally:
        await session.close()


async def serve(node: Node, actor: str, **config: str) -> str:
    """Link ``actor``'s incoming handler to the node's http provider; its base URL."""
    config.setdefault("address", f"127.0.0.1:{free_port()}")
    await node.host.put_link(actor, "wasi:http/incoming-handler", "local/http", config)
    return f"http://{config['address']}"


async def get(client: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, str]:
    async with client.get(url, **kwargs) as response:
        return response.status, await response.text()


async def test_the_minimal_component_answers_and_a_missing_route_is_404(node: Node,
                                                                       client: aiohttp.ClientSession) -> None:
    await node.host.start_actor("hello", hello())
    base = await serve(node, "hello", path="/hello")
    assert await get(client, f"{base}/hello") == (200, "hello\n")
    assert await get(client, f"{base}/hello/deeper?x=1") == (200, "hello\n")
    assert await get(client, f"{base}/other") == (404, "Not Found\n")
    described = node.host.provider("http").describe()  # type: ignore[union-attr]
    assert described["routes"] == [{"actor": "hello", "address": base.removeprefix("http://"), "host": None,
                                    "path": "/hello"}]
    assert described["requests"] == 2


@pytest.mark.slow
async def test_the_counter_example_counts_and_keeps_its_count_across_a_restart(
        tmp_path: Path, nats_server: EmbeddedNatsServer, http_counter_wasm: Path,
        client: aiohttp.ClientSession, compile_cache: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    for expected in ((1, 2), (3, 4)):  # the second round runs on the node started again
        n = http_node(tmp_path, nats_server.url, compile_cache)
        await n.start()
        try:
            await n.host.start_actor("web", read_component(http_counter_wasm))
            await n.host.put_link("web", "wasi:keyvalue", "local/keyvalue", {"buckets": "counter"})
            await serve(n, "web", address=address)
            for count in expected:
                assert await get(client, f"http://{address}/") == (200, f"count={count}\n")
            assert await get(client, f"http://{address}/favicon.ico") == (404, "not found\n")
        finally:
            await n.stop()


@pytest.mark.slow
async def test_a_componentize_js_counter_built_elsewhere_runs_unchanged_and_survives_a_restart(
        tmp_path: Path, nats_server: EmbeddedNatsServer, js_http_counter_wasm: Path,
        client: aiohttp.ClientSession, compile_cache: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    for expected in ((1, 2), (3,)):
        n = http_node(tmp_path, nats_server.url, compile_cache)
        await n.start()
        try:
            await n.host.start_actor("counter", read_component(js_http_counter_wasm))
            await n.host.put_link("counter", "wasi:keyvalue", "local/keyvalue", {"buckets": "default"})
            await serve(n, "counter", address=address)
            for count in expected:
                assert await get(client, f"http://{address}/visits") == (200, f"key=/visits, count={count}\n")
        finally:
            await n.stop()


@pytest.mark.slow
async def test_a_large_body_reaches_the_component_and_one_past_the_limit_is_413(
        node: Node, client: aiohttp.ClientSession, http_probe_wasm: Path) -> None:
    await node.host.start_actor("probe", read_component(http_probe_wasm))
    base = await serve(node, "probe")
    body = bytes(range(256)) * 800  # 200 KiB, under the 256 KiB limit
    async with client.post(f"{base}/echo", data=body) as response:
        assert response.status == 200
        assert response.headers["x-body-bytes"] == str(len(body))
        assert response.headers["x-method"] == "POST"
        assert await response.read() == body
    async with client.post(f"{base}/echo", data=b"x" * (300 << 10)) as response:
        assert response.status == 413
    assert await get(client, f"{base}/") == (200, "probe GET /\n")


@pytest.mark.slow
async def test_many_headers_reach_the_component_and_too_many_are_refused(
        node: Node, client: aiohttp.ClientSession, http_probe_wasm: Path) -> None:
    await node.host.start_actor("probe", read_component(http_probe_wasm))
    base = await serve(node, "probe")
    headers = {f"x-field-{i}": f"value {i}" for i in range(40)}
    status, text = await get(client, f"{base}/headers", headers=headers)
    assert status == 200
    assert "x-field-39: value 39" in text.splitlines()
    assert int(text.splitlines()[0].removeprefix("headers=")) >= 40
    status, _ = await get(client, f"{base}/headers", headers={f"x-many-{i}": "v" for i in range(80)})
    assert status in (400, 431)
    status, _ = await get(client, f"{base}/headers", headers={"x-long": "v" * 10_000})
    assert status in (400, 431)
    assert await get(client, f"{base}/") == (200, "probe GET /\n")


async def test_a_slow_client_is_cut_off_while_others_are_served(node: Node, client: aiohttp.ClientSession) -> None:
    await node.host.start_actor("hello", hello())
    base = await serve(node, "hello")
    host, port = base.removeprefix("http://").split(":")
    # headers that never end: the connection is closed after header_timeout_ms
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: slow\r\nX-Part: ")
        await writer.drain()
        assert await get(client, f"{base}/") == (200, "hello\n")  # served meanwhile
        assert await asyncio.wait_for(reader.read(), 10) == b""  # then cut off, without an answer
    finally:
        writer.close()
        await writer.wait_closed()
    # a body that stops coming: 408 once the request's time is up
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"POST / HTTP/1.1\r\nHost: slow\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 15)
        assert answer.startswith(b"HTTP/1.1 408"), answer
    finally:
        writer.close()
        await writer.wait_closed()
    assert await get(client, f"{base}/") == (200, "hello\n")


@pytest.mark.slow
async def test_a_trapping_component_is_a_500_and_the_next_request_works(
        node: Node, client: aiohttp.ClientSession, http_probe_wasm: Path) -> None:
    await node.host.start_actor("probe", read_component(http_probe_wasm))
    base = await serve(node, "probe", instances="reuse")
    for path in ("/trap", "/error"):
        status, text = await get(client, f"{base}{path}")
        assert (status, text) == (500, "Internal Server Error\n")  # nothing of the component's internals
        assert await get(client, f"{base}/") == (200, "probe GET /\n")
    assert node.host.actors["probe"].traps == 1
    assert await get(client, f"{base}/trailers") == (200, "hi")


@pytest.mark.slow
async def test_concurrent_requests_each_get_their_own_answer(node: Node, client: aiohttp.ClientSession,
                                                             http_probe_wasm: Path) -> None:
    await node.host.start_actor("probe", read_component(http_probe_wasm), instances=2)
    base = await serve(node, "probe", instances="reuse")

    async def echo(i: int) -> bytes:
        async with client.post(f"{base}/echo", data=f"request {i} ".encode() * (i + 1)) as response:
            assert response.status == 200
            return await response.read()

    answers = await asyncio.gather(*(echo(i) for i in range(24)))
    assert answers == [f"request {i} ".encode() * (i + 1) for i in range(24)]
    # the response leaves when the body is finished, a moment before the handler returns
    await wait_for_async(lambda: node.host.actors["probe"].calls >= 24, 5, "the 24 calls to be counted")


@pytest.mark.slow
async def test_routing_by_address_path_and_host(node: Node, client: aiohttp.ClientSession,
                                                http_probe_wasm: Path) -> None:
    await node.host.start_actor("hello", hello())
    await node.host.start_actor("probe", read_component(http_probe_wasm))
    # address: a listener of its own per actor
    a = await serve(node, "hello")
    b = await serve(node, "probe")
    assert await get(client, f"{a}/x") == (200, "hello\n")
    assert await get(client, f"{b}/x") == (200, "probe GET /x\n")
    # path: one listener, a prefix per actor (the path reaches the actor unchanged)
    shared = f"127.0.0.1:{free_port()}"
    await serve(node, "hello", address=shared, path="/greet")
    await serve(node, "probe", address=shared, path="/api")
    assert await get(client, f"http://{shared}/greet/you") == (200, "hello\n")
    assert await get(client, f"http://{shared}/api/v1") == (200, "probe GET /api/v1\n")
    assert (await get(client, f"http://{shared}/apiary"))[0] == 404
    # host: one listener, a Host header per actor
    vhosts = f"127.0.0.1:{free_port()}"
    await serve(node, "hello", address=vhosts, host="hello.example")
    await serve(node, "probe", address=vhosts, host="probe.example")
    assert await get(client, f"http://{vhosts}/", headers={"Host": "hello.example"}) == (200, "hello\n")
    assert await get(client, f"http://{vhosts}/", headers={"Host": f"probe.example:{vhosts.split(':')[1]}"}) \
        == (200, "probe GET /\n")
    assert (await get(client, f"http://{vhosts}/", headers={"Host": "other.example"}))[0] == 404
    # the earlier listeners of the actors were closed when their links moved
    assert sorted(node.host.provider("http").describe()["listeners"]) == sorted([vhosts])  # type: ignore[union-attr]


@pytest.mark.slow
async def test_outgoing_http_to_allowed_hosts_only(node: Node, client: aiohttp.ClientSession,
                                                   http_probe_wasm: Path) -> None:
    seen: list[str] = []

    async def upstream_handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text="from upstream")

    app = web.Application()
    app.router.add_get("/{tail:.*}", upstream_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        await node.host.start_actor("probe", read_component(http_probe_wasm))
        base = await serve(node, "probe")
        # no outgoing link at all: denied
        assert await get(client, f"{base}/fetch?http://127.0.0.1:{port}/a") == (502, "error=http-request-denied\n")
        await node.host.put_link("probe", "wasi:http/outgoing-handler", "local/http",
                                 {"allowed_hosts": f"127.0.0.1:{port}"})
        assert await get(client, f"{base}/fetch?http://127.0.0.1:{port}/b") == (200, "200 from upstream")
        # a host (here: the same server under another name) the link does not allow
        assert await get(client, f"{base}/fetch?http://localhost:{port}/c") == (502, "error=http-request-denied\n")
        # an allowed host that does not answer: the interface's error code
        await node.host.put_link("probe", "wasi:http/outgoing-handler", "local/http",
                                 {"allowed_hosts": "127.0.0.1"})
        closed = free_port()
        assert await get(client, f"{base}/fetch?http://127.0.0.1:{closed}/d") == (502, "error=connection-refused\n")
        assert seen == ["/b"]
    finally:
        await runner.cleanup()


async def test_bad_link_config_is_refused_with_the_key(node: Node) -> None:
    from drupelet.node.host.errors import LinkError

    await node.host.start_actor("hello", hello())
    for config, words in (({"address": "nowhere"}, "not host:port"), ({"path": "no-slash"}, "must start with /"),
                          ({"instances": "many"}, "fresh or reuse")):
        with pytest.raises(LinkError, match=words):
            await node.host.put_link("hello", "wasi:http/incoming-handler", "local/http", config)
    with pytest.raises(LinkError, match="allowed_hosts entry"):
        await node.host.put_link("hello", "wasi:http/outgoing-handler", "local/http",
                                 {"allowed_hosts": "ok.example, bad host"})
    base = await serve(node, "hello")
    taken = base.removeprefix("http://")
    await node.host.start_actor("other", hello())
    with pytest.raises(LinkError, match="already routed to actor 'hello'"):
        await node.host.put_link("other", "wasi:http/incoming-handler", "local/http", {"address": taken})


def test_the_node_imports_aiohttp_only_once_an_http_link_needs_it(tmp_path: Path) -> None:
    """aiohttp costs ~230 ms and ~26 MB to import: a node without an http link pays nothing."""
    import subprocess
    import sys

    script = f"""
import asyncio, sys
from pathlib import Path
from drupelet.node.config import NodeConfig
from drupelet.node.host.host import Host
from drupelet.node.runtime import read_component

async def main():
    cfg = NodeConfig(name="n", lattice="t", data_dir=Path({str(tmp_path)!r}), nats_embedded_port=0)
    async with Host(cfg) as host:
        assert "http" in host.providers
        before = "aiohttp" in sys.modules
        await host.start_actor("hello", read_component(Path({str(WAT / 'http-hello.wat')!r})))
        await host.put_link("hello", "wasi:http/outgoing-handler", "local/http", {{"allowed_hosts": "x.example"}})
        outgoing = "aiohttp" in sys.modules
        await host.put_link("hello", "wasi:http/incoming-handler", "local/http", {{"address": "127.0.0.1:{free_port()}"}})
        print(before, outgoing, "aiohttp" in sys.modules)

asyncio.run(main())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "True"], proc.stdout
