"""Telling a person why a boot file was not applied.

The reason, one line naming the file and the key, goes to the log (the journal, under
systemd), to ``drupelet.toml.error`` beside the boot file (a person can read it from
another computer; it is deleted once a good file is applied), and onto the display when
the new file or the installed node config names one: drawn through
:mod:`drupelet.providers.display` on its real backend, imported only then; a display
that cannot be opened is skipped.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drupelet.providers.base import ProviderError

from drupelet.node.errors import ConfigError

from .install import NODE_TOML, write_if_changed
from .schema import DisplaySection, DisplaySpec, display_spec, parse_section, read_toml

if TYPE_CHECKING:
    from PIL import Image

    from drupelet.providers.display import DisplayBackend

log = logging.getLogger(__name__)

ERROR_SUFFIX = ".error"
"""``drupelet.toml.error``: why the boot file was not applied, beside it."""
DISPLAY_FONT_PX = (11, 10)
"""Text sizes to try on the display, largest first."""


def error_file(boot: Path) -> Path:
    return boot.with_name(boot.name + ERROR_SUFFIX)


def error_text(boot: Path, reason: str, kept: str) -> str:
    return (f"drupelet could not apply {boot.name} when the Pi booted:\n\n"
            f"    {reason}\n\n"
            f"{kept}\n"
            f"Fix {boot.name} on this partition and boot the Pi again; this file is deleted once the\n"
            "fix is applied. The example drupelet.toml in drupelet's images/ folder explains every key.\n")


def report_failure(boot: Path, etc: Path, reason: str, short: str, *, dry_run: bool) -> int:
    """Report a boot file that was not applied: log, error file, display. Returns 1, the
    exit status. ``short`` is the reason without the file's path, for the display."""
    if dry_run:
        log.error("%s (dry run: nothing was written)", reason)
        return 1
    installed = (etc / NODE_TOML).exists()
    kept = (f"Nothing in {etc} was changed: the node keeps its previous configuration." if installed else
            f"Nothing is installed in {etc} yet, so the node cannot start until the file is fixed.")
    log.error("%s. %s", reason, kept)
    try:
        write_if_changed(error_file(boot), error_text(boot, reason, kept).encode())
    except OSError as exc:
        log.warning("could not write %s: %s", error_file(boot), exc)
    display_config = failure_display(boot, etc)
    if display_config is not None:
        show_on_display(display_config, f"{boot.name} error", short)
    return 1


def clear_failure(boot: Path) -> None:
    """Remove the error file of an earlier failure (the boot file was applied)."""
    try:
        error_file(boot).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove the old %s: %s", error_file(boot), exc)


# -- the display --------------------------------------------------------------------------


def _new_display(boot: Path) -> DisplaySpec | None:
    """The boot file's display, when its [hardware.display] alone is valid and names one."""
    try:
        doc = read_toml(boot)
        hardware = doc.get("hardware")
        table = hardware.get("display") if isinstance(hardware, dict) else None
        if not isinstance(table, dict):
            return None
        return display_spec(parse_section("hardware.display", table, DisplaySection, str(boot)), str(boot))
    except ConfigError:
        return None


def failure_display(boot: Path, etc: Path) -> dict[str, Any] | None:
    """The display to tell: the new file's when its [hardware.display] is valid and names
    one, else the installed node config's [providers.display] unless it is off."""
    spec = _new_display(boot)
    if spec is not None:
        return spec.provider_config()
    try:
        installed = tomllib.loads((etc / NODE_TOML).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    providers = installed.get("providers")
    table = providers.get("display") if isinstance(providers, dict) else None
    if not isinstance(table, dict) or table.get("enabled", True) is False:
        return None
    return {k: v for k, v in table.items() if k != "enabled"}


def show_on_display(config: Mapping[str, Any], title: str, detail: str) -> DisplayBackend | None:
    """Draw ``title`` and ``detail`` on the display ``config`` (a ``[providers.display]``
    table) describes, and leave them there. Returns the backend it used (closed), or None
    when the display could not be opened or drawn on: that is logged and otherwise ignored."""
    from drupelet.providers import display

    try:
        cfg = display.parse_config(config, {})
        backend = display.open_backend(cfg)
    except (ValueError, OSError, ProviderError) as exc:
        log.info("not showing the error on a display: %s", exc)
        return None
    try:
        backend.show(draw_message(backend.size, backend.mode, title, detail))
    except ProviderError as exc:
        log.info("not showing the error on display %r: %s", cfg.name, exc)
        return None
    finally:
        if isinstance(backend, display.LumaBackend):
            backend.device.persist = True  # closing must not blank the panel or switch it off
        try:
            backend.close()
        except ProviderError as exc:
            log.info("closing display %r: %s", cfg.name, exc)
    return backend


def draw_message(size: tuple[int, int], mode: str, title: str, detail: str) -> Image.Image:
    """A frame with ``title`` and ``detail`` word-wrapped below a rule, in the largest of
    :data:`DISPLAY_FONT_PX` that fits; what does not fit at the smallest ends in ….
    """
    from PIL import Image, ImageDraw, ImageFont, features

    from drupelet.providers.display import ink

    image = Image.new(mode, size)
    draw = ImageDraw.Draw(image)
    width, height = size
    freetype = features.check("freetype2")
    for font_px in DISPLAY_FONT_PX if freetype else DISPLAY_FONT_PX[-1:]:
        font = ImageFont.load_default(size=font_px) if freetype else ImageFont.load_default()

        def fits(text: str) -> bool:
            return draw.textlength(text, font=font) <= width

        line_px = int(draw.textbbox((0, 0), "Ag", font=font)[3]) + 1
        heading, body = _wrap(title, fits), _wrap(detail, fits)
        rows = max(1, (height - 2) // line_px)  # 2: the rule under the heading
        if len(heading) + len(body) <= rows:
            break
    lines = heading + body
    if len(lines) > rows:
        lines = lines[:rows]
        last = lines[-1]
        while last and not fits(last + "…"):
            last = last[:-1]
        lines[-1] = last + "…"
    fill = ink(mode, 0xFFFFFF)
    y = 0
    for i, line in enumerate(lines):
        draw.text((0, y), line, fill=fill, font=font)
        y += line_px
        if i == len(heading) - 1:
            draw.line([(0, y), (width - 1, y)], fill=fill)
            y += 2
    return image


def _wrap(text: str, fits: Callable[[str], bool]) -> list[str]:
    """Greedy word wrap by measured width; a word wider than a line is broken."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if fits(candidate):
            line = candidate
            continue
        if line:
            lines.append(line)
        line = ""
        for ch in word:
            if line and not fits(line + ch):
                lines.append(line)
                line = ""
            line += ch
    if line:
        lines.append(line)
    return lines
