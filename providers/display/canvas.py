"""Drawing on the display's canvas: colours, coordinates and the two image formats actors
send (PNG, and one bit per pixel), checked so a bad argument is a clear error.
"""

from __future__ import annotations

import io
import math

from PIL import Image, UnidentifiedImageError

from ..base import ProviderError

MIN_TEXT_SIZE_PX, MAX_TEXT_SIZE_PX = 6, 64
MAX_TEXT_CHARS = 256
MAX_COORD = (1 << 15) - 1
"""Coordinates beyond ±32767 are refused (Pillow draws with C ints)."""
MAX_COLOR = 0xFFFFFF
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MONO_THRESHOLD = 128
"""A PNG pixel (or alpha) at or above this grey level is lit (opaque) on a one-bit display."""


def coord(display: str, what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -MAX_COORD <= value <= MAX_COORD:
        raise ProviderError(f"{what} on display {display!r} must be an integer from {-MAX_COORD} to {MAX_COORD}, "
                            f"not {value!r}", provider="display")
    return value


def length(display: str, what: str, value: int) -> int:
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


def mono_mask(image: Image.Image) -> Image.Image:
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
