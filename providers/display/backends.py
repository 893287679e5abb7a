"""The panels the display provider draws to: the backend base class and luma.oled's real
drivers over I2C or SPI. The simulated panel (luma's ``dummy``) is beside them in
:mod:`.simulation`.

luma's and the OS's errors are turned into :class:`~drupelet.providers.base.BackendIOError`
here, at the lowest adapter, naming the panel and where it is wired.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import luma.core.error
import luma.core.interface.serial
from PIL import Image

from ..base import BackendIOError
from .config import REAL_DRIVER_NAMES, WHERE, DisplayConfig


def real_driver(name: str) -> Callable[..., Any]:
    """luma.oled's class for the panel driver ``name`` (imported only for a real panel: it
    costs 1.5 MB that a node with a simulated display does not need)."""
    import luma.oled.device

    drivers: dict[str, Callable[..., Any]] = {
        "ssd1306": luma.oled.device.ssd1306, "sh1106": luma.oled.device.sh1106,
        "ssd1309": luma.oled.device.ssd1309}
    return drivers[name]


def _key(key: str) -> str:
    return f"{WHERE}.{key}"


class DisplayBackend:
    """A panel the provider draws to.

    A backend must override :meth:`show` (put a frame of ``size`` in ``mode`` on the panel),
    :meth:`contrast` and :meth:`power`, raising :class:`BackendIOError` when the panel
    does not take it. It may override :meth:`close` (release the bus it opened; called
    once, after the panel was blanked).
    """

    driver = ""
    simulated = False

    def __init__(self, cfg: DisplayConfig, size: tuple[int, int]) -> None:
        self.cfg = cfg
        self.size = size
        """(width, height) as actors see them, after rotation."""
        self.mode = cfg.mode

    def show(self, frame: Image.Image) -> None:
        raise NotImplementedError

    def contrast(self, level: int) -> None:
        raise NotImplementedError

    def power(self, on: bool) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend opened."""


class LumaBackend(DisplayBackend):
    """A luma device; luma and OS errors become :class:`BackendIOError` naming the panel."""

    def __init__(self, cfg: DisplayConfig, device: Any) -> None:
        super().__init__(cfg, (int(device.width), int(device.height)))
        self.device = device
        self.driver = cfg.driver

    def _io(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except (OSError, luma.core.error.Error) as exc:
            raise BackendIOError(
                f"display {self.cfg.name!r} ({self.cfg.where}) failed to {what}: {exc}; "
                "check its wiring and power", provider="display") from exc

    def show(self, frame: Image.Image) -> None:
        native = frame if frame.mode == self.device.mode else frame.convert(self.device.mode)
        self._io("take a frame", lambda: self.device.display(native))

    def contrast(self, level: int) -> None:
        self._io(f"set contrast {level}", lambda: self.device.contrast(level))

    def power(self, on: bool) -> None:
        self._io("switch on" if on else "switch off", self.device.show if on else self.device.hide)

    def close(self) -> None:
        # luma's cleanup switches the panel off and closes the serial interface we opened.
        self._io("shut down", self.device.cleanup)


def _open_serial(cfg: DisplayConfig) -> Any:
    """Open the I2C or SPI interface luma talks through; ValueError naming the key on failure."""
    try:
        if cfg.interface == "spi":
            return luma.core.interface.serial.spi(port=cfg.spi_port, device=cfg.spi_device,
                                                  gpio_DC=cfg.gpio_dc, gpio_RST=cfg.gpio_rst)
        return luma.core.interface.serial.i2c(port=cfg.port, address=cfg.address)
    except ImportError as exc:
        raise ValueError(f"{_key('interface')}: SPI for display {cfg.name!r} needs the spidev and RPi.GPIO "
                         f"packages ({exc}); install them or use interface = 'i2c'") from exc
    except (OSError, luma.core.error.Error) as exc:
        key = "spi_port" if cfg.interface == "spi" else "port"
        hint = ("enable it with raspi-config and check the user may open it (group i2c/spi)"
                if Path(cfg.bus_path).exists() or isinstance(exc, luma.core.error.DevicePermissionError)
                else "enable the bus with raspi-config, pick another bus, or set driver = 'dummy'")
        raise ValueError(f"{_key(key)}: cannot open {cfg.bus_path} for display {cfg.name!r} "
                         f"({cfg.driver}): {exc}; {hint}") from exc


def open_panel(cfg: DisplayConfig) -> LumaBackend:
    """Open the real panel ``cfg`` describes (blocking: it sends the driver's init sequence);
    ValueError naming the key when the bus cannot be opened or the panel does not answer."""
    if cfg.driver not in REAL_DRIVER_NAMES:
        raise ValueError(f"{_key('driver')}: {cfg.driver!r} is not a panel driver ({', '.join(REAL_DRIVER_NAMES)})")
    serial = _open_serial(cfg)
    try:
        device = real_driver(cfg.driver)(serial, width=cfg.width, height=cfg.height, rotate=cfg.rotate)
    except luma.core.error.DeviceDisplayModeError as exc:
        serial.cleanup()
        raise ValueError(f"{_key('width')}/{_key('height')}: the {cfg.driver} driver does not support "
                         f"{cfg.width}x{cfg.height} ({exc})") from exc
    except (OSError, luma.core.error.Error) as exc:
        serial.cleanup()
        key = "address" if cfg.interface == "i2c" else "driver"
        raise ValueError(f"{_key(key)}: display {cfg.name!r} ({cfg.where}) did not answer: {exc}; check the "
                         "wiring, the address (i2cdetect -y <port>) and the driver") from exc
    return LumaBackend(cfg, device)
