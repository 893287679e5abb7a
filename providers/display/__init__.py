"""The ``display`` provider: ``drupelet:hardware/display`` on a small OLED through luma.oled.

Actors draw on a canvas (text, lines, rectangles, PNG and one-bit images) and ``flush``
sends it to the panel. One link owns the display at a time: the first link to the
provider claims it, a second is refused with ``busy`` naming the owner, and removing the
owner's link (or stopping its actor) blanks the screen, switches it back on and frees it.
The node's control plane reads the last flushed frame as a PNG through
:meth:`DisplayProvider.snapshot`.

Node config ``[providers.display]``: the keys, their defaults and meanings are declared
once in :class:`~.config.DisplaySettings` (``drupelet config-doc`` prints them): the
``driver`` (``auto``, ``dummy`` or a luma.oled driver), how the panel is wired
(``interface`` and its ``port``/``address`` or ``spi_*``/``gpio_*`` keys), its size,
rotation, pixel ``mode`` and ``name``.

Link config: none. The link itself is the grant.

Errors: a call from a link that does not own the display is ``denied``; a second link is
refused with ``busy``; the panel failing to take a frame or command is ``io`` and the
provider keeps running; bad arguments (text size, image data) are ``io`` with a message
that says what was wrong.

The package, like gpiozero's ``pins/``: :mod:`.provider` (the provider), :mod:`.backends`
(the backend base class and luma's real panels), :mod:`.simulation` (luma's dummy beside
them), :mod:`.config` (the schema) and :mod:`.canvas` (colours and images).
"""

from __future__ import annotations

from .backends import DisplayBackend, LumaBackend, open_panel, real_driver
from .canvas import decode_mono, decode_png, ink
from .config import DRIVER_ENV, DRIVERS, DisplayConfig, DisplaySettings, parse_config, validate
from .provider import INTERFACE, DisplayProvider, open_backend
from .simulation import SimulatedBackend

__all__ = [
    "DRIVERS",
    "DRIVER_ENV",
    "INTERFACE",
    "real_driver",
    "DisplayBackend",
    "DisplayConfig",
    "DisplayProvider",
    "DisplaySettings",
    "LumaBackend",
    "SimulatedBackend",
    "decode_mono",
    "decode_png",
    "ink",
    "open_backend",
    "open_panel",
    "parse_config",
    "validate",
]
