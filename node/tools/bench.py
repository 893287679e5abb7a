"""``drupelet bench``: the node measured against raw wasmtime-py, as ratios in one run.

Each figure is taken in this process, against a baseline taken in the same run:

- ``import_call``: a component calls ``wasi:keyvalue/store`` ``bucket.get`` n times in one
  export call. Node: through the link table to the keyvalue provider (memory backend).
  Baseline: the same component under a bare wasmtime-py linker whose ``get`` is a
  trivial Python function. Per import call.
- ``message``: a message delivered to an actor's ``wasmcloud:messaging`` handler and
  answered (the handler's result back on the event loop), against a raw wasmtime-py call
  of the same export of the same component.
- ``actor_start_cached_ms``: starting an actor whose compiled code is on disk.
- ``remote_call``: an actor on a leaf-side node calls ``handle.get`` (a bucket's get) of the keyvalue
  provider of a hub-side node, against raw nats-py request/reply between the same two
  servers; ``remote_calls_per_s`` with four instances calling at once.
- ``gpio_edge_to_actor_us``: from a simulated button edge (GPIO 17, gpiozero's mock pins)
  to the ``led`` actor's write of GPIO 27 reaching the gpio provider, with the actor on
  the Pi's node (``_local``) and on the other node, across hub and leaf (``_remote``).
  No raw baseline: a figure to watch.
- ``http_request_us``, ``http_ratio``, ``http_requests_per_s`` and the rest of the HTTP
  figures: :mod:`drupelet.node.tools.bench_http`.
- ``p99_alone_ms``, ``p99_beside_hostile_ms`` (``spin``, ``log_flood``, ``publish_flood``,
  ``inbound_flood``) and ``p99_hostile_ratio``: a normal actor's round trip through NATS,
  alone and beside each kind of hostile actor or client (:mod:`drupelet.node.tools.bench_hostile`).
- ``node_rss_mb``: a fresh node process, idle, with no actors (its embedded nats-server is
  a separate process and not counted); ``instance_rss_mb``: what each further instance of
  a small actor adds.

The runtime is the only module that imports wasmtime: the raw baselines are taken through
:mod:`drupelet.node.runtime.baseline`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from drupelet.node.config import NodeConfig
from drupelet.node.host.host import Host
from drupelet.node.node import Node
from drupelet.node.runtime import baseline, read_component
from drupelet.node.tools.bench_hostile import KINDS, measure_hostile

WAT_DIR = Path(__file__).resolve().parents[2] / "actors" / "wat"

TARGETS = {
    "import_call_ratio": 1.3,
    "message_ratio": 3.0,
    "remote_call_ratio": 1.5,
    "actor_start_cached_ms": 30.0,
    "node_rss_mb": 80.0,
    "instance_rss_mb": 3.0,
    "http_ratio": 3.0,
    "p99_hostile_ratio": 5.0,
}


def wat_path(name: str) -> Path:
    """The shipped WAT test components (inside the installed package)."""
    import importlib.resources

    return Path(str(importlib.resources.files("drupelet.actors") / "wat" / f"{name}.wat"))


def _rss_mb(pid: int | None = None) -> float:
    with open(f"/proc/{pid or os.getpid()}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def _best_of(samples: list[float]) -> float:
    """Median of the runs: robust against a noisy neighbour on a small machine."""
    return statistics.median(samples)


async def _measure(iterations: int, workdir: Path, http_counter: Path | None = None) -> dict[str, Any]:
    kvloop = read_component(wat_path("kvloop"))
    noop = read_component(wat_path("noop"))
    cfg = NodeConfig(name="bench", lattice="bench", data_dir=workdir / "data", nats_embedded_port=0,
                     providers={"keyvalue": {"backend": "memory"}}, call_deadline_ms=60000)
    results: dict[str, Any] = {}
    async with Host(cfg) as host:
        runtime = host.runtime
        assert runtime is not None
        # (a) import dispatch
        await host.start_actor("kvloop", kvloop)
        await host.put_link("kvloop", "wasi:keyvalue/store", "local/keyvalue")
        raw_kv = await asyncio.to_thread(baseline.RawKvLoop, runtime, kvloop)
        node_runs, raw_runs = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            n = await host.invoke("kvloop", "run", iterations)
            node_runs.append((time.perf_counter() - t0) / iterations)
            assert n == iterations, f"kvloop answered {n} of {iterations}"
            raw_runs.append(await asyncio.to_thread(raw_kv.per_call_s, iterations))
        results["import_call_us"] = _best_of(node_runs) * 1e6
        results["import_call_raw_us"] = _best_of(raw_runs) * 1e6
        results["import_call_ratio"] = results["import_call_us"] / results["import_call_raw_us"]

        # (b) message to an actor and its answer, in-process
        await host.start_actor("noop", noop)
        raw_msg = await asyncio.to_thread(baseline.RawHandler, runtime, noop)
        node_runs, raw_runs = [], []
        body = b"x" * 64
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(iterations):
                await host.deliver("noop", "bench.msg", body)
            node_runs.append((time.perf_counter() - t0) / iterations)
            raw_runs.append(await asyncio.to_thread(raw_msg.per_call_s, iterations, body))
        results["message_us"] = _best_of(node_runs) * 1e6
        results["message_raw_us"] = _best_of(raw_runs) * 1e6
        results["message_ratio"] = results["message_us"] / results["message_raw_us"]

        # actor start from the compile cache (the on-disk artifact, not the in-memory one)
        starts = []
        for i in range(5):
            await host.stop_actor("noop")
            runtime.forget(host_digest(noop))
            t0 = time.perf_counter()
            info = await host.start_actor("noop", noop)
            starts.append((time.perf_counter() - t0) * 1000.0)
            assert info["from_cache"], "the second start did not come from the compile cache"
        results["actor_start_cached_ms"] = _best_of(starts)
        await asyncio.to_thread(raw_kv.close)
        await asyncio.to_thread(raw_msg.close)
    from drupelet.node.tools.bench_http import measure_http

    results.update(await measure_http(iterations, workdir, wat_path("http-hello"), http_counter))
    results.update(await _measure_remote(max(50, iterations // 4), workdir, kvloop))
    results.update(await _measure_gpio_edge(max(20, iterations // 20), workdir / "gpio"))
    results.update(await measure_hostile(max(100, iterations // 7), workdir, wat_path("hostile")))
    results.update(await asyncio.to_thread(_memory_in_child, workdir))
    return results


async def _measure_remote(iterations: int, workdir: Path, kvloop: bytes) -> dict[str, Any]:
    """An actor on a leaf-side node calling a provider on a hub-side node, against raw
    nats-py request/reply between the same two servers."""
    import nats

    from drupelet.node.lattice.natsserver import start_hub_and_leaf

    hub, leaf = await start_hub_and_leaf(workdir, "pi")
    common = {"lattice": "bench", "providers": {"keyvalue": {"backend": "memory"}}, "call_deadline_ms": 120000,
              "nats_jetstream_domain": "hub"}
    hub_node = Node(NodeConfig(name="laptop", data_dir=workdir / "laptop", nats_url=hub.url, **common))  # type: ignore[arg-type]
    leaf_node = Node(NodeConfig(name="pi", data_dir=workdir / "pi", nats_url=leaf.url, **common))  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    try:
        await hub_node.start()
        await leaf_node.start()
        for host in (hub_node, leaf_node):
            await host.host.put_link("kvloop", "wasi:keyvalue/store", "laptop/keyvalue", strict=False)
        await leaf_node.host.start_actor("kvloop", kvloop, instances=4)
        # wait until the leaf connection carries the provider's subscription
        deadline = time.monotonic() + 15
        while await leaf_node.host.invoke("kvloop", "probe") != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the leaf node never reached the hub node's provider")
            await asyncio.sleep(0.1)
        raw_nc_hub = await nats.connect(hub.url)
        raw_nc_leaf = await nats.connect(leaf.url)

        async def echo(msg: Any) -> None:
            await raw_nc_hub.publish(msg.reply, b'{"ok":true,"result":null}')

        await raw_nc_hub.subscribe("bench.raw", cb=echo)
        await raw_nc_hub.flush()
        payload = b'{"caller":"pi","source":"kvloop","interface":"wasi:keyvalue/store","op":"handle.get",' \
                  b'"args":["k"],"handle":1}'
        for _ in range(20):  # the raw subscription reaches the leaf
            try:
                await raw_nc_leaf.request("bench.raw", payload, timeout=1)
                break
            except Exception:
                await asyncio.sleep(0.1)
        node_runs, raw_runs = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            n = await leaf_node.host.invoke("kvloop", "run", iterations)
            node_runs.append((time.perf_counter() - t0) / iterations)
            assert n == iterations
            t0 = time.perf_counter()
            for _ in range(iterations):
                await raw_nc_leaf.request("bench.raw", payload, timeout=5)
            raw_runs.append((time.perf_counter() - t0) / iterations)
        out["remote_call_us"] = _best_of(node_runs) * 1e6
        out["remote_call_raw_us"] = _best_of(raw_runs) * 1e6
        out["remote_call_ratio"] = out["remote_call_us"] / out["remote_call_raw_us"]
        t0 = time.perf_counter()
        done = await asyncio.gather(*(leaf_node.host.invoke("kvloop", "run", iterations) for _ in range(4)))
        out["remote_calls_per_s"] = sum(done) / (time.perf_counter() - t0)
        await raw_nc_hub.close()
        await raw_nc_leaf.close()
    finally:
        await leaf_node.stop()
        await hub_node.stop()
        await leaf.stop()
        await hub.stop()
    return out


async def _measure_gpio_edge(presses: int, workdir: Path) -> dict[str, Any]:
    """Button edge on the Pi node to the LED write, with the actor there and on the laptop."""
    import threading

    from drupelet.node.lattice.natsserver import start_hub_and_leaf

    hub, leaf = await start_hub_and_leaf(workdir, "pi")
    simulated = {"gpio": {"backend": "mock"}, "i2c": {"backend": "sim"}, "display": {"driver": "dummy"}}
    common = {"lattice": "bench", "providers": simulated, "nats_jetstream_domain": "hub"}
    laptop = Node(NodeConfig(name="laptop", data_dir=workdir / "laptop", nats_url=hub.url, **common))  # type: ignore[arg-type]
    pi = Node(NodeConfig(name="pi", data_dir=workdir / "pi", nats_url=leaf.url, **common))  # type: ignore[arg-type]
    written = threading.Event()
    stamp = [0.0]
    out: dict[str, Any] = {}
    try:
        await laptop.start()
        await pi.start()
        gpio: Any = pi.host.providers["gpio"]
        for name in ("configure_output", "toggle"):  # note when the actor's write reaches the provider
            def noting(*args: Any, _op: Any = getattr(gpio, name)) -> Any:
                result = _op(*args)
                stamp[0] = time.perf_counter()
                written.set()
                return result
            setattr(gpio, name, noting)

        level = [True]

        def press_and_wait(count: int, wait_s: float = 5.0) -> list[float]:
            times = []
            for _ in range(count):
                level[0] = not level[0]
                written.clear()
                t0 = time.perf_counter()
                gpio.simulate(17, level[0])
                if not written.wait(wait_s):
                    raise RuntimeError("the led actor never wrote GPIO 27 after a button edge")
                times.append(stamp[0] - t0)
            return times

        def warm_up() -> None:
            """Until an edge gets through: the actor's deliveries reach the leaf side."""
            for _ in range(50):
                try:
                    press_and_wait(1, 0.2)
                    return
                except RuntimeError:
                    continue
            press_and_wait(1)

        led = read_component(wat_path("led"))
        for where, host in (("local", pi), ("remote", laptop)):
            target = "local/gpio" if host is pi else "pi/gpio"
            for h in (laptop, pi):
                await h.host.put_link("led", "drupelet:hardware/gpio", target, {"pins": "17,27", "events": "17"},
                                 strict=False)
            await host.host.start_actor("led", led)
            await asyncio.to_thread(warm_up)
            times = await asyncio.to_thread(press_and_wait, presses)
            out[f"gpio_edge_to_actor_us_{where}"] = statistics.median(times) * 1e6
            await host.host.stop_actor("led")
            for h in (laptop, pi):
                await h.host.del_link("led", "drupelet:hardware/gpio")
        out["gpio_edge_to_actor_us"] = out["gpio_edge_to_actor_us_remote"]
    finally:
        await pi.stop()
        await laptop.stop()
        await leaf.stop()
        await hub.stop()
    return out


def host_digest(wasm: bytes) -> str:
    import hashlib

    return hashlib.sha256(wasm).hexdigest()


_CHILD = r"""
import asyncio, json, sys, time
from pathlib import Path
from drupelet.node.config import NodeConfig
from drupelet.node.node import Node
from drupelet.node.runtime import read_component
from drupelet.node.tools.bench import wat_path, _rss_mb

async def main():
    cfg = NodeConfig(name="bench-mem", lattice="bench", data_dir=Path(sys.argv[1]), nats_embedded_port=0,
                     providers={"keyvalue": {"backend": "memory"}})
    async with Node(cfg) as node:
        host = node.host
        await asyncio.sleep(0.5)
        idle = _rss_mb()
        await host.start_actor("noop", read_component(wat_path("noop")), instances=1)
        one = _rss_mb()
        await host.scale_actor("noop", 21)
        await asyncio.sleep(0.2)
        many = _rss_mb()
    print(json.dumps({"node_rss_mb": idle, "instance_rss_mb": (many - one) / 20}))

asyncio.run(main())
"""


def _memory_in_child(workdir: Path) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(workdir / "mem")], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement failed: {proc.stderr.strip().splitlines()[-1:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


class _Once(logging.Filter):
    """Lets each provider warning through once: the bench starts many nodes, each on the same
    simulated hardware, and the SIMULATED warnings would repeat for every one."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith("drupelet.providers"):
            return True
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


def run_bench(*, iterations: int = 2000, http_counter: Path | None = None) -> dict[str, Any]:
    """Every figure (rounded), ``targets``, and ``missed``: the target keys whose figure is over
    its target. What ``drupelet bench --json`` prints. ``http_counter``: a built
    http-counter example, for ``http_counter_requests_per_s``."""
    once = _Once()
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(once)
    try:
        with tempfile.TemporaryDirectory(prefix="drupelet-bench-") as tmp:
            results = asyncio.run(_measure(iterations, Path(tmp), http_counter))
    finally:
        for handler in handlers:
            handler.removeFilter(once)
    results = {k: _rounded(v) for k, v in results.items()}
    results["targets"] = TARGETS
    results["missed"] = missed(results)
    return results


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


def missed(results: dict[str, Any]) -> list[str]:
    """The target keys whose figure is over its target (every target is an upper bound)."""
    return [key for key, target in TARGETS.items() if key in results and results[key] > target]


def report_rows(results: dict[str, Any]) -> list[list[str]]:
    """The figures for people: what, node / raw, ratio, target, and ``MISSED`` beside each figure
    over its target (``drupelet bench`` prints them as a table)."""
    over = set(results.get("missed", missed(results)))

    def mark(key: str) -> str:
        return "MISSED" if key in over else ""

    beside = results["p99_beside_hostile_ms"]
    worst = max(beside, key=beside.__getitem__)  # p99_hostile_ratio is the worst kind's: its row carries the mark

    return [
        ["import call (node / raw wasmtime-py)", f"{results['import_call_us']:.1f} µs / {results['import_call_raw_us']:.1f} µs",
         f"{results['import_call_ratio']:.2f}×", f"≤ {TARGETS['import_call_ratio']}×", mark("import_call_ratio")],
        ["message to actor and answer (node / raw)", f"{results['message_us']:.1f} µs / {results['message_raw_us']:.1f} µs",
         f"{results['message_ratio']:.2f}×", f"≤ {TARGETS['message_ratio']}×", mark("message_ratio")],
        ["actor start from compile cache", f"{results['actor_start_cached_ms']:.1f} ms", "",
         f"≤ {TARGETS['actor_start_cached_ms']:.0f} ms", mark("actor_start_cached_ms")],
        ["actor → provider on another node (node / raw NATS)",
         f"{results['remote_call_us']:.1f} µs / {results['remote_call_raw_us']:.1f} µs",
         f"{results['remote_call_ratio']:.2f}×", f"≤ {TARGETS['remote_call_ratio']}×", mark("remote_call_ratio")],
        ["remote calls per second, 4 instances", f"{results['remote_calls_per_s']:.0f}/s", "", "", ""],
        ["HTTP request to a minimal component, instances reused (node / plain aiohttp handler)",
         f"{results['http_request_us']:.0f} µs / {results['http_request_raw_us']:.0f} µs",
         f"{results['http_ratio']:.2f}×", f"≤ {TARGETS['http_ratio']}×", mark("http_ratio")],
        ["HTTP request, an instance of its own per request (the link's default)",
         f"{results['http_request_fresh_us']:.0f} µs", "", "", ""],
        ["HTTP requests per second, 2 instances, 8 clients (plain aiohttp)",
         f"{results['http_requests_per_s']:.0f}/s ({results['http_requests_per_s_raw']:.0f}/s)", "", "", ""],
        *([["HTTP requests per second to the counter example, 2 instances",
            f"{results['http_counter_requests_per_s']:.0f}/s", "", "", ""]]
          if "http_counter_requests_per_s" in results else []),
        ["GPIO edge to the actor's LED write, same node",
         f"{results['gpio_edge_to_actor_us_local']:.0f} µs", "", "", ""],
        ["GPIO edge to the actor's LED write, across hub and leaf",
         f"{results['gpio_edge_to_actor_us_remote']:.0f} µs", "", "", ""],
        ["node idle RSS", f"{results['node_rss_mb']:.1f} MB", "", f"≤ {TARGETS['node_rss_mb']:.0f} MB",
         mark("node_rss_mb")],
        ["per small actor instance", f"{results['instance_rss_mb']:.2f} MB", "", f"≤ {TARGETS['instance_rss_mb']:.0f} MB",
         mark("instance_rss_mb")],
        ["p99 of a normal actor's round trip, alone", f"{results['p99_alone_ms']:.2f} ms", "", "", ""],
        *[[f"  beside {kind.replace('_', ' ')}", f"{beside[kind]:.2f} ms", f"{beside[kind] / results['p99_alone_ms']:.2f}×",
           f"≤ {TARGETS['p99_hostile_ratio']:.0f}×", mark("p99_hostile_ratio") if kind == worst else ""]
          for kind in KINDS],
    ]
