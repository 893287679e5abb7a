"""``drupelet up --demo``: the hardware demo on simulated hardware, across two nodes.

This process runs two nodes, each on its own nats-server, joined as hub and leaf the way
a laptop and a Raspberry Pi are:

- ``<name>`` (the laptop): the hub server (JetStream domain ``hub``, the lattice's
  state and artifacts) and the thermometer actor, plus the counter example.
- ``pi-1``: a leaf server of the hub with its own JetStream domain, and the hardware
  providers on simulated backends: gpiozero's MockFactory, a simulated I2C bus with a
  TMP102 at 0x48, and luma's dummy OLED (128x64).

The thermometer's links point at pi-1's providers, put through the lattice like any
``drupelet link put``. Every few seconds the laptop's clock ticks, the actor reads the
Pi's sensor over I2C and draws it on the Pi's OLED; the demo presses the Pi's simulated
button now and then, and the actor toggles the Pi's LED. The OLED is printed to the
log and saved as ``<data_dir>/demo/oled.png``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import math
import time
from pathlib import Path
from typing import Any

from drupelet.node.config import ActorSpec, LinkSpec, NodeConfig
from drupelet.node.errors import DrupeletError

log = logging.getLogger("drupelet.demo")

PI_NODE = "pi-1"
BUTTON_PIN = 17
LED_PIN = 27
SENSOR_ADDRESS = 0x48
READING_PERIOD_MS = 5000
PRESS_EVERY_S = 7.0
COUNTER_SUBJECT = "demo.counter"


def built_example(name: str, data_dir: Path) -> Path:
    """The example actor ``name`` built with componentize-py (once per source change)."""
    from drupelet.node.tools.build import build_python_actor, example_dir, source_key

    src = example_dir(name)
    out = data_dir / "demo" / f"{name}-{source_key(src)[:16]}.wasm"
    if not out.exists():
        log.info("building the %s example with componentize-py (first run only; tens of seconds) ...", name)
        result = build_python_actor(src, out)
        log.info("built %s (%.1f MB) in %.0f s", out.name, result.size_bytes / 1e6, result.seconds)
    return out


DEMO_CAPS = {
    "thermometer": ("drupelet:hardware/i2c-bus", "drupelet:hardware/display", "drupelet:hardware/gpio",
                    "wasmcloud:messaging", "wasi:keyvalue"),  # its world imports wasi:keyvalue too
    "counter": ("wasi:keyvalue", "wasmcloud:messaging"),
}
"""What each demo actor's claims allow: the interfaces its links give it."""


def signed_example(name: str, built: Path, issuer: Any) -> Path:
    """``built`` signed by the demo's issuer key, with :data:`DEMO_CAPS`, beside it."""
    from drupelet.node.security.claims import sign

    signed, _ = sign(built.read_bytes(), issuer, name=name, ver="demo", caps=DEMO_CAPS[name])
    out = built.with_name(f"{name}.signed.wasm")
    out.write_bytes(signed)
    return out


def demo_links(actor: str = "thermometer", pi: str = PI_NODE) -> list[dict[str, Any]]:
    """The thermometer's lattice links: hardware on the Pi, the clock and messaging here."""
    return [
        {"source": actor, "interface": "drupelet:hardware/i2c-bus", "target": f"{pi}/i2c",
         "config": {"buses": "i2c1", "addresses": f"{SENSOR_ADDRESS:#04x}"}},
        {"source": actor, "interface": "drupelet:hardware/display", "target": f"{pi}/display"},
        {"source": actor, "interface": "drupelet:hardware/gpio", "target": f"{pi}/gpio",
         "config": {"pins": f"{BUTTON_PIN},{LED_PIN}", "events": f"{BUTTON_PIN}:falling"}},
        {"source": actor, "interface": "wasmcloud:messaging/handler", "target": "local/clock",
         "config": {"timers": f"reading={READING_PERIOD_MS}"}},
        {"source": actor, "interface": "wasmcloud:messaging/consumer", "target": "local/messaging"},
    ]


def pi_providers() -> dict[str, dict[str, Any]]:
    """Simulated backends for the Pi node, whatever the environment says."""
    return {"gpio": {"backend": "mock"}, "i2c": {"backend": "sim"}, "display": {"driver": "dummy"}}


def ascii_frame(png: bytes) -> str:
    """A one-bit frame as text, two pixel rows per line (▀ ▄ █)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("1")
    width, height = image.size
    px = image.load()
    assert px is not None
    lines = ["┌" + "─" * width + "┐"]
    for y in range(0, height, 2):
        row = []
        for x in range(width):
            top = bool(px[x, y])
            bottom = bool(px[x, y + 1]) if y + 1 < height else False
            row.append("█" if top and bottom else "▀" if top else "▄" if bottom else " ")
        lines.append("│" + "".join(row) + "│")
    lines.append("└" + "─" * width + "┘")
    return "\n".join(lines)


async def run(cfg: NodeConfig, stop: asyncio.Event) -> int:
    """Run both nodes and the demo until ``stop`` is set."""
    from drupelet.node.lattice.client import LatticeClient
    from drupelet.node.node import Node
    from drupelet.node.lattice.natsserver import EmbeddedNatsServer, NatsServerConfig

    from drupelet.node.security.keys import generate

    demo_dir = cfg.data_dir / "demo"
    issuer = generate("account")  # the demo's own issuer: both nodes trust it, the Pi nothing else
    log.info("demo: actors signed by the demo issuer %s", issuer.public)
    thermometer = signed_example("thermometer", built_example("thermometer", cfg.data_dir), issuer)
    counter = signed_example("counter", built_example("counter", cfg.data_dir), issuer)
    hub = EmbeddedNatsServer(NatsServerConfig(host=cfg.nats_embedded_host, port=cfg.nats_embedded_port,
                                              store_dir=demo_dir / "nats-hub", jetstream_domain="hub",
                                              leafnode_listen_port=0, server_name=f"{cfg.name}-hub"))
    await hub.start()
    assert hub.leafnode_url is not None
    leaf = EmbeddedNatsServer(NatsServerConfig(store_dir=demo_dir / "nats-leaf", jetstream_domain="pi1",
                                               leaf_remotes=[hub.leafnode_url], server_name="pi1-leaf"))
    hosts: list[Node] = []
    try:
        await leaf.start()
        laptop_cfg = dataclasses.replace(
            cfg, nats_url=hub.url, nats_jetstream_domain="hub", trust_keys=[*cfg.trust_keys, issuer.public],
            actors=[*cfg.actors, ActorSpec(name="thermometer", file=thermometer),
                    ActorSpec(name="counter", file=counter)],
            links=[*cfg.links, LinkSpec("counter", "wasi:keyvalue", "local/keyvalue"),
                   LinkSpec("counter", "wasmcloud:messaging", "local/messaging",
                            {"subscriptions": COUNTER_SUBJECT})])
        pi_cfg = NodeConfig(name=PI_NODE, lattice=cfg.lattice, labels={"board": "simulated-pi"},
                            data_dir=demo_dir / PI_NODE, nats_url=leaf.url, nats_jetstream_domain="hub",
                            providers=pi_providers(), compile_in_subprocess=cfg.compile_in_subprocess,
                            trust_keys=[issuer.public], trust_allow_unsigned=False)
        pi = Node(pi_cfg)
        await pi.start()
        hosts.append(pi)
        laptop = Node(laptop_cfg)
        await laptop.start()
        hosts.append(laptop)
        async with await LatticeClient.connect(hub.url, cfg.lattice) as client:
            for link in demo_links():
                await client.lattice_request("link.put", link)
        log.info("demo: node %s runs the thermometer actor; node %s serves its I2C sensor, OLED and GPIO "
                 "(simulated). From another shell:", laptop.name, pi.name)
        log.info("demo:   drupelet nodes            drupelet inventory %s", pi.name)
        log.info("demo:   drupelet display snapshot %s -o oled.png", pi.name)
        log.info("demo:   drupelet gpio simulate %s %d low     (press the button: the LED toggles)", pi.name, BUTTON_PIN)
        log.info("demo:   drupelet call thermometer now read   drupelet call counter %s hi", COUNTER_SUBJECT)
        await _drive(pi.host, demo_dir, stop)
    finally:
        for host in reversed(hosts):
            await host.stop()
        await leaf.stop()
        await hub.stop()
    return 0


async def _drive(pi: Any, demo_dir: Path, stop: asyncio.Event) -> None:
    """Warm the simulated sensor slowly, press the button now and then, show the OLED."""
    sensor = pi.providers["i2c"].sim_device("i2c1", SENSOR_ADDRESS)
    started = time.monotonic()
    next_press = started + PRESS_EVERY_S
    last_frame = b""
    while not stop.is_set():
        elapsed = time.monotonic() - started
        sensor.set_temperature(round(21.0 + 2.5 * math.sin(elapsed / 40.0), 2))
        if time.monotonic() >= next_press:
            next_press += PRESS_EVERY_S
            try:
                await pi.gpio_simulate(BUTTON_PIN, False)
                await asyncio.sleep(0.1)
                await pi.gpio_simulate(BUTTON_PIN, True)
                log.info("demo: pressed the button on %s pin %d", pi.name, BUTTON_PIN)
            except DrupeletError as exc:
                log.warning("demo: %s", exc.message)
        try:
            frame = await pi.display_snapshot()
        except DrupeletError as exc:
            log.warning("demo: %s", exc.message)
            frame = last_frame
        if frame != last_frame:
            last_frame = frame
            (demo_dir / "oled.png").write_bytes(frame)
            log.info("demo: %s's OLED shows (saved to %s):\n%s", pi.name, demo_dir / "oled.png", ascii_frame(frame))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
