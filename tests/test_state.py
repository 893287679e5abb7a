"""The lattice's shared state: a JetStream KV bucket that nodes watch, plus a disk copy.

Integration tests run against real nats-server processes (the ``nats_server`` fixture has
JetStream on); the follower's intervals are shortened so the suite stays quick.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient

from drupelet.node.lattice.connect import close_quietly
from drupelet.node.lattice.errors import BadStateEntry, StateUnavailable
from drupelet.node.lattice.natsserver import EmbeddedNatsServer, NatsServerConfig
from drupelet.node.lattice.state import (LatticeState, actor_key, bucket_name, check_value, config_key, decode_interface,
                                 encode_interface, kv_subject, labels_key, link_key, parse_key)

LATTICE = "t"
WAIT_S = 5.0
TIMEOUT_S = 0.5  # JetStream request bound in these tests


def link(source: str, interface: str, target: str = "local/keyvalue", **config: str) -> dict[str, Any]:
    return {"source": source, "interface": interface, "target": target, "config": dict(config)}


def actor(node: str, name: str, instances: int = 1) -> dict[str, Any]:
    return {"name": name, "digest": "sha256:" + "ab" * 32, "instances": instances, "config": {}, "node": node}


async def wait_until(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.02)


class Events:
    """A listener that records what it is called with."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any] | None]] = []

    async def __call__(self, key: str, value: dict[str, Any] | None) -> None:
        self.seen.append((key, value))

    def has(self, key: str, value: dict[str, Any] | None) -> bool:
        return (key, value) in self.seen


def disk_entries(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(doc["revision"], int)
    return dict(doc["entries"])


class Lattice:
    """Makes nodes (a NATS connection + a LatticeState each) and closes them all."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clients: list[NatsClient] = []
        self.states: list[LatticeState] = []

    async def client(self, url: str) -> NatsClient:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        self.clients.append(nc)
        return nc

    def state(self, node: str, *, retry_initial_s: float = 0.1) -> LatticeState:
        state = LatticeState(LATTICE, node, self.tmp_path / node / "state.json",
                             retry_initial_s=retry_initial_s, retry_max_s=max(0.5, retry_initial_s),
                             probe_interval_s=0.5)
        self.states.append(state)
        return state

    async def node(self, node: str, url: str, *, domain: str | None = None) -> LatticeState:
        state = self.state(node)
        state.load_local()
        assert await state.connect(await self.client(url), domain=domain, timeout_s=TIMEOUT_S)
        return state

    async def close(self) -> None:
        for state in self.states:
            await state.close()
        for nc in self.clients:
            await close_quietly(nc)  # some tests stop the servers first


@pytest_asyncio.fixture
async def lattice(tmp_path: Path) -> AsyncIterator[Lattice]:
    made = Lattice(tmp_path)
    try:
        yield made
    finally:
        await made.close()


# -- keys and values (pure) ---------------------------------------------------------


@pytest.mark.parametrize("interface", ["wasi:keyvalue/store", "wasmcloud:messaging/consumer",
                                       "wasi:keyvalue", "wasi:keyvalue/store@0.2.0-draft"])
def test_link_keys_round_trip(interface: str) -> None:
    key = link_key("counter", interface)
    assert key == f"link.counter.{interface.encode().hex()}"
    assert all(c.isalnum() or c in "._-" for c in key)
    assert parse_key(key) == ("link", ("counter", interface))
    assert decode_interface(encode_interface(interface)) == interface


def test_other_keys_round_trip() -> None:
    assert parse_key(actor_key("pi-1", "counter")) == ("actor", ("pi-1", "counter"))
    assert parse_key(config_key("hits_cfg")) == ("config", ("hits_cfg",))
    assert parse_key(labels_key("pi-1")) == ("labels", ("pi-1",))
    assert actor_key("pi-1", "counter") == "actor.pi-1.counter"
    assert bucket_name("default") == "drupelet-default-state"
    assert kv_subject("b", "config.x") == "$KV.b.config.x"
    assert kv_subject("b", "config.x", "hub") == "$JS.hub.API.$KV.b.config.x"


@pytest.mark.parametrize("key", ["", "link", "link.a", "link.a.zz", "link.a.6A", "link.a.ff", "actor.pi1",
                                 "actor.pi1.a.b", "config", "labels.a.b", "nodes.x", "config.a b", "config..x"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(BadStateEntry):
        parse_key(key)


@pytest.mark.parametrize("make", [lambda: actor_key("pi.1", "x"), lambda: actor_key("pi1", "a/b"),
                                  lambda: config_key(""), lambda: link_key("a", ""), lambda: link_key("a:b", "x:y")])
def test_names_that_are_not_tokens_are_refused(make: Callable[[], str]) -> None:
    with pytest.raises(BadStateEntry):
        make()


def test_values_are_checked_against_their_key() -> None:
    key = link_key("counter", "wasi:keyvalue")
    assert check_value(key, link("counter", "wasi:keyvalue", buckets="hits"))["config"] == {"buckets": "hits"}
    with pytest.raises(BadStateEntry, match="not counter's"):
        check_value(link_key("counter", "wasi:logging"), link("counter", "wasi:keyvalue"))
    with pytest.raises(BadStateEntry, match="config"):
        check_value(key, {**link("counter", "wasi:keyvalue"), "config": {"n": 1}})
    with pytest.raises(BadStateEntry, match="instances"):
        check_value(actor_key("pi1", "c"), actor("pi1", "c", instances=-1))
    with pytest.raises(BadStateEntry, match="instances"):
        check_value(actor_key("pi1", "c"), {**actor("pi1", "c"), "instances": True})
    with pytest.raises(BadStateEntry):
        check_value(actor_key("pi1", "c"), actor("pi2", "c"))
    with pytest.raises(BadStateEntry, match="JSON object"):
        check_value(config_key("x"), ["a"])
    with pytest.raises(BadStateEntry, match="strings"):
        check_value(labels_key("pi1"), {"zone": 3})
    # Fields a newer node adds are kept.
    assert check_value(actor_key("pi1", "c"), {**actor("pi1", "c"), "extra": [1]})["extra"] == [1]
    assert check_value(key, {**link("counter", "wasi:keyvalue"), "since": 3})["since"] == 3


@pytest.mark.parametrize("make,message", [
    (lambda: (labels_key("pi1"), {"note": "x" * 257}),
     "labels.pi1: the value of 'note' must be at most 256 bytes (UTF-8), got 257"),
    (lambda: (labels_key("pi1"), {f"k{i}": "v" for i in range(65)}),
     "labels.pi1: the labels must have at most 64 entries"),
    (lambda: (labels_key("pi1"), {"a b": "v"}), "labels.pi1: key 'a b' is not valid"),
    (lambda: (config_key("x"), {"pem": "x" * 4097}), "config.x: the value of 'pem' must be at most 4096 bytes"),
    (lambda: (config_key("x"), {f"k{i}": "v" * 1000 for i in range(17)}),
     "config.x: the named config must be at most 16384 bytes in all"),
    (lambda: (link_key("c", "wasi:keyvalue"), {**link("c", "wasi:keyvalue"), "config": {"k": "v" * 5000}}),
     "config: the value of 'k' must be at most 4096 bytes"),
    (lambda: (actor_key("pi1", "c"), {k: v for k, v in actor("pi1", "c").items() if k != "digest"}),
     "actor.pi1.c: digest: is required"),
    (lambda: (actor_key("pi1", "c"), {**actor("pi1", "c"), "digest": 5}),
     "actor.pi1.c: digest: must be a string, got an integer 5"),
])
def test_values_are_bounded_and_refused_naming_the_key(make: Callable[[], tuple[str, Any]], message: str) -> None:
    key, value = make()
    with pytest.raises(BadStateEntry, match=re.escape(message)) as info:
        check_value(key, value)
    assert info.value.key == key and "\n" not in info.value.message


# -- the disk copy --------------------------------------------------------------------


def test_corrupt_local_copy_is_ignored_with_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b'{"revision": 3, "entries": {"config.x": {"a": "b"')
    state = LatticeState(LATTICE, "pi1", path)
    with caplog.at_level(logging.WARNING, logger="drupelet.node.lattice.state"):
        state.load_local()
    assert state.items() == []
    assert any("corrupt" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)


def test_malformed_entries_in_the_local_copy_are_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    entries = {config_key("good"): {"a": "b"}, "bogus.key": {}, actor_key("pi1", "c"): {"name": "c"}}
    path.write_text(json.dumps({"revision": 3, "entries": entries}), encoding="utf-8")
    state = LatticeState(LATTICE, "pi1", path)
    with caplog.at_level(logging.WARNING, logger="drupelet.node.lattice.state"):
        state.load_local()
    assert state.items() == [("config.good", {"a": "b"})]
    assert state.named_config("good") == {"a": "b"}
    assert len([r for r in caplog.records if "ignoring" in r.getMessage()]) == 2


def test_missing_local_copy_is_an_empty_view(tmp_path: Path) -> None:
    state = LatticeState(LATTICE, "pi1", tmp_path / "nothing" / "state.json")
    state.load_local()
    assert state.links() == [] and state.actors_for("pi1") == [] and state.labels_for("pi1") == {}
    assert state.named_config("x") is None


# -- against a real server --------------------------------------------------------------


async def test_nodes_see_each_others_puts_and_deletes(nats_server: EmbeddedNatsServer, lattice: Lattice) -> None:
    a = await lattice.node("pi1", nats_server.url)
    b = await lattice.node("laptop", nats_server.url)
    seen_a, seen_b = Events(), Events()
    a.on_change(seen_a)
    b.on_change(seen_b)

    lk = link_key("counter", "wasi:keyvalue/store")
    lv = link("counter", "wasi:keyvalue/store", buckets="hits")
    ak = actor_key("pi1", "counter")
    revision = await a.put(lk, lv)
    assert revision > 0
    await a.put(ak, actor("pi1", "counter", instances=2))
    await a.put(config_key("greeting"), {"text": "hi"})
    await a.put(labels_key("pi1"), {"board": "pi5"})
    assert a.get(lk) == lv  # at once, without waiting for the watch

    await wait_until(lambda: seen_b.has(lk, lv) and b.labels_for("pi1") == {"board": "pi5"}, "B to see A's puts")
    assert b.links() == [lv]
    assert b.actors_for("pi1") == [actor("pi1", "counter", instances=2)]
    assert b.actors_for("laptop") == []
    assert b.named_config("greeting") == {"text": "hi"}

    await b.delete(lk)
    await b.put(ak, actor("pi1", "counter", instances=3))
    assert b.links() == []
    await wait_until(lambda: seen_a.has(lk, None) and seen_a.has(ak, actor("pi1", "counter", instances=3)),
                     "A to see B's delete and put")
    assert a.links() == []

    # Once B's later write reached A, A's watch is past the echoes of its own puts: each of
    # A's changes fired A's listener exactly once.
    await a.flush()
    assert [e for e in seen_a.seen if e[0] == config_key("greeting")] == [(config_key("greeting"), {"text": "hi"})]
    assert seen_a.seen.count((lk, lv)) == 1

    for state in (a, b):  # listeners hear of a change once it is on disk
        assert disk_entries(state.local_path) == dict(state.items())
    assert ak in disk_entries(a.local_path) and lk not in disk_entries(a.local_path)


async def test_restart_with_the_server_down_comes_back_from_the_local_copy(
        nats_server: EmbeddedNatsServer, lattice: Lattice) -> None:
    a = await lattice.node("pi1", nats_server.url)
    lv = link("counter", "wasi:keyvalue", buckets="hits")
    await a.put(link_key("counter", "wasi:keyvalue"), lv)
    await a.put(actor_key("pi1", "counter"), actor("pi1", "counter", instances=2))
    await a.put(actor_key("pi1", "gone"), actor("pi1", "gone"))
    await a.delete(actor_key("pi1", "gone"))
    await a.put(config_key("greeting"), {"text": "hi"})
    await lattice.close()
    await nats_server.stop()

    again = LatticeState(LATTICE, "pi1", a.local_path)
    again.load_local()
    assert again.links() == [lv]
    assert again.actors_for("pi1") == [actor("pi1", "counter", instances=2)]
    assert again.named_config("greeting") == {"text": "hi"}
    await again.close()


async def test_connect_while_unreachable_then_catch_up_in_the_background(
        nats_server: EmbeddedNatsServer, lattice: Lattice) -> None:
    nc_a = await lattice.client(nats_server.url)
    nc_b = await lattice.client(nats_server.url)
    first = lattice.state("pi1")
    assert await first.connect(nc_a, timeout_s=TIMEOUT_S)
    old_key = link_key("counter", "wasi:logging")
    await first.put(old_key, link("counter", "wasi:logging", "local/logging"))
    await first.close()

    await nats_server.stop()
    # A retries only after B's writes below (most likely), so it catches up by reading the
    # whole bucket again rather than through its watch.
    a = lattice.state("pi1", retry_initial_s=1.5)
    a.load_local()
    seen = Events()
    a.on_change(seen)
    started = time.monotonic()
    assert not await a.connect(nc_a, timeout_s=TIMEOUT_S)
    assert time.monotonic() - started < TIMEOUT_S + 0.5
    assert not a.connected
    assert [v["interface"] for v in a.links()] == ["wasi:logging"]  # the disk view stays

    writes, mtime = a.disk_writes, a.local_path.stat().st_mtime_ns
    with pytest.raises(StateUnavailable, match="cannot write config.x"):
        await a.put(config_key("x"), {"a": "b"})
    with pytest.raises(StateUnavailable):
        await a.delete(old_key)
    assert a.get(config_key("x")) is None and a.get(old_key) is not None
    assert (a.disk_writes, a.local_path.stat().st_mtime_ns) == (writes, mtime)

    await nats_server.restart()
    await wait_until(lambda: nc_b.is_connected, "B's connection to come back")
    b = lattice.state("laptop")
    assert await b.connect(nc_b, timeout_s=2.0)
    new_key = link_key("counter", "wasi:keyvalue")
    await b.delete(old_key)
    await b.put(new_key, link("counter", "wasi:keyvalue"))

    await wait_until(lambda: a.connected and seen.has(old_key, None) and seen.has(new_key, link("counter", "wasi:keyvalue")),
                     "A to reconnect and catch up")
    assert [v["interface"] for v in a.links()] == ["wasi:keyvalue"]
    assert disk_entries(a.local_path) == dict(a.items())
    await a.put(config_key("x"), {"a": "b"})  # writes work again
    await wait_until(lambda: b.named_config("x") == {"a": "b"}, "B to see A's put")


async def test_a_watch_survives_a_server_restart(nats_server: EmbeddedNatsServer, lattice: Lattice) -> None:
    a = await lattice.node("pi1", nats_server.url)
    b = await lattice.node("laptop", nats_server.url)
    await b.put(config_key("before"), {"n": "1"})
    await wait_until(lambda: a.named_config("before") == {"n": "1"}, "A to see the first put")

    await nats_server.restart()
    await wait_until(lambda: all(nc.is_connected for nc in lattice.clients), "clients to reconnect")
    await b.put(config_key("after"), {"n": "2"})
    # nats-py alone would take 10-20 s here: its watch consumer lived in server memory.
    await wait_until(lambda: a.named_config("after") == {"n": "2"}, "A to see a put made after the restart")


async def test_disk_copy_is_written_only_when_it_changes(nats_server: EmbeddedNatsServer, lattice: Lattice) -> None:
    a = await lattice.node("pi1", nats_server.url)
    b = await lattice.node("laptop", nats_server.url)
    seen = Events()
    a.on_change(seen)
    key = config_key("greeting")
    await a.put(key, {"text": "hi"})
    writes = a.disk_writes
    assert writes >= 1

    await a.put(key, {"text": "hi"})  # a new revision, the same content
    await b.put(key, {"text": "hi"})
    await b.put(config_key("marker"), {})
    await wait_until(lambda: seen.has(config_key("marker"), {}), "A to see B's puts")
    assert a.disk_writes == writes + 1  # only for the marker (the watch is in order)
    writes, mtime = a.disk_writes, a.local_path.stat().st_mtime_ns

    # A restart that finds the bucket as the disk copy left it writes nothing.
    await a.close()
    again = lattice.state("pi1")
    again.load_local()
    assert await again.connect(await lattice.client(nats_server.url), timeout_s=TIMEOUT_S)
    assert again.disk_writes == 0 and again.local_path.stat().st_mtime_ns == mtime
    assert again.named_config("greeting") == {"text": "hi"}


async def test_connect_applies_the_bucket_keeps_what_it_lost_without_a_marker_and_rewrites_a_corrupt_copy(
        nats_server: EmbeddedNatsServer, lattice: Lattice, caplog: pytest.LogCaptureFixture) -> None:
    b = await lattice.node("laptop", nats_server.url)
    await b.put(config_key("shared"), {"a": "1"})
    await b.put(config_key("gone"), {"g": "1"})
    await b.delete(config_key("gone"))

    a = lattice.state("pi1")
    a.local_path.parent.mkdir(parents=True)
    a.local_path.write_text(json.dumps({"revision": 1, "entries": {
        config_key("stale"): {"x": "y"}, config_key("gone"): {"g": "0"}, config_key("shared"): {"a": "0"}}}))
    a.load_local()
    assert a.named_config("stale") == {"x": "y"}
    seen = Events()
    a.on_change(seen)
    with caplog.at_level(logging.WARNING, logger="drupelet.node.lattice.state"):
        assert await a.connect(await lattice.client(nats_server.url), timeout_s=TIMEOUT_S)
    # the bucket's entries and delete markers are the truth; a key it has neither for (it was
    # purged, or deleted and made again) is kept: an emptied bucket is not an empty lattice
    assert a.named_config("shared") == {"a": "1"} and a.named_config("gone") is None
    assert a.named_config("stale") == {"x": "y"}
    assert any("no entry and no delete marker for 1 key(s)" in r.getMessage() and config_key("stale") in r.getMessage()
               for r in caplog.records)
    await a.flush()
    assert sorted(seen.seen, key=lambda e: e[0]) == [(config_key("gone"), None), (config_key("shared"), {"a": "1"})]
    assert disk_entries(a.local_path) == {config_key("shared"): {"a": "1"}, config_key("stale"): {"x": "y"}}

    c = lattice.state("pi2")
    c.local_path.parent.mkdir(parents=True)
    c.local_path.write_bytes(b"\x00garbage")
    c.load_local()
    assert await c.connect(await lattice.client(nats_server.url), timeout_s=TIMEOUT_S)
    assert disk_entries(c.local_path) == {config_key("shared"): {"a": "1"}}


async def test_malformed_writes_by_other_clients_change_nothing(
        nats_server: EmbeddedNatsServer, nats_client: NatsClient, lattice: Lattice,
        caplog: pytest.LogCaptureFixture) -> None:
    a = await lattice.node("pi1", nats_server.url)
    await a.put(config_key("x"), {"a": "1"})
    kv = await nats_client.jetstream().key_value(bucket_name(LATTICE))
    with caplog.at_level(logging.WARNING, logger="drupelet.node.lattice.state"):
        await kv.put(config_key("x"), b"not json")
        await kv.put(actor_key("pi1", "c"), json.dumps({"name": "c"}).encode())
        await kv.put("stray", b"{}")
        await kv.put(config_key("y"), b'{"ok": "yes"}')
        await wait_until(lambda: a.named_config("y") == {"ok": "yes"}, "A to see the good put")
    assert a.named_config("x") == {"a": "1"}
    assert a.actors_for("pi1") == []
    assert len([r for r in caplog.records if "ignoring" in r.getMessage()]) == 3
    with pytest.raises(BadStateEntry):
        await a.put(actor_key("pi1", "c"), {"name": "c"})


async def test_a_failing_listener_does_not_stop_the_others(
        nats_server: EmbeddedNatsServer, lattice: Lattice, caplog: pytest.LogCaptureFixture) -> None:
    a = await lattice.node("pi1", nats_server.url)

    async def broken(key: str, value: dict[str, Any] | None) -> None:
        raise RuntimeError("listener bug")

    seen, removed = Events(), Events()
    a.on_change(broken)
    a.on_change(seen)
    unregister = a.on_change(removed)
    unregister()
    with caplog.at_level(logging.ERROR, logger="drupelet.node.lattice.state"):
        await a.put(config_key("x"), {"a": "1"})
        await a.flush()
    assert seen.seen == [(config_key("x"), {"a": "1"})]
    assert removed.seen == []
    assert any("listener" in r.getMessage() for r in caplog.records)
    await a.close()
    await a.close()  # idempotent
    with pytest.raises(StateUnavailable):
        await a.put(config_key("x"), {"a": "2"})


async def test_leaf_node_uses_the_hubs_domain(tmp_path: Path, lattice: Lattice) -> None:
    """The real topology: the node talks to its local leaf server; the bucket is in the hub."""
    async with EmbeddedNatsServer(NatsServerConfig(store_dir=tmp_path / "hub", jetstream_domain="hub",
                                                   leafnode_listen_port=0, server_name="hub")) as hub:
        assert hub.leafnode_url is not None
        async with EmbeddedNatsServer(NatsServerConfig(store_dir=tmp_path / "leaf", jetstream_domain="pi1",
                                                       leaf_remotes=[hub.leafnode_url], server_name="pi1")) as leaf:
            laptop = await lattice.node("laptop", hub.url, domain="hub")
            pi = lattice.state("pi1")
            pi.load_local()
            await pi.connect(await lattice.client(leaf.url), domain="hub", timeout_s=TIMEOUT_S)
            await wait_until(lambda: pi.connected, "the leaf node to reach the hub's bucket")
            await pi.put(actor_key("pi1", "counter"), actor("pi1", "counter"))
            await wait_until(lambda: laptop.actors_for("pi1") != [], "the hub side to see the leaf's put")

            await hub.stop()
            started = time.monotonic()
            with pytest.raises(StateUnavailable, match="unreachable"):
                await pi.put(config_key("x"), {"a": "b"})
            assert time.monotonic() - started < TIMEOUT_S + 0.5
            assert pi.named_config("x") is None
            assert pi.actors_for("pi1") == [actor("pi1", "counter")]

            await hub.start()
            hub_nc = await lattice.client(hub.url)
            js = hub_nc.jetstream(domain="hub")
            kv = await js.key_value(bucket_name(LATTICE))
            await kv.put(config_key("from-hub"), b'{"a": "b"}')
            await wait_until(lambda: pi.named_config("from-hub") == {"a": "b"}, "the leaf node to catch up")
            await pi.put(config_key("x"), {"a": "b"})


async def test_an_early_end_of_initial_values_is_not_taken_for_an_empty_bucket(tmp_path: Path) -> None:
    # nats-py marks the initial values done at once when the server has pushed every entry
    # but the client has read none of them yet: the entries then come after the marker.
    # The node must wait for the entry at the stream's last sequence, not read an empty bucket.
    from nats.js.kv import KeyValue

    link = {"source": "e1", "interface": "wasmcloud:messaging/consumer", "target": "local/messaging", "config": {}}
    entries = [KeyValue.Entry(bucket="b", key=link_key("e1", "wasmcloud:messaging/consumer"),
                              value=json.dumps(link).encode(), revision=9, delta=0, created=None, operation=None)]

    class EarlyMarker:
        def __init__(self) -> None:
            self.queue: list[Any] = [None, *entries]

        async def updates(self, timeout: float) -> Any:
            if not self.queue:
                raise nats.errors.TimeoutError
            return self.queue.pop(0)

    state = LatticeState("default", "n1", tmp_path / "state.json")
    records = await state._read_initial(EarlyMarker(), 9)  # type: ignore[arg-type]
    assert {key: value for key, (_, value) in records.items()} == {link_key("e1", "wasmcloud:messaging/consumer"): link}
    # an empty bucket (last sequence 0) is still read as empty at its marker
    assert await state._read_initial(EarlyMarker(), 0) == {}  # type: ignore[arg-type]
