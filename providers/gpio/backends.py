"""Where the gpio provider's pins come from: backends, found by name as gpiozero finds its
pin factories.

A backend is a :class:`GpioBackend` subclass registered under a name in the
``drupelet.gpio_backends`` entry-point group; ``providers.gpio.backend`` (or the
environment variable ``DRUPELET_GPIO_BACKEND``) picks one by that name. drupelet registers:

| name | class | what it is |
|---|---|---|
| ``mock`` | :class:`.simulation.SimulatedBackend` | gpiozero's ``MockFactory``: levels live in memory |
| ``lgpio`` | :class:`LgpioBackend` | gpiozero's ``LGPIOFactory`` (current Raspberry Pi OS) |
| ``rpigpio`` | :class:`RpiGpioBackend` | gpiozero's ``RPiGPIOFactory`` (RPi.GPIO) |
| ``native`` | :class:`NativeBackend` | gpiozero's ``NativeFactory`` (no dependency) |

A package adds its own in its ``pyproject.toml``, and the config then accepts the name::

    [project.entry-points."drupelet.gpio_backends"]
    pigpio = "mypackage.gpio:PigpioBackend"

``auto`` is not a backend but a choice the provider makes at start (:func:`choose_auto`).
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar

from ..base import Denied

log = logging.getLogger(__name__)

BACKEND_GROUP = "drupelet.gpio_backends"
GPIOCHIP = Path("/dev/gpiochip0")
"""The chip ``auto`` looks for before it chooses ``lgpio`` (tests point it elsewhere)."""
AUTO_REAL = "lgpio"
AUTO_SIMULATED = "mock"


class GpioBackendError(ValueError):
    """A backend cannot be loaded or opened here; the message says why and what to do."""


class GpioBackend:
    """A gpiozero pin factory the gpio provider makes its devices on.

    A backend must override:
        ``open_factory()``  open and return the gpiozero pin factory (``MockFactory``,
                        ``LGPIOFactory``, …). It runs when the backend is made, off the event
                        loop, so it may block. When it cannot open, it raises
                        :class:`GpioBackendError` with a reason a person can act on ("lgpio is
                        not installed; pip install 'drupelet[pi]'"); anything else it raises
                        is reported too.

    A backend may override:
        ``simulated``   True when nothing physical moves (the provider then says so, and
                        allows :meth:`drive`).
        ``drive(pin, device, level)``  set an input pin's level from outside, as a wire
                        would; only a simulated backend can (the default refuses with
                        ``denied``).
        ``unusable()``  a classmethod: why this backend cannot work on this machine,
                        without opening it, or None (``auto`` asks ``lgpio``).
        ``has_pin(pin)``  whether the board has BCM ``pin`` on its header.
        ``close()``     release the pins (default: close the factory); called once.

    The provider makes it with no arguments; ``name`` is the name it was registered under,
    set when it is opened.
    """

    simulated: ClassVar[bool] = False

    def __init__(self) -> None:
        self.name = ""
        self.factory: Any = self.open_factory()

    def open_factory(self) -> Any:
        raise NotImplementedError

    @classmethod
    def unusable(cls) -> str | None:
        return None

    def drive(self, pin: int, device: Any, level: bool) -> None:
        raise not_simulated(pin, self.name)

    def has_pin(self, pin: int) -> bool:
        """Whether the board has BCM ``pin`` on a header, as the factory's board info says."""
        return any(True for _ in self.factory.board_info.find_pin(f"GPIO{pin}"))

    def close(self) -> None:
        self.factory.close()


class GpiozeroBackend(GpioBackend):
    """One of gpiozero's own pin factories, imported only when it is opened."""

    module: ClassVar[str] = ""
    factory_class: ClassVar[str] = ""
    dependency: ClassVar[str | None] = None
    """The top-level module the factory needs (``lgpio``), to say what to install."""
    install_hint: ClassVar[str] = ""

    def open_factory(self) -> Any:
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            if self.dependency is not None and (exc.name or "").split(".")[0] == self.dependency:
                raise GpioBackendError(f"{self.dependency} is not installed; {self.install_hint}") from exc
            raise GpioBackendError(f"cannot load gpiozero's {self.factory_class}: {exc}") from exc
        try:
            factory = getattr(module, self.factory_class)()
        except Exception as exc:  # each library fails its own way (lgpio.error, RuntimeError, OSError)
            raise GpioBackendError(f"cannot open the GPIO pins ({type(exc).__name__}: {exc}); is this a Raspberry "
                                   "Pi, and may the node's user use GPIO (the gpio group)?") from exc
        return factory


class LgpioBackend(GpiozeroBackend):
    module = "gpiozero.pins.lgpio"
    factory_class = "LGPIOFactory"
    dependency = "lgpio"
    install_hint = "pip install 'drupelet[pi]'"

    @classmethod
    def unusable(cls) -> str | None:
        return lgpio_unusable()


class RpiGpioBackend(GpiozeroBackend):
    module = "gpiozero.pins.rpigpio"
    factory_class = "RPiGPIOFactory"
    dependency = "RPi"
    install_hint = "pip install RPi.GPIO"


class NativeBackend(GpiozeroBackend):
    module = "gpiozero.pins.native"
    factory_class = "NativeFactory"


def lgpio_unusable() -> str | None:
    """Why ``lgpio`` cannot be used here, or None when it can."""
    try:
        importlib.import_module("lgpio")
    except ImportError:
        return "lgpio is not installed (pip install 'drupelet[pi]' on a Pi)"
    if not GPIOCHIP.exists():
        return f"{GPIOCHIP} does not exist (not a Raspberry Pi?)"
    return None


# -- the registry -----------------------------------------------------------------------


@functools.cache
def registered_backends() -> Mapping[str, EntryPoint]:
    """The ``drupelet.gpio_backends`` entry points by name (the first of a name wins).
    Read once per process; ``registered_backends.cache_clear()`` reads them again."""
    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=BACKEND_GROUP):
        if entry.name in found:
            log.warning("GPIO backend %r is registered twice (%s and %s); using %s", entry.name,
                        found[entry.name].value, entry.value, found[entry.name].value)
            continue
        found[entry.name] = entry
    return found


def load_backend(name: str, key: str = "providers.gpio.backend") -> type[GpioBackend]:
    """The class registered as ``name``; :class:`GpioBackendError` naming ``key`` when there
    is none or it does not load."""
    registered = registered_backends()
    entry = registered.get(name)
    if entry is None:
        raise GpioBackendError(f"{key} = {name!r}: no GPIO backend of that name is registered in the "
                               f"{BACKEND_GROUP} entry-point group (registered: {', '.join(registered) or 'none'})")
    try:
        cls = entry.load()
    except Exception as exc:  # a third party's module may fail any way
        raise GpioBackendError(f"{key} = {name!r}: cannot load {entry.value}: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, GpioBackend)):
        raise GpioBackendError(f"{key} = {name!r}: {entry.value} is not a GpioBackend subclass")
    return cls


def open_backend(name: str, key: str = "providers.gpio.backend") -> GpioBackend:
    """Open the backend registered as ``name`` (not ``auto``); blocking. ``key`` names where
    the choice came from. Raises :class:`GpioBackendError` (a ValueError) naming the
    backend and the reason when it cannot load or open."""
    cls = load_backend(name, key)
    try:
        backend = cls()
    except GpioBackendError as exc:
        raise GpioBackendError(f"{key} = {name!r}: {exc}") from exc
    except Exception as exc:  # a third party's backend may fail any way
        raise GpioBackendError(f"{key} = {name!r}: cannot open the backend ({type(exc).__name__}: {exc})") from exc
    backend.name = name
    return backend


def choose_auto() -> tuple[str, str | None]:
    """What ``backend = "auto"`` means: (``lgpio``, None) when it can be used here, else
    (``mock``, why not). Blocking (it imports lgpio)."""
    try:
        why_not = load_backend(AUTO_REAL).unusable()
    except GpioBackendError as exc:
        why_not = str(exc)
    return (AUTO_SIMULATED, why_not) if why_not else (AUTO_REAL, None)


def not_simulated(pin: int, backend: str) -> Denied:
    return Denied(f"GPIO pin {pin} is a real pin (backend {backend!r}): only the simulated backend "
                  "(providers.gpio.backend = \"mock\") can set an input's level from outside; press the "
                  "button or wire the pin instead", provider="gpio")
