"""The gpio provider on gpiozero's mock pins: grants, ownership, safe states, edges, config.

The ``hardware`` test at the end runs only with ``DRUPELET_HARDWARE=1`` on a Raspberry Pi
and uses the real backend. Its environment variables:

| variable | meaning |
|---|---|
| ``DRUPELET_TEST_LED_PIN`` | BCM pin with an LED (and resistor) to ground; it blinks once |
| ``DRUPELET_TEST_BUTTON_PIN`` | BCM pin with a button to ground (read with the pull-up on) |
| ``DRUPELET_TEST_GPIO_LOOPBACK`` | ``1`` when a wire joins the LED pin to the button pin: the LED's level must then show on the button pin and its fall arrive as an edge |
| ``DRUPELET_TEST_GPIO_BACKEND`` | the real backend to use, ``lgpio`` unless set |
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from drupelet.providers import gpio
from drupelet.providers.base import BackendIOError, Busy, Denied, Link, Message, NotFound, ProviderContext, Unavailable
from drupelet.providers.gpio import BACKEND_ENV, INTERFACE, GpioProvider, GpioUsageError
from drupelet.providers.schema import SchemaError, key_docs
from waiting import wait_for_async

T = TypeVar("T")

DELIVERY_TIMEOUT_S = 2.0
SETTLE_S = 0.05


class Inbox:
    """The node's ``deliver``: records (actor, message) pairs."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, Message]] = []

    async def deliver(self, actor: str, message: Message) -> None:
        self.messages.append((actor, message))

    async def wait_for(self, count: int) -> list[tuple[str, Message]]:
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"expected {count} message(s) within {DELIVERY_TIMEOUT_S} s, got {self.messages}")
            await asyncio.sleep(0.005)
        await asyncio.sleep(SETTLE_S)  # anything extra would arrive now
        return self.messages


async def start(tmp_path: Path, config: dict[str, Any], inbox: Inbox | None = None) -> GpioProvider:
    provider = GpioProvider()
    ctx = ProviderContext(node="pi-1", lattice="default", loop=asyncio.get_running_loop(), data_dir=tmp_path,
                          config=config, deliver=(inbox or Inbox()).deliver)
    await provider.start(ctx)
    return provider


async def call(fn: Callable[..., T], *args: Any) -> T:
    """An import call, from a worker thread as the node makes it."""
    return await asyncio.to_thread(fn, *args)


def link(actor: str = "blinky", pins: str | None = "17,27", **config: str) -> Link:
    cfg = dict(config)
    if pins is not None:
        cfg["pins"] = pins
    return Link(actor, INTERFACE, "local/gpio", cfg)


@pytest.fixture(autouse=True)
def no_backend_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest_asyncio.fixture
async def provider(tmp_path: Path, inbox: Inbox) -> AsyncIterator[GpioProvider]:
    p = await start(tmp_path, {"backend": "mock"}, inbox)
    try:
        yield p
    finally:
        await p.stop()


# -- calls -----------------------------------------------------------------------------


async def test_configure_read_write_toggle_round_trip(provider: GpioProvider) -> None:
    lk = link()
    await call(provider.configure_output, lk, 17, False)
    assert await call(provider.read, lk, 17) is False
    await call(provider.write, lk, 17, True)
    assert await call(provider.read, lk, 17) is True
    assert provider.factory.pin(17).state == 1
    assert await call(provider.toggle, lk, 17) is False
    assert await call(provider.read, lk, 17) is False
    assert provider.factory.pin(17).state == 0

    await call(provider.configure_input, lk, 27, "down", 0)
    assert await call(provider.read, lk, 27) is False
    await call(provider.simulate, 27, True)
    assert await call(provider.read, lk, 27) is True

    assert provider.describe()["pins"] == [
        {"pin": 17, "mode": "output", "owner": "blinky", "value": False},
        {"pin": 27, "mode": "input", "owner": "blinky", "value": True},
    ]


async def test_reconfiguring_replaces_the_device(provider: GpioProvider) -> None:
    lk = link()
    await call(provider.configure_output, lk, 17, True)
    await call(provider.configure_input, lk, 17, "down", 0)
    assert provider.factory.pin(17).function == "input"
    with pytest.raises(GpioUsageError, match="cannot write GPIO pin 17: it is configured as an input"):
        await call(provider.write, lk, 17, True)
    await call(provider.configure_output, lk, 17, True)
    assert await call(provider.read, lk, 17) is True


async def test_pwm_duty_is_visible(provider: GpioProvider) -> None:
    lk = link(pins="18")
    await call(provider.set_pwm, lk, 18, 0.25, 500)
    pin = provider.factory.pin(18)
    assert pin.state == pytest.approx(0.25) and pin.frequency == 500
    assert provider.describe()["pins"] == [{"pin": 18, "mode": "pwm", "owner": "blinky", "value": 0.25}]
    await call(provider.set_pwm, lk, 18, 0.75, 1000)
    assert pin.state == pytest.approx(0.75) and pin.frequency == 1000
    assert await call(provider.read, lk, 18) is True
    assert await call(provider.toggle, lk, 18) is False
    assert pin.state == 0.0
    with pytest.raises(GpioUsageError, match="duty cycle must be from 0.0 to 1.0, not 1.5"):
        await call(provider.set_pwm, lk, 18, 1.5, 500)


async def test_gpiozero_errors_are_io_errors_naming_the_pin(provider: GpioProvider) -> None:
    # GPIO2 has a fixed pull-up resistor on the board the mock pretends to be.
    with pytest.raises(BackendIOError, match="GPIO pin 2: cannot configure it as input: PinFixedPull") as err:
        await call(provider.configure_input, link(pins="2"), 2, "down", 0)
    assert err.value.code == "io"
    assert provider.describe()["pins"] == []


async def test_ungranted_pin_is_denied(provider: GpioProvider) -> None:
    with pytest.raises(Denied, match=r"'blinky' is not granted GPIO pin 22 \(link grants: 17,27\)") as err:
        await call(provider.configure_output, link(), 22, True)
    assert err.value.code == "denied"
    with pytest.raises(Denied, match=r"GPIO pin 17 \(link grants: none\)"):
        await call(provider.read, link(pins=None), 17)


async def test_pin_outside_the_allowlist_is_not_found(tmp_path: Path) -> None:
    p = await start(tmp_path, {"backend": "mock", "pins": [17, 27]})
    try:
        with pytest.raises(NotFound, match=r"GPIO pin 4 is not available .*allows 17,27\)") as err:
            await call(p.configure_output, link(pins="4,17"), 4, True)
        assert err.value.code == "not-found"
        assert p.describe()["allowed"] == [17, 27]
    finally:
        await p.stop()


async def test_unconfigured_pin_is_not_found(provider: GpioProvider) -> None:
    with pytest.raises(NotFound, match="GPIO pin 17 is not configured by actor 'blinky'"):
        await call(provider.read, link(), 17)


async def test_busy_across_two_links_and_free_after_link_removed(provider: GpioProvider) -> None:
    a, b = link("a", pins="17"), link("b", pins="17")
    await call(provider.configure_output, a, 17, True)
    with pytest.raises(Busy, match="GPIO pin 17 is in use by actor 'a'") as err:
        await call(provider.configure_input, b, 17, "up", 0)
    assert err.value.code == "busy"
    with pytest.raises(Busy):
        await call(provider.write, b, 17, False)
    assert await call(provider.read, a, 17) is True

    await provider.link_removed(a)
    await call(provider.configure_input, b, 17, "up", 0)
    assert [(p["pin"], p["owner"]) for p in provider.describe()["pins"]] == [(17, "b")]


# -- safe states -----------------------------------------------------------------------


async def test_safe_state_applied_on_link_removed(tmp_path: Path) -> None:
    p = await start(tmp_path, {"backend": "mock", "safe_state": {"27": "high", "22": "input"}})
    try:
        lk = link(pins="17,18,22,27")
        await call(p.configure_output, lk, 17, True)  # default safe state: low
        await call(p.configure_output, lk, 27, False)
        await call(p.set_pwm, lk, 18, 0.5, 100)
        await call(p.configure_output, lk, 22, True)
        await p.link_removed(lk)
        assert p.factory.pin(17).state == 0
        assert p.factory.pin(18).state == 0
        assert p.factory.pin(27).state == 1
        assert p.factory.pin(22).function == "input"
        described = p.describe()
        assert described["pins"] == []
        assert described["released"] == [{"pin": 17, "value": False}, {"pin": 18, "value": 0.0},
                                          {"pin": 27, "value": True}]
        # a held pin is free: any granted link may configure it
        other = link("other", pins="27")
        await call(p.configure_output, other, 27, False)
        assert p.describe()["pins"] == [{"pin": 27, "mode": "output", "owner": "other", "value": False}]
    finally:
        await p.stop()


async def test_safe_state_applied_on_stop(tmp_path: Path) -> None:
    p = await start(tmp_path, {"backend": "mock", "safe_state": {"27": "high"}})
    lk = link()
    await call(p.configure_output, lk, 17, True)
    await call(p.configure_output, lk, 27, False)
    pin17, pin27 = p.factory.pin(17), p.factory.pin(27)
    pin17.clear_states()
    pin27.clear_states()
    await p.stop()
    # the first change at stop is to the safe level; closing then releases the pins
    assert [s.state for s in pin17.states][:2] == [1, 0]
    assert [s.state for s in pin27.states][:2] == [0, 1]
    assert pin17.function == "input" and pin27.function == "input"
    await p.stop()  # idempotent
    with pytest.raises(Unavailable, match="not running"):
        await call(p.read, lk, 17)


# -- edges -----------------------------------------------------------------------------


async def test_events_deliver_one_message_per_edge_to_the_linked_actor(provider: GpioProvider, inbox: Inbox) -> None:
    lk = link("button", pins="17", events="17")
    await provider.link_added(lk)
    assert await call(provider.read, lk, 17) is True  # pulled up by default

    before = time.time()
    await call(provider.simulate, 17, False)  # pressed: to ground
    [(actor, message)] = await inbox.wait_for(1)
    assert actor == "button"
    assert message.subject == "gpio.17.falling"
    body = json.loads(message.body)
    assert body["pin"] == 17 and body["edge"] == "falling" and body["node"] == "pi-1"
    assert before - 1 <= body["timestamp"] <= time.time() + 1

    await call(provider.simulate, 17, True)
    messages = await inbox.wait_for(2)
    assert len(messages) == 2
    assert messages[1][1].subject == "gpio.17.rising"
    assert json.loads(messages[1][1].body)["edge"] == "rising"


async def test_edge_filter_delivers_only_falling(provider: GpioProvider, inbox: Inbox) -> None:
    await provider.link_added(link("button", pins="17", events="17:falling"))
    for level in (False, True, False, True):
        await call(provider.simulate, 17, level)
    messages = await inbox.wait_for(2)
    assert [m.subject for _, m in messages] == ["gpio.17.falling", "gpio.17.falling"]


async def test_events_pin_reconfigured_by_the_actor_keeps_delivering(provider: GpioProvider, inbox: Inbox) -> None:
    lk = link("button", pins="17", events="17", pull="down")
    await provider.link_added(lk)
    assert await call(provider.read, lk, 17) is False
    await call(provider.configure_input, lk, 17, "up", 5)
    assert await call(provider.read, lk, 17) is True
    await call(provider.simulate, 17, False)
    messages = await inbox.wait_for(1)
    assert [m.subject for _, m in messages] == ["gpio.17.falling"]


async def test_putting_a_link_again_applies_its_new_config(provider: GpioProvider, inbox: Inbox) -> None:
    await provider.link_added(link("button", pins="17,27", events="17"))
    await call(provider.configure_output, link("button", pins="17,27"), 27, True)
    await provider.link_added(link("button", pins="17,27"))  # no events any more
    await call(provider.simulate, 17, False)
    await asyncio.sleep(SETTLE_S)  # the behaviour under test: nothing arrives meanwhile
    assert inbox.messages == []
    await provider.link_added(link("button", pins="17"))  # 27 no longer granted: released to low
    assert [p["pin"] for p in provider.describe()["pins"]] == [17]
    assert provider.factory.pin(27).state == 0


async def test_link_with_events_on_a_pin_it_cannot_have_is_refused(provider: GpioProvider, inbox: Inbox) -> None:
    with pytest.raises(Denied, match="not granted GPIO pin 22"):
        await provider.link_added(link("button", pins="17", events="22"))
    owner = link("owner", pins="17")
    await call(provider.configure_output, owner, 17, True)
    with pytest.raises(Busy, match="in use by actor 'owner'"):
        await provider.link_added(link("button", pins="17", events="17"))
    assert provider.describe()["pins"] == [{"pin": 17, "mode": "output", "owner": "owner", "value": True}]


async def test_simulate_needs_an_input(provider: GpioProvider) -> None:
    with pytest.raises(NotFound, match="GPIO pin 17 is not configured; simulate drives input pins only"):
        await call(provider.simulate, 17, True)


# -- config ----------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "error"), [
    ({"backend": "floppy"}, r"providers\.gpio\.backend: must be one of auto, lgpio, mock, native, rpigpio \(the "
                            r"backends registered in the drupelet\.gpio_backends entry-point group\), not 'floppy'"),
    ({"backend": "mock", "safe_state": {"17": "sideways"}},
     r"providers\.gpio\.safe_state\.17: must be one of low, high, input, not 'sideways'"),
    ({"backend": "mock", "safe_state": {"led": "low"}}, r"providers\.gpio\.safe_state\.led: the key must be"),
    ({"backend": "mock", "pins": [17], "safe_state": {"27": "low"}}, r"safe_state\.27: pin 27 is not in"),
    ({"backend": "mock", "colour": "red"},
     r"providers\.gpio\.colour: unknown key \(known: backend, pins, safe_state\)"),
    ({"backend": "mock", "pins": "17"}, r"providers\.gpio\.pins: expected a list"),
    ({"backend": "mock", "pins": [17, -1]}, r"providers\.gpio\.pins\[1\]: expected an integer >= 0, got -1"),
    ({"backend": "mock", "pins": [17, 40]}, r"providers\.gpio\.pins: the board has no GPIO 40"),
])
async def test_bad_node_config_names_the_key(tmp_path: Path, config: dict[str, Any], error: str) -> None:
    with pytest.raises(SchemaError, match=error):
        await start(tmp_path, config)


async def test_environment_overrides_the_configured_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "mock")
    p = await start(tmp_path, {"backend": "lgpio"})
    try:
        assert p.backend == "mock" and p.simulated
        assert p.describe()["backend"] == "mock"
    finally:
        await p.stop()
    monkeypatch.setenv(BACKEND_ENV, "gpiod")
    with pytest.raises(SchemaError, match=f"{BACKEND_ENV}: must be one of auto, lgpio, mock"):
        await start(tmp_path, {})


async def test_real_backend_that_cannot_load_is_a_clear_error(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lgpio", None)  # import lgpio raises ImportError
    monkeypatch.delitem(sys.modules, "gpiozero.pins.lgpio", raising=False)
    with pytest.raises(ValueError, match=r"providers\.gpio\.backend = 'lgpio': lgpio is not installed; "
                                         r"pip install 'drupelet\[pi\]'"):
        await start(tmp_path, {"backend": "lgpio"})


async def test_auto_off_a_pi_simulates_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(gpio.backends, "GPIOCHIP", tmp_path / "no-gpiochip")
    with caplog.at_level(logging.WARNING, logger="drupelet.providers.gpio"):
        p = await start(tmp_path, {})
    try:
        assert p.backend == "mock" and p.describe()["simulated"] is True
        assert any(r.levelno == logging.WARNING and "GPIO is SIMULATED" in r.getMessage() for r in caplog.records)
        assert "simulated" in p.health().message
    finally:
        await p.stop()


def test_the_schema_checks_a_table_without_opening_a_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lgpio", None)  # lgpio could not load here: the check must not try
    settings = GpioProvider.parse_config({"backend": "lgpio", "pins": [27, 17], "safe_state": {"27": "high"}})
    assert (settings.backend, settings.pins, settings.safe_state) == ("lgpio", [27, 17], {"27": "high"})
    assert GpioProvider.config_schema is gpio.GpioSettings
    defaults = GpioProvider.parse_config({})
    assert (defaults.backend, defaults.pins, defaults.safe_state) == ("auto", list(range(2, 28)), {})
    with pytest.raises(SchemaError, match=r"^providers\.gpio\.safe_state\.22: pin 22 is not in providers\.gpio\.pins "
                                          r"\(17,27\)$"):
        GpioProvider.parse_config({"pins": [17, 27], "safe_state": {"22": "low"}})
    with pytest.raises(SchemaError, match=r"^node\.gpio\.backend: must be one of auto, lgpio"):
        GpioProvider.parse_config({"backend": "gpiod"}, where="node.gpio")
    keys = [doc.key for doc in key_docs(gpio.GpioSettings)]
    assert keys == ["backend", "pins", "safe_state"]
    assert all(doc.meaning for doc in key_docs(gpio.GpioSettings))


def test_parse_config_applies_the_environment_only_when_asked() -> None:
    table = {"backend": "lgpio", "pins": [17], "safe_state": {"17": "input"}}
    cfg = gpio.parse_config(table, {})
    assert (cfg.backend, cfg.backend_key, cfg.pins, dict(cfg.safe_state)) == \
        ("lgpio", "providers.gpio.backend", (17,), {17: "input"})
    cfg = gpio.parse_config(table, {BACKEND_ENV: "mock"})
    assert (cfg.backend, cfg.backend_key) == ("mock", BACKEND_ENV)


def test_drupelet_registers_its_backends_as_entry_points() -> None:
    registered = gpio.registered_backends()
    assert {"mock", "lgpio", "rpigpio", "native"} <= set(registered)
    assert all(entry.group == gpio.BACKEND_GROUP for entry in registered.values())
    assert gpio.load_backend("mock") is gpio.SimulatedBackend
    assert gpio.load_backend("lgpio") is gpio.LgpioBackend  # loading the class does not import lgpio
    assert {name: issubclass(gpio.load_backend(name), gpio.GpioBackend) for name in registered} == \
        {name: True for name in registered}
    with pytest.raises(gpio.GpioBackendError, match=r"providers\.gpio\.backend = 'gpiod': no GPIO backend of that "
                                                    r"name is registered .*\(registered: .*mock"):
        gpio.open_backend("gpiod")


THIRD_PARTY_BACKEND = """
from gpiozero.pins.mock import MockFactory

from drupelet.providers.gpio import GpioBackend


class LoopbackBackend(GpioBackend):
    simulated = True

    def open_factory(self) -> MockFactory:
        return MockFactory()


NOT_A_BACKEND = object()
"""


@pytest.fixture
def third_party_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A package installed beside drupelet that registers GPIO backends ``loopback`` and ``broken``."""
    site = tmp_path / "site"
    dist = site / "loopback_gpio-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: loopback-gpio\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[drupelet.gpio_backends]\nloopback = loopback_gpio:LoopbackBackend\n"
                                           "broken = loopback_gpio:NOT_A_BACKEND\n")
    (site / "loopback_gpio.py").write_text(THIRD_PARTY_BACKEND)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "loopback_gpio", raising=False)
    gpio.registered_backends.cache_clear()
    try:
        yield
    finally:
        monkeypatch.undo()
        sys.modules.pop("loopback_gpio", None)
        gpio.registered_backends.cache_clear()


async def test_a_backend_another_package_registers_can_be_chosen(tmp_path: Path, third_party_backend: None) -> None:
    assert "loopback" in gpio.backend_names()
    assert GpioProvider.parse_config({"backend": "loopback"}).backend == "loopback"
    p = await start(tmp_path, {"backend": "loopback", "pins": [17]})
    try:
        assert (p.backend, p.simulated, p.describe()["backend"]) == ("loopback", True, "loopback")
        lk = link(pins="17")
        await call(p.configure_output, lk, 17, True)
        assert p.factory.pin(17).state == 1
    finally:
        await p.stop()
    with pytest.raises(gpio.GpioBackendError, match=r"'broken': loopback_gpio:NOT_A_BACKEND is not a GpioBackend"):
        await start(tmp_path, {"backend": "broken"})


# -- real hardware ---------------------------------------------------------------------


def env_pin(name: str) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.isdigit():
        pytest.fail(f"set {name} to a BCM pin number to run the GPIO hardware test")
    return int(raw)


@pytest.mark.hardware
async def test_real_led_button_and_loopback(tmp_path: Path, inbox: Inbox) -> None:
    led, button = env_pin("DRUPELET_TEST_LED_PIN"), env_pin("DRUPELET_TEST_BUTTON_PIN")
    loopback = os.environ.get("DRUPELET_TEST_GPIO_LOOPBACK") == "1"
    p = await start(tmp_path, {"backend": os.environ.get("DRUPELET_TEST_GPIO_BACKEND", "lgpio")}, inbox)
    try:
        assert not p.simulated
        lk = link("hw", pins=f"{led},{button}", events=str(button), pull="up", debounce_ms="0")
        await p.link_added(lk)

        await call(p.configure_output, lk, led, False)
        assert await call(p.read, lk, led) is False
        assert await call(p.toggle, lk, led) is True
        assert await call(p.read, lk, led) is True
        await asyncio.sleep(0.3)  # long enough for a person to see the LED lit
        assert await call(p.toggle, lk, led) is False
        assert isinstance(await call(p.read, lk, button), bool)
        with pytest.raises(Denied, match="is a real pin"):
            await call(p.simulate, button, False)

        if loopback:
            await call(p.write, lk, led, True)
            await wait_for_async(lambda: call(p.read, lk, button), DELIVERY_TIMEOUT_S,
                                 "the LED's high level on the button pin")
            inbox.messages.clear()
            await call(p.write, lk, led, False)
            messages = await inbox.wait_for(1)
            assert f"gpio.{button}.falling" in [m.subject for _, m in messages]
            assert await call(p.read, lk, button) is False
        await p.link_removed(lk)
    finally:
        await p.stop()
