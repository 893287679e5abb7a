"""``drupelet gpio pins``: a node's 40-pin header as a diagram, like gpiozero's ``pinout``,
with what each GPIO pin is doing (mode, owner, level) beside it. Pure text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drupelet.node.cli.output import level_text

#: The Raspberry Pi 40-pin header, physical pin 1 to 40: a BCM number, or the supply pin's name.
HEADER: tuple[int | str, ...] = (
    "3V3", "5V", 2, "5V", 3, "GND", 4, 14, "GND", 15, 17, 18, 27, "GND", 22, 23, "3V3", 24, 10, "GND",
    9, 25, 11, 8, "GND", 7, 0, 1, 5, "GND", 6, 12, 13, "GND", 19, 16, 26, 20, "GND", 21,
)


def _uses(gpio: Mapping[str, Any]) -> dict[int, str]:
    out = {p["pin"]: f"{p['mode']} {p['owner']} {level_text(p['value'])}" for p in gpio.get("pins", [])}
    out.update({p["pin"]: f"held {level_text(p['value'])}" for p in gpio.get("released", [])})
    return out


def pinout(node: str, gpio: Mapping[str, Any]) -> str:
    """The header diagram of ``node`` from its inventory's ``hardware.gpio``: odd pins on the left,
    even on the right; a GPIO pin's use beside it; ``·`` marks pins ``providers.gpio.pins`` leaves out."""
    uses = _uses(gpio)
    allowed = set(gpio.get("allowed", []))

    def name(spec: int | str) -> str:
        if isinstance(spec, str):
            return spec
        return f"GPIO{spec}" if spec in allowed else f"·GPIO{spec}"

    def use(spec: int | str) -> str:
        return uses.get(spec, "") if isinstance(spec, int) else ""

    rows = [(use(HEADER[i]), name(HEADER[i]), i + 1, i + 2, name(HEADER[i + 1]), use(HEADER[i + 1]))
            for i in range(0, len(HEADER), 2)]
    left_use = max(len(r[0]) for r in rows)
    left_name = max(len(r[1]) for r in rows)
    sim = " (simulated)" if gpio.get("simulated") else ""
    lines = [f"node {node}: GPIO {gpio.get('backend', '?')}{sim}, BCM numbering; · not in providers.gpio.pins", ""]
    for lu, ln, lp, rp, rn, ru in rows:
        lines.append(f"{lu:>{left_use}} {ln:>{left_name}} ({lp:>2}) ({rp:>2}) {rn} {ru}".rstrip())
    return "\n".join(lines)

