"""The host API on one node, against a real nats-server and real wasmtime."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from drupelet.node.lattice import subjects
from drupelet.node.config import ActorSpec, NodeConfig
from drupelet.node.host.errors import ActorExists, ActorNotFound, HandlerError, LinkError, PayloadTooLarge, ProviderNotFound
from drupelet.node.lattice.errors import NatsUnavailable
from drupelet.node.runtime.errors import DeadlineExceeded, StartRefused, Trapped
from drupelet.node.node import Node
from drupelet.node.lattice.natsserver import EmbeddedNatsServer, free_port
from drupelet.node.runtime import read_component
from waiting import wait_for_async

WAT = Path(__file__).resolve().parent.parent / "actors" / "wat"


def wat(name: str) -> bytes:
    return read_component(WAT / f"{name}.wat")


def node_config(tmp_path: Path, url: str, **overrides: object) -> NodeConfig:
    cfg = NodeConfig(name="n1", lattice="test", data_dir=tmp_path / "data", nats_url=url,
                     call_deadline_ms=400, epoch_tick_ms=5, trap_backoff_base_ms=10, trap_backoff_max_ms=200,
                     stop_timeout_s=2.0)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture
async def host(tmp_path: Path, nats_server: EmbeddedNatsServer) -> AsyncIterator[Node]:
    h = Node(node_config(tmp_path, nats_server.url))
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


async def nats_call(url: str, lattice: str, actor: str, body: bytes, subject: str = "call",
                    timeout: float = 5.0) -> nats.aio.msg.Msg:
    nc = await nats.connect(url)
    try:
        return await nc.request(subjects.deliver(lattice, actor), body, timeout=timeout,
                                headers={subjects.HEADER_SUBJECT: subject})
    finally:
        await nc.close()


async def test_actor_answers_a_message_through_nats(host: Node, nats_server: EmbeddedNatsServer) -> None:
    await host.host.start_actor("echo", wat("echo"))
    await host.host.put_link("echo", "wasmcloud:messaging", "local/messaging")
    reply = await nats_call(nats_server.url, "test", "echo", b"hello lattice")
    assert reply.data == b"hello lattice"
    assert not (reply.headers or {}).get(subjects.HEADER_ERROR)


async def test_the_not_linked_hint_of_a_config_file_actor_is_the_config_snippet(
        tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    cfg = node_config(tmp_path, nats_server.url, actors=[ActorSpec(name="echo", file=WAT / "echo.wat")])
    h = Node(cfg)
    await h.start()
    try:
        with pytest.raises(HandlerError, match="add one to the node config: \\[\\[links\\]\\] source = \"echo\", "
                                               "interface = \"wasmcloud:messaging/consumer\""):
            await h.host.deliver("echo", "s", b"hi", reply_to="somewhere")
    finally:
        await h.stop()


async def test_a_handler_that_returns_without_replying_fails_the_request_at_once(
        host: Node, nats_server: EmbeddedNatsServer) -> None:
    await host.host.start_actor("noop", wat("noop"))
    started = time.monotonic()
    reply = await nats_call(nats_server.url, "test", "noop", b"hi", timeout=5.0)
    assert time.monotonic() - started < 2.0  # not the requester's 5 s timeout
    assert reply.headers and reply.headers[subjects.HEADER_ERROR] == "no-reply"
    assert "handler finished without replying" in reply.headers[subjects.HEADER_MESSAGE]
    # a message that asks for no reply is fine without one
    await host.host.deliver("noop", "s", b"no reply wanted")
    assert host.host.actors["noop"].traps == 0


async def test_call_returns_the_reply_body(host: Node) -> None:
    await host.host.start_actor("echo", wat("echo"), instances=2)
    await host.host.put_link("echo", "wasmcloud:messaging/consumer", "local/messaging")
    assert await host.call("echo", "x.y", b"ping") == b"ping"
    assert host.host.actors["echo"].instances == 2


async def test_unlinked_import_is_an_error_value_not_a_trap(host: Node, nats_server: EmbeddedNatsServer) -> None:
    await host.host.start_actor("echo", wat("echo"))
    # an actor started at run time (not from the config file): the hint is the link put command
    with pytest.raises(HandlerError, match="not-linked.*add one: drupelet link put echo wasmcloud:messaging/consumer "
                                           "local/<provider>"):
        await host.host.deliver("echo", "s", b"hi", reply_to="somewhere")
    # through NATS the caller gets the error in headers instead of waiting for a timeout
    reply = await nats_call(nats_server.url, "test", "echo", b"hi")
    assert reply.headers and reply.headers[subjects.HEADER_ERROR] == "handler-error"
    assert "no link for wasmcloud:messaging/consumer" in reply.headers[subjects.HEADER_MESSAGE]
    assert host.host.actors["echo"].traps == 0


async def test_trap_fails_only_that_call_and_the_instance_is_replaced(host: Node) -> None:
    await host.host.start_actor("echo", wat("echo"))
    await host.host.put_link("echo", "wasmcloud:messaging", "local/messaging")
    with pytest.raises(Trapped) as info:
        await host.host.deliver("echo", "s", b"trap now")
    assert info.value.actor == "echo"
    assert "unreachable" in info.value.message
    assert await host.call("echo", "s", b"still here") == b"still here"
    assert host.host.actors["echo"].traps == 1


async def test_repeated_traps_back_off_and_log(host: Node, caplog: pytest.LogCaptureFixture) -> None:
    await host.host.start_actor("echo", wat("echo"))
    await host.host.put_link("echo", "wasmcloud:messaging", "local/messaging")
    caplog.set_level(logging.INFO, logger="drupelet.node.host.actors")
    for _ in range(3):
        with pytest.raises(Trapped):
            await host.host.deliver("echo", "s", b"trap")

    def backoff_logged() -> bool:
        return any("trapped 3 times in a row" in r.getMessage() and "replacing it in 20 ms" in r.getMessage()
                   for r in caplog.records)

    for _ in range(100):  # the worker logs right after it fails the call
        if backoff_logged():
            break
        await asyncio.sleep(0.01)
    assert backoff_logged()
    assert await host.call("echo", "s", b"recovered") == b"recovered"


async def test_infinite_loop_is_stopped_by_its_deadline_while_others_answer(host: Node) -> None:
    await host.host.start_actor("spinner", wat("echo"))
    await host.host.start_actor("echo", wat("echo"))
    await host.host.put_link("echo", "wasmcloud:messaging", "local/messaging")
    started = time.monotonic()
    spin = asyncio.create_task(host.host.deliver("spinner", "s", b"spin forever"))
    await asyncio.sleep(0)  # the task queues the message in its first step
    await wait_for_async(lambda: host.host.actors["spinner"].describe()["queued"] == 0, 5.0,
                         "the spinner's worker to take the message")
    # the other actor keeps answering while the spinner burns its deadline
    for i in range(5):
        assert await host.call("echo", "s", f"n{i}".encode()) == f"n{i}".encode()
    assert not spin.done()
    with pytest.raises(DeadlineExceeded) as info:
        await spin
    elapsed = time.monotonic() - started
    assert info.value.deadline_ms == 400
    assert 0.35 < elapsed < 5.0
    # and the spinner is usable again afterwards
    await host.host.deliver("spinner", "s", b"plain")


async def test_memory_grower_hits_the_memory_limit(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    async with Node(node_config(tmp_path, nats_server.url, max_memory_bytes=2 << 20)) as h:
        await h.host.start_actor("grower", wat("echo"))
        with pytest.raises(Trapped, match="unreachable"):
            await h.host.deliver("grower", "s", b"grow until refused")
        await h.host.deliver("grower", "s", b"fine again")


async def test_missing_imports_refuse_the_start_with_the_list(host: Node) -> None:
    with pytest.raises(StartRefused) as info:
        await host.host.start_actor("bad", wat("unserved"))
    assert info.value.missing == [
        "acme:teleport/beam@1.0.0",
        "wasi:keyvalue/store@0.2.0-draft2 (this node serves wasi:keyvalue/store at 0.2.0-draft)",
    ]
    assert "bad" not in host.host.actors


async def test_bad_wasm_is_refused_and_the_node_keeps_running(host: Node) -> None:
    core_module = read_component_text("(module)")
    with pytest.raises(StartRefused, match="core wasm module, not a component"):
        await host.host.start_actor("core", core_module)
    with pytest.raises(StartRefused, match="not a WebAssembly binary"):
        await host.host.start_actor("junk", b"#!/bin/sh\necho hi\n")
    truncated = wat("echo")[:200]
    with pytest.raises(StartRefused, match="wasmtime refused the component") as refused:
        await host.host.start_actor("cut", truncated)
    assert "Warning" not in refused.value.message  # wasmtime's reason, not what Python printed first
    await host.host.start_actor("echo", wat("echo"))
    await host.host.put_link("echo", "wasmcloud:messaging", "local/messaging")
    assert await host.call("echo", "s", b"ok") == b"ok"


def test_the_compiler_refuses_a_target_its_wasmtime_cannot_build_for(tmp_path: Path) -> None:
    import platform
    import subprocess
    import sys

    # the PyPI wheel of wasmtime has a backend for its own architecture only: asked for
    # another, the compile command says so in one line instead of aborting with a panic
    other = "x86_64-unknown-linux-gnu" if platform.machine().lower() in ("aarch64", "arm64") else \
        "aarch64-unknown-linux-gnu"
    src = tmp_path / "noop.wasm"
    src.write_bytes(wat("noop"))
    for target in (other, "no-such-arch"):
        done = subprocess.run([sys.executable, "-W", "ignore::RuntimeWarning:runpy", "-m",
                               "drupelet.node.runtime.aot", str(src), str(tmp_path / "out.cwasm"), "--target", target],
                              capture_output=True, text=True, timeout=120)
        if done.returncode == 0:  # a wasmtime built with every backend: then it compiled
            assert target == other and (tmp_path / "out.cwasm").stat().st_size > 0
            continue
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("wasmtime ") and f"cannot compile for {target}: " in done.stderr
        assert done.stderr.count("\n") == 1 and "panicked" not in done.stderr, done.stderr


def read_component_text(text: str) -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(text))


async def test_compile_cache_second_start_deserializes(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    cfg = node_config(tmp_path, nats_server.url)
    async with Node(cfg) as h:
        first = await h.host.start_actor("echo", wat("echo"))
    cached = list(cfg.compile_cache_dir.glob("*.cwasm"))
    assert len(cached) == 1 and first["digest"] in cached[0].name
    assert first["from_cache"] is False
    async with Node(cfg) as h:
        second = await h.host.start_actor("echo", wat("echo"))
        await h.host.put_link("echo", "wasmcloud:messaging", "local/messaging")
        assert await h.call("echo", "s", b"from cache") == b"from cache"
    assert second["from_cache"] is True
    assert "wasmtime" in cached[0].name and "linux" in cached[0].name


async def test_corrupt_cache_entry_is_recompiled(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    cfg = node_config(tmp_path, nats_server.url)
    async with Node(cfg) as h:
        await h.host.start_actor("echo", wat("echo"))
    entry = next(cfg.compile_cache_dir.glob("*.cwasm"))
    # replace, not truncate: the stopped node's mapping of the old file may still be alive
    (entry.parent / "tmp").write_bytes(b"garbage")
    (entry.parent / "tmp").replace(entry)
    async with Node(cfg) as h:
        info = await h.host.start_actor("echo", wat("echo"))
    assert info["from_cache"] is False
    assert entry.stat().st_size > 1000


async def test_payload_limit(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    async with Node(node_config(tmp_path, nats_server.url, max_payload_bytes=1000)) as h:
        await h.host.start_actor("echo", wat("echo"))
        with pytest.raises(PayloadTooLarge) as info:
            await h.host.deliver("echo", "s", b"x" * 1001)
        assert info.value.size == 1001 and info.value.limit == 1000
        await h.host.deliver("echo", "s", b"x" * 1000)


async def test_actor_lifecycle_errors(host: Node) -> None:
    await host.host.start_actor("echo", wat("echo"))
    with pytest.raises(ActorExists):
        await host.host.start_actor("echo", wat("echo"))
    with pytest.raises(StartRefused, match="not a valid actor name"):
        await host.host.start_actor("no spaces", wat("echo"))
    await host.host.scale_actor("echo", 3)
    assert host.host.actors["echo"].instances == 3
    await host.host.scale_actor("echo", 1)
    assert host.host.actors["echo"].instances == 1
    await host.host.stop_actor("echo")
    with pytest.raises(ActorNotFound):
        await host.host.stop_actor("echo")
    with pytest.raises(ActorNotFound):
        await host.host.deliver("echo", "s", b"")


async def test_link_errors_change_nothing(host: Node) -> None:
    await host.host.start_actor("echo", wat("echo"))
    with pytest.raises(ProviderNotFound):
        await host.host.put_link("echo", "wasi:keyvalue/store", "local/nope")
    with pytest.raises(LinkError, match="does not serve"):
        await host.host.put_link("echo", "wasi:keyvalue/store", "local/messaging")
    with pytest.raises(LinkError, match="not an interface"):
        await host.host.put_link("echo", "keyvalue store", "local/keyvalue")
    with pytest.raises(LinkError, match="links only to its own providers"):
        await host.host.put_link("echo", "wasi:keyvalue", "pi-7/keyvalue")
    with pytest.raises(LinkError, match="served by the node itself"):
        await host.host.put_link("echo", "wasi:logging/logging", "local/keyvalue")
    assert host.host.list_links() == []
    made = await host.host.put_link("echo", "wasi:keyvalue", "local/keyvalue", {"buckets": "a"})
    assert sorted(l["interface"] for l in made) == ["wasi:keyvalue/atomics", "wasi:keyvalue/batch",
                                                    "wasi:keyvalue/store"]
    await host.host.del_link("echo", "wasi:keyvalue/batch")
    assert len(host.host.list_links()) == 2
    with pytest.raises(LinkError, match="no link"):
        await host.host.del_link("echo", "wasi:keyvalue/batch")


async def test_messaging_subscription_from_link_config(host: Node, nats_server: EmbeddedNatsServer) -> None:
    await host.host.start_actor("echo", wat("echo"))
    await host.host.put_link("echo", "wasmcloud:messaging", "local/messaging", {"subscriptions": "demo.echo.*"})
    nc = await nats.connect(nats_server.url)
    try:
        reply = await nc.request("demo.echo.one", b"via subscription", timeout=5)
        assert reply.data == b"via subscription"
        # a failed message is answered with the reason, not left to time out
        failed = await nc.request("demo.echo.one", b"trap", timeout=5)
        assert failed.data == b"" and failed.headers is not None
        assert failed.headers[subjects.HEADER_ERROR] == "trap"
        assert "echo" in failed.headers[subjects.HEADER_MESSAGE]
        await host.host.del_link("echo", "wasmcloud:messaging")
        # the unsubscribe has reached the server when del_link returns: no one answers
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request("demo.echo.one", b"gone", timeout=2)
        # and a link put again is subscribed at the server when put_link returns
        await host.host.put_link("echo", "wasmcloud:messaging", "local/messaging", {"subscriptions": "demo.echo.*"})
        assert (await nc.request("demo.echo.one", b"back", timeout=5)).data == b"back"
    finally:
        await nc.close()


async def test_a_subscriber_that_does_not_reply_leaves_the_request_to_the_service_that_does(
        host: Node, nats_server: EmbeddedNatsServer, caplog: pytest.LogCaptureFixture) -> None:
    # an actor that watches a service's subject: its handler returns without replying, and
    # the service's answer, not a no-reply error from the node, reaches the requester
    await host.host.start_actor("watcher", wat("noop"))
    await host.host.put_link("watcher", "wasmcloud:messaging", "local/messaging", {"subscriptions": "svc.ask"})
    caplog.set_level(logging.DEBUG, logger="drupelet.node.host.host")
    nc = await nats.connect(nats_server.url)
    try:
        answered = asyncio.Event()

        async def service(msg: Any) -> None:
            await wait_for_async(lambda: "'watcher': handler finished without replying" in caplog.text, 5.0,
                                 "the watcher to handle the request")  # the node had its chance to answer first
            await msg.respond(b"from the service")
            answered.set()

        await nc.subscribe("svc.ask", cb=service)
        await nc.flush()
        reply = await nc.request("svc.ask", b"question", timeout=5)
        assert (reply.data, reply.headers) == (b"from the service", None)
        assert answered.is_set()
    finally:
        await nc.close()


async def test_a_component_that_exports_nothing_is_refused(host: Node) -> None:
    empty = b"\x00asm\x0d\x00\x01\x00"  # the 8-byte empty component: valid, and nothing to run
    with pytest.raises(StartRefused, match="the component exports nothing"):
        await host.host.start_actor("empty", empty)
    assert "empty" not in host.host.actors
    await host.host.start_actor("noop", wat("noop"))  # the node goes on starting actors
    assert host.host.actors["noop"].instances == 1


async def test_stop_waits_for_in_flight_calls(host: Node) -> None:
    await host.host.start_actor("slow", wat("echo"))
    call = asyncio.create_task(host.host.deliver("slow", "s", b"spin"))
    await asyncio.sleep(0)  # the task queues the message in its first step
    await wait_for_async(lambda: host.host.actors["slow"].describe()["queued"] == 0, 5.0, "the worker to take the message")
    await host.host.stop_actor("slow")
    # stop returned only after the in-flight call finished (here: by its deadline)
    assert call.done()
    with pytest.raises(DeadlineExceeded):
        await call


async def test_inventory(host: Node) -> None:
    await host.host.start_actor("echo", wat("echo"), config={"greeting": "hi"})
    await host.host.put_link("echo", "wasmcloud:messaging", "local/messaging")
    inv = host.inventory()
    assert inv["name"] == "n1" and inv["lattice"] == "test" and inv["nats"]["connected"]
    assert [a["name"] for a in inv["actors"]] == ["echo"]
    assert inv["actors"][0]["exports"] == ["wasmcloud:messaging/handler@0.2.0"]
    assert {p["name"] for p in inv["providers"]} >= {"keyvalue", "messaging"}
    assert inv["links"][0]["target"] == "local/messaging"


async def test_unreachable_nats_fails_start_within_the_connect_timeout(tmp_path: Path) -> None:
    # nats-py retries a first connection forever when reconnects are unlimited; the
    # node bounds the whole wait by nats.connect_timeout_s and cleans up.
    url = f"nats://127.0.0.1:{free_port()}"
    h = Node(node_config(tmp_path, url, nats_connect_timeout_s=1.0))
    started = time.monotonic()
    with pytest.raises(NatsUnavailable, match=f"cannot connect to NATS at {url} within 1 s: .*Connect call failed"):
        await h.start()
    assert time.monotonic() - started < 5.0
    assert h.nats is None and not h.host.providers


async def test_embedded_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        h = Node(node_config(tmp_path, "", nats_embedded_port=port))
        with pytest.raises(NatsUnavailable) as excinfo:
            await h.start()
    assert excinfo.value.message == (f"cannot start the embedded nats-server: port {port} on 127.0.0.1 "
                                     "is already in use by another process")
    assert h.nats_server is None or not h.nats_server.running
