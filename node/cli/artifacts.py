"""``drupelet artifacts list|rm``: the lattice's artifact store, as ``drupelet push`` fills it."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from drupelet.node.cli.common import run_remote
from drupelet.node.cli.output import emit, table

if TYPE_CHECKING:
    from drupelet.node.lattice.artifacts import ArtifactStore
    from drupelet.node.lattice.client import LatticeClient


def list_artifacts(args: argparse.Namespace) -> int:
    return run_remote(args, lambda client: _list(args, client))


def remove(args: argparse.Namespace) -> int:
    return run_remote(args, lambda client: _remove(args, client))


def _store(args: argparse.Namespace, client: LatticeClient) -> ArtifactStore:
    from drupelet.node.cli.actors import user_cache
    from drupelet.node.lattice.artifacts import ArtifactStore

    return ArtifactStore(client.nc, client.lattice, user_cache() / "artifacts", domain=args.domain)


async def _running(client: LatticeClient) -> dict[str, list[str]]:
    """Which ``node/actor`` runs each digest, on the nodes that answer now."""
    out: dict[str, list[str]] = {}
    for node in await client.ping():
        for actor in await client.node(node["name"], "actor.list"):
            out.setdefault(actor["digest"], []).append(f"{node['name']}/{actor['name']}")
    return out


async def _list(args: argparse.Namespace, client: LatticeClient) -> int:
    found = await _store(args, client).list()
    running = await _running(client)
    docs: list[dict[str, Any]] = [{**a.to_json(), "running": sorted(running.get(a.digest, []))} for a in found]
    rows = [[a.ref[:19], a.name or "-", f"{a.size / 1e6:.1f} MB",
             time.strftime("%Y-%m-%d %H:%M", time.localtime(a.created)) if a.created else "-",
             ", ".join(d["running"]) or "-"] for a, d in zip(found, docs, strict=True)]
    emit(args, docs, table(rows, ["digest", "name", "size", "pushed", "running"]) if rows else
         f"no artifacts in lattice {client.lattice}'s store")
    return 0


async def _remove(args: argparse.Namespace, client: LatticeClient) -> int:
    from drupelet.node.lattice.artifacts import format_digest, parse_digest
    from drupelet.node.lattice.errors import ArtifactNotFound, InvalidDigest

    store = _store(args, client)
    client.check_artifact_write("artifacts rm")
    try:
        digest = parse_digest(args.ref)
    except InvalidDigest:
        named = await store.ref(args.ref)
        if named is None:
            raise ArtifactNotFound(f"no artifact was pushed with the name {args.ref!r}; "
                                   "`drupelet artifacts list` shows what is stored", digest="") from None
        digest = named
    await store.delete(digest)
    users = sorted((await _running(client)).get(digest, []))
    still = (f"; still running as {', '.join(users)} (those nodes keep their cached copy, but a node that "
             "restarts without one cannot start it)") if users else ""
    emit(args, {"digest": digest, "running": users}, f"removed {format_digest(digest)}{still}")
    return 0
