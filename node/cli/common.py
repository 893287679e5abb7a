"""What the command modules share: the one-line error, ``KEY=VALUE`` options and the
lattice connection a remote command runs with.

Imports nothing heavy at module level: :func:`run_remote` brings in the lattice client
(and so nats-py) only when a remote command runs.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drupelet.node.lattice.client import LatticeClient

DEFAULT_NATS = "nats://127.0.0.1:4222"
DEFAULT_LATTICE = "default"


class CliError(Exception):
    """A failure to report as one line and exit status 1; ``code`` is its ``error`` under ``--json``."""

    def __init__(self, message: str, *, code: str = "error") -> None:
        super().__init__(message)
        self.code = code


def nats_url(args: argparse.Namespace) -> str:
    """The server a client command talks to: ``--nats``, ``DRUPELET_NATS``, else the local default."""
    url: str | None = args.nats
    return url or DEFAULT_NATS


def lattice_name(args: argparse.Namespace) -> str:
    name: str | None = args.lattice
    return name or DEFAULT_LATTICE


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

    async def connected() -> int:
        client = await LatticeClient.connect(nats_url(args), lattice_name(args), creds=args.creds)
        async with client:
            return await work(client)

    return asyncio.run(connected())
