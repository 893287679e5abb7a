"""The fuzz: hostile and random payloads on every control subject, every provider-call
subject and an actor's delivery subject of a real node (tests/fuzzing.py makes them).

Every request gets a well-formed reply, no handler raises (no ``internal`` reply, no
error in the node's log), the node still answers a ping, and its actors, links, labels,
lattice state and buckets are what they were. The default run sends a few thousand
messages; ``scripts/fuzz.sh`` sends 100,000 or more, or fuzzes for a number of seconds,
and prints the counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from drupelet.node.lattice.client import LatticeClient
from drupelet.node.lattice.natsserver import EmbeddedNatsServer
from drupelet.node.node import Node
from drupelet.providers.base import Link

from fuzzing import ACTOR, NODE, SOURCE, Tally, campaign, examples_per_target, seconds
from test_host import node_config, wat
from waiting import wait_for_async


def snapshot(node: Node) -> dict[str, Any]:
    """What hostile input must not change."""
    host = node.host
    kv: Any = host.providers["keyvalue"]
    kept = kv.open(Link(source="keeper", interface="wasi:keyvalue/store", target="local/keyvalue"), "kept")
    assert node.state is not None
    return {
        "actors": [(a["name"], a["instances"], a["digest"]) for a in host.list_actors()],
        "links": host.list_links(),
        "labels": dict(host.labels),
        "providers": host.provider_names(),
        "state": node.state.items(),
        "kept": {k: kept.get(k) for k in kept.list_keys(None)[0]},
    }


async def test_hostile_payloads_on_every_subject_are_answered_and_change_nothing(
        tmp_path: Path, nats_server: EmbeddedNatsServer, nats_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    node = Node(node_config(tmp_path, nats_server.url, name=NODE, call_deadline_ms=2000, labels={"room": "lab"}))
    await node.start()
    try:
        host = node.host
        await host.start_actor(ACTOR, wat("hostile"), instances=2)
        await host.put_link(ACTOR, "wasmcloud:messaging", "local/messaging")
        grants = {"keyvalue": {"buckets": "scratch"}, "messaging": {}, "gpio": {"pins": "20,21"},
                  "i2c": {"buses": "i2c1", "addresses": "0x48"}, "display": {}}
        for provider, config in grants.items():
            interface = {"keyvalue": "wasi:keyvalue", "messaging": "wasmcloud:messaging",
                         "gpio": "drupelet:hardware/gpio", "i2c": "drupelet:hardware/i2c-bus",
                         "display": "drupelet:hardware/display"}[provider]
            await host.put_link(SOURCE, interface, f"{NODE}/{provider}", config)
        kv: Any = host.providers["keyvalue"]
        keeper = kv.open(Link(source="keeper", interface="wasi:keyvalue/store", target="local/keyvalue"), "kept")
        keeper.set("k", b"kept value")
        client = LatticeClient(nats_client, "test")
        await client.lattice_request("config.put", {"name": "kept", "values": {"a": "1"}})  # the admin writes it
        state = node.state
        assert state is not None
        await wait_for_async(lambda: state.get("config.kept") is not None, 10, "the node to see the named config")
        await state.flush()
        before = snapshot(node)

        caplog.clear()
        caplog.set_level(logging.WARNING)
        tally = Tally()
        loop = asyncio.get_running_loop()
        duration = seconds()
        started = time.monotonic()
        await asyncio.to_thread(campaign, nats_client, loop, tally, examples=examples_per_target(),
                                until=started + duration if duration else 0.0)
        print("\n" + "\n".join(tally.lines()) + f"\nfuzz took {time.monotonic() - started:.0f} s")

        assert not tally.failures, "\n".join(tally.failures[:20])
        assert sum(tally.unanswered.values()) == 0
        assert sum(tally.sent.values()) >= 3 * examples_per_target()
        assert sum(tally.answered.values()) == sum(tally.sent.values())
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors[:10]]
        assert [n["name"] for n in await client.ping()] == [NODE]
        await node.state.flush() if node.state else None
        assert snapshot(node) == before
    finally:
        await node.stop()
