"""The display provider's configuration: ``[providers.display]`` declared once.

:class:`DisplaySettings` declares every key with its type, default and meaning.
:func:`validate` (which :meth:`DisplayProvider.parse_config
<drupelet.providers.display.DisplayProvider.parse_config>` is) checks a table against it
and across its keys; :func:`parse_config` then resolves the driver: the environment
override ``DRUPELET_DISPLAY_DRIVER`` and ``auto`` (does the bus's device file exist?).
Neither opens the bus or talks to a panel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ..schema import SchemaError, convert

log = logging.getLogger(__name__)

WHERE = "providers.display"
DRIVER_ENV = "DRUPELET_DISPLAY_DRIVER"
Driver = Literal["auto", "dummy", "ssd1306", "sh1106", "ssd1309"]
DRIVERS: tuple[Driver, ...] = ("auto", "dummy", "ssd1306", "sh1106", "ssd1309")
REAL_DRIVER_NAMES = ("ssd1306", "sh1106", "ssd1309")
AUTO = "auto"
DUMMY = "dummy"
AUTO_REAL_DRIVER = "ssd1306"
Mode = Literal["1", "L", "RGB"]
SerialInterface = Literal["i2c", "spi"]

I2C_KEYS = frozenset({"port", "address"})
SPI_KEYS = frozenset({"spi_port", "spi_device", "gpio_dc", "gpio_rst"})

DEFAULT_I2C_PORT = 1
DEFAULT_I2C_ADDRESS = 0x3C
DEFAULT_SPI_PORT = 0
DEFAULT_SPI_DEVICE = 0
DEFAULT_GPIO_DC = 24
DEFAULT_GPIO_RST = 25
DEFAULT_WIDTH_PX = 128
DEFAULT_HEIGHT_PX = 64
DEFAULT_NAME = "oled"
MIN_PANEL_PX, MAX_PANEL_PX = 8, 1024
MIN_I2C_ADDRESS, MAX_I2C_ADDRESS = 0x03, 0x77
MAX_NAME_CHARS = 64
MAX_BCM_PIN = 53


class DisplaySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[providers.display]``."""

    driver: Annotated[Driver, Meta(description=(
        "the panel's luma.oled driver, or `dummy` (simulated: frames are kept, nothing is sent anywhere), or "
        "`auto`: ssd1306 when the bus's device file exists, else dummy with a warning (the file is "
        f"/dev/i2c-<port> for i2c, /dev/spidev<spi_port>.<spi_device> for spi). The environment variable "
        f"{DRIVER_ENV} overrides this key"))] = "auto"
    interface: Annotated[SerialInterface, Meta(description="how the panel is wired")] = "i2c"
    port: Annotated[int, Meta(ge=0, le=255, description="I2C bus number, as in /dev/i2c-<port> (i2c only)")] = \
        DEFAULT_I2C_PORT
    address: Annotated[int | str, Meta(description=(
        f'I2C address (default 0x{DEFAULT_I2C_ADDRESS:02x}), an integer or a string such as "0x3c", '
        f"0x{MIN_I2C_ADDRESS:02x} to 0x{MAX_I2C_ADDRESS:02x}; i2c only"))] = DEFAULT_I2C_ADDRESS
    spi_port: Annotated[int, Meta(ge=0, le=15, description="SPI bus; spi only")] = DEFAULT_SPI_PORT
    spi_device: Annotated[int, Meta(ge=0, le=15, description="SPI chip select; spi only")] = DEFAULT_SPI_DEVICE
    gpio_dc: Annotated[int, Meta(ge=0, le=MAX_BCM_PIN, description="BCM pin wired to D/C; spi only")] = \
        DEFAULT_GPIO_DC
    gpio_rst: Annotated[int, Meta(ge=0, le=MAX_BCM_PIN, description="BCM pin wired to RST; spi only")] = \
        DEFAULT_GPIO_RST
    width: Annotated[int, Meta(ge=MIN_PANEL_PX, le=MAX_PANEL_PX, description=(
        "panel width in pixels, as mounted before rotation"))] = DEFAULT_WIDTH_PX
    height: Annotated[int, Meta(ge=MIN_PANEL_PX, le=MAX_PANEL_PX, description="panel height in pixels")] = \
        DEFAULT_HEIGHT_PX
    rotate: Annotated[int, Meta(ge=0, le=3, description=(
        "quarter turns clockwise; 1 and 3 swap the width and height actors see"))] = 0
    mode: Annotated[Mode, Meta(description=(
        "the canvas's pixels: one bit, grey or colour; only the dummy driver takes anything but 1"))] = "1"
    name: Annotated[str, Meta(min_length=1, max_length=MAX_NAME_CHARS, description=(
        "the display's name in messages and the inventory"))] = DEFAULT_NAME


@dataclass(frozen=True)
class DisplayConfig:
    """``[providers.display]``, validated, with ``driver`` resolved (never ``auto``)."""

    name: str = DEFAULT_NAME
    driver: str = DUMMY
    interface: str = "i2c"
    port: int = DEFAULT_I2C_PORT
    address: int = DEFAULT_I2C_ADDRESS
    spi_port: int = DEFAULT_SPI_PORT
    spi_device: int = DEFAULT_SPI_DEVICE
    gpio_dc: int = DEFAULT_GPIO_DC
    gpio_rst: int = DEFAULT_GPIO_RST
    width: int = DEFAULT_WIDTH_PX
    height: int = DEFAULT_HEIGHT_PX
    rotate: int = 0
    mode: str = "1"

    @property
    def simulated(self) -> bool:
        return self.driver == DUMMY

    @property
    def bus_path(self) -> str:
        """The device file the serial interface opens."""
        if self.interface == "spi":
            return f"/dev/spidev{self.spi_port}.{self.spi_device}"
        return f"/dev/i2c-{self.port}"

    @property
    def where(self) -> str:
        """Where the panel is, for messages."""
        if self.simulated:
            return "simulated"
        if self.interface == "spi":
            return (f"{self.driver} on SPI {self.spi_port}.{self.spi_device}, "
                    f"DC GPIO{self.gpio_dc}, RST GPIO{self.gpio_rst}")
        return f"{self.driver} on I2C bus {self.port} address 0x{self.address:02x}"


def i2c_address(value: int | str, key: str) -> int:
    """The address a ``address`` value names; SchemaError naming ``key`` when it names none."""
    if isinstance(value, str):
        try:
            number = int(value, 0)
        except ValueError:
            raise SchemaError(f"must be an I2C address such as 0x3c, not {value!r}", key=key) from None
    else:
        number = value
    if not MIN_I2C_ADDRESS <= number <= MAX_I2C_ADDRESS:
        raise SchemaError(f"must be from 0x{MIN_I2C_ADDRESS:02x} to 0x{MAX_I2C_ADDRESS:02x}, not 0x{number:x}",
                          key=key)
    return number


def _check_mode(mode: str, driver: str, where: str) -> None:
    if mode != "1" and driver != DUMMY:
        raise SchemaError(f"{mode!r} needs driver 'dummy'; the {driver} is one bit per pixel (mode '1'), so remove "
                          "the key", key=f"{where}.mode")


def validate(table: Mapping[str, Any], *, where: str = WHERE) -> DisplaySettings:
    """Check ``[providers.display]`` against :class:`DisplaySettings` and across its keys;
    :class:`~drupelet.providers.schema.SchemaError` (a ValueError) names the key."""
    settings = convert(table, DisplaySettings, where=where)
    foreign = sorted(set(table) & (SPI_KEYS if settings.interface == "i2c" else I2C_KEYS))
    if foreign:
        other = "spi" if settings.interface == "i2c" else "i2c"
        raise SchemaError(f"applies only to interface {other!r}; this display uses {settings.interface!r}",
                          key=f"{where}.{foreign[0]}")
    i2c_address(settings.address, f"{where}.address")
    if settings.driver != AUTO:
        _check_mode(settings.mode, settings.driver, where)
    return settings


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str]) -> DisplayConfig:
    """:func:`validate`, then the driver resolved: ``env``'s ``DRUPELET_DISPLAY_DRIVER`` over
    ``driver``, and ``auto`` by whether the bus's device file exists. Warns when the display
    is simulated."""
    settings = validate(raw)
    requested: str = settings.driver
    override = env.get(DRIVER_ENV)
    if override:
        if override not in DRIVERS:
            raise SchemaError(f"must be one of {', '.join(DRIVERS)} (it overrides {WHERE}.driver), not {override!r}",
                              key=DRIVER_ENV)
        requested = override
    cfg = DisplayConfig(
        name=settings.name, interface=settings.interface, port=settings.port,
        address=i2c_address(settings.address, f"{WHERE}.address"), spi_port=settings.spi_port,
        spi_device=settings.spi_device, gpio_dc=settings.gpio_dc, gpio_rst=settings.gpio_rst, width=settings.width,
        height=settings.height, rotate=settings.rotate, mode=settings.mode,
        driver=requested if requested != AUTO else DUMMY,
    )
    if requested == AUTO and Path(cfg.bus_path).exists():
        cfg = replace(cfg, driver=AUTO_REAL_DRIVER)
    _check_mode(cfg.mode, cfg.driver, WHERE)
    if cfg.simulated:
        why = f"{DRIVER_ENV}={override}" if override else (
            f"driver 'auto' found no {cfg.bus_path}" if requested == AUTO else "driver = 'dummy'")
        log.warning("display %r is simulated (%s): frames are kept in memory and nothing is shown", cfg.name, why)
    return cfg
