"""``drupelet bench``'s hostile figures: a normal actor's round trip, alone and beside actors
and clients that misbehave, in one run.

A node (embedded nats-server) runs ``normal``, the hostile actor (``hostile.wat``) in its
echo mode. A client in this process sends it 64-byte requests one after the other through
NATS and takes the 99th percentile of the round trips. Then something hostile runs beside
it, kept busy by a flooding client in a child process (its own NATS connection, so its
work is not this process's), and the p99 is taken again; one kind at a time, each after a
p99 alone (``p99_alone_ms`` is their median, so a busy moment of the machine weighs on
both sides):

- ``spin``: four instances of an actor that loop until their call deadline;
- ``log_flood``: an actor that logs its 4 KiB body in a loop until its deadline;
- ``publish_flood``: an actor that publishes its 512 KiB body in a loop until its deadline;
- ``inbound_flood``: a client that sends 512 KiB messages to another actor as fast as it can.

``p99_beside_hostile_ms`` has the p99 beside each, and ``p99_hostile_ratio`` the worst of
them over ``p99_alone_ms`` (target: at most 5).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from drupelet.node.config import NodeConfig
from drupelet.node.lattice import subjects
from drupelet.node.node import Node
from drupelet.node.runtime import read_component

KINDS = ("spin", "log_flood", "publish_flood", "inbound_flood")
FLOOD_SUBJECT = "hostile.flood"
"""Where actors/wat/hostile.wat's ``publ`` publishes."""
FLOOD_BYTES = 512 << 10

_FLOODER = r"""
import asyncio, sys, time
import nats

async def main(url, subject, body_kind, size, interval_s, seconds):
    nc = await nats.connect(url)
    body = body_kind.encode() + b"x" * (int(size) - len(body_kind))
    end = time.monotonic() + float(seconds)
    sent = 0
    while time.monotonic() < end:
        await nc.publish(subject, body)
        sent += 1
        if float(interval_s) > 0:
            await asyncio.sleep(float(interval_s))
        elif sent % 8 == 0:
            await nc.flush()
    await nc.close()
    print(sent)

asyncio.run(main(*sys.argv[1:]))
"""

HOSTILE: dict[str, tuple[str, int, str, int, float]] = {
    # kind: (actor, instances, body prefix, body size, seconds between messages: 0 = flood)
    "spin": ("spinner", 4, "spin", 4, 0.05),
    "log_flood": ("logger", 1, "logs", 4096, 0.05),
    "publish_flood": ("publisher", 1, "publ", FLOOD_BYTES, 0.05),
    "inbound_flood": ("sink", 1, "sink", FLOOD_BYTES, 0.0),
}


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] if len(samples) >= 2 else samples[0]


async def _round_trips(nc: Any, lattice: str, count: int) -> list[float]:
    subject = subjects.deliver(lattice, "normal")
    body = b"n" * 64
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        reply = await nc.request(subject, body, timeout=10)
        times.append((time.perf_counter() - t0) * 1000.0)
        if reply.data != body:
            raise RuntimeError(f"the normal actor answered {reply.data[:40]!r}")
    return times


async def measure_hostile(samples: int, workdir: Path, hostile_wasm: Path) -> dict[str, Any]:
    """``p99_alone_ms``, ``p99_beside_hostile_ms`` (one figure per kind) and ``p99_hostile_ratio``."""
    import nats

    wasm = read_component(hostile_wasm)
    cfg = NodeConfig(name="bench-hostile", lattice="bench", data_dir=workdir / "hostile", nats_embedded_port=0,
                     providers={"keyvalue": {"backend": "memory"}}, call_deadline_ms=1000)
    out: dict[str, Any] = {}
    async with Node(cfg) as node:
        host = node.host
        await host.start_actor("normal", wasm)
        await host.put_link("normal", "wasmcloud:messaging", "local/messaging")
        assert node.nats_server is not None
        url = node.nats_server.url
        nc = await nats.connect(url)
        try:
            await _round_trips(nc, cfg.lattice, 50)  # warm up
            alone: list[float] = []
            beside: dict[str, float] = {}
            for kind in KINDS:
                alone.append(_p99(await _round_trips(nc, cfg.lattice, samples)))
                actor, instances, prefix, size, interval = HOSTILE[kind]
                await host.start_actor(actor, wasm, instances=instances)
                # the publisher's grant: the subject it floods (the others only answer their messages)
                await host.put_link(actor, "wasmcloud:messaging", "local/messaging", {"publish": FLOOD_SUBJECT})
                seconds = 3.0 + samples * 0.02
                flooder = subprocess.Popen(
                    [sys.executable, "-c", _FLOODER, url, subjects.deliver(cfg.lattice, actor), prefix, str(size),
                     str(interval), str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                try:
                    await asyncio.sleep(1.0)  # the hostile load is under way
                    beside[kind] = _p99(await _round_trips(nc, cfg.lattice, samples))
                finally:
                    await asyncio.to_thread(_finish, flooder, seconds)
                await host.stop_actor(actor)
                await host.del_link(actor, "wasmcloud:messaging")
            out["p99_alone_ms"] = statistics.median(alone)
            out["p99_beside_hostile_ms"] = beside
            out["p99_hostile_ratio"] = max(beside.values()) / out["p99_alone_ms"]
        finally:
            await nc.close()
    return out


def _finish(flooder: subprocess.Popen[str], seconds: float) -> None:
    try:
        _, err = flooder.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        flooder.kill()
        flooder.communicate()
        raise RuntimeError("a flooding client did not stop") from None
    if flooder.returncode != 0:
        raise RuntimeError(f"a flooding client failed: {err.strip().splitlines()[-1:]}")


__all__ = ["KINDS", "measure_hostile"]
