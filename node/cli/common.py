"""What the command modules share: the one-line error, ``KEY=VALUE`` options and the
lattice connection a remote command runs with.

Imports nothing heavy at module level: :func:`run_remote` brings in the lattice client
(and so nats-py) only when a remote command runs.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drupelet.node.lattice.client import LatticeClient
    from drupelet.node.lattice.latticedir import LatticeDir

DEFAULT_NATS = "nats://127.0.0.1:4222"
DEFAULT_LATTICE = "default"


class CliError(Exception):
    """A failure to report as one line and exit status 1; ``code`` is its ``error`` under ``--json``."""

    def __init__(self, message: str, *, code: str = "error") -> None:
        super().__init__(message)
        self.code = code


def lattice_dir(args: argparse.Namespace) -> LatticeDir | None:
    """The lattice directory of ``--lattice-dir`` (``DRUPELET_LATTICE_DIR``), or None."""
    path: Path | None = getattr(args, "lattice_dir", None)
    if path is None:
        return None
    from drupelet.node.lattice.latticedir import LatticeDir

    return LatticeDir.open(path)


def nats_url(args: argparse.Namespace) -> str:
    """The server a client command talks to: ``--nats``, ``DRUPELET_NATS``, the lattice
    directory's hub, else the local default."""
    url: str | None = args.nats
    if url:
        return url
    found = lattice_dir(args)
    return found.client_url if found is not None else DEFAULT_NATS


def lattice_name(args: argparse.Namespace) -> str:
    name: str | None = args.lattice
    if name:
        return name
    found = lattice_dir(args)
    return found.name if found is not None else DEFAULT_LATTICE


def connection(args: argparse.Namespace) -> dict[str, Any]:
    """How a client command connects: URL, lattice, credentials, CA and JetStream domain,
    each from its option, else from the lattice directory."""
    found = lattice_dir(args)
    creds: str | None = args.creds
    tls_ca: str | None = getattr(args, "tls_ca", None)
    if found is not None:
        creds = creds or str(found.admin_creds)
        tls_ca = tls_ca or str(found.ca)
    return {"url": args.nats or (found.client_url if found else DEFAULT_NATS),
            "lattice": args.lattice or (found.name if found else DEFAULT_LATTICE),
            "creds": creds, "tls_ca": tls_ca}


def pairs(items: list[str], what: str) -> dict[str, str]:
    """``["k=v", …]`` as a dict; :class:`CliError` naming the option ``what`` for an item without ``=``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{what} {item!r}: use KEY=VALUE")
        out[key] = value
    return out


def run_remote(args: argparse.Namespace, work: Callable[[LatticeClient], Awaitable[int]]) -> int:
    """Connect to the lattice the global options name, run ``work`` with the client, close it."""
    from drupelet.node.lattice.client import LatticeClient

    how = connection(args)

    async def connected() -> int:
        client = await LatticeClient.connect(how["url"], how["lattice"], creds=how["creds"], tls_ca=how["tls_ca"])
        async with client:
            return await work(client)

    return asyncio.run(connected())
