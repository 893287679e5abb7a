"""``drupelet bench``'s HTTP figures: a request answered by a wasi:http component behind the
http provider, against the same server library answering from a plain Python handler.

The client is an aiohttp client in a child process, as a browser or curl is another
process: in this one it would compete with the node's actor threads for the GIL, which
no real client does. The node: ``http-hello.wat`` (the smallest wasi:http component),
two instances. The baseline: aiohttp's low-level server (the one the provider runs) in
this process, whose handler answers ``hello`` itself.

- ``http_request_us``: one GET at a time, instances reused (link config ``instances =
  reuse``); ``http_request_raw_us`` the same against the baseline; ``http_ratio`` is
  ours over the baseline.
- ``http_request_fresh_us``: as ``http_request_us`` with the link's default, an instance
  of its own per request (created after the previous request's answer).
- ``http_requests_per_s`` and ``http_requests_per_s_raw``: eight clients at once.
- ``http_counter_requests_per_s`` (only with ``--http-counter FILE``, a built
  ``actors/examples/http-counter``): the same for the counter example, two instances
  reused, counting in the file-backed keyvalue provider.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from drupelet.node.config import NodeConfig
from drupelet.node.host.host import Host
from drupelet.node.lattice.natsserver import free_port
from drupelet.node.runtime import read_component

CLIENTS = 8
"""Clients at once for the requests-per-second figures."""


_CLIENT = r"""
import asyncio, json, sys, time
import aiohttp

async def main(url, n, clients):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients * 2)) as session:
        async def get():
            async with session.get(url) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"{url} answered {response.status}")
        for _ in range(20):
            await get()
        each = max(1, n // clients)
        async def client():
            for _ in range(each):
                await get()
        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
        print(json.dumps({"per_request_s": elapsed / each, "per_s": each * clients / elapsed}))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


async def _client(url: str, n: int, clients: int = 1) -> dict[str, float]:
    """``n`` GETs of ``url`` from ``clients`` clients in a child process: seconds per request
    (for one client, one after the other) and requests per second."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _CLIENT, url, str(n), str(clients),
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    if proc.returncode != 0:
        raise RuntimeError(f"the bench's HTTP client failed: {err.decode(errors='replace').strip()[-300:]}")
    result: dict[str, float] = json.loads(out)
    return result


async def _raw_server() -> tuple[Any, Any, str]:
    """aiohttp's low-level server answering ``hello`` from a plain handler: the baseline."""
    from aiohttp import web
    from aiohttp.web_server import Server

    async def handler(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(body=b"hello\n")

    server = Server(handler, access_log=None)
    port = free_port()
    listener = await asyncio.get_running_loop().create_server(server, "127.0.0.1", port)
    return server, listener, f"http://127.0.0.1:{port}/"


async def measure_http(iterations: int, workdir: Path, wat: Path, counter: Path | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = max(100, iterations // 2)
    cfg = NodeConfig(name="bench-http", lattice="bench", data_dir=workdir / "http", nats_embedded_port=0,
                     call_deadline_ms=60000, providers={"http": {"max_concurrent": 64}})
    async with Host(cfg) as host:
        await host.start_actor("hello", read_component(wat), instances=2)
        reuse, fresh = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        await host.put_link("hello", "wasi:http/incoming-handler", "local/http", {"address": reuse,
                                                                                   "instances": "reuse"})
        await host.start_actor("hello-fresh", read_component(wat), instances=2)
        await host.put_link("hello-fresh", "wasi:http/incoming-handler", "local/http", {"address": fresh})
        raw_server, raw_listener, raw_url = await _raw_server()
        try:
            ours, raw, new = [], [], []
            for _ in range(3):
                ours.append((await _client(f"http://{reuse}/", n))["per_request_s"])
                raw.append((await _client(raw_url, n))["per_request_s"])
                new.append((await _client(f"http://{fresh}/", n))["per_request_s"])
            out["http_request_us"] = statistics.median(ours) * 1e6
            out["http_request_raw_us"] = statistics.median(raw) * 1e6
            out["http_ratio"] = out["http_request_us"] / out["http_request_raw_us"]
            out["http_request_fresh_us"] = statistics.median(new) * 1e6
            out["http_requests_per_s"] = (await _client(f"http://{reuse}/", n * 2, CLIENTS))["per_s"]
            out["http_requests_per_s_raw"] = (await _client(raw_url, n * 2, CLIENTS))["per_s"]
        finally:
            raw_listener.close()
            await raw_server.shutdown(1.0)
            await raw_listener.wait_closed()
        if counter is not None:
            await host.start_actor("counter", read_component(counter), instances=2)
            await host.put_link("counter", "wasi:keyvalue", "local/keyvalue", {"buckets": "counter"})
            address = f"127.0.0.1:{free_port()}"
            await host.put_link("counter", "wasi:http/incoming-handler", "local/http",
                                {"address": address, "instances": "reuse"})
            out["http_counter_requests_per_s"] = (await _client(f"http://{address}/", n * 2, CLIENTS))["per_s"]
    return out
