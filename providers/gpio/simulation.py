"""The simulated GPIO backend (``mock``): gpiozero's ``MockFactory``, a peer of the real ones.

Levels live in memory and nothing physical moves. :meth:`SimulatedBackend.drive` (reached
through :meth:`GpioProvider.simulate <drupelet.providers.gpio.GpioProvider.simulate>` and
``drupelet gpio simulate``) sets an input's level and fires the same pin callbacks, so the
same edges, as a real pin. gpiozero's mock pins do not debounce. Tests read the pins
through the factory (``provider.factory.pin(17).state``).
"""

from __future__ import annotations

from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin

from .backends import GpioBackend


class SimulatedBackend(GpioBackend):
    """gpiozero's ``MockFactory`` with PWM-capable pins."""

    simulated = True

    def open_factory(self) -> MockFactory:
        return MockFactory(pin_class=MockPWMPin)

    def drive(self, pin: int, device: Any, level: bool) -> None:
        """Drive the mock pin high or low, as a button or a wire would."""
        if level:
            device.pin.drive_high()
        else:
            device.pin.drive_low()
