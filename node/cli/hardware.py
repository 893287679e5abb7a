"""``drupelet display snapshot`` and ``drupelet gpio simulate|read|write|pins``: a node's hardware, through its
control interface."""

from __future__ import annotations

import argparse
import base64
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from drupelet.node.cli.common import CliError, run_remote
from drupelet.node.cli.output import emit, level_text
from drupelet.node.cli.pinout import pinout

if TYPE_CHECKING:
    from drupelet.node.lattice.client import LatticeClient


def _remote(work: Callable[[argparse.Namespace, LatticeClient], Awaitable[int]]) -> Callable[[argparse.Namespace], int]:
    """A command's handler: ``work`` with the lattice client the global options name."""
    def handler(args: argparse.Namespace) -> int:
        return run_remote(args, lambda client: work(args, client))
    return handler


async def _snapshot(args: argparse.Namespace, client: LatticeClient) -> int:
    result = await client.node(args.node, "display.snapshot", {"provider": args.provider})
    png = base64.b64decode(result["png"])
    if args.scale != 1:
        png = _scaled(png, args.scale)
    try:
        args.output.write_bytes(png)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror}") from None
    emit(args, {"node": args.node, "file": str(args.output), "bytes": len(png)},
         f"wrote {args.output} ({len(png)} bytes) from node {args.node}'s display")
    return 0


def _scaled(png: bytes, scale: int) -> bytes:
    """``png`` ``scale`` times larger, each pixel a square of pixels (a 128x64 OLED frame is tiny)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        bigger = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    out = io.BytesIO()
    bigger.save(out, format="PNG")
    return out.getvalue()


async def _simulate(args: argparse.Namespace, client: LatticeClient) -> int:
    return await _set_level(args, client, "gpio.simulate", f"simulated pin {args.pin} is {args.level}")


async def _set_level(args: argparse.Namespace, client: LatticeClient, verb: str, done: str) -> int:
    """Send ``verb`` with the pin and level of ``args``; print ``done``."""
    await client.node(args.node, verb, {"pin": args.pin, "level": args.level == "high"})
    emit(args, {"node": args.node, "pin": args.pin, "level": args.level}, f"node {args.node}: {done}")
    return 0


# -- gpio read, write and pins ------------------------------------------------------------


async def _read(args: argparse.Namespace, client: LatticeClient) -> int:
    result = await client.node(args.node, "gpio.read", {"pin": args.pin})
    held = f" ({result['mode']}, {result['owner'] or 'held by the provider'})" if result.get("mode") else ""
    emit(args, {"node": args.node, **result, "level": level_text(result["level"])},
         f"node {args.node}: pin {args.pin} is {level_text(result['level'])}{held}")
    return 0


async def _write(args: argparse.Namespace, client: LatticeClient) -> int:
    return await _set_level(args, client, "gpio.write", f"pin {args.pin} is driven {args.level}")


async def _pins(args: argparse.Namespace, client: LatticeClient) -> int:
    inv = await client.node(args.node, "inventory")
    gpio = (inv.get("hardware") or {}).get("gpio")
    if not gpio:
        raise CliError(f"node {args.node} runs no gpio provider")
    emit(args, gpio, pinout(args.node, gpio))
    return 0


display_snapshot = _remote(_snapshot)
gpio_simulate = _remote(_simulate)
gpio_read = _remote(_read)
gpio_write = _remote(_write)
gpio_pins = _remote(_pins)
