"""The simulated display (driver ``dummy``): luma's ``dummy`` device, a peer of the real
panels in :mod:`.backends`, with the same canvas and the same snapshot.

Frames are kept in memory and nothing is sent anywhere. Tests and laptops read what it
was shown through :attr:`SimulatedBackend.shown`, :attr:`~SimulatedBackend.contrast_level`
and :attr:`~SimulatedBackend.powered`.
"""

from __future__ import annotations

import luma.core.device
from PIL import Image

from .backends import LumaBackend
from .config import DisplayConfig


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
