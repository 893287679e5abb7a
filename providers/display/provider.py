"""The display provider itself: one display, owned by one link at a time, drawn on a canvas
and shown on flush.

See the package docstring (:mod:`drupelet.providers.display`) for what it offers actors.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from PIL import Image, ImageDraw, ImageFont, features

from ..base import BackendIOError, Busy, Denied, Health, Link, Provider, ProviderContext, ProviderError, Unavailable
from . import config
from .backends import DisplayBackend, open_panel
from .canvas import (MAX_COLOR, MAX_TEXT_CHARS, MAX_TEXT_SIZE_PX, MIN_TEXT_SIZE_PX, coord, decode_mono, decode_png, ink,
                     length, mono_mask)
from .config import DisplayConfig, DisplaySettings
from .simulation import SimulatedBackend

log = logging.getLogger(__name__)

INTERFACE = "drupelet:hardware/display"
MAX_CONTRAST = 255


def open_backend(cfg: DisplayConfig) -> DisplayBackend:
    """Open the panel ``cfg`` describes, or its simulation for driver ``dummy`` (blocking: a
    real panel is sent its driver's init sequence)."""
    if cfg.simulated:
        return SimulatedBackend(cfg)
    return open_panel(cfg)


class DisplayProvider(Provider):
    """One display, owned by one link at a time, drawn on a canvas and shown on flush."""

    name = "display"
    interfaces = (INTERFACE,)
    relink_when_actor_stops = True
    operations = {INTERFACE: frozenset({"info", "clear", "text", "line", "rectangle", "image", "flush",
                                        "contrast", "power"})}
    config_schema = DisplaySettings

    @classmethod
    def parse_config(cls, table: Mapping[str, Any], *, where: str = "") -> DisplaySettings:
        """Check a ``[providers.display]`` table, across keys too; opens nothing. The driver's
        environment override and ``auto`` are resolved at start."""
        return config.validate(table, where=where or f"providers.{cls.name}")

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
        cfg = config.parse_config(ctx.config, os.environ)
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
            x, y = coord(cfg.name, "x", x), coord(cfg.name, "y", y)
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
            xy = [(coord(cfg.name, "x0", x0), coord(cfg.name, "y0", y0)),
                  (coord(cfg.name, "x1", x1), coord(cfg.name, "y1", y1))]
            ImageDraw.Draw(canvas).line(xy, fill=self._ink(cfg, "color", color))

    def rectangle(self, link: Link, x: int, y: int, width: int, height: int,
                  outline: int | None, fill: int | None) -> None:
        with self._lock:
            cfg, _, canvas = self._owned(link)
            x, y = coord(cfg.name, "x", x), coord(cfg.name, "y", y)
            width, height = length(cfg.name, "width", width), length(cfg.name, "height", height)
            outline_ink = None if outline is None else self._ink(cfg, "outline", outline)
            fill_ink = None if fill is None else self._ink(cfg, "fill", fill)
            if width == 0 or height == 0 or (outline_ink is None and fill_ink is None):
                return
            ImageDraw.Draw(canvas).rectangle([x, y, x + width - 1, y + height - 1], outline=outline_ink,
                                             fill=fill_ink)

    def image(self, link: Link, x: int, y: int, fmt: str, data: bytes, width: int, height: int) -> None:
        with self._lock:
            cfg, backend, canvas = self._owned(link)
            x, y = coord(cfg.name, "x", x), coord(cfg.name, "y", y)
            mask: Image.Image | None = None
            if fmt == "png":
                pixels, mask = decode_png(bytes(data), backend.size, cfg.name)
            elif fmt == "mono":
                pixels = decode_mono(bytes(data), length(cfg.name, "width", width),
                                     length(cfg.name, "height", height), backend.size, cfg.name)
            else:
                raise ProviderError(f"image format for display {cfg.name!r} must be 'png' or 'mono', not {fmt!r}",
                                    provider=self.name)
            if canvas.mode == "1":
                pixels = pixels if pixels.mode == "1" else mono_mask(pixels.convert("L"))
                mask = None if mask is None else mono_mask(mask)
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
