"""The ``gpio`` provider: ``drupelet:hardware/gpio`` on the board's pins, through gpiozero.

Pins are BCM numbers. Every device is made on this provider's own gpiozero pin factory
(passed as ``pin_factory=``); gpiozero's global ``Device.pin_factory`` is never touched.

Node config ``[providers.gpio]``:

| key | default | meaning |
|---|---|---|
| ``backend`` | ``"auto"`` | ``"auto"``: ``lgpio`` when the ``lgpio`` module imports and ``/dev/gpiochip0`` exists, else ``mock`` with a WARNING that GPIO is simulated. ``"mock"``: gpiozero's ``MockFactory`` with PWM-capable pins; nothing physical moves and :meth:`GpioProvider.simulate` can press buttons. ``"lgpio"``, ``"rpigpio"``, ``"native"``: gpiozero's pin factory of that name; one that cannot load stops the node from starting. The environment variable ``DRUPELET_GPIO_BACKEND`` overrides this key. |
| ``pins`` | BCM 2 to 27 | list of the pins any link may be granted |
| ``safe_state`` | every pin ``"low"`` | table ``{"<pin>" = "low" \\| "high" \\| "input"}``: what an output (or PWM) pin is set to when its link goes. ``low``/``high``: the provider keeps driving it at that level until a link configures the pin again. ``input``: the pin is released as a floating input. |

Link config (all strings):

| key | default | meaning |
|---|---|---|
| ``pins`` | none | comma-separated pins this link may use (``"17,27"``); absent or empty grants none |
| ``events`` | none | input pins whose edges are sent to the actor: ``"17"`` or ``"17:falling,22:both"`` (``rising``, ``falling`` or ``both``, the default). The provider configures them as inputs when the link is put; each must be granted by ``pins`` and free |
| ``pull`` | ``"up"`` | the pull resistor of the ``events`` pins: ``up``, ``down`` or ``none`` |
| ``debounce_ms`` | ``"20"`` | the debounce time of the ``events`` pins, in milliseconds |

Edges reach the actor's ``wasmcloud:messaging/handler`` as subject
``gpio.<pin>.<rising|falling>`` with a JSON body ``{"pin", "edge", "timestamp" (Unix
seconds), "node"}`` (:class:`EdgeEvent`). ``rising`` and ``falling`` are the pin's
electrical level: with ``pull = "up"`` a button to ground gives ``falling`` when pressed
and ``rising`` when let go. An events pin the actor reconfigures with ``configure-input``
keeps its events; one it turns into an output sends none until it is an input again.

Ownership: the first ``configure-input``, ``configure-output`` or ``set-pwm`` on a pin
claims it for that link (actor and interface) until the link is deleted or its actor
stops; another link gets ``busy`` naming the owner. Reconfiguring an owned pin closes the
old gpiozero device first; if the new one cannot be made, the pin is free again. When a
link goes, its inputs are closed and its outputs go to their safe state (``describe()``
lists those held at ``low``/``high`` under ``released``; they are free to configure).
Putting a link again with new config releases the pins it no longer grants and applies
its new ``events``. At ``stop`` every output is set to its safe state, then every device
and the factory are closed, which leaves the pins as inputs (gpiozero's release).

Simulation (backend ``mock``): :meth:`GpioProvider.simulate` sets a configured input's
level and fires the same edges a real one would. gpiozero's mock pins do not debounce.

``describe()``: ``{"backend", "simulated", "pins": [{"pin", "mode", "owner", "value"}],
"released": [{"pin", "value"}], "allowed": [...]}``; ``value`` is the level (bool) or a
PWM duty cycle (float).

Calls and their errors (``code`` of the :class:`~.base.ProviderError` raised):

- ``configure_input(link, pin, pull, debounce_ms)``, ``configure_output(link, pin, initial)``
- ``read(link, pin) -> bool``: the electrical level (True = high) of an input or output;
  of a PWM pin, whether its duty cycle is above zero.
- ``write(link, pin, value)``, ``toggle(link, pin) -> bool`` (the new level): outputs,
  and PWM pins (full on or off).
- ``set_pwm(link, pin, duty, frequency_hz)``: claims the pin as a PWM output.
- ``not-found``: the pin is not in ``providers.gpio.pins``, or this link has not
  configured it. ``denied``: the link's ``pins`` does not grant it. ``busy``: another
  link owns it. ``io``: gpiozero or the driver refused (fixed pull resistor, no PWM on
  this backend, …). ``other`` (:class:`GpioUsageError`): a bad argument, or writing an
  input.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

from gpiozero import DigitalOutputDevice, InputDevice, PWMOutputDevice
from gpiozero.pins.mock import MockFactory, MockPWMPin

from .base import (
    BackendIOError,
    Busy,
    Denied,
    Health,
    Link,
    Message,
    NotFound,
    Provider,
    ProviderContext,
    ProviderError,
    Unavailable,
)

log = logging.getLogger(__name__)

INTERFACE = "drupelet:hardware/gpio"
BACKEND_ENV = "DRUPELET_GPIO_BACKEND"
BACKENDS = ("auto", "mock", "lgpio", "rpigpio", "native")
REAL_BACKENDS = ("lgpio", "rpigpio", "native")
DEFAULT_BACKEND = "auto"
DEFAULT_PINS = tuple(range(2, 28))
GPIOCHIP = Path("/dev/gpiochip0")
CONFIG_KEYS = ("backend", "pins", "safe_state")
SAFE_STATES = ("low", "high", "input")
DEFAULT_SAFE_STATE = "low"
PULLS: Mapping[str, bool | None] = {"up": True, "down": False, "none": None}
EDGES = ("rising", "falling", "both")
DEFAULT_EDGES = "both"
DEFAULT_EVENT_PULL = "up"
DEFAULT_EVENT_DEBOUNCE_MS = 20
MS_PER_S = 1000.0

Owner = tuple[str, str]
"""Who owns a pin: (actor, interface) of the link that claimed it."""
Mode = Literal["input", "output", "pwm"]
Edge = Literal["rising", "falling"]


class GpioUsageError(ProviderError, ValueError):
    """A call the pin's state or the arguments do not allow (writing an input, duty 1.5)."""

    def __init__(self, message: str, *, pin: int | None = None) -> None:
        super().__init__(message, provider="gpio")
        self.pin = pin


class EdgeEvent(TypedDict):
    """The JSON body of an edge message."""

    pin: int
    edge: Edge
    timestamp: float
    """Unix seconds when the provider saw the edge."""
    node: str
    """The node whose pin it is."""


def edge_subject(pin: int, edge: Edge) -> str:
    """The subject an edge is delivered under: ``gpio.17.falling``."""
    return f"gpio.{pin}.{edge}"


def edge_body(pin: int, edge: Edge, timestamp: float, node: str) -> bytes:
    event: EdgeEvent = {"pin": pin, "edge": edge, "timestamp": timestamp, "node": node}
    return json.dumps(event).encode("utf-8")


def format_pins(pins: Iterable[int]) -> str:
    """``[2, 3, 4, 17]`` → ``"2-4,17"``; ``"none"`` when empty."""
    ordered = sorted(set(pins))
    if not ordered:
        return "none"
    parts: list[str] = []
    start = prev = ordered[0]
    for pin in ordered[1:] + [-1]:
        if pin == prev + 1:
            prev = pin
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = pin
    return ",".join(parts)


# -- backends -------------------------------------------------------------------------


class GpioBackend:
    """A gpiozero pin factory the provider makes its devices on.

    A backend must pass its ``name`` and an open gpiozero ``factory`` to ``__init__``.
    It may override ``simulated`` and ``drive`` (set an input pin's level from outside,
    as a wire would; only a simulated backend can) and ``close``.
    """

    simulated = False

    def __init__(self, name: str, factory: Any) -> None:
        self.name = name
        self.factory = factory

    def drive(self, pin: int, device: Any, level: bool) -> None:
        raise not_simulated(pin, self.name)

    def has_pin(self, pin: int) -> bool:
        """Whether the board has BCM ``pin`` on a header, as the factory's board info says."""
        return any(True for _ in self.factory.board_info.find_pin(f"GPIO{pin}"))

    def close(self) -> None:
        self.factory.close()


class SimulatedBackend(GpioBackend):
    """gpiozero's ``MockFactory`` with PWM-capable pins: levels live in memory.

    ``drive`` goes through the mock pin's ``drive_high``/``drive_low``, which fire the
    same pin callbacks a real edge fires.
    """

    simulated = True

    def __init__(self) -> None:
        super().__init__("mock", MockFactory(pin_class=MockPWMPin))

    def drive(self, pin: int, device: Any, level: bool) -> None:
        if level:
            device.pin.drive_high()
        else:
            device.pin.drive_low()


@dataclass(frozen=True)
class _RealFactory:
    module: str
    cls: str
    dependency: str | None
    install_hint: str


_REAL_FACTORIES: Mapping[str, _RealFactory] = {
    "lgpio": _RealFactory("gpiozero.pins.lgpio", "LGPIOFactory", "lgpio", "pip install 'drupelet[pi]'"),
    "rpigpio": _RealFactory("gpiozero.pins.rpigpio", "RPiGPIOFactory", "RPi", "pip install RPi.GPIO"),
    "native": _RealFactory("gpiozero.pins.native", "NativeFactory", None, ""),
}


def lgpio_unusable() -> str | None:
    """What ``backend = "auto"`` asks: why ``lgpio`` cannot be used here, or None when it can."""
    try:
        importlib.import_module("lgpio")
    except ImportError:
        return "lgpio is not installed (pip install 'drupelet[pi]' on a Pi)"
    if not GPIOCHIP.exists():
        return f"{GPIOCHIP} does not exist (not a Raspberry Pi?)"
    return None


def open_backend(name: str, key: str = "providers.gpio.backend") -> GpioBackend:
    """Open the backend ``name`` (not ``auto``). ``key`` names where the choice came from.

    Raises ValueError naming the backend and the reason when a real one cannot load.
    """
    if name == "mock":
        return SimulatedBackend()
    spec = _REAL_FACTORIES[name]
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        if spec.dependency is not None and (exc.name or "").split(".")[0] == spec.dependency:
            raise ValueError(f"{key} = {name!r}: {spec.dependency} is not installed; {spec.install_hint}") from exc
        raise ValueError(f"{key} = {name!r}: cannot load gpiozero's {spec.cls}: {exc}") from exc
    try:
        factory = getattr(module, spec.cls)()
    except Exception as exc:  # each library fails its own way (lgpio.error, RuntimeError, OSError)
        raise ValueError(f"{key} = {name!r}: cannot open the GPIO pins ({type(exc).__name__}: {exc}); "
                         "is this a Raspberry Pi, and may the node's user use GPIO (the gpio group)?") from exc
    return GpioBackend(name, factory)


def not_simulated(pin: int, backend: str) -> Denied:
    return Denied(f"GPIO pin {pin} is a real pin (backend {backend!r}): only the simulated backend "
                  "(providers.gpio.backend = \"mock\") can set an input's level from outside; press the "
                  "button or wire the pin instead", provider="gpio")


@contextmanager
def _io(pin: int, action: str) -> Iterator[None]:
    """Turn what gpiozero or the driver raises into BackendIOError naming the pin."""
    try:
        yield
    except ProviderError:
        raise
    except Exception as exc:  # gpiozero's GPIOZeroError tree, lgpio.error, OSError, …
        raise BackendIOError(f"GPIO pin {pin}: cannot {action}: {type(exc).__name__}: {exc}",
                             provider="gpio") from exc


# -- config ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GpioConfig:
    backend: str
    backend_key: str
    pins: tuple[int, ...]
    safe_state: Mapping[int, str]


def parse_config(config: Mapping[str, Any], environ: Mapping[str, str]) -> GpioConfig:
    """Validate ``[providers.gpio]``; ValueError names the key."""
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"providers.gpio: unknown key(s) {', '.join(unknown)} (known: {', '.join(CONFIG_KEYS)})")

    backend_key = "providers.gpio.backend"
    backend = config.get("backend", DEFAULT_BACKEND)
    if environ.get(BACKEND_ENV):
        backend_key, backend = BACKEND_ENV, environ[BACKEND_ENV]
    if backend not in BACKENDS:
        raise ValueError(f"{backend_key} must be one of {', '.join(BACKENDS)}, not {backend!r}")

    raw_pins = config.get("pins", list(DEFAULT_PINS))
    if not isinstance(raw_pins, list) or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0
                                                 for p in raw_pins):
        raise ValueError(f"providers.gpio.pins must be a list of BCM pin numbers such as [17, 27], not {raw_pins!r}")
    pins = tuple(sorted(set(raw_pins)))

    raw_safe = config.get("safe_state", {})
    if not isinstance(raw_safe, Mapping):
        raise ValueError(f"providers.gpio.safe_state must be a table such as {{\"17\" = \"high\"}}, not {raw_safe!r}")
    safe: dict[int, str] = {}
    for key, value in raw_safe.items():
        where = f"providers.gpio.safe_state.{key}"
        try:
            pin = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: the key must be a BCM pin number such as \"17\"") from None
        if pin not in pins:
            raise ValueError(f"{where}: pin {pin} is not in providers.gpio.pins ({format_pins(pins)})")
        if value not in SAFE_STATES:
            raise ValueError(f"{where} must be one of {', '.join(SAFE_STATES)}, not {value!r}")
        safe[pin] = value
    return GpioConfig(backend, backend_key, pins, safe)


def granted_pins(link: Link) -> frozenset[int]:
    """The pins the link's ``pins`` config grants."""
    raw = link.config.get("pins", "")
    try:
        return frozenset(int(p) for p in raw.split(",") if p.strip())
    except ValueError:
        raise Denied(f"actor {link.source!r}: link config pins = {raw!r} is not a comma-separated list of BCM "
                     "pin numbers such as \"17,27\"; fix the link's `pins` config", provider="gpio") from None


@dataclass(frozen=True)
class EventConfig:
    edges: Mapping[int, str]
    pull: str
    debounce_ms: int


def event_config(link: Link) -> EventConfig:
    """The link's ``events``, ``pull`` and ``debounce_ms``; ProviderError when malformed."""
    raw = link.config.get("events", "")
    edges: dict[int, str] = {}
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        pin_text, _, edge = item.partition(":")
        edge = edge.strip() or DEFAULT_EDGES
        try:
            pin = int(pin_text)
        except ValueError:
            pin = -1
        if pin < 0 or edge not in EDGES:
            raise ProviderError(f"actor {link.source!r}: link config events = {raw!r}: {item!r} is not "
                                "<pin> or <pin>:<rising|falling|both>", provider="gpio")
        edges[pin] = edge
    pull = link.config.get("pull", DEFAULT_EVENT_PULL)
    if pull not in PULLS:
        raise ProviderError(f"actor {link.source!r}: link config pull = {pull!r} must be up, down or none",
                            provider="gpio")
    raw_debounce = link.config.get("debounce_ms", str(DEFAULT_EVENT_DEBOUNCE_MS))
    try:
        debounce_ms = int(raw_debounce)
    except ValueError:
        debounce_ms = -1
    if debounce_ms < 0:
        raise ProviderError(f"actor {link.source!r}: link config debounce_ms = {raw_debounce!r} must be a "
                            "whole number of milliseconds, 0 or more", provider="gpio")
    return EventConfig(edges, pull, debounce_ms)


def _owner(link: Link) -> Owner:
    return (link.source, link.interface)


# -- pins in use ----------------------------------------------------------------------


class _EdgeWatcher:
    """A pin's ``when_changed`` callback: level changes become edges for one actor.

    gpiozero calls it on its own thread (on the caller's for the mock). It keeps the last
    level so repeated reports of one level (lgpio's watchdog, bounce) make no edge, and
    takes no provider lock, so closing a device can never wait on it.
    """

    def __init__(self, send: Callable[[str, int, Edge], None], actor: str, pin: int, edges: str,
                 level: bool) -> None:
        self._send = send
        self.actor = actor
        self.pin = pin
        self.edges = edges
        self.active = True
        self._level = level
        self._lock = threading.Lock()

    def __call__(self, ticks: float, state: Any) -> None:
        if not self.active or state not in (0, 1):  # lgpio reports 2 for a watchdog timeout
            return
        level = bool(state)
        with self._lock:
            if level == self._level:
                return
            self._level = level
        edge: Edge = "rising" if level else "falling"
        if self.edges in ("both", edge):
            self._send(self.actor, self.pin, edge)


@dataclass
class _PinUse:
    pin: int
    owner: Owner | None
    """None: its link went and the provider holds it at its safe state."""
    mode: Mode
    device: Any
    watcher: _EdgeWatcher | None = None


class GpioProvider(Provider):
    """GPIO pins for actors: inputs with edge events, outputs, PWM; one owner per pin."""

    name = "gpio"
    interfaces = (INTERFACE,)
    relink_when_actor_stops = True
    operations = {INTERFACE: frozenset({"configure_input", "configure_output", "read", "write", "toggle",
                                        "set_pwm"})}

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._backend: GpioBackend | None = None
        self._backend_name = "none"
        self._simulated = False
        self._allowed: tuple[int, ...] = DEFAULT_PINS
        self._safe: Mapping[int, str] = {}
        self._pins: dict[int, _PinUse] = {}
        self._events: dict[Owner, dict[int, str]] = {}
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._pending_lock = threading.Lock()

    @property
    def backend(self) -> str:
        """The backend in use (``mock``, ``lgpio``, …), after ``auto`` was resolved."""
        return self._backend_name

    @property
    def simulated(self) -> bool:
        return self._simulated

    @property
    def factory(self) -> Any:
        """The gpiozero pin factory (a ``MockFactory`` when simulated); for inspection."""
        return self._require_backend().factory

    # -- lifecycle (event loop) -----------------------------------------------------

    async def start(self, ctx: ProviderContext) -> None:
        await super().start(ctx)
        cfg = parse_config(ctx.config, os.environ)
        name = cfg.backend
        if name == "auto":
            why_not = await asyncio.to_thread(lgpio_unusable)
            name = "mock" if why_not else "lgpio"
            if why_not:
                log.warning("GPIO is SIMULATED: %s, so the gpio provider uses gpiozero's mock pins and nothing "
                            "physical moves; set providers.gpio.backend = \"lgpio\" to require real pins", why_not)
        backend = await asyncio.to_thread(open_backend, name, cfg.backend_key)
        try:
            missing = [p for p in cfg.pins if not backend.has_pin(p)]
        except Exception as exc:  # a board gpiozero does not know: let the pins fail when used
            log.warning("cannot check providers.gpio.pins against this board: %s", exc)
            missing = []
        if missing:
            backend.close()
            raise ValueError(f"providers.gpio.pins: the board has no GPIO {format_pins(missing)} on its header "
                             f"(backend {name})")
        if backend.simulated and cfg.backend != "auto":
            log.info("GPIO is simulated (backend mock): nothing physical moves")
        elif not backend.simulated:
            log.info("GPIO uses the %s backend on pins %s", name, format_pins(cfg.pins))
        with self._lock:
            self._backend = backend
            self._backend_name = name
            self._simulated = backend.simulated
            self._allowed = cfg.pins
            self._safe = cfg.safe_state

    async def stop(self) -> None:
        """Put outputs in their safe state, close every device and the factory. Idempotent."""
        await asyncio.to_thread(self._close_all)
        with self._pending_lock:
            pending = list(self._pending)
        for fut in pending:
            fut.cancel()
        if pending:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in pending), return_exceptions=True)

    def _close_all(self) -> None:
        with self._lock:
            backend, self._backend = self._backend, None
            if backend is None:
                return
            for use in list(self._pins.values()):
                if use.owner is not None:
                    self._to_safe_state(use)
                self._close_device(use)
            self._pins.clear()
            self._events.clear()
            try:
                backend.close()
            except Exception:
                log.warning("closing the %s GPIO backend failed", backend.name, exc_info=True)

    async def link_added(self, link: Link) -> None:
        events = event_config(link)
        await asyncio.to_thread(self._apply_link, link, events)
        if events.edges:
            log.info("actor %s gets GPIO edges on pins %s", link.source,
                     ", ".join(f"{p}:{e}" for p, e in sorted(events.edges.items())))

    async def link_removed(self, link: Link) -> None:
        await asyncio.to_thread(self._release_owner, _owner(link))

    def health(self) -> Health:
        if self._simulated:
            return Health("ok", "GPIO is simulated (mock backend): nothing physical moves")
        return Health("ok")

    def describe(self) -> dict[str, Any]:
        with self._lock:
            uses = sorted(self._pins.values(), key=lambda u: u.pin)
            pins = [{"pin": u.pin, "mode": u.mode, "owner": u.owner[0], "value": self._value(u)}
                    for u in uses if u.owner is not None]
            released = [{"pin": u.pin, "value": self._value(u)} for u in uses if u.owner is None]
            return {"backend": self._backend_name, "simulated": self._simulated, "pins": pins,
                    "released": released, "allowed": list(self._allowed)}

    # -- import calls (worker thread) -------------------------------------------------

    def configure_input(self, link: Link, pin: int, pull: str, debounce_ms: int) -> None:
        if pull not in PULLS:
            raise GpioUsageError(f"GPIO pin {pin}: pull must be up, down or none, not {pull!r}", pin=pin)
        if isinstance(debounce_ms, bool) or not isinstance(debounce_ms, int) or debounce_ms < 0:
            raise GpioUsageError(f"GPIO pin {pin}: debounce_ms must be 0 or more, not {debounce_ms!r}", pin=pin)
        owner = _owner(link)
        with self._lock:
            self._check(link, pin)
            edges = self._events.get(owner, {}).get(pin)
            self._make_input(owner, pin, pull, debounce_ms, edges)

    def configure_output(self, link: Link, pin: int, initial: bool) -> None:
        with self._lock:
            factory = self._check(link, pin)
            self._replace(_owner(link), pin, "output",
                          lambda: DigitalOutputDevice(pin, initial_value=bool(initial), pin_factory=factory))

    def read(self, link: Link, pin: int) -> bool:
        with self._lock:
            use = self._owned(link, pin)
            with _io(pin, "read it"):
                if use.mode == "pwm":
                    return bool(use.device.value > 0)
                return bool(use.device.pin.state)

    def write(self, link: Link, pin: int, value: bool) -> None:
        with self._lock:
            use = self._owned(link, pin)
            self._require_output(use, "write")
            with _io(pin, "write it"):
                if use.mode == "pwm":
                    use.device.value = 1.0 if value else 0.0
                else:
                    use.device.value = bool(value)

    def toggle(self, link: Link, pin: int) -> bool:
        with self._lock:
            use = self._owned(link, pin)
            self._require_output(use, "toggle")
            with _io(pin, "toggle it"):
                if use.mode == "pwm":
                    use.device.value = 0.0 if use.device.value > 0 else 1.0
                    return bool(use.device.value > 0)
                use.device.toggle()
                return bool(use.device.pin.state)

    def set_pwm(self, link: Link, pin: int, duty: float, frequency_hz: int) -> None:
        if isinstance(duty, bool) or not isinstance(duty, (int, float)) or not 0.0 <= duty <= 1.0:
            raise GpioUsageError(f"GPIO pin {pin}: the duty cycle must be from 0.0 to 1.0, not {duty!r}", pin=pin)
        if isinstance(frequency_hz, bool) or not isinstance(frequency_hz, int) or frequency_hz < 1:
            raise GpioUsageError(f"GPIO pin {pin}: the PWM frequency must be 1 Hz or more, not {frequency_hz!r}",
                                 pin=pin)
        owner = _owner(link)
        with self._lock:
            factory = self._check(link, pin)
            use = self._pins.get(pin)
            if use is not None and use.owner == owner and use.mode == "pwm":
                with _io(pin, f"set PWM to {duty} at {frequency_hz} Hz"):
                    if use.device.frequency != frequency_hz:
                        use.device.frequency = frequency_hz
                    use.device.value = float(duty)
                return
            self._replace(owner, pin, "pwm",
                          lambda: PWMOutputDevice(pin, initial_value=float(duty), frequency=frequency_hz,
                                                  pin_factory=factory))

    # -- simulation -------------------------------------------------------------------

    def simulate(self, pin: int, level: bool) -> None:
        """Drive a simulated input pin high or low, as a button or wire would.

        Fires the same edge events a real edge fires. Denied on a real backend;
        NotFound when the pin is not configured as an input.
        """
        with self._lock:
            backend = self._require_backend()
            if not backend.simulated:
                raise not_simulated(pin, backend.name)
            self._check_allowed(pin)
            use = self._pins.get(pin)
            if use is None or use.mode != "input":
                state = "not configured" if use is None else f"configured as {use.mode}"
                raise NotFound(f"GPIO pin {pin} is {state}; simulate drives input pins only: configure it with "
                               "configure-input or a link's `events` first", provider=self.name)
            with _io(pin, f"drive it {'high' if level else 'low'}"):
                backend.drive(pin, use.device, bool(level))

    # -- internals (called with self._lock held) ---------------------------------------

    def _require_backend(self) -> GpioBackend:
        if self._backend is None:
            raise Unavailable("the gpio provider is not running (not started, or stopped)", provider=self.name)
        return self._backend

    def _check_allowed(self, pin: int) -> None:
        if isinstance(pin, bool) or not isinstance(pin, int) or pin not in self._allowed:
            node = self.ctx.node if self.ctx is not None else "this node"
            raise NotFound(f"GPIO pin {pin!r} is not available on node {node!r} (providers.gpio.pins allows "
                           f"{format_pins(self._allowed)}); use one of those or add it to providers.gpio.pins",
                           provider=self.name)

    def _check(self, link: Link, pin: int) -> Any:
        """Allowlist, grant, ownership; returns the pin factory to build a device on."""
        backend = self._require_backend()
        self._check_allowed(pin)
        grants = granted_pins(link)
        if pin not in grants:
            raise Denied(f"actor {link.source!r} is not granted GPIO pin {pin} (link grants: "
                         f"{link.config.get('pins') or 'none'}); add it to the link's `pins` config",
                         provider=self.name)
        use = self._pins.get(pin)
        if use is not None and use.owner is not None and use.owner != _owner(link):
            raise Busy(f"GPIO pin {pin} is in use by actor {use.owner[0]!r}; it is free again when that actor's "
                       "gpio link is deleted or the actor stops", provider=self.name)
        return backend.factory

    def _owned(self, link: Link, pin: int) -> _PinUse:
        self._check(link, pin)
        use = self._pins.get(pin)
        if use is None or use.owner is None:
            raise NotFound(f"GPIO pin {pin} is not configured by actor {link.source!r}; call configure-input, "
                           "configure-output or set-pwm first", provider=self.name)
        return use

    def _require_output(self, use: _PinUse, action: str) -> None:
        if use.mode == "input":
            raise GpioUsageError(f"cannot {action} GPIO pin {use.pin}: it is configured as an input; call "
                                 "configure-output on it first", pin=use.pin)

    def _replace(self, owner: Owner, pin: int, mode: Mode, make: Callable[[], Any]) -> _PinUse:
        old = self._pins.pop(pin, None)
        if old is not None:
            self._close_device(old)
        with _io(pin, f"configure it as {mode}"):
            device = make()
        use = _PinUse(pin, owner, mode, device)
        self._pins[pin] = use
        return use

    def _make_input(self, owner: Owner, pin: int, pull: str, debounce_ms: int, edges: str | None) -> None:
        factory = self._require_backend().factory
        pull_up = PULLS[pull]

        def make() -> Any:
            device = InputDevice(pin, pull_up=pull_up, active_state=True if pull_up is None else None,
                                 pin_factory=factory)
            try:
                device.pin.bounce = debounce_ms / MS_PER_S if debounce_ms else None
            except BaseException:
                device.close()
                raise
            return device

        use = self._replace(owner, pin, "input", make)
        if edges is not None:
            try:
                with _io(pin, "watch it for edges"):
                    watcher = _EdgeWatcher(self._send_edge, owner[0], pin, edges, bool(use.device.pin.state))
                    use.device.pin.edges = "both"
                    use.device.pin.when_changed = watcher  # the pin keeps a weak reference; use keeps it alive
            except BackendIOError:
                self._pins.pop(pin, None)
                self._close_device(use)
                raise
            use.watcher = watcher

    def _to_safe_state(self, use: _PinUse) -> None:
        """Set an output or PWM pin to its safe state; an ``input`` safe state closes it."""
        if use.mode == "input":
            return
        safe = self._safe.get(use.pin, DEFAULT_SAFE_STATE)
        if safe == "input":
            return
        level = safe == "high"
        try:
            use.device.value = (1.0 if level else 0.0) if use.mode == "pwm" else level
        except Exception:
            log.warning("GPIO pin %d: cannot set its safe state %s", use.pin, safe, exc_info=True)

    def _release(self, use: _PinUse) -> None:
        """Release a pin its link owned: an output stays at its safe level, held by the provider."""
        safe = self._safe.get(use.pin, DEFAULT_SAFE_STATE)
        if use.mode != "input" and safe != "input":
            self._to_safe_state(use)
            use.owner = None
            return
        self._pins.pop(use.pin, None)
        self._close_device(use)

    def _stop_watching(self, use: _PinUse) -> None:
        if use.watcher is None:
            return
        use.watcher.active = False
        use.watcher = None
        try:
            use.device.pin.when_changed = None
        except Exception:
            log.warning("GPIO pin %d: cannot stop watching it for edges", use.pin, exc_info=True)

    def _close_device(self, use: _PinUse) -> None:
        if use.watcher is not None:
            use.watcher.active = False
            use.watcher = None
        try:
            use.device.close()
        except Exception:
            log.warning("GPIO pin %d: closing its device failed", use.pin, exc_info=True)

    def _release_owner(self, owner: Owner) -> None:
        with self._lock:
            self._events.pop(owner, None)
            for use in [u for u in self._pins.values() if u.owner == owner]:
                self._release(use)

    def _apply_link(self, link: Link, events: EventConfig) -> None:
        owner = _owner(link)
        with self._lock:
            for pin in events.edges:  # refuse before changing anything
                self._check(link, pin)
            grants = granted_pins(link)
            for use in [u for u in self._pins.values() if u.owner == owner]:
                if use.pin not in grants:
                    self._release(use)
                elif use.watcher is not None and use.pin not in events.edges:
                    self._stop_watching(use)
            previous = self._events.pop(owner, None)
            if events.edges:
                self._events[owner] = dict(events.edges)
            made: list[int] = []
            try:
                for pin, edges in sorted(events.edges.items()):
                    self._make_input(owner, pin, events.pull, events.debounce_ms, edges)
                    made.append(pin)
            except ProviderError:
                for pin in made:
                    taken = self._pins.get(pin)
                    if taken is not None:
                        self._release(taken)
                self._events.pop(owner, None)
                if previous is not None:
                    self._events[owner] = previous
                raise

    @staticmethod
    def _value(use: _PinUse) -> bool | float | None:
        try:
            if use.mode == "pwm":
                return float(use.device.value)
            return bool(use.device.pin.state)
        except Exception as exc:  # describe() reports what it can
            log.debug("GPIO pin %d: cannot read its value: %s", use.pin, exc)
            return None

    # -- edges (gpiozero's thread) -------------------------------------------------------

    def _send_edge(self, actor: str, pin: int, edge: Edge) -> None:
        ctx = self.ctx
        if ctx is None or ctx.deliver is None:
            log.info("GPIO pin %d %s edge for actor %s dropped: the node delivers no messages", pin, edge, actor)
            return
        deliver = ctx.deliver
        message = Message(subject=edge_subject(pin, edge), body=edge_body(pin, edge, time.time(), ctx.node))

        async def _deliver() -> None:
            await deliver(actor, message)

        coro = _deliver()
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, ctx.loop)
        except RuntimeError as exc:  # the loop is closed: the node is going away
            coro.close()
            log.info("GPIO pin %d %s edge for actor %s dropped: %s", pin, edge, actor, exc)
            return
        with self._pending_lock:
            self._pending.add(fut)
        fut.add_done_callback(lambda f: self._delivered(f, actor, message.subject))

    def _delivered(self, fut: concurrent.futures.Future[None], actor: str, subject: str) -> None:
        with self._pending_lock:
            self._pending.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.info("GPIO edge %s was not delivered to actor %s: %s", subject, actor, exc)
