"""The gpio provider's configuration: ``[providers.gpio]`` declared once, and its link config.

:class:`GpioSettings` declares every key with its type, default and meaning; validation
(:func:`validate`, which :meth:`GpioProvider.parse_config
<drupelet.providers.gpio.GpioProvider.parse_config>` is) and the docs come from it.
:func:`parse_config` adds what only start may decide: the environment override
``DRUPELET_GPIO_BACKEND``. Neither opens a backend or touches a pin.

The backends a config may name are those registered in the ``drupelet.gpio_backends``
entry-point group (:mod:`.backends`), so a package that registers one makes its name valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ..base import Denied, Link, ProviderError
from ..schema import SchemaError, convert
from .backends import BACKEND_GROUP, registered_backends

WHERE = "providers.gpio"
BACKEND_ENV = "DRUPELET_GPIO_BACKEND"
AUTO = "auto"
DEFAULT_PINS = tuple(range(2, 28))
SafeState = Literal["low", "high", "input"]
SAFE_STATES: tuple[SafeState, ...] = ("low", "high", "input")
DEFAULT_SAFE_STATE: SafeState = "low"

PULLS: Mapping[str, bool | None] = {"up": True, "down": False, "none": None}
EDGES = ("rising", "falling", "both")
DEFAULT_EDGES = "both"
DEFAULT_EVENT_PULL = "up"
DEFAULT_EVENT_DEBOUNCE_MS = 20


class GpioSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[providers.gpio]``."""

    backend: Annotated[str, Meta(description=(
        f"`auto`, or the name of a backend in the `{BACKEND_GROUP}` entry-point group: drupelet registers "
        "`mock` (gpiozero's MockFactory: nothing physical moves, `drupelet gpio simulate` drives inputs), "
        "`lgpio`, `rpigpio` and `native` (gpiozero's pin factories of those names), and an installed package "
        "may add its own. `auto`: `lgpio` when the lgpio module imports and /dev/gpiochip0 exists, else `mock` "
        "with a WARNING that GPIO is simulated. A real backend that cannot open stops the node from starting. "
        f"The environment variable {BACKEND_ENV} overrides this key"))] = AUTO
    pins: Annotated[list[Annotated[int, Meta(ge=0)]], Meta(description=(
        "the BCM pins any link may be granted; each must be on the board's header"))] = \
        msgspec.field(default_factory=lambda: list(DEFAULT_PINS))
    safe_state: Annotated[dict[str, SafeState], Meta(description=(
        'pin (such as "17") to what that output or PWM pin is set to when its link goes; a pin not named '
        "here goes `low`. `low`/`high`: the provider keeps driving that level until a link configures "
        "the pin again; `input`: the pin is released as a floating input"))] = msgspec.field(default_factory=dict)


@dataclass(frozen=True)
class GpioConfig:
    """``[providers.gpio]`` checked, with the environment applied."""

    backend: str
    """A registered backend's name, or ``auto``."""
    backend_key: str
    """Where ``backend`` came from: ``providers.gpio.backend`` or the environment variable."""
    pins: tuple[int, ...]
    safe_state: Mapping[int, SafeState]


def backend_names() -> tuple[str, ...]:
    """What ``backend`` accepts: ``auto`` and every registered backend."""
    return (AUTO, *sorted(registered_backends()))


def _check_backend(name: str, key: str) -> None:
    names = backend_names()
    if name not in names:
        raise SchemaError(f"must be one of {', '.join(names)} (the backends registered in the {BACKEND_GROUP} "
                          f"entry-point group), not {name!r}", key=key)


def validate(table: Mapping[str, Any], *, where: str = WHERE) -> GpioSettings:
    """Check ``[providers.gpio]`` against :class:`GpioSettings` and across its keys;
    :class:`~drupelet.providers.schema.SchemaError` (a ValueError) names the key."""
    settings = convert(table, GpioSettings, where=where)
    _check_backend(settings.backend, f"{where}.backend")
    pins = set(settings.pins)
    for key in settings.safe_state:
        key_where = f"{where}.safe_state.{key}"
        pin = _pin_number(key)
        if pin is None:
            raise SchemaError('the key must be a BCM pin number such as "17"', key=key_where)
        if pin not in pins:
            raise SchemaError(f"pin {pin} is not in {where}.pins ({format_pins(pins)})", key=key_where)
    return settings


def parse_config(config: Mapping[str, Any], environ: Mapping[str, str]) -> GpioConfig:
    """:func:`validate`, then the environment's ``DRUPELET_GPIO_BACKEND`` over ``backend``."""
    settings = validate(config)
    backend_key, backend = f"{WHERE}.backend", settings.backend
    override = environ.get(BACKEND_ENV)
    if override:
        backend_key, backend = BACKEND_ENV, override
        _check_backend(backend, BACKEND_ENV)
    safe: dict[int, SafeState] = {}
    for key, value in settings.safe_state.items():
        pin = _pin_number(key)
        assert pin is not None  # validate checked it
        safe[pin] = value
    return GpioConfig(backend, backend_key, tuple(sorted(set(settings.pins))), safe)


def _pin_number(text: str) -> int | None:
    try:
        pin = int(text)
    except ValueError:
        return None
    return pin if pin >= 0 else None


def format_pins(pins: Iterable[int]) -> str:
    """``[2, 3, 4, 17]`` → ``"2-4,17"``; ``"none"`` when empty."""
    ordered = sorted(set(pins))
    if not ordered:
        return "none"
    parts: list[str] = []
    start = prev = ordered[0]
    for pin in ordered[1:] + [-1]:
        if pin == prev + 1:
            prev = pin
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = pin
    return ",".join(parts)


# -- link config (strings, checked when the link is put) ----------------------------------


def granted_pins(link: Link) -> frozenset[int]:
    """The pins the link's ``pins`` config grants."""
    raw = link.config.get("pins", "")
    try:
        return frozenset(int(p) for p in raw.split(",") if p.strip())
    except ValueError:
        raise Denied(f"actor {link.source!r}: link config pins = {raw!r} is not a comma-separated list of BCM "
                     "pin numbers such as \"17,27\"; fix the link's `pins` config", provider="gpio") from None


@dataclass(frozen=True)
class EventConfig:
    edges: Mapping[int, str]
    pull: str
    debounce_ms: int


def event_config(link: Link) -> EventConfig:
    """The link's ``events``, ``pull`` and ``debounce_ms``; ProviderError when malformed."""
    raw = link.config.get("events", "")
    edges: dict[int, str] = {}
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        pin_text, _, edge = item.partition(":")
        edge = edge.strip() or DEFAULT_EDGES
        try:
            pin = int(pin_text)
        except ValueError:
            pin = -1
        if pin < 0 or edge not in EDGES:
            raise ProviderError(f"actor {link.source!r}: link config events = {raw!r}: {item!r} is not "
                                "<pin> or <pin>:<rising|falling|both>", provider="gpio")
        edges[pin] = edge
    pull = link.config.get("pull", DEFAULT_EVENT_PULL)
    if pull not in PULLS:
        raise ProviderError(f"actor {link.source!r}: link config pull = {pull!r} must be up, down or none",
                            provider="gpio")
    raw_debounce = link.config.get("debounce_ms", str(DEFAULT_EVENT_DEBOUNCE_MS))
    try:
        debounce_ms = int(raw_debounce)
    except ValueError:
        debounce_ms = -1
    if debounce_ms < 0:
        raise ProviderError(f"actor {link.source!r}: link config debounce_ms = {raw_debounce!r} must be a "
                            "whole number of milliseconds, 0 or more", provider="gpio")
    return EventConfig(edges, pull, debounce_ms)
