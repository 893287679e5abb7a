"""The display provider on luma's dummy device: drawing, flush and snapshot, ownership, config.

Hardware tests (``@pytest.mark.hardware``, run with DRUPELET_HARDWARE=1) use a real panel:

| variable | default | meaning |
|---|---|---|
| ``DRUPELET_TEST_DISPLAY_DRIVER`` | ``ssd1306`` | luma driver: ssd1306, sh1106 or ssd1309 |
| ``DRUPELET_TEST_DISPLAY_PORT`` | ``1`` | I2C bus number (``/dev/i2c-<port>``) |
| ``DRUPELET_TEST_DISPLAY_ADDR`` | ``0x3c`` | the panel's I2C address |
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image, ImageChops, ImageDraw, ImageFont

from drupelet.providers.base import (BackendIOError, Busy, Denied, Link, Message, ProviderContext, ProviderError,
                                     Unavailable)
from drupelet.providers.display import (DRIVER_ENV, INTERFACE, DisplayProvider, DisplaySettings, SimulatedBackend,
                                        parse_config)
from drupelet.providers.schema import SchemaError, key_docs

OWNER = Link("demo", INTERFACE, "local/display")
OTHER = Link("intruder", INTERFACE, "local/display")
WHITE, RED, ORANGE = 0xFFFFFF, 0xFF0000, 0xFF8000


@pytest.fixture(autouse=True)
def no_driver_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own DRUPELET_DISPLAY_DRIVER must not change what these tests open."""
    monkeypatch.delenv(DRIVER_ENV, raising=False)


async def _deliver(actor: str, message: Message) -> None:
    raise AssertionError(f"the display provider delivered {message.subject!r} to {actor}")


def context(tmp_path: Path, config: dict[str, Any]) -> ProviderContext:
    return ProviderContext(node="n1", lattice="default", loop=asyncio.get_running_loop(), data_dir=tmp_path,
                           config=config, deliver=_deliver)


async def started(tmp_path: Path, **config: Any) -> DisplayProvider:
    provider = DisplayProvider()
    await provider.start(context(tmp_path, {"driver": "dummy", **config}))
    return provider


@pytest_asyncio.fixture
async def display(tmp_path: Path) -> AsyncIterator[DisplayProvider]:
    """A started dummy 128x64 one-bit display, owned by OWNER."""
    provider = await started(tmp_path)
    await provider.link_added(OWNER)
    try:
        yield provider
    finally:
        await provider.stop()


async def call(provider: DisplayProvider, op: str, *args: Any, link: Link = OWNER) -> Any:
    """An import call as the node makes it: through ``invoke``, on a worker thread."""
    return await asyncio.to_thread(provider.invoke, link, op, list(args))


def snapshot(provider: DisplayProvider) -> Image.Image:
    image = Image.open(io.BytesIO(provider.snapshot()))
    assert image.format == "PNG"
    image.load()
    return image


def reference(size: tuple[int, int], mode: str, paint: Callable[[ImageDraw.ImageDraw], None]) -> Image.Image:
    image = Image.new(mode, size)
    paint(ImageDraw.Draw(image))
    return image


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.mode == b.mode and a.size == b.size and ImageChops.difference(a, b).getbbox() is None


def blank(image: Image.Image) -> bool:
    return image.convert("L").getbbox() is None


def lit(image: Image.Image) -> set[tuple[int, int]]:
    grey = image.convert("L")
    return {(x, y) for y in range(grey.height) for x in range(grey.width) if grey.getpixel((x, y))}


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


# -- drawing, flush, snapshot -------------------------------------------------------


async def test_text_appears_after_flush_exactly_as_pillow_renders_it(display: DisplayProvider) -> None:
    assert await call(display, "info") == {"width": 128, "height": 64, "mode": "1", "driver": "dummy",
                                           "name": "oled"}
    await call(display, "text", 3, 5, "Hello, 42!", 14, WHITE)
    before = snapshot(display)
    assert before.size == (128, 64) and before.mode == "1" and blank(before)  # nothing until flush

    await call(display, "flush")
    font = ImageFont.load_default(size=14)
    expected = reference((128, 64), "1", lambda d: d.text((3, 5), "Hello, 42!", fill=255, font=font))
    assert not blank(expected)
    assert same(snapshot(display), expected)
    backend = display.backend
    assert isinstance(backend, SimulatedBackend) and backend.shown is not None
    assert same(backend.shown, expected)  # the device itself received the frame


async def test_clear_and_flush_blanks_the_screen(display: DisplayProvider) -> None:
    await call(display, "rectangle", 0, 0, 128, 64, None, WHITE)
    await call(display, "flush")
    assert len(lit(snapshot(display))) == 128 * 64
    await call(display, "clear")
    assert len(lit(snapshot(display))) == 128 * 64  # the screen keeps its frame until flush
    await call(display, "flush")
    assert blank(snapshot(display))


async def test_lines_and_rectangles_land_on_the_expected_pixels(display: DisplayProvider) -> None:
    await call(display, "line", 0, 0, 9, 0, WHITE)
    await call(display, "line", 0, 2, 0, 4, 0x000100)  # any non-zero colour is lit on a mono panel
    await call(display, "rectangle", 20, 10, 5, 4, WHITE, None)
    await call(display, "rectangle", 40, 10, 3, 2, None, WHITE)
    await call(display, "flush")
    outline = {(x, y) for x in range(20, 25) for y in (10, 13)} | {(x, y) for x in (20, 24) for y in range(10, 14)}
    filled = {(x, y) for x in range(40, 43) for y in range(10, 12)}
    assert lit(snapshot(display)) == {(x, 0) for x in range(10)} | {(0, y) for y in (2, 3, 4)} | outline | filled


async def test_png_is_placed_at_x_y_and_transparency_keeps_the_canvas(display: DisplayProvider) -> None:
    picture = Image.new("RGB", (3, 2))
    picture.putpixel((0, 0), (255, 255, 255))
    picture.putpixel((2, 1), (200, 200, 200))
    picture.putpixel((1, 1), (40, 40, 40))  # too dark to light a one-bit pixel
    await call(display, "image", 5, 7, "png", png(picture), 0, 0)

    await call(display, "rectangle", 50, 0, 4, 1, None, WHITE)
    sprite = Image.new("RGBA", (4, 1), (0, 0, 0, 255))
    sprite.putpixel((1, 0), (0, 0, 0, 0))  # transparent: the white underneath stays
    await call(display, "image", 50, 0, "png", png(sprite), 99, 99)  # width/height are ignored for PNG

    await call(display, "flush")
    assert lit(snapshot(display)) == {(5, 7), (7, 8), (51, 0)}


async def test_mono_bits_are_msb_first_with_padded_rows(display: DisplayProvider) -> None:
    # 10x2: row 0 = 1010000000 (bytes 0xA0 0x00), row 1 = 0000000011 (0x00 0xC0)
    data = bytes([0b1010_0000, 0b0000_0000, 0b0000_0000, 0b1100_0000])
    await call(display, "rectangle", 3, 4, 10, 2, None, WHITE)  # mono pixels are opaque: 0 bits go dark
    await call(display, "image", 3, 4, "mono", data, 10, 2)
    await call(display, "flush")
    assert lit(snapshot(display)) == {(3, 4), (5, 4), (11, 5), (12, 5)}


BAD_CALLS: list[tuple[str, tuple[Any, ...], str]] = [
    ("image", (0, 0, "png", b"GIF89a", 0, 0), "image for display 'oled' is not a PNG file"),
    ("image", (0, 0, "png", b"\x89PNG\r\n\x1a\nnot really", 0, 0), "PNG for display 'oled' is damaged"),
    ("image", (0, 0, "png", png(Image.new("RGB", (8, 8))).replace(b"IDAT", b"IDAX"), 0, 0),
     "PNG for display 'oled' is damaged"),
    ("image", (0, 0, "png", png(Image.new("1", (129, 8))), 0, 0), r"129x8 does not fit display 'oled' of 128x64"),
    ("image", (0, 0, "mono", bytes(3), 10, 2), r"10x2 for display 'oled' needs 4 bytes .* got 3"),
    ("image", (0, 0, "mono", bytes(17 * 8), 130, 8), "does not fit display 'oled'"),
    ("image", (0, 0, "bmp", b"BM", 1, 1), "'png' or 'mono'"),
    ("text", (0, 0, "x", 5, WHITE), "text size on display 'oled' must be from 6 to 64 pixels, not 5"),
    ("text", (0, 0, "x", 65, WHITE), "not 65"),
    ("text", (0, 0, "x" * 257, 12, WHITE), "at most 256 characters, got 257"),
    ("line", (0, 0, 5, 5, 0x1000000), "color on display 'oled' must be a colour 0xRRGGBB"),
    ("rectangle", (0, 0, -1, 5, WHITE, None), "width on display 'oled' must be an integer from 0"),
    ("contrast", (256,), "contrast of display 'oled' must be from 0 to 255"),
]


@pytest.mark.parametrize(("op", "args", "message"), BAD_CALLS, ids=[m for _, _, m in BAD_CALLS])
async def test_bad_calls_say_why_and_change_nothing(display: DisplayProvider, op: str, args: tuple[Any, ...],
                                                    message: str) -> None:
    await call(display, "text", 0, 0, "keep", 12, WHITE)
    await call(display, "flush")
    frame = snapshot(display)
    assert not blank(frame)

    with pytest.raises(ProviderError, match=message) as caught:
        await call(display, op, *args)
    assert not isinstance(caught.value, (Denied, Busy, BackendIOError))
    assert same(snapshot(display), frame)
    await call(display, "flush")  # the canvas was not touched either
    assert same(snapshot(display), frame)


# -- ownership -------------------------------------------------------------------------


async def test_one_link_owns_the_display_and_removal_blanks_and_frees_it(display: DisplayProvider) -> None:
    with pytest.raises(Busy, match="in use by actor 'demo'"):
        await display.link_added(OTHER)
    await display.link_added(OWNER)  # the owner putting its link again is fine
    assert display.describe()["displays"][0]["owner"] == "demo"

    await call(display, "text", 0, 0, "stale?", 12, WHITE)
    await call(display, "flush")
    await display.link_removed(OTHER)  # not the owner: nothing happens
    assert not blank(snapshot(display))

    await display.link_removed(OWNER)
    assert blank(snapshot(display))
    backend = display.backend
    assert isinstance(backend, SimulatedBackend) and backend.shown is not None and blank(backend.shown)
    assert display.describe()["displays"][0]["owner"] is None
    with pytest.raises(Denied):
        await call(display, "flush")
    await display.link_added(OTHER)
    await call(display, "text", 0, 0, "mine now", 12, WHITE, link=OTHER)
    await call(display, "flush", link=OTHER)
    assert not blank(snapshot(display))


async def test_calls_from_a_link_that_does_not_own_it_are_denied(display: DisplayProvider) -> None:
    with pytest.raises(Denied, match="actor 'intruder' does not hold display 'oled' \\(actor 'demo' holds it\\)"):
        await call(display, "text", 0, 0, "hi", 12, WHITE, link=OTHER)
    with pytest.raises(Denied):
        await call(display, "info", link=OTHER)
    await call(display, "flush")
    assert blank(snapshot(display))


async def test_contrast_and_power_reach_the_device_and_the_inventory(display: DisplayProvider) -> None:
    backend = display.backend
    assert isinstance(backend, SimulatedBackend)
    await call(display, "contrast", 7)
    await call(display, "power", False)
    state = display.describe()["displays"][0]
    assert (state["contrast"], state["powered"]) == (7, False)
    assert (backend.contrast_level, backend.powered) == (7, False)
    await call(display, "power", True)
    assert display.describe()["displays"][0]["powered"] is True and backend.powered

    await call(display, "power", False)
    await display.link_removed(OWNER)  # the next owner starts with the panel on
    assert backend.powered and display.describe()["displays"][0]["powered"] is True


async def test_device_io_errors_are_io_and_the_provider_keeps_going(display: DisplayProvider,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    backend = display.backend
    assert isinstance(backend, SimulatedBackend)
    device_display = backend.device.display

    def broken(image: Image.Image) -> None:
        raise OSError(121, "Remote I/O error")

    monkeypatch.setattr(backend.device, "display", broken)
    await call(display, "text", 0, 0, "x", 12, WHITE)
    with pytest.raises(BackendIOError, match="display 'oled' .* failed to take a frame: .*Remote I/O error") as caught:
        await call(display, "flush")
    assert caught.value.code == "io"
    assert blank(snapshot(display))  # the frame the panel refused is not the last frame
    assert display.health().status == "degraded"

    monkeypatch.setattr(backend.device, "display", device_display)
    await call(display, "flush")
    assert not blank(snapshot(display)) and display.health().status == "ok"


async def test_stop_blanks_once_and_later_calls_are_unavailable(tmp_path: Path) -> None:
    provider = await started(tmp_path)
    await provider.link_added(OWNER)
    backend = provider.backend
    assert isinstance(backend, SimulatedBackend)
    await call(provider, "rectangle", 0, 0, 10, 10, None, WHITE)
    await call(provider, "flush")
    await provider.stop()
    await provider.stop()
    assert backend.shown is not None and blank(backend.shown)
    assert blank(snapshot(provider))
    with pytest.raises(Unavailable):
        await call(provider, "flush")
    assert provider.describe() == {"displays": []}


# -- modes and rotation ------------------------------------------------------------------


async def test_rgb_dummy_draws_in_colour(tmp_path: Path) -> None:
    provider = await started(tmp_path, mode="RGB", width=96, height=64, name="panel")
    try:
        await provider.link_added(OWNER)
        await call(provider, "rectangle", 0, 0, 2, 2, None, ORANGE)
        await call(provider, "text", 10, 10, "RGB", 16, RED)
        await call(provider, "flush")
        frame = snapshot(provider)
        assert (frame.mode, frame.size) == ("RGB", (96, 64))
        assert frame.getpixel((1, 1)) == (255, 128, 0)
        font = ImageFont.load_default(size=16)
        expected = reference((96, 64), "RGB", lambda d: (d.rectangle([0, 0, 1, 1], fill=(255, 128, 0)),
                                                         d.text((10, 10), "RGB", fill=(255, 0, 0), font=font)))
        assert same(frame, expected)
        assert (await call(provider, "info"))["mode"] == "RGB"
    finally:
        await provider.stop()


async def test_grey_dummy_uses_pillow_luma_for_colours(tmp_path: Path) -> None:
    provider = await started(tmp_path, mode="L")
    try:
        await provider.link_added(OWNER)
        await call(provider, "line", 0, 0, 3, 0, RED)
        await call(provider, "image", 0, 1, "png", png(Image.new("RGB", (2, 1), (0, 0, 255))), 0, 0)
        await call(provider, "flush")
        frame = snapshot(provider)
        assert frame.mode == "L"
        as_pillow = Image.new("RGB", (2, 1), (255, 0, 0)).convert("L").getpixel((0, 0))
        assert frame.getpixel((0, 0)) == as_pillow and frame.getpixel((3, 0)) == as_pillow
        assert frame.getpixel((1, 1)) == Image.new("RGB", (1, 1), (0, 0, 255)).convert("L").getpixel((0, 0))
        backend = provider.backend
        assert isinstance(backend, SimulatedBackend) and backend.shown is not None
        assert backend.shown.mode == "RGB" and backend.shown.getpixel((0, 0))[0] == as_pillow
    finally:
        await provider.stop()


async def test_rotation_swaps_what_actors_see(tmp_path: Path) -> None:
    provider = await started(tmp_path, rotate=1)
    try:
        await provider.link_added(OWNER)
        info = await call(provider, "info")
        assert (info["width"], info["height"]) == (64, 128)
        await call(provider, "line", 0, 0, 0, 0, WHITE)
        await call(provider, "flush")
        assert snapshot(provider).size == (64, 128) and lit(snapshot(provider)) == {(0, 0)}
        backend = provider.backend
        assert isinstance(backend, SimulatedBackend) and backend.shown is not None
        assert backend.shown.size == (128, 64) and lit(backend.shown) == {(127, 0)}  # a quarter turn clockwise
    finally:
        await provider.stop()


# -- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "message"), [
    ({"driver": "ssd1307"}, r"providers\.display\.driver: must be one of auto, dummy, ssd1306, sh1106, ssd1309, "
                           r"not 'ssd1307'"),
    ({"width": "128"}, r"providers\.display\.width: expected an integer, got a string '128'"),
    ({"height": 2}, r"providers\.display\.height: expected an integer >= 8, got 2"),
    ({"rotate": 4}, r"providers\.display\.rotate: expected an integer <= 3, got 4"),
    ({"address": "0xZZ"}, r"providers\.display\.address: must be an I2C address such as 0x3c, not '0xZZ'"),
    ({"address": 0x80}, r"providers\.display\.address: must be from 0x03 to 0x77, not 0x80"),
    ({"address": True}, r"providers\.display\.address: expected an integer or a string, got a boolean True"),
    ({"mode": "RGBA"}, r"providers\.display\.mode: must be one of 1, L, RGB, not 'RGBA'"),
    ({"interface": "uart"}, r"providers\.display\.interface: must be one of i2c, spi, not 'uart'"),
    ({"spi_port": 0}, r"providers\.display\.spi_port: applies only to interface 'spi'; this display uses 'i2c'"),
    ({"name": ""}, r"providers\.display\.name: expected a string of length >= 1"),
    ({"colour": "white"}, r"providers\.display\.colour: unknown key \(known: driver, interface, port, address"),
    ({"driver": "ssd1306", "mode": "RGB"}, r"providers\.display\.mode: 'RGB' needs driver 'dummy'"),
])
async def test_bad_config_names_the_key(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    provider = DisplayProvider()
    with pytest.raises(SchemaError, match=message):
        await provider.start(context(tmp_path, config))
    assert provider.backend is None
    with pytest.raises(SchemaError, match=message):  # the same check, without starting
        DisplayProvider.parse_config(config)


async def test_a_bus_that_cannot_be_opened_names_the_key(tmp_path: Path) -> None:
    provider = DisplayProvider()
    with pytest.raises(ValueError, match=r"providers\.display\.port: cannot open /dev/i2c-99"):
        await provider.start(context(tmp_path, {"driver": "ssd1306", "port": 99}))
    assert provider.backend is None
    settings = DisplayProvider.parse_config({"driver": "ssd1306", "port": 99})  # the table itself is fine
    assert (settings.driver, settings.port, settings.address) == ("ssd1306", 99, 0x3C)


def test_the_schema_documents_every_key_and_parse_config_resolves_the_driver(tmp_path: Path) -> None:
    assert DisplayProvider.config_schema is DisplaySettings
    docs = key_docs(DisplaySettings)
    assert [d.key for d in docs] == ["driver", "interface", "port", "address", "spi_port", "spi_device", "gpio_dc",
                                     "gpio_rst", "width", "height", "rotate", "mode", "name"]
    assert all(d.meaning for d in docs)
    cfg = parse_config({"driver": "ssd1306", "address": "0x3d"}, {})
    assert (cfg.driver, cfg.address, cfg.simulated) == ("ssd1306", 0x3D, False)
    assert parse_config({"driver": "ssd1306"}, {DRIVER_ENV: "dummy"}).simulated
    assert parse_config({"port": 99}, {}).driver == "dummy"  # auto: there is no /dev/i2c-99


def test_every_driver_the_schema_names_is_a_luma_oled_panel_class() -> None:
    import luma.oled.device

    from drupelet.providers.display import real_driver
    from drupelet.providers.display.config import REAL_DRIVER_NAMES

    for name in REAL_DRIVER_NAMES:
        cls = real_driver(name)
        assert cls.__module__ == "luma.oled.device" and cls is getattr(luma.oled.device, name)


async def test_address_may_be_a_string_and_shows_in_the_inventory(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DRIVER_ENV, "dummy")
    provider = DisplayProvider()
    await provider.start(context(tmp_path, {"driver": "ssd1306", "port": 99, "address": "0x3d"}))
    try:
        assert provider.cfg is not None and provider.cfg.address == 0x3D
    finally:
        await provider.stop()


async def test_environment_overrides_the_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DRIVER_ENV, "dummy")
    provider = DisplayProvider()
    await provider.start(context(tmp_path, {"driver": "ssd1306", "port": 99}))  # would fail: no /dev/i2c-99
    try:
        state = provider.describe()["displays"][0]
        assert (state["driver"], state["simulated"], state["interface"], state["address"]) == ("dummy", True, None,
                                                                                               None)
    finally:
        await provider.stop()
    monkeypatch.setenv(DRIVER_ENV, "floppy")
    with pytest.raises(SchemaError, match=f"{DRIVER_ENV}: must be one of auto, dummy, ssd1306"):
        await DisplayProvider().start(context(tmp_path, {}))


async def test_auto_without_the_bus_is_simulated_and_says_so(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    provider = DisplayProvider()
    with caplog.at_level(logging.WARNING, logger="drupelet.providers.display"):
        await provider.start(context(tmp_path, {"port": 99}))
    try:
        assert provider.describe()["displays"][0]["simulated"] is True
        assert any("simulated" in r.getMessage() and "/dev/i2c-99" in r.getMessage() for r in caplog.records)
        assert "simulated" in provider.health().message
    finally:
        await provider.stop()


# -- a real panel ----------------------------------------------------------------------


@pytest.mark.hardware
async def test_real_panel_shows_text(tmp_path: Path) -> None:
    provider = DisplayProvider()
    await provider.start(context(tmp_path, {
        "driver": os.environ.get("DRUPELET_TEST_DISPLAY_DRIVER", "ssd1306"),
        "port": int(os.environ.get("DRUPELET_TEST_DISPLAY_PORT", "1")),
        "address": os.environ.get("DRUPELET_TEST_DISPLAY_ADDR", "0x3c"),
    }))
    try:
        assert provider.backend is not None and not provider.backend.simulated
        await provider.link_added(OWNER)
        info = await call(provider, "info")
        await call(provider, "contrast", 128)
        await call(provider, "text", 2, 2, "drupelet", 16, WHITE)
        await call(provider, "rectangle", 0, 0, info["width"], info["height"], WHITE, None)
        await call(provider, "flush")
        font = ImageFont.load_default(size=16)
        size = (info["width"], info["height"])
        expected = reference(size, "1", lambda d: (d.text((2, 2), "drupelet", fill=255, font=font),
                                                   d.rectangle([0, 0, size[0] - 1, size[1] - 1], outline=255)))
        assert same(snapshot(provider), expected)
        await provider.link_removed(OWNER)
        assert blank(snapshot(provider))
    finally:
        await provider.stop()
