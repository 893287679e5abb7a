"""The ``gpio`` provider: ``drupelet:hardware/gpio`` on the board's pins, through gpiozero.

Pins are BCM numbers. Every device is made on this provider's own gpiozero pin factory
(passed as ``pin_factory=``); gpiozero's global ``Device.pin_factory`` is never touched.

Node config ``[providers.gpio]``: the keys, their defaults and meanings are declared once
in :class:`~.config.GpioSettings` (``drupelet config-doc`` prints them): ``backend`` (a
name registered in the ``drupelet.gpio_backends`` entry-point group, or ``auto``; see
:mod:`.backends`), ``pins`` and ``safe_state``.

Link config (all strings):

| key | default | meaning |
|---|---|---|
| ``pins`` | none | comma-separated pins this link may use (``"17,27"``); absent or empty grants none |
| ``events`` | none | input pins whose edges are sent to the actor: ``"17"`` or ``"17:falling,22:both"`` (``rising``, ``falling`` or ``both``, the default). The provider configures them as inputs when the link is put; each must be granted by ``pins`` and free |
| ``pull`` | ``"up"`` | the pull resistor of the ``events`` pins: ``up``, ``down`` or ``none`` |
| ``debounce_ms`` | ``"20"`` | the debounce time of the ``events`` pins, in milliseconds |

Edges reach the actor's ``wasmcloud:messaging/handler`` as subject
``gpio.<pin>.<rising|falling>`` with a JSON body ``{"pin", "edge", "timestamp" (Unix
seconds), "node"}`` (:class:`~.events.EdgeEvent`). ``rising`` and ``falling`` are the pin's
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

Simulation (backend ``mock``, :mod:`.simulation`): :meth:`GpioProvider.simulate` sets a
configured input's level and fires the same edges a real one would. gpiozero's mock pins
do not debounce.

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

The package, like gpiozero's ``pins/``: :mod:`.provider` (the provider), :mod:`.backends`
(the backend base class, the registry, gpiozero's real pin factories), :mod:`.simulation`
(the mock backend beside them), :mod:`.config` (the schema and the link config) and
:mod:`.events` (edge messages).
"""

from __future__ import annotations

from .backends import (
    BACKEND_GROUP,
    GpioBackend,
    GpioBackendError,
    GpiozeroBackend,
    LgpioBackend,
    NativeBackend,
    RpiGpioBackend,
    choose_auto,
    lgpio_unusable,
    load_backend,
    open_backend,
    registered_backends,
)
from .config import (
    BACKEND_ENV,
    DEFAULT_PINS,
    EventConfig,
    GpioConfig,
    GpioSettings,
    backend_names,
    event_config,
    format_pins,
    granted_pins,
    parse_config,
    validate,
)
from .events import Edge, EdgeEvent, edge_body, edge_subject
from .provider import INTERFACE, GpioProvider, GpioUsageError
from .simulation import SimulatedBackend

__all__ = [
    "BACKEND_ENV",
    "BACKEND_GROUP",
    "DEFAULT_PINS",
    "INTERFACE",
    "Edge",
    "EdgeEvent",
    "EventConfig",
    "GpioBackend",
    "GpioBackendError",
    "GpioConfig",
    "GpioProvider",
    "GpioSettings",
    "GpioUsageError",
    "GpiozeroBackend",
    "LgpioBackend",
    "NativeBackend",
    "RpiGpioBackend",
    "SimulatedBackend",
    "backend_names",
    "choose_auto",
    "edge_body",
    "edge_subject",
    "event_config",
    "format_pins",
    "granted_pins",
    "lgpio_unusable",
    "load_backend",
    "open_backend",
    "parse_config",
    "registered_backends",
    "validate",
]
