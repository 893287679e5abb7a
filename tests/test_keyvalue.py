"""wasi:keyvalue through links: the file and memory backends, grants, unlinked calls."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from pathlib import Path

import pytest

from drupelet.node.host.errors import ProviderFailed
from drupelet.node.node import Node
from drupelet.node.lattice.natsserver import EmbeddedNatsServer
from drupelet.node.runtime import read_component
from drupelet.providers.base import BackendIOError, Link, PayloadTooLarge, ProviderContext, ProviderError
from drupelet.providers.keyvalue import Bucket, FileBucket, KeyValueProvider, KeyValueSettings
from drupelet.providers.schema import SchemaError

from test_host import WAT, node_config

NO_SUCH_STORE, ACCESS_DENIED, OTHER = 256, 257, 258


def kvloop() -> bytes:
    return read_component(WAT / "kvloop.wat")


async def test_value_survives_a_node_restart_with_the_file_backend(tmp_path: Path,
                                                                   nats_server: EmbeddedNatsServer) -> None:
    cfg = node_config(tmp_path, nats_server.url)
    async with Node(cfg) as h:
        await h.host.start_actor("kv", kvloop())
        await h.host.put_link("kv", "wasi:keyvalue", "local/keyvalue")
        assert await h.host.invoke("kv", "set", 7) == 0
    stored = json.loads((cfg.data_dir / "providers" / "keyvalue" / "default.json").read_text())
    assert stored["bucket"] == "default" and "k" in stored["values"]
    async with Node(cfg) as h:
        await h.host.start_actor("kv", kvloop())
        await h.host.put_link("kv", "wasi:keyvalue/store", "local/keyvalue")
        bucket = h.host.providers["keyvalue"].open(Link("kv", "wasi:keyvalue/store", "local/keyvalue"), "")  # type: ignore[attr-defined]
        assert bucket.get("k") == (7).to_bytes(4, "little")
        assert await h.host.invoke("kv", "run", 10) == 10


async def test_memory_backend_forgets_on_restart(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    cfg = node_config(tmp_path, nats_server.url, providers={"keyvalue": {"backend": "memory"}})
    link = Link("kv", "wasi:keyvalue/store", "local/keyvalue")
    async with Node(cfg) as h:
        await h.host.start_actor("kv", kvloop())
        await h.host.put_link("kv", "wasi:keyvalue", "local/keyvalue")
        assert await h.host.invoke("kv", "set", 1) == 0
        assert h.host.providers["keyvalue"].open(link, "").get("k") is not None  # type: ignore[attr-defined]
    async with Node(cfg) as h:
        assert h.host.providers["keyvalue"].open(link, "").get("k") is None  # type: ignore[attr-defined]
    assert not (cfg.data_dir / "providers" / "keyvalue" / "default.json").exists()


async def test_unlinked_and_denied_opens_are_error_values(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    async with Node(node_config(tmp_path, nats_server.url)) as h:
        await h.host.start_actor("kv", kvloop())
        assert await h.host.invoke("kv", "probe") == OTHER  # not linked: other("not-linked: …")
        await h.host.put_link("kv", "wasi:keyvalue", "local/keyvalue", {"buckets": "sensors"})
        assert await h.host.invoke("kv", "probe") == ACCESS_DENIED  # "" opens "default", not granted
        await h.host.put_link("kv", "wasi:keyvalue", "local/keyvalue", {"buckets": "default"})
        assert await h.host.invoke("kv", "probe") == 0
        assert h.host.actors["kv"].traps == 0


async def test_bad_backend_config_is_a_clear_error(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    h = Node(node_config(tmp_path, nats_server.url, providers={"keyvalue": {"backend": "floppy"}}))
    with pytest.raises(ProviderFailed, match=r"provider 'keyvalue' failed to start: providers\.keyvalue\.backend: "
                                             r"must be one of file, memory, not 'floppy'"):
        await h.start()


def test_bucket_operations() -> None:
    b = Bucket("t")
    assert b.get("a") is None and not b.exists("a")
    b.set("a", b"1")
    assert b.increment("a", 41) == 42 and b.get("a") == b"42"
    assert b.increment("new", 5) == 5
    b.set_many([("x", b"X"), ("y", b"Y")])
    assert b.get_many(["x", "nope", "y"]) == [("x", b"X"), None, ("y", b"Y")]
    b.delete_many(["x", "y"])
    assert b.list_keys(None) == (["a", "new"], None)
    b.set("text", b"not a number")
    with pytest.raises(ProviderError, match="not a decimal integer"):
        b.increment("text", 1)


def test_list_keys_pages_with_a_cursor() -> None:
    b = Bucket("t")
    b.set_many([(f"k{i:05d}", b"") for i in range(2500)])
    keys, cursor = b.list_keys(None)
    assert len(keys) == 1000 and cursor == 1000
    keys2, cursor2 = b.list_keys(cursor)
    keys3, cursor3 = b.list_keys(cursor2)
    assert len(keys2) == 1000 and len(keys3) == 500 and cursor3 is None
    assert keys + keys2 + keys3 == sorted(keys + keys2 + keys3)


def test_file_bucket_write_failure_keeps_the_old_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from drupelet.providers import keyvalue

    b = FileBucket("t", tmp_path / "t.json")
    b.set("a", b"old")

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keyvalue, "atomic_write", disk_full)
    with pytest.raises(BackendIOError, match="cannot write bucket file .*No space left on device"):
        b.set("a", b"new")
    with pytest.raises(BackendIOError):
        b.set("b", b"added")
    with pytest.raises(BackendIOError):
        b.set_many([("a", b"newer"), ("c", b"C")])
    with pytest.raises(BackendIOError):
        b.increment("n", 1)
    assert b.get("a") == b"old" and b.get("b") is None and b.get("c") is None and not b.exists("n")
    assert b.list_keys(None) == (["a"], None)
    monkeypatch.undo()
    assert FileBucket("t", tmp_path / "t.json").get("a") == b"old"
    b.set("b", b"added")  # the bucket still works once the disk does
    assert b.increment("n", 2) == 2
    reopened = FileBucket("t", tmp_path / "t.json")
    assert [reopened.get(k) for k in ("a", "b", "n")] == [b"old", b"added", b"2"]


def test_corrupt_bucket_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text("{not json")
    with pytest.raises(BackendIOError, match=f"cannot read bucket file {path}"):
        FileBucket("t", path)


WAIT_S = 5.0


def test_a_read_does_not_wait_for_a_write_being_persisted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from drupelet.providers import keyvalue

    b = FileBucket("t", tmp_path / "t.json")
    b.set("a", b"old")
    persisting, release = threading.Event(), threading.Event()
    real_write = keyvalue.atomic_write

    def slow_disk(path: Path, data: bytes) -> None:
        persisting.set()
        assert release.wait(WAIT_S), "the test never released the write"
        real_write(path, data)

    monkeypatch.setattr(keyvalue, "atomic_write", slow_disk)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        writing = pool.submit(b.set, "a", b"new")
        assert persisting.wait(WAIT_S)
        # the write is stuck in its fsync: every read answers at once, with the old contents
        reads = pool.submit(lambda: (b.get("a"), b.exists("a"), b.list_keys(None), b.get_many(["a"])))
        assert reads.result(timeout=WAIT_S) == (b"old", True, (["a"], None), [("a", b"old")])
        assert not writing.done()
        second = pool.submit(b.set, "z", b"Z")  # writers queue behind the one persisting
        release.set()
        writing.result(timeout=WAIT_S)
        second.result(timeout=WAIT_S)
    assert b.get("a") == b"new" and b.get("z") == b"Z"
    assert FileBucket("t", tmp_path / "t.json").get_many(["a", "z"]) == [("a", b"new"), ("z", b"Z")]


def test_values_must_be_bytes_and_a_write_fits_the_payload_limit(tmp_path: Path) -> None:
    b = FileBucket("t", tmp_path / "t.json", max_value_bytes=8)
    b.set("a", b"12345678")
    for bad in ("text", bytearray(b"x"), 7, None, [1, 2]):
        with pytest.raises(ProviderError, match=r"the value of 'a' in bucket 't' must be bytes, not"):
            b.set("a", bad)  # type: ignore[arg-type]
    with pytest.raises(ProviderError, match=r"the value of 'y' in bucket 't' must be bytes, not str"):
        b.set_many([("x", b"X"), ("y", "Y")])  # type: ignore[list-item]
    with pytest.raises(ProviderError, match="keys of bucket 't' are strings, not int"):
        b.set(1, b"x")  # type: ignore[arg-type]
    with pytest.raises(PayloadTooLarge, match="payload of 9 bytes exceeds the limit of 8 bytes") as err:
        b.set("a", b"123456789")
    assert (err.value.size, err.value.limit) == (9, 8)
    with pytest.raises(PayloadTooLarge, match="payload of 10 bytes exceeds the limit of 8 bytes"):
        b.set_many([("x", b"12345"), ("y", b"12345")])
    with pytest.raises(ProviderError, match=r"takes \(key, value\) pairs"):
        b.set_many([("x", b"1", b"2")])  # type: ignore[list-item]
    assert b.list_keys(None) == (["a"], None) and b.get("a") == b"12345678"
    assert FileBucket("t", tmp_path / "t.json").list_keys(None) == (["a"], None)
    b.set_many([("x", b"1234"), ("y", b"5678")])  # eight bytes in all is fine
    assert b.get_many(["x", "y"]) == [("x", b"1234"), ("y", b"5678")]


async def test_the_provider_checks_its_table_and_hands_out_buckets_with_the_payload_limit(tmp_path: Path) -> None:
    assert KeyValueProvider.config_schema is KeyValueSettings
    assert KeyValueProvider.parse_config({}).backend == "file"
    assert KeyValueProvider.parse_config({"backend": "memory"}).backend == "memory"
    with pytest.raises(SchemaError, match=r"^providers\.keyvalue\.backend: must be one of file, memory, not 'disk'$"):
        KeyValueProvider.parse_config({"backend": "disk"})
    with pytest.raises(SchemaError, match=r"^providers\.keyvalue\.size: unknown key \(known: backend\)$"):
        KeyValueProvider.parse_config({"size": 1})
    provider = KeyValueProvider()
    await provider.start(ProviderContext(node="n", lattice="default", loop=asyncio.get_running_loop(),
                                         data_dir=tmp_path, config={"backend": "memory"}, max_payload_bytes=4))
    try:
        bucket = provider.open(Link("kv", "wasi:keyvalue/store", "local/keyvalue"), "")
        with pytest.raises(PayloadTooLarge):
            bucket.set_many([("a", b"123"), ("b", b"45")])
        bucket.set("a", b"1234")
        assert bucket.get("a") == b"1234" and not (tmp_path / "default.json").exists()
    finally:
        await provider.stop()
