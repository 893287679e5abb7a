"""The artifact store: wasm by SHA-256 in a JetStream object store, with a verified disk cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import api

from drupelet.node.lattice.connect import close_quietly
from drupelet.node.lattice.artifacts import (ArtifactError, ArtifactInfo, ArtifactNotFound, ArtifactStore,
                                     ArtifactStoreUnavailable, ArtifactTooLarge, DigestMismatch, InvalidDigest,
                                     bucket_name, parse_digest)
from drupelet.node.errors import DrupeletError
from drupelet.node.lattice.errors import NatsUnavailable
from drupelet.node.lattice.natsserver import EmbeddedNatsServer, NatsServerConfig
from drupelet.node.runtime import read_component

WAT = Path(__file__).resolve().parent.parent / "actors" / "wat"
LATTICE = "test"
CHUNK = 128 * 1024  # nats-py's default object store chunk size


@pytest.fixture(scope="module")
def echo() -> bytes:
    return read_component(WAT / "echo.wat")


def big_wasm(size: int) -> bytes:
    """Bytes that pass put's wasm magic check and span several object store chunks."""
    header = b"\0asm\x0d\0\x01\0"
    return header + os.urandom(size - len(header))


def store(nc: NatsClient | None, tmp_path: Path, cache: str = "cache", **kw: int) -> ArtifactStore:
    return ArtifactStore(nc, LATTICE, tmp_path / cache, **kw)


# -- digests and names --------------------------------------------------------------


def test_parse_digest_accepts_prefixed_and_bare_hex() -> None:
    hexd = hashlib.sha256(b"x").hexdigest()
    assert parse_digest(hexd) == hexd
    assert parse_digest(hexd.upper()) == hexd
    assert parse_digest(f"sha256:{hexd}") == hexd
    assert parse_digest(f"SHA256:{hexd.upper()}") == hexd
    assert parse_digest(f"  sha256:{hexd}\n") == hexd


@pytest.mark.parametrize("text, says", [
    ("abc123", "6 hex digits"),
    ("sha256:abc123", "shortened digests are not accepted"),
    ("a" * 65, "65 hex digits"),
    ("g" * 64, "not a SHA-256 digest"),
    ("sha512:" + "a" * 64, "unsupported digest algorithm 'sha512'"),
    ("md5:" + "a" * 32, "unsupported digest algorithm"),
    ("", "not a SHA-256 digest"),
    ("sha256:", "not a SHA-256 digest"),
    ("sha256:" + "a" * 63 + " ", "63 hex digits"),
])
def test_parse_digest_rejects(text: str, says: str) -> None:
    with pytest.raises(InvalidDigest, match=says) as info:
        parse_digest(text)
    err = info.value
    assert isinstance(err, ArtifactError) and isinstance(err, ValueError) and isinstance(err, DrupeletError)
    assert err.text == text


def test_bucket_name() -> None:
    assert bucket_name("default") == "drupelet-default-artifacts"
    with pytest.raises(ValueError, match="lattice"):
        bucket_name("a.b")


def test_errors_carry_fields() -> None:
    mismatch = DigestMismatch("m", expected="a" * 64, actual="b" * 64)
    assert (mismatch.code, mismatch.expected, mismatch.actual, mismatch.digest) == ("digest-mismatch", "a" * 64,
                                                                                    "b" * 64, "a" * 64)
    missing = ArtifactNotFound("m", digest="c" * 64)
    assert isinstance(missing, LookupError) and missing.digest == "c" * 64 and missing.code == "artifact-not-found"
    assert ArtifactError("m").code == "artifact"
    down = ArtifactStoreUnavailable("m")
    assert isinstance(down, NatsUnavailable) and isinstance(down, ConnectionError)


# -- against a real nats-server -------------------------------------------------------


async def test_put_get_round_trip(nats_client: NatsClient, tmp_path: Path, echo: bytes) -> None:
    artifacts = store(nats_client, tmp_path)
    info = await artifacts.put(echo, name="echo")
    digest = hashlib.sha256(echo).hexdigest()
    assert info.digest == digest and info.ref == f"sha256:{digest}"
    assert info.size == len(echo) and info.name == "echo"
    assert info.created is not None
    assert info.to_json() == {"digest": digest, "size": len(echo), "name": "echo", "created": info.created}
    # put caches the bytes too
    assert artifacts.cache_path(digest) == tmp_path / "cache" / f"{digest}.wasm"
    assert artifacts.cache_path(digest).read_bytes() == echo
    assert await artifacts.get(f"sha256:{digest}") == echo

    # metadata other NATS clients can read
    obs = await nats_client.jetstream().object_store("drupelet-test-artifacts")
    obj = await obs.get_info(digest)
    assert obj.headers == {"Drupelet-Digest": [f"sha256:{digest}"], "Drupelet-Name": ["echo"]}
    status = await obs.status()
    assert status.storage_type == api.StorageType.FILE and status.replicas == 1

    assert await artifacts.info(digest) == info
    assert [a.digest for a in await artifacts.list()] == [digest]


async def test_put_is_idempotent(nats_client: NatsClient, tmp_path: Path, echo: bytes) -> None:
    artifacts = store(nats_client, tmp_path)
    first = await artifacts.put(echo, name="echo")
    calls: list[tuple[int, int]] = []
    again = await artifacts.put(echo, name="echo", progress=lambda s, t: calls.append((s, t)))
    assert again == first  # same object: same digest, size, name, stored time
    assert calls == [(len(echo), len(echo))]
    # a new name only updates the metadata
    renamed = await artifacts.put(echo, name="echo2")
    assert (renamed.digest, renamed.created, renamed.name) == (first.digest, first.created, "echo2")
    listed = await artifacts.list()
    assert [(a.digest, a.name) for a in listed] == [(first.digest, "echo2")]
    info = await nats_client.jetstream().stream_info("OBJ_drupelet-test-artifacts")
    # one chunk and one meta message for the artifact (nothing was uploaded twice), and the
    # same for each of the two names that point at it
    assert info.state.messages == 2 + 2 * 2


async def test_progress_reports_acknowledged_bytes(nats_client: NatsClient, tmp_path: Path) -> None:
    data = big_wasm(3 * CHUNK + 1000)
    calls: list[tuple[int, int]] = []
    info = await store(nats_client, tmp_path).put(data, progress=lambda s, t: calls.append((s, t)))
    total = len(data)
    assert info.size == total and info.name is None
    assert calls == [(0, total), (CHUNK, total), (2 * CHUNK, total), (3 * CHUNK, total), (total, total)]
    increments = [b[0] - a[0] for a, b in zip(calls, calls[1:])]
    assert sum(increments) == total and all(i > 0 for i in increments)


async def test_second_store_fetches_verifies_and_caches(nats_client: NatsClient, tmp_path: Path) -> None:
    data = big_wasm(2 * CHUNK + 7)
    digest = (await store(nats_client, tmp_path, "laptop").put(data, name="big")).digest
    pi = store(nats_client, tmp_path, "pi")
    assert not pi.cache_path(digest).exists()
    assert await pi.get(digest) == data
    assert pi.cache_path(digest).read_bytes() == data
    assert [p.name for p in (tmp_path / "pi").iterdir()] == [f"{digest}.wasm"]  # no temporary files left
    assert await pi.get(digest.upper()) == data


async def test_tampered_cache_is_refetched(nats_client: NatsClient, tmp_path: Path, echo: bytes,
                                           caplog: pytest.LogCaptureFixture) -> None:
    artifacts = store(nats_client, tmp_path)
    digest = (await artifacts.put(echo)).digest
    path = artifacts.cache_path(digest)
    path.write_bytes(echo[:-1] + b"\xff")
    assert await artifacts.get(digest) == echo
    assert path.read_bytes() == echo
    assert "is corrupt" in caplog.text


async def test_tampered_object_is_refused(nats_client: NatsClient, tmp_path: Path, echo: bytes) -> None:
    # Create the bucket the normal way, then put other bytes under echo's digest directly.
    await store(nats_client, tmp_path, "other").put(big_wasm(1000))
    digest = hashlib.sha256(echo).hexdigest()
    evil = echo + b"\0"
    obs = await nats_client.jetstream().object_store(bucket_name(LATTICE))
    await obs.put(digest, evil)

    artifacts = store(nats_client, tmp_path)
    with pytest.raises(DigestMismatch) as info:
        await artifacts.get(digest)
    assert info.value.expected == digest
    assert info.value.actual == hashlib.sha256(evil).hexdigest()
    assert not artifacts.cache_path(digest).exists()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())

    # Pushing the real bytes replaces the bad object.
    await artifacts.put(echo)
    assert await store(nats_client, tmp_path, "fresh").get(digest) == echo


async def test_cache_serves_with_the_server_down(nats_server: EmbeddedNatsServer, tmp_path: Path,
                                                 echo: bytes) -> None:
    nc = await nats.connect(nats_server.url, connect_timeout=5, allow_reconnect=False)
    # A node's client keeps reconnecting: its requests time out instead.
    reconnecting = await nats.connect(nats_server.url, connect_timeout=5, reconnect_time_wait=0.05)
    try:
        artifacts = store(nc, tmp_path)
        digest = (await artifacts.put(echo)).digest
        waiting = ArtifactStore(reconnecting, LATTICE, tmp_path / "cache", request_timeout_s=0.3)
        await nats_server.stop()
        assert await artifacts.get(digest) == echo
        assert await waiting.get(digest) == echo
        missing = hashlib.sha256(b"never pushed").hexdigest()
        with pytest.raises(ArtifactStoreUnavailable, match="connection is (closed|down)") as closed:
            await artifacts.get(missing)
        assert closed.value.digest == missing
        timed_out = f"did not answer in time .*NATS at {nats_server.url}.*JetStream enabled"
        with pytest.raises(ArtifactStoreUnavailable, match=timed_out):
            await waiting.get(missing)
        # a store that never reached NATS still reads the same cache
        offline = store(None, tmp_path)
        assert await offline.get(digest) == echo
        with pytest.raises(ArtifactStoreUnavailable, match="no NATS connection"):
            await offline.get(missing)
        with pytest.raises(ArtifactStoreUnavailable):
            await offline.put(echo)
        with pytest.raises(ArtifactStoreUnavailable):
            await offline.list()
    finally:
        await close_quietly(nc)
        await close_quietly(reconnecting)


async def test_jetstream_disabled_is_a_clear_error(tmp_path: Path, echo: bytes) -> None:
    async with EmbeddedNatsServer(NatsServerConfig(jetstream=False)) as server:
        nc = await nats.connect(server.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            with pytest.raises(ArtifactStoreUnavailable, match="no JetStream server answered .*JetStream enabled"):
                await store(nc, tmp_path).put(echo)
        finally:
            await nc.close()


async def test_not_found(nats_client: NatsClient, tmp_path: Path, echo: bytes) -> None:
    artifacts = store(nats_client, tmp_path)
    unknown = hashlib.sha256(b"nope").hexdigest()
    with pytest.raises(ArtifactNotFound) as info:  # no bucket yet
        await artifacts.get(unknown)
    assert info.value.digest == unknown
    assert await artifacts.list() == []
    await artifacts.put(echo)
    with pytest.raises(ArtifactNotFound, match=f"sha256:{unknown}"):
        await artifacts.get(unknown)
    with pytest.raises(ArtifactNotFound):
        await artifacts.info(unknown)
    with pytest.raises(InvalidDigest):
        await artifacts.get("abc")


async def test_delete(nats_client: NatsClient, tmp_path: Path, echo: bytes) -> None:
    artifacts = store(nats_client, tmp_path)
    kept = await artifacts.put(big_wasm(500), name="kept")
    gone = await artifacts.put(echo, name="gone")
    await artifacts.delete(f"sha256:{gone.digest}")
    assert not artifacts.cache_path(gone.digest).exists()
    assert [a.digest for a in await artifacts.list()] == [kept.digest]
    with pytest.raises(ArtifactNotFound):
        await artifacts.get(gone.digest)
    with pytest.raises(ArtifactNotFound):
        await artifacts.delete(gone.digest)


async def test_max_bytes(nats_client: NatsClient, tmp_path: Path) -> None:
    data = big_wasm(2000)
    small = store(nats_client, tmp_path, max_bytes=1000)
    with pytest.raises(ArtifactTooLarge, match="2000 bytes, more than the limit of 1000") as info:
        await small.put(data)
    assert (info.value.size, info.value.limit) == (2000, 1000)
    digest = (await store(nats_client, tmp_path, "big").put(data)).digest
    with pytest.raises(ArtifactTooLarge):  # nor is it fetched
        await small.get(digest)
    assert not small.cache_path(digest).exists()


async def test_put_refuses_what_is_not_wasm(nats_client: NatsClient, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a WebAssembly binary"):
        await store(nats_client, tmp_path).put(b"hello")


def test_artifact_info_json() -> None:
    info = ArtifactInfo(digest="a" * 64, size=3)
    assert info.to_json() == {"digest": "a" * 64, "size": 3, "name": None, "created": None}


async def test_jetstream_domain(tmp_path: Path, echo: bytes) -> None:
    config = NatsServerConfig(jetstream=True, jetstream_domain="hub", store_dir=tmp_path / "nats")
    async with EmbeddedNatsServer(config) as server:
        nc = await nats.connect(server.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            digest = (await ArtifactStore(nc, LATTICE, tmp_path / "a", domain="hub").put(echo)).digest
            assert await ArtifactStore(nc, LATTICE, tmp_path / "b", domain="hub").get(digest) == echo
            with pytest.raises(ArtifactStoreUnavailable, match="in JetStream domain 'elsewhere'"):
                await ArtifactStore(nc, LATTICE, tmp_path / "c", domain="elsewhere").get(digest)
        finally:
            await nc.close()


async def test_a_name_points_at_its_last_push_even_for_bytes_already_stored(nats_client: NatsClient,
                                                                           tmp_path: Path) -> None:
    from drupelet.node.lattice.artifacts import resolve_ref

    store = ArtifactStore(nats_client, "test", tmp_path / "cache")
    echo = read_component(WAT / "echo.wat")
    noop = read_component(WAT / "noop.wat")
    await store.put(echo, name="x")
    await store.put(noop, name="x")
    assert await resolve_ref(store, "x") == noop
    await store.put(echo, name="x")  # already stored: only the name moves
    assert await resolve_ref(store, "x") == echo
    await store.put(echo, name="also-echo")
    assert await resolve_ref(store, "also-echo") == echo and await resolve_ref(store, "x") == echo
    # the names are objects of their own, not artifacts
    assert {i.digest for i in await store.list()} == {hashlib.sha256(echo).hexdigest(), hashlib.sha256(noop).hexdigest()}
