"""``drupelet link put|del|list``: the lattice's links, which every node follows.

``link put`` checks the link against what the lattice's nodes answer before it puts it:
a provider no node has is refused (the message names those that exist); a node that
does not answer, or an actor no node runs, is only a warning, since nodes can be offline
and actors can start later. A signed actor that a node runs must have caps that cover the
interface (the node that runs it refuses the link too, but only in its log and events). It
says which existing links the put replaced.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from drupelet.node.cli.common import CliError, pairs, run_remote
from drupelet.node.cli.output import emit, key_values, links_table

if TYPE_CHECKING:
    from drupelet.node.lattice.client import LatticeClient


def put(args: argparse.Namespace) -> int:
    payload = {"source": args.source, "interface": args.interface, "target": args.target,
               "config": pairs(args.config, "--config")}
    return run_remote(args, lambda client: _put(args, client, payload))


def delete(args: argparse.Namespace) -> int:
    payload = {"source": args.source, "interface": args.interface}
    return run_remote(args, lambda client: _request(args, client, "link.del", payload, "deleted "))


def list_links(args: argparse.Namespace) -> int:
    return run_remote(args, lambda client: _request(args, client, "link.list", {}, ""))


def warn(message: str) -> None:
    print(f"drupelet: warning: {message}", file=sys.stderr, flush=True)


async def check_target(client: LatticeClient, source: str, interface: str, target: str) -> list[str]:
    """The warnings for a link from ``source``'s ``interface`` to ``target``; :class:`CliError`
    for a provider that no answering node has (code ``no-provider``) and for an interface the
    caps of a node's signed ``source`` do not cover (code ``caps``)."""
    nodes = await client.ping()
    if not nodes:
        return [f"no node answered in lattice {client.lattice!r}: the link is put unchecked"]
    node, sep, provider = target.partition("/")
    if not sep or not node or not provider:
        raise CliError(f"link target {target!r}: use local/<provider> or <node>/<provider>", code="bad-request")
    providers = {n["name"]: set(n.get("providers", [])) for n in nodes}
    existing = ", ".join(f"{name}/{p}" for name in sorted(providers) for p in sorted(providers[name])) or "none"
    warnings = []
    if node == "local" or node not in providers:
        if not any(provider in have for have in providers.values()):
            raise CliError(f"no node has a provider named {provider!r} (providers: {existing}; "
                           "use local/<provider> or <node>/<provider>)", code="no-provider")
        if node != "local":
            warnings.append(f"no node named {node!r} answered (nodes: {', '.join(sorted(providers))}); "
                            "the link waits for it")
    elif provider not in providers[node]:
        raise CliError(f"node {node!r} has no provider named {provider!r} (providers: {existing})",
                       code="no-provider")
    running: set[str] = set()
    for n in nodes:
        for actor in await client.node(n["name"], "actor.list"):
            running.add(actor["name"])
            if actor["name"] == source:
                check_caps(n["name"], actor, interface)
    if source not in running:
        warnings.append(f"no node runs an actor named {source!r} (actors: {', '.join(sorted(running)) or 'none'}); "
                        "the link applies when it starts")
    return warnings


def check_caps(node: str, actor: dict[str, Any], interface: str) -> None:
    """:class:`CliError` when ``actor`` (from ``node``'s ``actor.list``) is signed and its
    caps cover no part of ``interface`` (an interface, or a package of them)."""
    from drupelet.node.security.policy import caps_allow, normalize_cap

    if not actor.get("signed"):
        return
    caps = [str(c) for c in actor.get("caps") or []]
    base = interface.partition("@")[0]
    covered = caps_allow(caps, base) or ("/" not in base and any(
        normalize_cap(c).startswith(base + "/") for c in caps))
    if not covered:
        raise CliError(f"{actor['name']} on node {node}: a link would give it {base}, which its claims do not "
                       f"allow (they allow: {', '.join(caps) or 'no caps'})", code="caps")


async def _put(args: argparse.Namespace, client: LatticeClient, payload: dict[str, Any]) -> int:
    warnings = await check_target(client, args.source, args.interface, args.target)
    before = {(l["source"], l["interface"]): l for l in await client.lattice_request("link.list", {})}
    links = await client.lattice_request("link.put", payload)
    for message in warnings:  # only once the put is done: a refused put is its one error line
        warn(message)
    replaced = []
    for link in links:
        old = before.get((link["source"], link["interface"]))
        if old is not None and (old["target"], old["config"]) != (link["target"], link["config"]):
            replaced.append(f"{old['interface']} was {old['target']}"
                            + (f" ({key_values(old['config'])})"
                               if old["config"] else ""))
    text = f"put {len(links)} link(s)"
    if replaced:
        text += f", replacing {len(replaced)}: " + "; ".join(replaced)
    emit(args, links, text + "\n" + links_table(links))
    return 0


async def _request(args: argparse.Namespace, client: LatticeClient, verb: str, payload: dict[str, Any],
                   done: str) -> int:
    """Send ``verb``; the reply is the links it concerns: a count (after ``done``), then the table."""
    links = await client.lattice_request(verb, payload)
    emit(args, links, (f"{done}{len(links)} link(s)\n" if done else "") + links_table(links))
    return 0
