"""``drupelet nodes``, ``inventory``, ``logs [-f]`` and ``events -f``: what the lattice holds and does."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from drupelet.node.cli.common import run_remote
from drupelet.node.cli.output import emit, inventory_text, nodes_table

if TYPE_CHECKING:
    from drupelet.node.lattice.client import LatticeClient

EVENT_FIELDS = ("actor", "provider", "source", "interface", "target", "code", "message", "instances")
"""The fields of an event's data that ``events -f`` shows without ``--json``."""


def nodes(args: argparse.Namespace) -> int:
    return run_remote(args, lambda client: _nodes(args, client))


def inventory(args: argparse.Namespace) -> int:
    return run_remote(args, lambda client: _inventory(args, client))


def logs(args: argparse.Namespace) -> int:
    if not args.follow:
        return run_remote(args, lambda client: _recent(args, client))
    return run_remote(args, lambda client: _follow(args, client, logs=True))


def events(args: argparse.Namespace) -> int:
    return run_remote(args, lambda client: _follow(args, client, logs=False))


async def _nodes(args: argparse.Namespace, client: LatticeClient) -> int:
    found = await client.ping()
    emit(args, found, nodes_table(found))
    return 0


async def _inventory(args: argparse.Namespace, client: LatticeClient) -> int:
    names = [args.node] if args.node else [n["name"] for n in await client.ping()]
    invs = [await client.node(name, "inventory") for name in names]
    emit(args, invs[0] if args.node else invs, "\n\n".join(inventory_text(i) for i in invs))
    return 0


def log_line(doc: dict[str, Any]) -> str:
    """An actor log record as one line: ``HH:MM:SS node/actor LEVEL context: message`` (local time)."""
    context = f"{doc.get('context')}: " if doc.get("context") else ""
    stamp = doc.get("time")
    when = time.strftime("%H:%M:%S ", time.localtime(stamp)) if isinstance(stamp, (int, float)) else ""
    return (f"{when}{doc.get('node')}/{doc.get('actor')} {doc.get('level', '').upper():5} "
            f"{context}{doc.get('message')}")


async def _recent(args: argparse.Namespace, client: LatticeClient) -> int:
    """The last ``--lines`` lines the nodes' actors logged (of ``--actor``), oldest first."""
    names = [args.node] if args.node else [n["name"] for n in await client.ping()]
    request = {"lines": args.lines, **({"actor": args.actor} if args.actor else {})}
    found: list[dict[str, Any]] = []
    for name in names:
        found.extend(await client.node(name, "logs.recent", request))
    found = sorted(found, key=lambda d: float(d.get("time") or 0))[-args.lines:]
    emit(args, found, "\n".join(log_line(d) for d in found) if found else "no log lines kept on "
         f"{'node ' + args.node if args.node else 'any node'}{' for actor ' + args.actor if args.actor else ''}")
    return 0


def event_line(doc: dict[str, Any]) -> str:
    """A CloudEvent as one line: time, source, type and the telling fields of its data."""
    data = doc.get("data") or {}
    brief = {k: v for k, v in data.items() if k in EVENT_FIELDS}
    return (f"{doc.get('time', '')} {doc.get('source', '')} {doc.get('type', '').removeprefix('dev.drupelet.')} "
            f"{json.dumps(brief, sort_keys=True) if brief else ''}").rstrip()


async def _follow(args: argparse.Namespace, client: LatticeClient, *, logs: bool) -> int:
    """Print each log record or event until interrupted; :class:`LatticeError` when the connection goes."""
    from drupelet.node.lattice import subjects

    subject = subjects.logs_all(client.lattice) if logs else subjects.events_all(client.lattice)
    async for msg in client.stream(subject):
        try:
            doc = json.loads(msg.data)
        except ValueError:
            continue
        if logs and args.actor and doc.get("actor") != args.actor:
            continue
        emit(args, doc, log_line(doc) if logs else event_line(doc), one_line=True)
    return 0
