"""The ``display`` provider: ``drupelet:hardware/display`` on a small OLED through luma.oled.

Actors draw on a canvas (text, lines, rectangles, PNG and one-bit images) and ``flush``
sends it to the panel. One link owns the display at a time: the first link to the
provider claims it, a second is refused with ``busy`` naming the owner, and removing the
owner's link (or stopping its actor) blanks the screen, switches it back on and frees it.
The node's control plane reads the last flushed frame as a PNG through
:meth:`DisplayProvider.snapshot`.

Node config ``[providers.display]``:

| key | default | meaning |
|---|---|---|
| ``driver`` | ``"auto"`` | ``"ssd1306"``, ``"sh1106"``, ``"ssd1309"``, ``"dummy"`` (simulated: frames are kept, nothing is sent anywhere) or ``"auto"``: ``ssd1306`` when the bus device file exists (``/dev/i2c-<port>``, or ``/dev/spidev<spi_port>.<spi_device>``), otherwise ``dummy`` with a warning. The environment variable ``DRUPELET_DISPLAY_DRIVER`` overrides it. |
| ``interface`` | ``"i2c"`` | ``"i2c"`` or ``"spi"`` |
| ``port`` | ``1`` | I2C bus number (``/dev/i2c-<port>``); i2c only |
| ``address`` | ``0x3C`` | I2C address, an integer or a string such as ``"0x3c"``; i2c only |
| ``spi_port`` | ``0`` | SPI bus; spi only |
| ``spi_device`` | ``0`` | SPI chip select; spi only |
| ``gpio_dc`` | ``24`` | BCM pin wired to D/C; spi only |
| ``gpio_rst`` | ``25`` | BCM pin wired to RST; spi only |
| ``width`` | ``128`` | panel width in pixels, as mounted before rotation |
| ``height`` | ``64`` | panel height in pixels |
| ``rotate`` | ``0`` | 0..3, quarter turns clockwise; 1 and 3 swap the width and height actors see |
| ``mode`` | ``"1"`` | ``"1"``, ``"L"`` or ``"RGB"``; only the ``dummy`` driver takes anything but ``"1"`` |
| ``name`` | ``"oled"`` | the display's name in messages and the inventory |

Link config: none. The link itself is the grant.

Errors: a call from a link that does not own the display is ``denied``; a second link is
refused with ``busy``; the panel failing to take a frame or command is ``io`` and the
provider keeps running; bad arguments (text size, image data) are ``io`` with a message
that says what was wrong.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import luma.core.device
import luma.core.error
import luma.core.interface.serial
import luma.oled.device
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError, features

from .base import BackendIOError, Busy, Denied, Health, Link, Provider, ProviderContext, ProviderError, Unavailable

log = logging.getLogger(__name__)

INTERFACE = "drupelet:hardware/display"
DRIVER_ENV = "DRUPELET_DISPLAY_DRIVER"

REAL_DRIVERS: Mapping[str, Callable[..., Any]] = {
    "ssd1306": luma.oled.device.ssd1306,
    "sh1106": luma.oled.device.sh1106,
    "ssd1309": luma.oled.device.ssd1309,
}
DUMMY = "dummy"
AUTO = "auto"
AUTO_REAL_DRIVER = "ssd1306"
DRIVERS = (AUTO, DUMMY, *REAL_DRIVERS)
MODES = ("1", "L", "RGB")
SERIAL_INTERFACES = ("i2c", "spi")

I2C_KEYS = frozenset({"port", "address"})
SPI_KEYS = frozenset({"spi_port", "spi_device", "gpio_dc", "gpio_rst"})
KNOWN_KEYS = frozenset({"driver", "interface", "width", "height", "rotate", "mode", "name"}) | I2C_KEYS | SPI_KEYS

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

MIN_TEXT_SIZE_PX, MAX_TEXT_SIZE_PX = 6, 64
MAX_TEXT_CHARS = 256
MAX_COORD = (1 << 15) - 1
"""Coordinates beyond ±32767 are refused (Pillow draws with C ints)."""
MAX_COLOR = 0xFFFFFF
MAX_CONTRAST = 255
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MONO_THRESHOLD = 128
"""A PNG pixel (or alpha) at or above this grey level is lit (opaque) on a one-bit display."""


# -- config --------------------------------------------------------------------------


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


def _key(key: str) -> str:
    return f"providers.display.{key}"


def _int_key(raw: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{_key(key)} must be an integer from {lo} to {hi}, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{_key(key)} must be from {lo} to {hi}, not {value}")
    return value


def _choice_key(raw: Mapping[str, Any], key: str, default: str, choices: tuple[str, ...]) -> str:
    value = raw.get(key, default)
    if value not in choices:
        raise ValueError(f"{_key(key)} must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")
    return str(value)


def _address_key(raw: Mapping[str, Any]) -> int:
    value = raw.get("address", DEFAULT_I2C_ADDRESS)
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise ValueError(f"{_key('address')} must be an I2C address such as 0x3c, not {raw['address']!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{_key('address')} must be an I2C address such as 0x3c, not {value!r}")
    if not MIN_I2C_ADDRESS <= value <= MAX_I2C_ADDRESS:
        raise ValueError(f"{_key('address')} must be from 0x{MIN_I2C_ADDRESS:02x} to 0x{MAX_I2C_ADDRESS:02x}, "
                         f"not 0x{value:x}")
    return value


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str]) -> DisplayConfig:
    """Validate ``[providers.display]`` and resolve the driver.

    ``env`` is the process environment (``DRUPELET_DISPLAY_DRIVER`` overrides ``driver``).
    Raises ValueError naming the key.
    """
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise ValueError(f"providers.display: unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(KNOWN_KEYS))})")
    interface = _choice_key(raw, "interface", "i2c", SERIAL_INTERFACES)
    foreign = sorted(set(raw) & (SPI_KEYS if interface == "i2c" else I2C_KEYS))
    if foreign:
        raise ValueError(f"{_key(foreign[0])} applies only to interface "
                         f"{'spi' if interface == 'i2c' else 'i2c'!r}; this display uses {interface!r}")
    name = raw.get("name", DEFAULT_NAME)
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"{_key('name')} must be a non-empty string of at most {MAX_NAME_CHARS} characters, "
                         f"not {name!r}")
    requested = _choice_key(raw, "driver", AUTO, DRIVERS)
    override = env.get(DRIVER_ENV)
    if override:
        if override not in DRIVERS:
            raise ValueError(f"{DRIVER_ENV} (which overrides {_key('driver')}) must be one of "
                             f"{', '.join(repr(d) for d in DRIVERS)}, not {override!r}")
        requested = override
    cfg = DisplayConfig(
        name=name,
        interface=interface,
        port=_int_key(raw, "port", DEFAULT_I2C_PORT, 0, 255),
        address=_address_key(raw),
        spi_port=_int_key(raw, "spi_port", DEFAULT_SPI_PORT, 0, 15),
        spi_device=_int_key(raw, "spi_device", DEFAULT_SPI_DEVICE, 0, 15),
        gpio_dc=_int_key(raw, "gpio_dc", DEFAULT_GPIO_DC, 0, 53),
        gpio_rst=_int_key(raw, "gpio_rst", DEFAULT_GPIO_RST, 0, 53),
        width=_int_key(raw, "width", DEFAULT_WIDTH_PX, MIN_PANEL_PX, MAX_PANEL_PX),
        height=_int_key(raw, "height", DEFAULT_HEIGHT_PX, MIN_PANEL_PX, MAX_PANEL_PX),
        rotate=_int_key(raw, "rotate", 0, 0, 3),
        mode=_choice_key(raw, "mode", "1", MODES),
    )
    driver = requested
    if requested == AUTO:
        probe = DisplayConfig(interface=interface, port=cfg.port, spi_port=cfg.spi_port, spi_device=cfg.spi_device)
        driver = AUTO_REAL_DRIVER if Path(probe.bus_path).exists() else DUMMY
    cfg = replace(cfg, driver=driver)
    if cfg.mode != "1" and not cfg.simulated:
        raise ValueError(f"{_key('mode')} = {cfg.mode!r} needs driver 'dummy'; the {driver} is one bit per "
                         f"pixel (mode '1'), so remove the key")
    if cfg.simulated:
        why = f"{DRIVER_ENV}={override}" if override else (
            f"driver 'auto' found no {cfg.bus_path}" if requested == AUTO else "driver = 'dummy'")
        log.warning("display %r is simulated (%s): frames are kept in memory and nothing is shown",
                    cfg.name, why)
    return cfg


# -- backends ------------------------------------------------------------------------


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


class SimulatedBackend(LumaBackend):
    """luma's ``dummy`` device: keeps the last frame it was shown, sends nothing anywhere.

    Tests and laptops read :attr:`shown`, :attr:`contrast_level` and :attr:`powered`.
    """

    simulated = True

    def __init__(self, cfg: DisplayConfig) -> None:
        # luma's dummy holds "1" or "RGB" frames; a grey ("L") canvas is shown as RGB.
        device_mode = "1" if cfg.mode == "1" else "RGB"
        super().__init__(cfg, luma.core.device.dummy(width=cfg.width, height=cfg.height, rotate=cfg.rotate,
                                                     mode=device_mode))
        self.contrast_level: int | None = None
        self.powered = True

    @property
    def shown(self) -> Image.Image | None:
        """The last frame the device received, as luma keeps it (rotated to the panel)."""
        image: Image.Image | None = self.device.image
        return image

    def contrast(self, level: int) -> None:
        super().contrast(level)
        self.contrast_level = level

    def power(self, on: bool) -> None:
        super().power(on)
        self.powered = on


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


def open_backend(cfg: DisplayConfig) -> DisplayBackend:
    """Open the panel ``cfg`` describes (blocking: it sends the driver's init sequence)."""
    if cfg.simulated:
        return SimulatedBackend(cfg)
    serial = _open_serial(cfg)
    try:
        device = REAL_DRIVERS[cfg.driver](serial, width=cfg.width, height=cfg.height, rotate=cfg.rotate)
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


# -- drawing helpers -----------------------------------------------------------------


def _coord(display: str, what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -MAX_COORD <= value <= MAX_COORD:
        raise ProviderError(f"{what} on display {display!r} must be an integer from {-MAX_COORD} to {MAX_COORD}, "
                            f"not {value!r}", provider="display")
    return value


def _length(display: str, what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COORD:
        raise ProviderError(f"{what} on display {display!r} must be an integer from 0 to {MAX_COORD}, "
                            f"not {value!r}", provider="display")
    return value


def ink(mode: str, color: int) -> int | tuple[int, int, int]:
    """The pixel value of colour 0xRRGGBB on a canvas in ``mode``."""
    r, g, b = (color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF
    if mode == "1":
        return 255 if color else 0
    if mode == "L":
        # ITU-R 601-2 luma, as Pillow's convert("L") computes it
        return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
    return (r, g, b)


def _mono_mask(image: Image.Image) -> Image.Image:
    return image.point(lambda v: 255 if v >= MONO_THRESHOLD else 0).convert("1")


def decode_png(data: bytes, limit: tuple[int, int], display: str) -> tuple[Image.Image, Image.Image | None]:
    """Decode ``data`` as a PNG no larger than ``limit``: (RGB or L pixels, alpha mask or None)."""
    if not data.startswith(PNG_SIGNATURE):
        raise ProviderError(f"image for display {display!r} is not a PNG file (it does not start with the PNG "
                            "signature); send a PNG or use format mono", provider="display")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ProviderError(f"PNG for display {display!r} is damaged: Pillow cannot read its header",
                            provider="display") from None
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise ProviderError(f"PNG for display {display!r} is damaged: {exc}", provider="display") from exc
    with image:
        if image.width > limit[0] or image.height > limit[1]:
            raise ProviderError(f"image of {image.width}x{image.height} does not fit display {display!r} of "
                                f"{limit[0]}x{limit[1]}; scale it down first", provider="display")
        try:
            image.load()
        except (OSError, ValueError, SyntaxError) as exc:
            raise ProviderError(f"PNG for display {display!r} is damaged: {exc}", provider="display") from exc
        has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        rgba = image.convert("RGBA") if has_alpha else image.convert("RGB")
    if has_alpha:
        return rgba.convert("RGB"), rgba.getchannel("A")
    return rgba, None


def decode_mono(data: bytes, width: int, height: int, limit: tuple[int, int], display: str) -> Image.Image:
    """One bit per pixel, rows MSB first and padded to whole bytes; set bits are lit."""
    if width < 1 or height < 1:
        raise ProviderError(f"mono image for display {display!r} must be at least 1x1, not {width}x{height}",
                            provider="display")
    if width > limit[0] or height > limit[1]:
        raise ProviderError(f"mono image of {width}x{height} does not fit display {display!r} of "
                            f"{limit[0]}x{limit[1]}; scale it down first", provider="display")
    expected = math.ceil(width / 8) * height
    if len(data) != expected:
        raise ProviderError(f"mono image of {width}x{height} for display {display!r} needs {expected} bytes (ceil({width}/8) per row "
                            f"x {height} rows), got {len(data)}", provider="display")
    return Image.frombytes("1", (width, height), bytes(data))


# -- the provider --------------------------------------------------------------------


class DisplayProvider(Provider):
    """One display, owned by one link at a time, drawn on a canvas and shown on flush."""

    name = "display"
    interfaces = (INTERFACE,)
    relink_when_actor_stops = True
    operations = {INTERFACE: frozenset({"info", "clear", "text", "line", "rectangle", "image", "flush",
                                        "contrast", "power"})}

    def __init__(self) -> None:
        super().__init__()
        self.cfg: DisplayConfig | None = None
        self.backend: DisplayBackend | None = None
        # _io_lock serialises what goes to the panel; _lock guards the state below and is
        # never held while waiting for the panel. Order: _io_lock, then _lock.
        self._io_lock = threading.Lock()
        self._lock = threading.Lock()
        self._owner: tuple[str, str] | None = None
        self._canvas: Image.Image | None = None
        self._last_frame: Image.Image | None = None
        self._powered = True
        self._contrast: int | None = None
        self._last_error: str | None = None
        self._freetype = features.check("freetype2")
        self._fonts: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}

    # -- lifecycle (event loop) --

    async def start(self, ctx: ProviderContext) -> None:
        await super().start(ctx)
        cfg = parse_config(ctx.config, os.environ)
        backend = await asyncio.to_thread(open_backend, cfg)
        blank = Image.new(cfg.mode, backend.size)
        with self._lock:
            self.cfg, self.backend = cfg, backend
            self._canvas, self._last_frame = blank.copy(), blank
            self._owner, self._powered, self._contrast, self._last_error = None, True, None, None
        if not self._freetype:
            log.warning("Pillow has no FreeType: display %r draws text in the fixed bitmap font, "
                        "ignoring the size", cfg.name)
        log.info("display %r: %s, %dx%d mode %s", cfg.name, cfg.where, backend.size[0], backend.size[1], cfg.mode)

    async def stop(self) -> None:
        if self.backend is not None:
            await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        with self._io_lock:
            with self._lock:
                backend, self.backend = self.backend, None
                self._owner = None
                if backend is None:
                    return
                blank = Image.new(backend.mode, backend.size)
                self._canvas = blank.copy()
            try:
                backend.show(blank)
                with self._lock:
                    self._last_frame = blank
            except BackendIOError as exc:
                log.warning("could not blank display %r at shutdown: %s", backend.cfg.name, exc)
            try:
                backend.close()
            except BackendIOError as exc:
                log.warning("could not shut down display %r: %s", backend.cfg.name, exc)

    async def link_added(self, link: Link) -> None:
        with self._lock:
            cfg = self._started()
            key = (link.source, link.interface)
            if self._owner is not None and self._owner != key:
                raise Busy(f"display {cfg.name!r} is in use by actor {self._owner[0]!r}; delete that actor's "
                           f"display link (or stop it) before linking {link.source!r}", provider=self.name)
            self._owner = key
        log.info("display %r is now owned by actor %s", cfg.name, link.source)

    async def link_removed(self, link: Link) -> None:
        await asyncio.to_thread(self._release, (link.source, link.interface))

    def _release(self, key: tuple[str, str]) -> None:
        """Free the display if ``key`` owns it: blank the screen and switch it back on."""
        with self._io_lock:
            with self._lock:
                backend = self.backend
                if backend is None or self._owner != key:
                    return
                self._owner = None
                blank = Image.new(backend.mode, backend.size)
                self._canvas = blank.copy()
                powered = self._powered
            try:
                backend.show(blank)
                if not powered:
                    backend.power(True)
            except BackendIOError as exc:
                self._note_io_error(exc)
                log.warning("could not blank display %r after actor %s let go: %s", backend.cfg.name, key[0], exc)
                return
            with self._lock:
                self._last_frame = blank
                self._powered = True
                self._last_error = None
        log.info("display %r is free (actor %s let go); screen blanked", backend.cfg.name, key[0])

    # -- helpers (any thread) --

    def _started(self) -> DisplayConfig:
        """The config; raises Unavailable when not started. Call with _lock held."""
        if self.cfg is None or self.backend is None:
            raise Unavailable("the display provider is not running on this node", provider=self.name)
        return self.cfg

    def _owned(self, link: Link) -> tuple[DisplayConfig, DisplayBackend, Image.Image]:
        """Config, backend and canvas for the owner; Denied for anyone else. Call with _lock held."""
        cfg = self._started()
        assert self.backend is not None and self._canvas is not None
        if self._owner != (link.source, link.interface):
            holder = f"actor {self._owner[0]!r} holds it" if self._owner else "no link holds it"
            raise Denied(f"actor {link.source!r} does not hold display {cfg.name!r} ({holder}); link the actor "
                         f"to local/{self.name} with interface {INTERFACE}", provider=self.name)
        return cfg, self.backend, self._canvas

    def _ink(self, cfg: DisplayConfig, what: str, color: int) -> int | tuple[int, int, int]:
        if isinstance(color, bool) or not isinstance(color, int) or not 0 <= color <= MAX_COLOR:
            raise ProviderError(f"{what} on display {cfg.name!r} must be a colour 0xRRGGBB from 0 to 0xFFFFFF, "
                                f"not {color!r}", provider=self.name)
        return ink(cfg.mode, color)

    def _font(self, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        font = self._fonts.get(size)
        if font is None:
            font = ImageFont.load_default(size=size) if self._freetype else ImageFont.load_default()
            self._fonts[size] = font
        return font

    def _note_io_error(self, exc: BackendIOError) -> None:
        with self._lock:
            self._last_error = exc.message

    # -- import calls (worker threads) --

    def info(self, link: Link) -> dict[str, Any]:
        with self._lock:
            cfg, backend, _ = self._owned(link)
            return {"width": backend.size[0], "height": backend.size[1], "mode": backend.mode,
                    "driver": backend.driver, "name": cfg.name}

    def clear(self, link: Link) -> None:
        with self._lock:
            _, backend, _ = self._owned(link)
            self._canvas = Image.new(backend.mode, backend.size)

    def text(self, link: Link, x: int, y: int, text: str, size: int, color: int) -> None:
        with self._lock:
            cfg, _, canvas = self._owned(link)
            x, y = _coord(cfg.name, "x", x), _coord(cfg.name, "y", y)
            if isinstance(size, bool) or not isinstance(size, int) or not MIN_TEXT_SIZE_PX <= size <= MAX_TEXT_SIZE_PX:
                raise ProviderError(f"text size on display {cfg.name!r} must be from {MIN_TEXT_SIZE_PX} to "
                                    f"{MAX_TEXT_SIZE_PX} pixels, not {size!r}", provider=self.name)
            if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
                length = len(text) if isinstance(text, str) else type(text).__name__
                raise ProviderError(f"text for display {cfg.name!r} must be at most {MAX_TEXT_CHARS} characters, "
                                    f"got {length}; split it over several calls", provider=self.name)
            fill = self._ink(cfg, "color", color)
            font = self._font(size)
            try:
                ImageDraw.Draw(canvas).text((x, y), text, fill=fill, font=font)
            except (UnicodeError, ValueError) as exc:
                raise ProviderError(f"cannot draw {text[:32]!r} on display {cfg.name!r}: {exc}",
                                    provider=self.name) from exc

    def line(self, link: Link, x0: int, y0: int, x1: int, y1: int, color: int) -> None:
        with self._lock:
            cfg, _, canvas = self._owned(link)
            xy = [(_coord(cfg.name, "x0", x0), _coord(cfg.name, "y0", y0)),
                  (_coord(cfg.name, "x1", x1), _coord(cfg.name, "y1", y1))]
            ImageDraw.Draw(canvas).line(xy, fill=self._ink(cfg, "color", color))

    def rectangle(self, link: Link, x: int, y: int, width: int, height: int,
                  outline: int | None, fill: int | None) -> None:
        with self._lock:
            cfg, _, canvas = self._owned(link)
            x, y = _coord(cfg.name, "x", x), _coord(cfg.name, "y", y)
            width, height = _length(cfg.name, "width", width), _length(cfg.name, "height", height)
            outline_ink = None if outline is None else self._ink(cfg, "outline", outline)
            fill_ink = None if fill is None else self._ink(cfg, "fill", fill)
            if width == 0 or height == 0 or (outline_ink is None and fill_ink is None):
                return
            ImageDraw.Draw(canvas).rectangle([x, y, x + width - 1, y + height - 1], outline=outline_ink,
                                             fill=fill_ink)

    def image(self, link: Link, x: int, y: int, fmt: str, data: bytes, width: int, height: int) -> None:
        with self._lock:
            cfg, backend, canvas = self._owned(link)
            x, y = _coord(cfg.name, "x", x), _coord(cfg.name, "y", y)
            mask: Image.Image | None = None
            if fmt == "png":
                pixels, mask = decode_png(bytes(data), backend.size, cfg.name)
            elif fmt == "mono":
                pixels = decode_mono(bytes(data), _length(cfg.name, "width", width),
                                     _length(cfg.name, "height", height), backend.size, cfg.name)
            else:
                raise ProviderError(f"image format for display {cfg.name!r} must be 'png' or 'mono', not {fmt!r}",
                                    provider=self.name)
            if canvas.mode == "1":
                pixels = pixels if pixels.mode == "1" else _mono_mask(pixels.convert("L"))
                mask = None if mask is None else _mono_mask(mask)
            else:
                pixels = pixels.convert(canvas.mode)
            canvas.paste(pixels, (x, y), mask)

    def flush(self, link: Link) -> None:
        with self._io_lock:
            with self._lock:
                _, backend, canvas = self._owned(link)
                frame = canvas.copy()
            try:
                backend.show(frame)
            except BackendIOError as exc:
                self._note_io_error(exc)
                raise
            with self._lock:
                self._last_frame = frame
                self._last_error = None

    def contrast(self, link: Link, level: int) -> None:
        with self._io_lock:
            with self._lock:
                cfg, backend, _ = self._owned(link)
            if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= MAX_CONTRAST:
                raise ProviderError(f"contrast of display {cfg.name!r} must be from 0 to {MAX_CONTRAST}, "
                                    f"not {level!r}", provider=self.name)
            try:
                backend.contrast(level)
            except BackendIOError as exc:
                self._note_io_error(exc)
                raise
            with self._lock:
                self._contrast = level
                self._last_error = None

    def power(self, link: Link, on: bool) -> None:
        with self._io_lock:
            with self._lock:
                _, backend, _ = self._owned(link)
            try:
                backend.power(bool(on))
            except BackendIOError as exc:
                self._note_io_error(exc)
                raise
            with self._lock:
                self._powered = bool(on)
                self._last_error = None

    # -- for the node (any thread) --

    def snapshot(self) -> bytes:
        """The last flushed frame as a PNG, at the display's size and mode (blank before any
        flush). Not an operation: only the node's control plane calls it."""
        with self._lock:
            frame = self._last_frame
            if frame is None:
                raise Unavailable("the display provider has not started on this node", provider=self.name)
        out = io.BytesIO()
        frame.save(out, format="PNG")
        return out.getvalue()

    def health(self) -> Health:
        with self._lock:
            cfg, backend, error = self.cfg, self.backend, self._last_error
        if cfg is None or backend is None:
            return Health("failed", "display not started")
        if error:
            return Health("degraded", error)
        if backend.simulated:
            return Health("ok", f"display {cfg.name!r} is simulated (driver dummy); nothing is shown")
        return Health("ok", f"display {cfg.name!r}: {cfg.where}")

    def describe(self) -> dict[str, Any]:
        with self._lock:
            cfg, backend = self.cfg, self.backend
            if cfg is None or backend is None:
                return {"displays": []}
            font = ("default (FreeType, sized)" if self._freetype
                    else "bitmap fallback (Pillow has no FreeType; text size is ignored)")
            entry = {
                "name": cfg.name,
                "driver": backend.driver,
                "simulated": backend.simulated,
                "width": backend.size[0],
                "height": backend.size[1],
                "mode": backend.mode,
                "owner": self._owner[0] if self._owner else None,
                "interface": None if backend.simulated else cfg.interface,
                "address": f"0x{cfg.address:02x}" if not backend.simulated and cfg.interface == "i2c" else None,
                "powered": self._powered,
                "contrast": self._contrast,
                "font": font,
            }
        return {"displays": [entry]}
