"""``drupelet link put|del|list``: the lattice's links, which every node follows."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from drupelet.node.cli.common import pairs, run_remote
from drupelet.node.cli.output import emit, links_table

if TYPE_CHECKING:
    from drupelet.node.lattice.client import LatticeClient


def put(args: argparse.Namespace) -> int:
    payload = {"source": args.source, "interface": args.interface, "target": args.target,
               "config": pairs(args.config, "--config")}
    return run_remote(args, lambda client: _request(args, client, "link.put", payload, "put "))


def delete(args: argparse.Namespace) -> int:
    payload = {"source": args.source, "interface": args.interface}
    return run_remote(args, lambda client: _request(args, client, "link.del", payload, "deleted "))


def list_links(args: argparse.Namespace) -> int:
    return run_remote(args, lambda client: _request(args, client, "link.list", {}, ""))


async def _request(args: argparse.Namespace, client: LatticeClient, verb: str, payload: dict[str, Any],
                   done: str) -> int:
    """Send ``verb``; the reply is the links it concerns: a count (after ``done``), then the table."""
    links = await client.lattice_request(verb, payload)
    emit(args, links, (f"{done}{len(links)} link(s)\n" if done else "") + links_table(links))
    return 0
