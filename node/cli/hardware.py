"""``drupelet display snapshot`` and ``drupelet gpio simulate``: a node's hardware, through its control interface."""

from __future__ import annotations

import argparse
import base64
from typing import TYPE_CHECKING

from drupelet.node.cli.common import CliError, run_remote
from drupelet.node.cli.output import emit

if TYPE_CHECKING:
    from drupelet.node.lattice.client import LatticeClient


def display_snapshot(args: argparse.Namespace) -> int:
    return run_remote(args, lambda client: _snapshot(args, client))


def gpio_simulate(args: argparse.Namespace) -> int:
    return run_remote(args, lambda client: _simulate(args, client))


async def _snapshot(args: argparse.Namespace, client: LatticeClient) -> int:
    result = await client.node(args.node, "display.snapshot", {"provider": args.provider})
    png = base64.b64decode(result["png"])
    try:
        args.output.write_bytes(png)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror}") from None
    emit(args, {"node": args.node, "file": str(args.output), "bytes": len(png)},
         f"wrote {args.output} ({len(png)} bytes) from node {args.node}'s display")
    return 0


async def _simulate(args: argparse.Namespace, client: LatticeClient) -> int:
    await client.node(args.node, "gpio.simulate", {"pin": args.pin, "level": args.level == "high"})
    emit(args, {"node": args.node, "pin": args.pin, "level": args.level},
         f"node {args.node}: simulated pin {args.pin} is {args.level}")
    return 0
