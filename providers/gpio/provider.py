"""The gpio provider itself: pins granted per link, one owner per pin, safe states, edges.

See the package docstring (:mod:`drupelet.providers.gpio`) for what it offers actors.

Why this module is past 500 lines: every path that touches a pin (an actor's calls, a
link's events, the operator's reads and writes, simulation, release) shares one lock and
one table of pins, and keeping them in one class is what makes "one owner per pin" hold.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from gpiozero import DigitalOutputDevice, InputDevice, PWMOutputDevice

from ..base import (BackendIOError, Busy, Denied, Health, Link, Message, NotFound, Provider, ProviderContext,
                    ProviderError, Unavailable)
from ..schema import SchemaError
from . import config
from .backends import GpioBackend, choose_auto, not_simulated, open_backend
from .config import (AUTO, DEFAULT_PINS, DEFAULT_SAFE_STATE, PULLS, EventConfig, GpioSettings, SafeState, event_config,
                     format_pins, granted_pins)
from .events import Edge, EdgeWatcher, edge_body, edge_subject

log = logging.getLogger(__name__)

INTERFACE = "drupelet:hardware/gpio"
MS_PER_S = 1000.0

Owner = tuple[str, str]
"""Who owns a pin: (actor, interface) of the link that claimed it."""
Mode = Literal["input", "output", "pwm"]


class GpioUsageError(ProviderError, ValueError):
    """A call the pin's state or the arguments do not allow (writing an input, duty 1.5)."""

    def __init__(self, message: str, *, pin: int | None = None) -> None:
        super().__init__(message, provider="gpio")
        self.pin = pin


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


def _owner(link: Link) -> Owner:
    return (link.source, link.interface)



@dataclass
class _PinUse:
    pin: int
    owner: Owner | None
    """None: its link went and the provider holds it at its safe state."""
    mode: Mode
    device: Any
    watcher: EdgeWatcher | None = None


class GpioProvider(Provider):
    """GPIO pins for actors: inputs with edge events, outputs, PWM; one owner per pin."""

    name = "gpio"
    interfaces = (INTERFACE,)
    relink_when_actor_stops = True
    operations = {INTERFACE: frozenset({"configure_input", "configure_output", "read", "write", "toggle",
                                        "set_pwm"})}
    config_schema = GpioSettings

    @classmethod
    def parse_config(cls, table: Mapping[str, Any], *, where: str = "") -> GpioSettings:
        """Check a ``[providers.gpio]`` table, across keys too; opens nothing. The environment
        override is applied at start."""
        return config.validate(table, where=where or f"providers.{cls.name}")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._backend: GpioBackend | None = None
        self._backend_name = "none"
        self._simulated = False
        self._allowed: tuple[int, ...] = DEFAULT_PINS
        self._safe: Mapping[int, SafeState] = {}
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
        cfg = config.parse_config(ctx.config, os.environ)
        name = cfg.backend
        if name == AUTO:
            name, why_not = await asyncio.to_thread(choose_auto)
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
            raise SchemaError(f"the board has no GPIO {format_pins(missing)} on its header (backend {name})",
                              key="providers.gpio.pins")
        if backend.simulated and cfg.backend != AUTO:
            log.info("GPIO is simulated (backend %s): nothing physical moves", name)
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

    # -- the operator's reads and writes (drupelet gpio read|write) --------------------

    def operator_read(self, pin: int) -> dict[str, Any]:
        """An allowed pin's level, ``{"pin", "level", "mode", "owner"}``: read from the device of the
        actor (or the provider) that holds it, else from the pin opened as a floating input and closed
        again. ``mode`` is None for a pin nothing holds; ``level`` is None when it cannot be read."""
        with self._lock:
            backend = self._require_backend()
            self._check_allowed(pin)
            use = self._pins.get(pin)
            if use is not None:
                value = self._value(use)
                return {"pin": pin, "level": None if value is None else bool(value), "mode": use.mode,
                        "owner": use.owner[0] if use.owner else None}
            with _io(pin, "read it"):
                device = InputDevice(pin, pull_up=None, active_state=True, pin_factory=backend.factory)
                try:
                    level = bool(device.pin.state)
                finally:
                    device.close()
            return {"pin": pin, "level": level, "mode": None, "owner": None}

    def operator_write(self, pin: int, level: bool) -> None:
        """Drive an allowed pin that no actor owns high or low. The provider then holds it at that
        level, as it holds a released output, until an actor's link claims it. Busy when an actor
        owns the pin: its owner decides what it does."""
        with self._lock:
            backend = self._require_backend()
            self._check_allowed(pin)
            use = self._pins.get(pin)
            if use is not None and use.owner is not None:
                raise Busy(f"GPIO pin {pin} is in use by actor {use.owner[0]!r} (as {use.mode}); only its owner "
                           "drives it, until that actor's gpio link is deleted or the actor stops",
                           provider=self.name)
            if use is not None and use.mode == "output":
                with _io(pin, "write it"):
                    use.device.value = bool(level)
                return
            if use is not None:
                self._pins.pop(pin, None)
                self._close_device(use)
            with _io(pin, f"drive it {'high' if level else 'low'}"):
                device = DigitalOutputDevice(pin, initial_value=bool(level), pin_factory=backend.factory)
            self._pins[pin] = _PinUse(pin, None, "output", device)

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
                    watcher = EdgeWatcher(self._send_edge, owner[0], pin, edges, bool(use.device.pin.state))
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
