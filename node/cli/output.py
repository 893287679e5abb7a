"""How commands print: aligned tables for people, JSON for scripts (``--json``).

On a terminal a table's header row is bold; piped or redirected (or with ``NO_COLOR``
set, or ``TERM=dumb``) the output is plain text. Also used by ``drupelet bench``'s
report. Imports only the standard library: no terminal library, so ``firstboot`` and the
node stay as light as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any


BOLD, RESET = "\033[1m", "\033[0m"


def styled() -> bool:
    """Whether stdout is a terminal that wants styles (not piped, no ``NO_COLOR``, not dumb)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def table(rows: Sequence[Sequence[str]], headers: Sequence[str] | None = None) -> str:
    """Columns padded to their widest cell, two spaces apart; ``headers`` (upper-cased) on
    top, in bold on a terminal."""
    head = [[h.upper() for h in headers]] if headers is not None else []
    every = [*head, *([str(c) for c in r] for r in rows)]
    if not every:
        return ""
    widths = [max(len(r[i]) for r in every) for i in range(len(every[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in every]
    if head and styled():
        lines[0] = f"{BOLD}{lines[0]}{RESET}"
    return "\n".join(lines)


def to_json(data: Any, *, one_line: bool = False) -> str:
    """``data`` as the CLI prints it: indented with sorted keys, or one line as given."""
    return json.dumps(data) if one_line else json.dumps(data, indent=2, sort_keys=True)


def emit(args: argparse.Namespace, data: Any, text: str, *, one_line: bool = False) -> None:
    """Print ``data`` as JSON under ``--json``, else ``text`` (flushed: a pipe sees each line at once)."""
    print(to_json(data, one_line=one_line) if args.json else text, flush=True)


def key_values(values: Mapping[str, Any]) -> str:
    """``{"a": 1, "b": 2}`` as ``a=1,b=2``, by key."""
    return ",".join(f"{k}={v}" for k, v in sorted(values.items()))


def links_table(links: Sequence[Mapping[str, Any]]) -> str:
    return table([[l["source"], l["interface"], l["target"], key_values(l["config"])] for l in links],
                 ["source", "interface", "target", "config"])


def nodes_table(nodes: Sequence[Mapping[str, Any]]) -> str:
    """The summaries of a ping (``drupelet nodes``)."""
    rows = [[n["name"], key_values(n.get("labels", {})), str(n.get("actors", "")), ",".join(n.get("providers", [])),
             n.get("version", ""), f"{n.get('uptime_s', 0):.0f}s"] for n in nodes]
    return table(rows, ["node", "labels", "actors", "providers", "version", "uptime"])


def signer(actor: Mapping[str, Any]) -> list[str]:
    """An actor's ``signed`` and issuer, subject, claims name and version columns ("-" when unsigned)."""
    if not actor.get("signed"):
        return ["unsigned", "-", "-", "-", "-"]
    short = [f"{actor[k][:8]}…" if actor.get(k) else "-" for k in ("issuer", "subject")]
    return ["signed", *short, actor.get("claims_name") or "-", actor.get("version") or "-"]


SIGNER_HEADERS = ["signed", "issuer", "subject", "claims name", "version"]


def inventory_text(inv: Mapping[str, Any]) -> str:
    """One node's inventory: a summary line, then its actors, providers, links and hardware."""
    labels = ", ".join(f"{k}={v}" for k, v in sorted(inv.get("labels", {}).items())) or "-"
    out = [f"node {inv['name']} (lattice {inv['lattice']}, labels {labels}, drupelet {inv['version']}, "
           f"up {inv['uptime_s']:.0f}s, NATS {'connected' if inv['nats']['connected'] else 'DISCONNECTED'})"]
    out.append(table([[a["name"], str(a["instances"]), a["digest"][:12], str(a["calls"]), str(a["traps"]), *signer(a)]
                      for a in inv["actors"]], ["actor", "instances", "digest", "calls", "traps", *SIGNER_HEADERS]))
    out.append(table([[p["name"], p["health"], ", ".join(p["interfaces"])] for p in inv["providers"]],
                     ["provider", "health", "interfaces"]))
    out.append(links_table(inv["links"]))
    out.extend(hardware_tables(inv.get("hardware") or {}))
    return "\n\n".join(out)


def level_text(value: Any) -> str:
    """A pin's value as a person reads it: high or low (a PWM duty as a fraction)."""
    if value is None:
        return "?"
    if isinstance(value, bool):
        return "high" if value else "low"
    if isinstance(value, (int, float)):
        return f"pwm {value:g}"
    return str(value)


def pin_rows(pins: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The inventory's pins in use as table rows: pin, mode, owner, level."""
    return [[str(p["pin"]), p["mode"], p["owner"] or "-", level_text(p["value"])] for p in pins]


def hardware_tables(hw: Mapping[str, Any]) -> list[str]:
    """The inventory's hardware as tables: pins in use, I2C buses, displays."""
    out = []
    gpio = hw.get("gpio")
    if gpio:
        sim = " (simulated)" if gpio.get("simulated") else ""
        rows = pin_rows(gpio.get("pins", []))
        rows += [[str(p["pin"]), "released", "-", level_text(p["value"])] for p in gpio.get("released", [])]
        out.append(f"GPIO: {gpio.get('backend')}{sim}\n" + table(rows, ["pin", "mode", "owner", "value"]))
    i2c = hw.get("i2c")
    if i2c:
        sim = " (simulated)" if i2c.get("simulated") else ""
        rows = [[b["name"], b["device"], " ".join(b.get("devices", [])) or "-"] for b in i2c.get("buses", [])]
        out.append(f"I2C: {i2c.get('backend')}{sim}\n" + table(rows, ["bus", "device", "addresses found"]))
    displays = (hw.get("display") or {}).get("displays", [])
    if displays:
        rows = [[d["name"], d["driver"] + (" (simulated)" if d.get("simulated") else ""),
                 f"{d['width']}x{d['height']}", d["mode"], d.get("owner") or "-"] for d in displays]
        out.append(table(rows, ["display", "driver", "size", "mode", "owner"]))
    return out
