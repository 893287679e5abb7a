"""wasi:keyvalue through links: the file and memory backends, grants, unlinked calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drupelet.node.errors import DrupeletError
from drupelet.node.host.host import Host
from drupelet.node.lattice.natsserver import EmbeddedNatsServer
from drupelet.node.runtime import read_component
from drupelet.providers.base import BackendIOError, Link, ProviderError
from drupelet.providers.keyvalue import Bucket, FileBucket

from test_host import WAT, node_config

NO_SUCH_STORE, ACCESS_DENIED, OTHER = 256, 257, 258


def kvloop() -> bytes:
    return read_component(WAT / "kvloop.wat")


async def test_value_survives_a_node_restart_with_the_file_backend(tmp_path: Path,
                                                                   nats_server: EmbeddedNatsServer) -> None:
    cfg = node_config(tmp_path, nats_server.url)
    async with Host(cfg) as h:
        await h.start_actor("kv", kvloop())
        await h.put_link("kv", "wasi:keyvalue", "local/keyvalue")
        assert await h.invoke("kv", "set", 7) == 0
    stored = json.loads((cfg.data_dir / "providers" / "keyvalue" / "default.json").read_text())
    assert stored["bucket"] == "default" and "k" in stored["values"]
    async with Host(cfg) as h:
        await h.start_actor("kv", kvloop())
        await h.put_link("kv", "wasi:keyvalue/store", "local/keyvalue")
        bucket = h.providers["keyvalue"].open(Link("kv", "wasi:keyvalue/store", "local/keyvalue"), "")  # type: ignore[attr-defined]
        assert bucket.get("k") == (7).to_bytes(4, "little")
        assert await h.invoke("kv", "run", 10) == 10


async def test_memory_backend_forgets_on_restart(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    cfg = node_config(tmp_path, nats_server.url, providers={"keyvalue": {"backend": "memory"}})
    link = Link("kv", "wasi:keyvalue/store", "local/keyvalue")
    async with Host(cfg) as h:
        await h.start_actor("kv", kvloop())
        await h.put_link("kv", "wasi:keyvalue", "local/keyvalue")
        assert await h.invoke("kv", "set", 1) == 0
        assert h.providers["keyvalue"].open(link, "").get("k") is not None  # type: ignore[attr-defined]
    async with Host(cfg) as h:
        assert h.providers["keyvalue"].open(link, "").get("k") is None  # type: ignore[attr-defined]
    assert not (cfg.data_dir / "providers" / "keyvalue" / "default.json").exists()


async def test_unlinked_and_denied_opens_are_error_values(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    async with Host(node_config(tmp_path, nats_server.url)) as h:
        await h.start_actor("kv", kvloop())
        assert await h.invoke("kv", "probe") == OTHER  # not linked: other("not-linked: …")
        await h.put_link("kv", "wasi:keyvalue", "local/keyvalue", {"buckets": "sensors"})
        assert await h.invoke("kv", "probe") == ACCESS_DENIED  # "" opens "default", not granted
        await h.put_link("kv", "wasi:keyvalue", "local/keyvalue", {"buckets": "default"})
        assert await h.invoke("kv", "probe") == 0
        assert h.actors["kv"].traps == 0


async def test_bad_backend_config_is_a_clear_error(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    h = Host(node_config(tmp_path, nats_server.url, providers={"keyvalue": {"backend": "floppy"}}))
    with pytest.raises(DrupeletError, match="provider 'keyvalue' failed to start.*'file' or 'memory'"):
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
    assert b.get("a") == b"old" and b.get("b") is None
    monkeypatch.undo()
    assert FileBucket("t", tmp_path / "t.json").get("a") == b"old"


def test_corrupt_bucket_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text("{not json")
    with pytest.raises(BackendIOError, match=f"cannot read bucket file {path}"):
        FileBucket("t", path)
