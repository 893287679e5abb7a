"""The hardware providers as actors reach them: through the node's bindings, links put in
the lattice, and across nodes. Simulated backends (gpiozero's MockFactory, the simulated
I2C bus, luma's dummy display); the WAT actor ``led`` toggles GPIO 27 on every message."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from drupelet.node.lattice.client import LatticeClient, LatticeError
from drupelet.node.host.errors import HandlerError, HardwareError, LinkError
from drupelet.node.node import Node
from drupelet.node.lattice.natsserver import EmbeddedNatsServer
from drupelet.node.runtime import read_component
from drupelet.node.lattice.calls import ForwardedError
from drupelet.node.runtime.bindings import hw_error, i2c_error
from drupelet.providers.base import Busy, Denied, Link, NotFound, NotLinked, ProviderError, Timeout
from drupelet.providers.clock import parse_timers

from test_host import node_config
from test_lattice import wait_until
from test_remote import link

LED_WAT = Path(__file__).resolve().parent.parent / "actors" / "wat" / "led.wat"
SIMULATED = {"gpio": {"backend": "mock"}, "i2c": {"backend": "sim"}, "display": {"driver": "dummy"}}


def led() -> bytes:
    return read_component(LED_WAT)


def pin(host: Node, number: int) -> dict[str, Any] | None:
    """The inventory's view of a pin in use, or None."""
    for entry in host.host.hardware()["gpio"]["pins"]:
        if entry["pin"] == number:
            return dict(entry)
    return None


@pytest.fixture
async def nodes(tmp_path: Path, nats_server: EmbeddedNatsServer) -> AsyncIterator[tuple[Node, Node, LatticeClient]]:
    laptop = Node(node_config(tmp_path / "laptop", nats_server.url, name="laptop", providers=dict(SIMULATED)))
    pi = Node(node_config(tmp_path / "pi", nats_server.url, name="pi-1", providers=dict(SIMULATED)))
    await laptop.start()
    await pi.start()
    client = await LatticeClient.connect(nats_server.url, "test")
    try:
        yield laptop, pi, client
    finally:
        await client.close()
        await laptop.stop()
        await pi.stop()


async def test_a_button_on_the_pi_toggles_its_led_through_an_actor_on_the_laptop(
        nodes: tuple[Node, Node, LatticeClient]) -> None:
    laptop, pi, client = nodes
    await laptop.host.start_actor("led", led())
    await link(client, (laptop, pi), "led", "drupelet:hardware/gpio", "pi-1/gpio", pins="17,27", events="17:falling")
    await wait_until(lambda: pin(pi, 17) is not None, "the Pi to configure the button pin for edge events")
    assert pin(pi, 17) == {"pin": 17, "mode": "input", "owner": "led", "value": True}  # pulled up

    await pi.host.gpio_simulate(17, False)  # press: a falling edge, delivered to the laptop's actor
    await wait_until(lambda: pin(pi, 27) is not None and pin(pi, 27)["value"] is True, "the LED to light")
    assert pin(pi, 27) == {"pin": 27, "mode": "output", "owner": "led", "value": True}
    await pi.host.gpio_simulate(17, True)  # release: a rising edge the link does not ask for
    await pi.host.gpio_simulate(17, False)
    await wait_until(lambda: pin(pi, 27)["value"] is False, "the second press to put the LED out")  # type: ignore[index]
    await asyncio.sleep(0.2)  # the behaviour under test: no third message arrives meanwhile
    assert laptop.host.actors["led"].calls == 2  # one message per press, none for the release

    # the actor stops: its pins are released, the LED output goes to its safe state (low)
    await laptop.host.stop_actor("led")
    await wait_until(lambda: pin(pi, 27) is None, "the Pi to release the actor's pins")
    assert {"pin": 27, "value": False} in pi.host.hardware()["gpio"]["released"]


async def test_the_same_on_one_node(nodes: tuple[Node, Node, LatticeClient]) -> None:
    _, pi, _ = nodes
    await pi.host.start_actor("led", led())
    await pi.host.put_link("led", "drupelet:hardware/gpio", "local/gpio", {"pins": "17,27", "events": "17"})
    await pi.host.gpio_simulate(17, False)
    await wait_until(lambda: pin(pi, 27) is not None and pin(pi, 27)["value"] is True, "the LED to light")
    await pi.host.gpio_simulate(17, True)  # "17" asks for both edges
    await wait_until(lambda: pin(pi, 27)["value"] is False, "the rising edge to toggle it back")  # type: ignore[index]


async def test_a_pin_the_link_does_not_grant_is_a_denied_error_value(nodes: tuple[Node, Node, LatticeClient]) -> None:
    laptop, pi, client = nodes
    await laptop.host.start_actor("led", led())
    await link(client, (laptop, pi), "led", "drupelet:hardware/gpio", "pi-1/gpio", pins="17")
    with pytest.raises(HandlerError, match="gpio"):  # the actor's own error for any gpio error
        await laptop.host.deliver("led", "x", b"")
    assert pin(pi, 27) is None
    # the node's binding gives the guest `denied` with the reason
    provider, plain = laptop.host._resolve("led", "drupelet:hardware/gpio")
    with pytest.raises(Denied, match="not granted GPIO pin 27") as denied:
        await asyncio.to_thread(provider.invoke, plain, "configure_output", [27, True])  # type: ignore[attr-defined]
    assert (hw_error(denied.value).tag, hw_error(denied.value).payload) == ("denied", denied.value.message)


async def test_a_pin_owned_by_another_link_is_busy(nodes: tuple[Node, Node, LatticeClient]) -> None:
    _, pi, _ = nodes
    await pi.host.start_actor("a", led())
    await pi.host.start_actor("b", led())
    await pi.host.put_link("a", "drupelet:hardware/gpio", "local/gpio", {"pins": "27"})
    await pi.host.put_link("b", "drupelet:hardware/gpio", "local/gpio", {"pins": "27"})
    await pi.host.deliver("a", "x", b"")
    with pytest.raises(HandlerError):
        await pi.host.deliver("b", "x", b"")
    assert pin(pi, 27) == {"pin": 27, "mode": "output", "owner": "a", "value": True}
    await pi.host.del_link("a", "drupelet:hardware/gpio")
    await pi.host.deliver("b", "x", b"")  # free once a's link is gone
    assert pin(pi, 27) == {"pin": 27, "mode": "output", "owner": "b", "value": True}


async def test_clock_ticks_reach_the_actor_where_it_runs(nodes: tuple[Node, Node, LatticeClient]) -> None:
    laptop, pi, client = nodes
    await pi.host.start_actor("led", led())
    await pi.host.put_link("led", "drupelet:hardware/gpio", "local/gpio", {"pins": "27"})
    await link(client, (laptop, pi), "led", "wasmcloud:messaging/handler", "local/clock", timers="blink=100")
    # only the Pi runs the actor: the laptop's clock holds the link but does not tick for it
    await wait_until(lambda: pi.host.actors["led"].calls >= 3, "three ticks")
    assert laptop.host.providers["clock"].describe() == {"timers": {"led": {"blink": 100}}}
    await client.lattice_request("link.del", {"source": "led", "interface": "wasmcloud:messaging/handler"})
    await wait_until(lambda: pi.host.links.get("led", "wasmcloud:messaging/handler") is None, "the link to go")
    calls = pi.host.actors["led"].calls
    await asyncio.sleep(0.4)  # the behaviour under test: no tick in four timer periods
    assert pi.host.actors["led"].calls == calls


async def test_clock_ticks_carry_their_name_and_count(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    async with Node(node_config(tmp_path, nats_server.url, name="pi-1", providers=dict(SIMULATED))) as host:
        clock = host.host.providers["clock"]
        ctx = clock.context

        async def record(actor: str, message: Any) -> None:
            seen.append((message.subject, json.loads(message.body) | {"to": actor}))

        ctx.deliver = record
        await host.host.put_link("ticker", "wasmcloud:messaging/handler", "pi-1/clock", {"timers": "fast=50, slow=10000"})
        await wait_until(lambda: len(seen) >= 2, "two ticks")
        (subject, first), (_, second) = seen[:2]
        assert subject == "timer.fast"
        assert (first["timer"], first["tick"], first["node"], first["to"]) == ("fast", 1, "pi-1", "ticker")
        assert second["tick"] == 2 and second["timestamp"] > first["timestamp"]


@pytest.mark.parametrize("timers, message", [
    ("tick", "not name=period_ms"),
    ("tick=5", "outside 10..86400000"),
    ("tick=soon", "not a whole number"),
    ("a=100,a=200", "named twice"),
    ("bad name=100", "not name=period_ms"),
])
def test_bad_timer_config_is_refused(timers: str, message: str) -> None:
    with pytest.raises(ProviderError, match=message):
        parse_timers(Link("a", "wasmcloud:messaging/handler", "local/clock", {"timers": timers}))


async def test_a_bad_timer_link_is_refused_and_changes_nothing(nodes: tuple[Node, Node, LatticeClient]) -> None:
    _, pi, _ = nodes
    with pytest.raises(LinkError, match="not a whole number"):
        await pi.host.put_link("led", "wasmcloud:messaging/handler", "local/clock", {"timers": "t=x"})
    assert pi.host.links.all() == []


async def test_display_snapshot_and_inventory_over_nats(nodes: tuple[Node, Node, LatticeClient]) -> None:
    _, pi, client = nodes
    display = pi.host.providers["display"]
    owner = Link("painter", "drupelet:hardware/display", "local/display")
    await display.link_added(owner)
    await asyncio.to_thread(display.invoke, owner, "rectangle", [10, 20, 30, 5, None, 0xFFFFFF])
    await asyncio.to_thread(display.invoke, owner, "flush", [])
    reply = await client.node("pi-1", "display.snapshot")
    image = Image.open(io.BytesIO(base64.b64decode(reply["png"])))
    assert (reply["format"], image.size, image.mode) == ("png", (128, 64), "1")
    lit = {(x, y) for x in range(128) for y in range(64) if image.getpixel((x, y))}
    assert lit == {(x, y) for x in range(10, 40) for y in range(20, 25)}

    inv = await client.node("pi-1", "inventory")
    hardware = inv["hardware"]
    oled = hardware["display"]["displays"][0]
    assert {k: oled[k] for k in ("name", "driver", "simulated", "width", "height", "owner")} == {
        "name": "oled", "driver": "dummy", "simulated": True, "width": 128, "height": 64, "owner": "painter"}
    assert hardware["gpio"]["simulated"] is True and hardware["i2c"]["simulated"] is True
    assert hardware["i2c"]["buses"] == [{"name": "i2c1", "device": "sim", "devices": ["0x3c", "0x48"]}]


async def test_hardware_requests_are_validated(nodes: tuple[Node, Node, LatticeClient]) -> None:
    _, pi, client = nodes
    with pytest.raises(LatticeError, match="level: must be true"):
        await client.node("pi-1", "gpio.simulate", {"pin": 17, "level": "low"})
    with pytest.raises(LatticeError, match="pin: is required"):
        await client.node("pi-1", "gpio.simulate", {"level": True})
    with pytest.raises(LatticeError, match="unknown field"):
        await client.node("pi-1", "display.snapshot", {"zoom": 2})
    with pytest.raises(LatticeError, match="no provider 'lcd'"):
        await client.node("pi-1", "display.snapshot", {"provider": "lcd"})
    with pytest.raises(HardwareError, match="pin 5"):  # not an input anyone configured
        await pi.host.gpio_simulate(5, False)
    assert pi.host.hardware()["gpio"]["pins"] == []


def test_error_values_keep_their_case() -> None:
    assert hw_error(Busy("owned by a")).tag == "busy"
    assert hw_error(NotFound("no pin 99")).tag == "not-found"
    assert hw_error(NotLinked("no link")).tag == "denied"
    assert (hw_error(ProviderError("boom")).tag, hw_error(ProviderError("boom")).payload) == ("io", "boom")
    late = hw_error(Timeout("provider gpio on node pi-1 did not answer within 2 s"))
    assert (late.tag, late.payload) == ("io", "timeout: provider gpio on node pi-1 did not answer within 2 s")
    nack = ForwardedError("no device at 0x50", code="i2c:no-acknowledge:address")  # as it crosses the lattice
    assert (i2c_error(nack).tag, i2c_error(nack).payload) == ("no-acknowledge", "address")
    lost = ForwardedError("arbitration", code="i2c:arbitration-loss")
    assert i2c_error(lost).tag == "arbitration-loss"
    assert i2c_error(Denied("address 0x49 not granted")).tag == "other"
