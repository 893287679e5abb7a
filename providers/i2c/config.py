"""The i2c provider's configuration: ``[providers.i2c]`` declared once, and its link config.

:class:`I2cSettings` declares every key with its type, default and meaning. :func:`validate`
(which :meth:`I2cProvider.parse_config <drupelet.providers.i2c.I2cProvider.parse_config>`
is) checks a table against it and across its keys without looking at the machine;
:func:`parse_config` then decides what only the machine can: ``auto`` (are there
``/dev/i2c-*`` adapters?), the default buses, and the environment override
``DRUPELET_I2C_BACKEND``. Neither opens a bus.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ..base import Link, ProviderError
from ..schema import SchemaError, convert
from .backends import MAX_ADDRESS
from .simulation import make_device

WHERE = "providers.i2c"
BACKEND_ENV = "DRUPELET_I2C_BACKEND"
BackendChoice = Literal["auto", "smbus", "sim"]
BACKENDS: tuple[BackendChoice, ...] = ("auto", "smbus", "sim")
DEV_DIR = Path("/dev")
"""Where ``/dev/i2c-N`` adapters are looked for (tests point it elsewhere)."""
SIM_DEVICE_LABEL = "sim"
DEFAULT_SIM_BUS = "i2c1"
DEFAULT_SIM_DEVICES = ("tmp102@0x48", "ssd1306@0x3c")

BUS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
ADAPTER = re.compile(r"^i2c-(\d+)$")


class I2cSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[providers.i2c]``."""

    backend: Annotated[BackendChoice, Meta(description=(
        "`smbus`: the kernel's /dev/i2c-N through smbus2. `sim`: simulated buses with the devices of "
        "`sim_devices`. `auto`: smbus when any /dev/i2c-* exists, else sim with a WARNING. The environment "
        f"variable {BACKEND_ENV} overrides this key"))] = "auto"
    buses: Annotated[dict[str, Annotated[str, Meta(min_length=1)]], Meta(description=(
        'bus name (1-32 of A-Z a-z 0-9 _ . -) to device path, e.g. `{i2c1 = "/dev/i2c-1"}`; with sim the path '
        'is only a label. Empty: every /dev/i2c-N as i2c<N> (with sim: `{i2c1 = "sim"}`)'))] = \
        msgspec.field(default_factory=dict)
    sim_devices: Annotated[dict[str, list[str]], Meta(description=(
        "sim only: bus name to the devices on it, each as <kind>@<address> (kinds: tmp102, ssd1306); each bus must "
        "be in `buses`. The default applies to bus i2c1 only when there is one"))] = \
        msgspec.field(default_factory=lambda: {DEFAULT_SIM_BUS: list(DEFAULT_SIM_DEVICES)})


@dataclass(frozen=True)
class I2cConfig:
    """``[providers.i2c]`` checked, with the machine and the environment applied."""

    backend: Literal["smbus", "sim"]
    buses: dict[str, str]
    sim_devices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    auto: bool = False
    """The backend was chosen by ``auto``."""


def validate(table: Mapping[str, Any], *, where: str = WHERE) -> I2cSettings:
    """Check ``[providers.i2c]`` against :class:`I2cSettings` and across its keys;
    :class:`~drupelet.providers.schema.SchemaError` (a ValueError) names the key."""
    settings = convert(table, I2cSettings, where=where)
    for name in settings.buses:
        if not BUS_NAME.match(name):
            raise SchemaError(f"{name!r} is not a bus name (1-32 of A-Z a-z 0-9 _ . -)", key=f"{where}.buses")
    for name, specs in settings.sim_devices.items():
        key = f"{where}.sim_devices.{name}"
        seen: set[int] = set()
        for spec in specs:
            try:
                device = make_device(spec)
            except ValueError as exc:
                raise SchemaError(str(exc), key=key) from None
            if device.address in seen:
                raise SchemaError(f"two devices at 0x{device.address:02x}", key=key)
            seen.add(device.address)
    if settings.backend == "sim" and "sim_devices" in table:
        _check_sim_buses(settings.sim_devices, settings.buses or {DEFAULT_SIM_BUS: SIM_DEVICE_LABEL}, where)
    return settings


def _check_sim_buses(sim_devices: Mapping[str, Any], buses: Mapping[str, str], where: str) -> None:
    for name in sim_devices:
        if name not in buses:
            raise SchemaError(f"there is no bus {name!r} (buses: {', '.join(buses) or 'none'})",
                              key=f"{where}.sim_devices.{name}")


def list_adapters(dev_dir: Path) -> dict[str, str]:
    """``{"i2c1": "/dev/i2c-1", …}`` for the adapters under ``dev_dir``, by number."""
    found: list[tuple[int, str]] = []
    if dev_dir.is_dir():
        for path in dev_dir.iterdir():
            match = ADAPTER.match(path.name)
            if match:
                found.append((int(match.group(1)), str(path)))
    return {f"i2c{n}": path for n, path in sorted(found)}


def parse_config(config: Mapping[str, Any], environ: Mapping[str, str], dev_dir: Path) -> I2cConfig:
    """:func:`validate`, then the environment's ``DRUPELET_I2C_BACKEND`` over ``backend``,
    ``auto`` and the default buses decided by what ``dev_dir`` holds."""
    settings = validate(config)
    override = environ.get(BACKEND_ENV, "").strip()
    if override and override not in BACKENDS:
        raise SchemaError(f"must be one of {', '.join(BACKENDS)}, not {override!r}", key=BACKEND_ENV)
    requested = override or settings.backend
    adapters = list_adapters(dev_dir)
    backend: Literal["smbus", "sim"] = "sim" if requested == "sim" or (requested == "auto" and not adapters) \
        else "smbus"
    if settings.buses:
        buses = dict(settings.buses)
    elif backend == "smbus":
        if not adapters:
            raise SchemaError(f"is 'smbus' but there is no {dev_dir}/i2c-*: enable I2C (`sudo raspi-config nonint "
                              "do_i2c 0`, or dtparam=i2c_arm=on in config.txt), name the devices in "
                              f"{WHERE}.buses, or use backend = 'sim'",
                              key=BACKEND_ENV if override else f"{WHERE}.backend")
        buses = adapters
    else:
        buses = {DEFAULT_SIM_BUS: SIM_DEVICE_LABEL}
    if "sim_devices" in config:
        if backend == "sim":
            _check_sim_buses(settings.sim_devices, buses, WHERE)
        sim_devices = {name: tuple(specs) for name, specs in settings.sim_devices.items()}
    else:  # the default places its devices on i2c1, when there is one
        sim_devices = {name: tuple(specs) for name, specs in settings.sim_devices.items() if name in buses}
    return I2cConfig(backend=backend, buses=buses, sim_devices=sim_devices, auto=requested == "auto")


# -- link config (strings, checked when the link is put) ----------------------------------


def granted_buses(link: Link) -> set[str]:
    return {b.strip() for b in link.config.get("buses", "").split(",") if b.strip()}


def granted_addresses(link: Link) -> frozenset[int]:
    """The addresses in the link's ``addresses`` config; ProviderError if one is not one."""
    found: set[int] = set()
    for item in link.config.get("addresses", "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            address = int(item, 0)
        except ValueError:
            address = -1
        if not 0 <= address <= MAX_ADDRESS:
            raise ProviderError(f"the link of actor {link.source!r} grants I2C address {item!r}, which is not a "
                                f"7-bit address; write them as 0x48 or 72, 0x00 to 0x7f, comma-separated",
                                provider="i2c")
        found.add(address)
    return frozenset(found)


def hex_list(addresses: Iterable[int]) -> str:
    return ",".join(f"0x{a:02x}" for a in sorted(addresses))
