"""The counter example (componentize-py) end to end: real component, real NATS, real files."""

from __future__ import annotations

import logging
from pathlib import Path

import nats
import pytest

from drupelet.node.lattice import subjects
from drupelet.node.host.errors import HandlerError
from drupelet.node.node import Node
from drupelet.node.lattice.natsserver import EmbeddedNatsServer

from test_host import node_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compile cache for the module: the 18 MB counter is compiled once (~11 s)."""
    return tmp_path_factory.mktemp("compile-cache")


async def start_counter(h: Node, wasm: Path, **config: str) -> None:
    await h.host.start_actor("counter", wasm.read_bytes(), config=config)
    await h.host.put_link("counter", "wasi:keyvalue", "local/keyvalue")
    await h.host.put_link("counter", "wasmcloud:messaging", "local/messaging", {"subscriptions": "demo.count"})


async def test_counter_answers_through_nats_and_survives_a_restart(
        tmp_path: Path, nats_server: EmbeddedNatsServer, counter_wasm: Path, compile_cache: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="drupelet.actor")
    cfg = node_config(tmp_path, nats_server.url, call_deadline_ms=5000, cache_dir=compile_cache)
    nc = await nats.connect(nats_server.url)
    try:
        async with Node(cfg) as h:
            await start_counter(h, counter_wasm)
            # through the actor's delivery subject (what `drupelet call` uses) ...
            reply = await nc.request(subjects.deliver("test", "counter"), b"hi", timeout=10,
                                     headers={subjects.HEADER_SUBJECT: "some.subject"})
            assert reply.data == b"count 1"
            # ... and through a plain subject the messaging link subscribes to
            assert (await nc.request("demo.count", b"hi", timeout=10)).data == b"count 2"
            assert await h.call("counter", "x", b"hi") == b"count 3"
        # wasi:logging lines reach the node's log, tagged with the actor
        lines = [r for r in caplog.records if getattr(r, "actor", None) == "counter"]
        assert any("count = 3 (x)" in r.getMessage() for r in lines)
        # a new node process over the same data directory keeps counting
        async with Node(cfg) as h:
            await start_counter(h, counter_wasm, greeting="visits")
            assert (await nc.request("demo.count", b"hi", timeout=10)).data == b"visits 4"
            assert await h.call("counter", "x", b"reset") == b"visits 0"
            assert await h.call("counter", "x", b"hi") == b"visits 1"
        # stdout of the guest is captured into the actor's log, line by line
        assert any(getattr(r, "actor_context", None) == "stdout" and r.getMessage().endswith(
            "count was reset by a message on x") for r in caplog.records)
    finally:
        await nc.close()


async def test_counter_reports_a_denied_bucket_as_its_error(
        tmp_path: Path, nats_server: EmbeddedNatsServer, counter_wasm: Path, compile_cache: Path) -> None:
    async with Node(node_config(tmp_path, nats_server.url, call_deadline_ms=5000, cache_dir=compile_cache)) as h:
        await h.host.start_actor("counter", counter_wasm.read_bytes(), config={"bucket": "secret"})
        await h.host.put_link("counter", "wasi:keyvalue", "local/keyvalue", {"buckets": "public"})
        await h.host.put_link("counter", "wasmcloud:messaging", "local/messaging")
        with pytest.raises(HandlerError, match="keyvalue open 'secret': access-denied"):
            await h.host.deliver("counter", "x", b"hi", reply_to="nowhere")
        assert h.host.actors["counter"].traps == 0
        # the grant is fixed by putting the link again; nothing else restarts
        await h.host.put_link("counter", "wasi:keyvalue", "local/keyvalue", {"buckets": "public,secret"})
        assert await h.call("counter", "x", b"hi") == b"count 1"
