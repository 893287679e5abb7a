"""The README's laptop recipe: a hub from the shipped template, ``drupelet up --hub`` as a
leaf node beside it, and a provider call from the hub side to the leaf node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nats

from drupelet.node.lattice import subjects
from drupelet.node.lattice.natsserver import free_port
from drupelet.node.lattice.protocol import decode, encode
from test_cli import LATTICE, READY_TIMEOUT_S, Node, env, run, stop_node
from test_templates import connect, render, server, with_ports
from waiting import wait_for

LEAF_NAME = "pi-1"


def start_leaf_node(directory: Path, hub_leaf_port: int) -> Node:
    """``drupelet up --name pi-1 --hub nats-leaf://127.0.0.1:PORT`` (its own server on a free port)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "node.toml"
    config.write_text(f'[node]\nlattice = "{LATTICE}"\ndata_dir = "{directory / "data"}"\n\n'
                      f"[nats]\nembedded_port = {port}\n", encoding="utf-8")
    log = directory / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "drupelet.node.cli", "up", "--config", str(config),
                                 "--name", LEAF_NAME, "--hub", f"nats-leaf://127.0.0.1:{hub_leaf_port}"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env())
    return Node(proc, port, log)


def call(op: str, args: list[object], handle: int | None = None) -> bytes:
    return json.dumps({"source": "counter", "interface": "wasi:keyvalue/store", "op": op,
                       "args": encode(args), "handle": handle}).encode()


async def provider_call(nc: nats.aio.client.Client, op: str, args: list[object], handle: int | None = None) -> object:
    msg = await nc.request(subjects.provider_calls(LATTICE, LEAF_NAME, "keyvalue", "laptop"), call(op, args, handle),
                           timeout=5)
    reply = json.loads(msg.data)
    assert reply["ok"], reply
    return decode(reply.get("result"))


async def test_a_leaf_node_beside_the_hub_template_answers_calls_from_the_hub_side(tmp_path: Path) -> None:
    hub_port, hub_leaf_port = free_port(), free_port()
    hub_conf = with_ports(render("nats-hub.conf.in", STORE_DIR=str(tmp_path / "hub")), hub_port, hub_leaf_port)
    hub_url = f"nats://127.0.0.1:{hub_port}"
    with server(tmp_path / "hub.conf", hub_conf):
        on_hub = await connect(hub_port)
        leaf = start_leaf_node(tmp_path / "leaf", hub_leaf_port)
        try:
            def seen_from_the_hub() -> bool:
                assert leaf.proc.poll() is None, leaf.stderr()
                return run("--nats", hub_url, "--lattice", LATTICE, "inventory", LEAF_NAME).returncode == 0
            wait_for(seen_from_the_hub, READY_TIMEOUT_S, "the leaf node to answer through the hub")

            # the leaf node's own server has its own JetStream domain, named after the node
            on_leaf = await connect(leaf.port)
            try:
                assert (await on_leaf.jetstream().account_info()).domain == LEAF_NAME
            finally:
                await on_leaf.close()

            # a link put from the hub side (into the lattice state on the hub's domain) ...
            put = run("--nats", hub_url, "--lattice", LATTICE, "link", "put", "counter", "wasi:keyvalue",
                      f"{LEAF_NAME}/keyvalue")
            assert put.returncode == 0, put.stderr

            # ... lets a caller on the hub use the leaf node's keyvalue provider
            def linked() -> bool:
                return "counter" in run("--nats", hub_url, "--lattice", LATTICE, "inventory", LEAF_NAME).stdout
            wait_for(linked, READY_TIMEOUT_S, "the leaf node to follow the link put on the hub")
            bucket = await provider_call(on_hub, "open", [""])
            assert isinstance(bucket, dict) and isinstance(bucket.get("$h"), int), bucket
            await provider_call(on_hub, "handle.set", ["visits", b"3"], bucket["$h"])
            assert await provider_call(on_hub, "handle.get", ["visits"], bucket["$h"]) == b"3"
        finally:
            await on_hub.close()
            stop_node(leaf)
        assert leaf.proc.returncode == 0, leaf.stderr()
        assert f"a leaf of the hub nats-leaf://127.0.0.1:{hub_leaf_port} (JetStream domain {LEAF_NAME})" \
            in leaf.stderr()


def test_up_refuses_a_hub_url_it_cannot_use_in_one_line(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    for args, message in ((["--hub", "http://127.0.0.1:7422"], "is not a hub's leafnode URL"),
                          (["--hub", "nats-leaf://127.0.0.1"], "is not a hub's leafnode URL"),
                          (["--hub", "nats-leaf://127.0.0.1:7422", "--nats", "nats://127.0.0.1:4222"],
                           "with nats.url (or --nats) set"),
                          (["--hub", "nats-leaf://127.0.0.1:7422", "--demo"], "leave out --hub (or nats.hub_url)")):
        proc = run("up", "--data-dir", data, *args)
        assert proc.returncode == 1, proc
        assert message in proc.stderr and "hub_url" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
