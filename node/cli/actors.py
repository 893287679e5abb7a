"""``drupelet actor start|stop|scale|list`` and ``drupelet push``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drupelet.node.cli.common import CliError, pairs, run_remote
from drupelet.node.cli.output import SIGNER_HEADERS, emit, signer, table, to_json

if TYPE_CHECKING:
    from drupelet.node.lattice.client import LatticeClient

START_TIMEOUT_S = 120.0
"""How long ``actor start`` waits for each node: a start may compile the component."""


def start(args: argparse.Namespace) -> int:
    return run_remote(args, lambda client: _start(args, client))


def stop(args: argparse.Namespace) -> int:
    return run_remote(args, lambda client: _change(args, client, "stop", {"name": args.name}))


def scale(args: argparse.Namespace) -> int:
    return run_remote(args, lambda client: _change(args, client, "scale",
                                                   {"name": args.name, "instances": args.instances}))


def list_actors(args: argparse.Namespace) -> int:
    return run_remote(args, lambda client: _list(args, client))


def push(args: argparse.Namespace) -> int:
    return run_remote(args, lambda client: _push(args, client))


async def _start(args: argparse.Namespace, client: LatticeClient) -> int:
    from drupelet.node.lattice.protocol import DIGEST

    nodes = await client.select(args.node, pairs(args.label, "--label"))
    payload: dict[str, Any] = {"name": args.name, "instances": args.instances,
                               "config": pairs(args.config, "--config")}
    payload["digest" if DIGEST.match(args.ref) else "reference"] = args.ref.removeprefix("sha256:")
    return await _on_each(args, client, nodes, "start", payload)


async def _change(args: argparse.Namespace, client: LatticeClient, verb: str, payload: dict[str, Any]) -> int:
    """``stop`` or ``scale`` on the chosen nodes; with none chosen, on every node running the actor."""
    labels = pairs(args.label, "--label")
    if args.node or labels:
        nodes = await client.select(args.node, labels)
    else:
        nodes = [n["name"] for n in await client.ping() if args.name in await _actor_names(client, n["name"])]
    if not nodes:
        raise CliError(f"no node runs an actor named {args.name!r}")
    return await _on_each(args, client, nodes, verb, payload)


async def _on_each(args: argparse.Namespace, client: LatticeClient, nodes: list[str], verb: str,
                   payload: dict[str, Any]) -> int:
    """Send ``actor.<verb>`` to each node in turn; a line per node as it answers."""
    results = []
    for node in nodes:
        # a node starts, stops or scales the actor; this client, an admin's, records it in
        # the lattice state (the node follows the record, and restores it after a restart)
        if verb == "start":
            result = await client.start_actor(node, payload, timeout_s=START_TIMEOUT_S)
        elif verb == "stop":
            result = await client.stop_actor(node, payload["name"])
        else:
            result = await client.scale_actor(node, payload["name"], payload["instances"])
        results.append({"node": node, "result": result})
        if not args.json:
            detail = f" ({result['instances']} instance(s), {result['digest'][:12]})" if result else ""
            print(f"{verb} {args.name} on {node}: ok{detail}", flush=True)
    if args.json:
        print(to_json(results))
    return 0


async def _list(args: argparse.Namespace, client: LatticeClient) -> int:
    rows, data = [], []
    for n in await client.ping():
        for a in await client.node(n["name"], "actor.list"):
            data.append(a | {"node": n["name"]})
            rows.append([n["name"], a["name"], str(a["instances"]), a["digest"][:12], str(a["calls"]),
                         str(a["traps"]), str(a.get("logs_dropped", 0)), *signer(a)])
    emit(args, data, table(rows, ["node", "actor", "instances", "digest", "calls", "traps", "logs dropped",
                                  *SIGNER_HEADERS]))
    return 0


async def _actor_names(client: LatticeClient, node: str) -> list[str]:
    return [a["name"] for a in await client.node(node, "actor.list")]


async def _push(args: argparse.Namespace, client: LatticeClient) -> int:
    from drupelet.node.lattice.artifacts import ArtifactStore
    from drupelet.node.runtime import read_component

    try:
        data = read_component(args.file)
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    name = args.name or args.file.name.removesuffix(".wasm").removesuffix(".wat")
    tty = sys.stderr.isatty() and not args.json

    def progress(sent: int, total: int) -> None:
        if tty:
            width = 30
            done = int(width * sent / total) if total else width
            sys.stderr.write(f"\rpushing {args.file.name} [{'#' * done}{' ' * (width - done)}] "
                             f"{sent / 1e6:.1f}/{total / 1e6:.1f} MB")
            sys.stderr.flush()

    store = ArtifactStore(client.nc, client.lattice, user_cache() / "artifacts", domain=args.domain)
    client.check_artifact_write("push")
    info = await store.put(data, name=name, progress=progress)
    if tty:
        sys.stderr.write("\n")
    emit(args, dict(sorted(info.to_json().items())), f"{info.ref}  {name}  {info.size / 1e6:.1f} MB", one_line=True)
    return 0


def user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "drupelet"
