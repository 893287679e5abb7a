"""The hardware demo end to end: the thermometer actor (componentize-py) on a laptop node,
the hardware on a Pi node behind a leaf server, links put through the lattice. Simulated
backends; the same links drive real ones on a Pi."""

from __future__ import annotations

import asyncio
import base64
import re
import contextlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont

from drupelet.node.tools import demo
from drupelet.node.lattice.client import LatticeClient
from drupelet.node.host.errors import HandlerError
from drupelet.node.node import Node
from drupelet.node.lattice.natsserver import free_port, start_hub_and_leaf
from drupelet.node.runtime import read_component

from test_host import node_config
from test_lattice import wait_until, wait_until_leaf_sees

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 128, 64


def reference(reading: str, title: str = "drupelet") -> Image.Image:
    """What the OLED should show, drawn with Pillow directly (the font the provider uses)."""
    image = Image.new("1", (WIDTH, HEIGHT))
    draw = ImageDraw.Draw(image)
    draw.text((0, 0), title, font=ImageFont.load_default(size=12), fill=1)
    draw.text((0, 24), reading, font=ImageFont.load_default(size=24), fill=1)
    return image


async def snapshot(client: LatticeClient, node: str) -> Image.Image:
    reply = await client.node(node, "display.snapshot")
    return Image.open(io.BytesIO(base64.b64decode(reply["png"]))).convert("1")


def led(pi: Node) -> bool | None:
    for entry in pi.host.hardware()["gpio"]["pins"]:
        if entry["pin"] == demo.LED_PIN:
            return bool(entry["value"])
    return None


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, wasm: Path, providers: dict[str, dict[str, Any]],
                    links: list[dict[str, Any]], config: dict[str, str] | None = None,
                    ) -> AsyncIterator[tuple[Node, Node, LatticeClient]]:
    """A laptop node on a hub server running the thermometer, a Pi node on a leaf server
    with ``providers``, and the thermometer's ``links`` put through the lattice."""
    hub, leaf = await start_hub_and_leaf(tmp_path, "pi1")
    laptop = Node(node_config(tmp_path / "laptop", hub.url, name="laptop", nats_jetstream_domain="hub",
                              call_deadline_ms=5000))
    pi = Node(node_config(tmp_path / "pi", leaf.url, name="pi-1", nats_jetstream_domain="hub", providers=providers))
    client = await LatticeClient.connect(hub.url, "test")
    try:
        await pi.start()
        await laptop.start()
        await wait_until_leaf_sees(client, "pi-1")
        await laptop.host.start_actor("thermometer", read_component(wasm), config=config)
        for entry in links:
            await client.lattice_request("link.put", entry)
        for host in (laptop, pi):
            await wait_until(lambda h=host: len(h.host.links.for_source("thermometer")) == len(links),  # type: ignore[misc]
                             f"{host.name} to apply the links")
        yield laptop, pi, client
    finally:
        await client.close()
        await laptop.stop()
        await pi.stop()
        await leaf.stop()
        await hub.stop()


@pytest.fixture
async def lattice(tmp_path: Path, thermometer_wasm: Path) -> AsyncIterator[tuple[Node, Node, LatticeClient]]:
    links = demo.demo_links(http_address=f"127.0.0.1:{free_port()}")
    for entry in links:
        if entry["interface"] == "wasmcloud:messaging/handler":
            entry["config"] = {"timers": "reading=300"}
    async with two_nodes(tmp_path, thermometer_wasm, demo.pi_providers(), links) as nodes:
        yield nodes


async def test_the_thermometer_page_on_the_laptop_shows_the_pis_reading(
        lattice: tuple[Node, Node, LatticeClient]) -> None:
    import aiohttp

    laptop, pi, _ = lattice
    link = laptop.host.link_for("thermometer", "wasi:http/incoming-handler")
    assert link is not None and link.target == "local/http"
    address = link.config["address"]
    await wait_until(lambda: address in laptop.host.provider("http").describe()["listeners"],  # type: ignore[union-attr]
                     "the laptop to serve the page")
    assert pi.host.provider("http").describe()["listeners"] == []  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session, session.get(f"http://{address}/") as response:
        text = await response.text()
    assert response.status == 200 and re.fullmatch(r"temperature -?\d+\.\d C\n", text), text


async def test_the_pis_sensor_reading_appears_on_the_pis_oled(lattice: tuple[Node, Node, LatticeClient]) -> None:
    laptop, pi, client = lattice
    sensor = pi.host.providers["i2c"].sim_device("i2c1", demo.SENSOR_ADDRESS)
    sensor.set_temperature(23.4375)
    assert await laptop.call("thermometer", "x", b"read") == b"23.4 C"
    want = reference("23.4 C")
    assert want.getbbox() is not None  # the reference has lit pixels
    assert (await snapshot(client, "pi-1")).tobytes() == want.tobytes()
    # every I2C bus the actor opened on the Pi was closed when it dropped it
    assert pi.provider_server.handles == 0

    # the clock on the laptop drives new readings without any call
    sensor.set_temperature(-5.5)
    colder = reference("-5.5 C").tobytes()
    deadline = asyncio.get_running_loop().time() + 10
    while (await snapshot(client, "pi-1")).tobytes() != colder:
        assert asyncio.get_running_loop().time() < deadline, "the OLED never showed -5.5 C"
        await asyncio.sleep(0.1)


async def test_a_button_press_on_the_pi_toggles_the_pis_led(lattice: tuple[Node, Node, LatticeClient]) -> None:
    laptop, pi, client = lattice
    assert led(pi) is None
    await client.node("pi-1", "gpio.simulate", {"pin": demo.BUTTON_PIN, "level": False})
    await wait_until(lambda: led(pi) is True, "the first press to light the LED")
    await pi.host.gpio_simulate(demo.BUTTON_PIN, True)
    await pi.host.gpio_simulate(demo.BUTTON_PIN, False)
    await wait_until(lambda: led(pi) is False, "the second press to put it out")
    assert await laptop.call("thermometer", "gpio.17.falling", b"{}") == b"led on"


async def test_a_missing_grant_fails_the_reading_with_the_wit_error(lattice: tuple[Node, Node, LatticeClient]) -> None:
    laptop, pi, client = lattice
    await client.lattice_request("link.put", {"source": "thermometer", "interface": "drupelet:hardware/i2c-bus",
                                              "target": "pi-1/i2c", "config": {"buses": "i2c1",
                                                                               "addresses": "0x49"}})
    await wait_until(lambda: pi.host.links.get("thermometer", "drupelet:hardware/i2c-bus").config.get(  # type: ignore[union-attr]
        "addresses") == "0x49", "the new grant")
    await wait_until(lambda: laptop.host.links.get("thermometer", "drupelet:hardware/i2c-bus").config.get(  # type: ignore[union-attr]
        "addresses") == "0x49", "the laptop to see it")
    with pytest.raises(HandlerError, match=r"i2c write-read 0x48: other"):
        await laptop.host.deliver("thermometer", "x", b"read")
    await client.lattice_request("link.del", {"source": "thermometer", "interface": "drupelet:hardware/i2c-bus"})
    await wait_until(lambda: laptop.host.links.get("thermometer", "drupelet:hardware/i2c-bus") is None, "the delete")
    with pytest.raises(HandlerError, match=r"i2c open 'i2c1': denied: actor 'thermometer' has no link"):
        await laptop.host.deliver("thermometer", "x", b"read")


# -- the same on a Raspberry Pi with the parts (see the README's "The hardware") ---------

def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        pytest.fail(f"set {name} to run the hardware tests (see the README's 'The hardware')")
    return value


@pytest.mark.hardware
async def test_on_a_pi_the_real_reading_shows_on_the_real_oled_and_the_button_toggles_the_led(
        tmp_path: Path, thermometer_wasm: Path) -> None:
    """DRUPELET_TEST_LED_PIN, DRUPELET_TEST_BUTTON_PIN, DRUPELET_TEST_I2C_BUS (e.g. /dev/i2c-1),
    DRUPELET_TEST_TMP102_ADDR, DRUPELET_TEST_DISPLAY_DRIVER, DRUPELET_TEST_DISPLAY_PORT,
    DRUPELET_TEST_DISPLAY_ADDR; the Pi node runs in this process on the real backends."""
    led_pin, button = int(_env("DRUPELET_TEST_LED_PIN")), int(_env("DRUPELET_TEST_BUTTON_PIN"))
    bus_path, sensor = _env("DRUPELET_TEST_I2C_BUS"), _env("DRUPELET_TEST_TMP102_ADDR")
    providers = {
        "gpio": {"backend": os.environ.get("DRUPELET_TEST_GPIO_BACKEND", "lgpio")},
        "i2c": {"backend": "smbus", "buses": {"testbus": bus_path}},
        "display": {"driver": _env("DRUPELET_TEST_DISPLAY_DRIVER", "ssd1306"),
                    "port": int(_env("DRUPELET_TEST_DISPLAY_PORT", "1")),
                    "address": int(_env("DRUPELET_TEST_DISPLAY_ADDR", "0x3c"), 0)},
    }
    links = [entry for entry in demo.demo_links(http_address=f"127.0.0.1:{free_port()}")
             if entry["interface"] != "wasmcloud:messaging/handler"]
    for entry in links:
        if entry["interface"] == "drupelet:hardware/i2c-bus":
            entry["config"] = {"buses": "testbus", "addresses": sensor}
        if entry["interface"] == "drupelet:hardware/gpio":
            entry["config"] = {"pins": f"{button},{led_pin}", "events": f"{button}:falling"}
    config = {"bus": "testbus", "sensor_address": sensor, "led_pin": str(led_pin)}
    async with two_nodes(tmp_path, thermometer_wasm, providers, links, config) as (laptop, pi, client):
        assert pi.host.hardware()["gpio"]["simulated"] is False
        reading = (await laptop.call("thermometer", "x", b"read")).decode()
        assert reading.endswith(" C") and -40.0 <= float(reading.removesuffix(" C")) <= 125.0
        assert (await snapshot(client, "pi-1")).tobytes() == reference(reading).tobytes()
        # a press (delivered as the provider would) toggles the real LED, read back from the pin
        for expected in (True, False):
            await laptop.host.deliver("thermometer", f"gpio.{button}.falling", b"{}")
            entry = [p for p in pi.host.hardware()["gpio"]["pins"] if p["pin"] == led_pin]
            assert entry and entry[0]["value"] is expected
