"""The shipped nats-server templates make a working hub and leaf."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import nats

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from drupelet.node.lattice.natsserver import free_port, nats_server_binary

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"


def render(name: str, **values: str) -> str:
    """The template with ``values`` filled in; a line whose placeholder is given as "" is left
    out, as its comments say to do with an unused one (and firstboot does)."""
    text = (SYSTEMD / name).read_text()
    for key, value in values.items():
        if value == "":
            text = "\n".join(line for line in text.splitlines() if f"@{key}@" not in line or line.lstrip().startswith("#"))
        text = text.replace(f"@{key}@", value)
    assert not re.search(r"@[A-Z_]+@", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    return text


def listens(text: str) -> dict[str, tuple[str, int]]:
    """Where a rendered template listens: ``{"client": (host, port), "leafnodes": (host, port)}``."""
    out: dict[str, tuple[str, int]] = {}
    for block, body in (("client", text.split("\nleafnodes {")[0]), ("leafnodes", text.partition("\nleafnodes {")[2])):
        indent = "" if block == "client" else "  "
        port = re.search(rf"^{indent}port: (\d+)$", body, re.M)
        host = re.search(rf'^{indent}host: "([^"]+)"$', body, re.M)
        if port:
            out[block] = (host.group(1) if host else "0.0.0.0", int(port.group(1)))
    return out


def with_ports(text: str, client: int, leaf: int | None = None) -> str:
    """Free ports instead of the shipped ones (the templates already listen on loopback only)."""
    text = re.sub(r"^port: \d+$", f"port: {client}", text, count=1, flags=re.M)
    return re.sub(r"^  port: \d+$", f"  port: {leaf}", text, count=1, flags=re.M) if leaf else text


def test_the_hub_and_leaf_templates_fit_on_one_machine_and_listen_on_loopback_only() -> None:
    hub = listens(render("nats-hub.conf.in", STORE_DIR="/tmp/hub"))
    leaf = listens(render("nats-leaf.conf.in", NODE="pi-1", HUB_URL="nats-leaf://127.0.0.1:7422", CREDS="", CA="",
                          STORE_DIR="/tmp/leaf"))
    assert {host for host, _ in (*hub.values(), *leaf.values())} == {"127.0.0.1"}, (hub, leaf)
    ports = [port for _, port in (*hub.values(), *leaf.values())]
    assert len(ports) == len(set(ports)) == 3, (hub, leaf)  # hub clients, hub leaves, leaf clients
    assert leaf["client"][1] == 4222  # where the node on a Pi (and `drupelet up --hub`) listens


async def test_leaf_template_joins_the_hub_template(tmp_path: Path) -> None:
    hub_port, hub_leaf_port, leaf_port = free_port(), free_port(), free_port()
    hub_conf = with_ports(render("nats-hub.conf.in", STORE_DIR=str(tmp_path / "hub")), hub_port, hub_leaf_port)
    leaf_text = render("nats-leaf.conf.in", NODE="pi-1", HUB_URL=f"nats-leaf://127.0.0.1:{hub_leaf_port}",
                       CREDS="", CA="", STORE_DIR=str(tmp_path / "leaf"))
    leaf_conf = with_ports(leaf_text.replace('      credentials: ""\n', ""), leaf_port)
    # the templates are whole configs: run nats-server on them as they are (ports moved to free ones)
    with server(tmp_path / "hub.conf", hub_conf), server(tmp_path / "leaf.conf", leaf_conf):
        on_hub = await connect(hub_port)
        on_leaf = await connect(leaf_port)
        try:
            assert await across(on_leaf, on_hub, b"from the pi") == b"from the pi"
            info = await on_leaf.jetstream().account_info()
            assert info.domain == "pi-1"
            hub_info = await on_leaf.jetstream(domain="hub").account_info()
            assert hub_info.domain == "hub"
        finally:
            await on_hub.close()
            await on_leaf.close()


async def across(on_leaf: nats.aio.client.Client, on_hub: nats.aio.client.Client, body: bytes) -> bytes:
    """Publish on the leaf until a hub subscriber gets it (the leaf connection comes up
    within a second or so); the body the hub received."""
    sub = await on_hub.subscribe("drupelet.test.across")
    await on_hub.flush()
    for _ in range(100):
        await on_leaf.publish("drupelet.test.across", body)
        try:
            return bytes((await sub.next_msg(timeout=0.1)).data)
        except nats.errors.TimeoutError:
            await asyncio.sleep(0.05)
    raise AssertionError("no message crossed from the leaf to the hub")


@contextmanager
def server(path: Path, text: str) -> Iterator[subprocess.Popen[bytes]]:
    path.write_text(text)
    proc = subprocess.Popen([str(nats_server_binary()), "-c", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


async def connect(port: int) -> nats.aio.client.Client:
    for _ in range(100):  # bounded: the server is up within a second
        try:
            return await nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=1, max_reconnect_attempts=0,
                                      allow_reconnect=False)
        except Exception:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nats-server on port {port} did not start")
