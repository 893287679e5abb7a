"""The ``i2c`` provider: named I2C buses for ``drupelet:hardware/i2c-bus`` and ``wasi:i2c``.

An actor opens a bus by name (``open("i2c1")``) and gets a handle (:class:`I2cBus`) on
which it runs ``wasi:i2c/i2c@0.2.0-draft`` transfers: ``transaction``, ``read``,
``write`` and ``write-read``. Each call is one combined transfer (``I2C_RDWR``: repeated
starts, one stop), so ``write-read`` of a register pointer and its value cannot be split
by another actor's transfer.

Node config ``[providers.i2c]``:

| key | default | meaning |
|---|---|---|
| ``backend`` | ``"auto"`` | ``"smbus"``: the kernel's ``/dev/i2c-N`` through smbus2. ``"sim"``: simulated buses (:mod:`.simi2c`). ``"auto"``: smbus when any ``/dev/i2c-*`` exists, else sim with a WARNING. The environment variable ``DRUPELET_I2C_BACKEND`` overrides it. |
| ``buses`` | every ``/dev/i2c-N`` as ``i2c<N>``; sim: ``{i2c1 = "sim"}`` | table of bus name to device path, e.g. ``{i2c1 = "/dev/i2c-1"}``; with sim the value is only a label |
| ``sim_devices`` | ``{i2c1 = ["tmp102@0x48", "ssd1306@0x3c"]}`` | sim only: table of bus name to devices as ``<kind>@<address>`` (kinds: tmp102, ssd1306) |

Link config (for ``drupelet:hardware/i2c-bus``):

| key | meaning |
|---|---|
| ``buses`` | comma-separated bus names the actor may open; absent grants none |
| ``addresses`` | comma-separated 7-bit addresses the actor may address on them, decimal or hex (``0x48,0x3c``); absent grants none |

Limits: addresses 0x00-0x7f (10-bit addresses are not supported); a read is 1 to 4096
bytes, a write up to 8192 (i2c-dev's own limit); a transaction has at most 42
operations (``I2C_RDWR_IOCTL_MAX_MSGS``) and 16384 bytes in all.

Transfer errors are :class:`I2cError`, whose ``code`` is ``i2c:<kind>`` or
``i2c:no-acknowledge:<source>`` so the node can rebuild wasi:i2c's ``error-code`` on
this node or another (:func:`error_code_parts`, :meth:`I2cError.from_code`). They come
from the kernel's errno, following Linux's Documentation/i2c/fault-codes.rst:

| errno | what the kernel means | error-code | ``code`` |
|---|---|---|---|
| ``ENXIO`` (6) | the address phase got no ACK: usually nothing at that address | ``no-acknowledge(address)`` | ``i2c:no-acknowledge:address`` |
| ``EREMOTEIO`` (121) | no ACK, address or data phase unknown; what i2c-bcm2835 (the Pi's adapter) returns for every NACK (fault-codes.rst does not list it) | ``no-acknowledge(unknown)`` | ``i2c:no-acknowledge:unknown`` |
| ``EAGAIN`` (11) | arbitration lost to another master | ``arbitration-loss`` | ``i2c:arbitration-loss`` |
| ``ETIMEDOUT`` (110) | the transfer took too long and was aborted (clock stretched too far, bus held low) | ``bus`` | ``i2c:bus`` |
| ``EBUSY`` (16) | the bus was busy for longer than allowed; needs recovery | ``bus`` | ``i2c:bus`` |
| ``EOVERFLOW`` (75) | the receive buffer overran | ``overrun`` | ``i2c:overrun`` |
| ``EPROTO`` (71), ``EBADMSG`` (74) | the device broke the protocol; bad SMBus PEC | ``other`` | ``i2c:other`` |
| ``EIO`` (5) | an unspecified I/O failure | ``other`` | ``i2c:other`` |
| anything else | (the message carries its strerror) | ``other`` | ``i2c:other`` |

A failed transfer fails that call only: the bus stays open. :meth:`I2cProvider.health`
reports ``degraded`` with the last error for ``DEGRADED_FOR_S`` seconds, or until the
bus's next successful transfer.

For the inventory each bus is scanned like ``i2cdetect -r``: a 1-byte read at 0x08-0x77,
taking the bus lock per probe only; results are kept ``SCAN_CACHE_S`` seconds and
refreshed off the event loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, overload

from smbus2 import SMBus, i2c_msg

from .base import Denied, Health, Link, NotFound, PayloadTooLarge, Provider, ProviderContext, ProviderError, Unavailable
from .simi2c import SimBus, SimDevice, make_device

log = logging.getLogger(__name__)

INTERFACE = "drupelet:hardware/i2c-bus"
BACKEND_ENV = "DRUPELET_I2C_BACKEND"
BACKENDS = ("auto", "smbus", "sim")
DEV_DIR = Path("/dev")
"""Where ``/dev/i2c-N`` adapters are looked for (tests point it elsewhere)."""
SIM_DEVICE_LABEL = "sim"
DEFAULT_SIM_BUS = "i2c1"
DEFAULT_SIM_DEVICES = ("tmp102@0x48", "ssd1306@0x3c")

MAX_ADDRESS = 0x7F
SCAN_FIRST, SCAN_LAST = 0x08, 0x77
MIN_READ_BYTES, MAX_READ_BYTES = 1, 4096
MAX_WRITE_BYTES = 8192
MAX_OPERATIONS = 42
MAX_TRANSACTION_BYTES = 16384
SCAN_CACHE_S = 30.0
DEGRADED_FOR_S = 60.0

BUS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
ADAPTER = re.compile(r"^i2c-(\d+)$")

ERROR_KINDS: frozenset[str] = frozenset({"bus", "arbitration-loss", "no-acknowledge", "overrun", "other"})
NACK_SOURCES: frozenset[str] = frozenset({"address", "data", "unknown"})

ERRNO_KINDS: Mapping[int, tuple[str, str | None]] = {
    errno.ENXIO: ("no-acknowledge", "address"),
    errno.EREMOTEIO: ("no-acknowledge", "unknown"),
    errno.EAGAIN: ("arbitration-loss", None),
    errno.ETIMEDOUT: ("bus", None),
    errno.EBUSY: ("bus", None),
    errno.EOVERFLOW: ("overrun", None),
    errno.EPROTO: ("other", None),
    errno.EBADMSG: ("other", None),
    errno.EIO: ("other", None),
}
"""errno of a failed transfer → (kind, no-acknowledge source). See the module docstring."""

_HINTS: Mapping[str, str] = {
    "i2c:no-acknowledge:address": "nothing acknowledged the address: check that the device is wired, powered "
                                  "and really at this address (the node's inventory lists the addresses that answer)",
    "i2c:no-acknowledge:unknown": "the device did not acknowledge (the adapter does not say whether the address or a "
                                  "data byte): check that it is wired, powered and at this address, and that it "
                                  "accepts this command",
    "i2c:no-acknowledge:data": "the device refused a data byte: check that it accepts this register and value",
    "i2c:arbitration-loss": "another bus master won arbitration; retry the transfer",
    "i2c:bus": "the bus did not finish the transfer: check for a device holding SDA or SCL low, the pull-ups "
               "and the wiring",
    "i2c:overrun": "the adapter could not keep up: read fewer bytes per operation",
}


# -- errors ---------------------------------------------------------------------------


def error_code_parts(code: str) -> tuple[str, str | None] | None:
    """``("no-acknowledge", "address")`` for ``i2c:no-acknowledge:address``,
    ``("bus", None)`` for ``i2c:bus``; None when ``code`` is not an I2C error code."""
    prefix, _, rest = code.partition(":")
    if prefix != "i2c":
        return None
    kind, _, source = rest.partition(":")
    if kind not in ERROR_KINDS:
        return None
    if kind == "no-acknowledge":
        source = source or "unknown"
        return (kind, source) if source in NACK_SOURCES else None
    return None if source else (kind, None)


class I2cError(ProviderError, OSError):
    """A transfer failed on the bus. ``kind`` is wasi:i2c's error-code case, ``source``
    the no-acknowledge source (None for other kinds); ``code`` holds both."""

    def __init__(self, kind: str, message: str, *, source: str | None = None, errno_value: int | None = None,
                 bus: str | None = None, address: int | None = None, provider: str | None = "i2c") -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"{kind!r} is not an I2C error kind ({', '.join(sorted(ERROR_KINDS))})")
        if kind == "no-acknowledge":
            source = source or "unknown"
            if source not in NACK_SOURCES:
                raise ValueError(f"{source!r} is not a no-acknowledge source ({', '.join(sorted(NACK_SOURCES))})")
        elif source is not None:
            raise ValueError(f"only no-acknowledge has a source, not {kind!r}")
        super().__init__(message, provider=provider)
        self.kind = kind
        self.source = source
        self.bus = bus
        self.address = address
        self.errno = errno_value
        self.code = f"i2c:{kind}:{source}" if source else f"i2c:{kind}"

    @classmethod
    def from_code(cls, code: str, message: str) -> I2cError:
        """Rebuild an error from its ``code`` (as carried across the network)."""
        parts = error_code_parts(code)
        if parts is None:
            raise ValueError(f"{code!r} is not an I2C error code")
        kind, source = parts
        return cls(kind, message, source=source)

    @classmethod
    def from_os_error(cls, exc: OSError, *, bus: str, device: str, address: int) -> I2cError:
        """The error for a failed transfer, by errno (see the module docstring)."""
        number = exc.errno
        kind, source = ERRNO_KINDS.get(number, ("other", None)) if number is not None else ("other", None)
        name = errno.errorcode.get(number, str(number)) if number is not None else "no errno"
        reason = exc.strerror or str(exc)
        code = f"i2c:{kind}:{source}" if source else f"i2c:{kind}"
        hint = _HINTS.get(code)
        message = f"I2C transfer at 0x{address:02x} on bus {bus!r} ({device}) failed: {reason} [{name}]"
        return cls(kind, f"{message}; {hint}" if hint else message, source=source, errno_value=number,
                   bus=bus, address=address)


# -- buses ----------------------------------------------------------------------------


class BusDriver(Protocol):
    """What a bus backend offers: the part of :class:`smbus2.SMBus` the provider uses.
    :class:`smbus2.SMBus` (real) and :class:`.simi2c.SimBus` (simulated) both are one."""

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None: ...

    def close(self) -> None: ...


Operation = tuple[Literal["read"], int] | tuple[Literal["write"], bytes]


class _Bus:
    """One open bus: its driver, the lock transfers take, the last scan and the last error."""

    def __init__(self, name: str, device: str, driver: BusDriver) -> None:
        self.name = name
        self.device = device
        self.driver = driver
        self.lock = threading.Lock()
        self.closed = False
        self.last_error: tuple[float, str] | None = None
        self._scan: tuple[float, tuple[int, ...]] | None = None

    def transfer(self, address: int, ops: Sequence[Operation]) -> list[bytes]:
        msgs = [i2c_msg.read(address, op[1]) if op[0] == "read" else i2c_msg.write(address, op[1]) for op in ops]
        with self.lock:
            if self.closed:
                raise Unavailable(f"I2C bus {self.name!r} is closed because the i2c provider stopped",
                                  provider="i2c")
            try:
                self.driver.i2c_rdwr(*msgs)
            except OSError as exc:
                error = I2cError.from_os_error(exc, bus=self.name, device=self.device, address=address)
                self.last_error = (time.monotonic(), error.message)
                log.debug("%s", error.message)
                raise error from exc
            self.last_error = None
        return [ctypes.string_at(m.buf, m.len) for m, op in zip(msgs, ops) if op[0] == "read"]

    def probe(self, address: int) -> bool:
        """Whether a 1-byte read at ``address`` is acknowledged (``i2cdetect -r``)."""
        msg = i2c_msg.read(address, 1)
        with self.lock:
            if self.closed:
                return False
            try:
                self.driver.i2c_rdwr(msg)
            except OSError as exc:
                if exc.errno not in (errno.ENXIO, errno.EREMOTEIO):
                    log.debug("scan of %s at 0x%02x: %s", self.name, address, exc)
                return False
        return True

    def scan(self) -> tuple[int, ...]:
        found = tuple(a for a in range(SCAN_FIRST, SCAN_LAST + 1) if not self.closed and self.probe(a))
        self._scan = (time.monotonic(), found)
        return found

    def scan_age_s(self) -> float:
        return float("inf") if self._scan is None else time.monotonic() - self._scan[0]

    def devices(self) -> tuple[int, ...]:
        return () if self._scan is None else self._scan[1]

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.driver.close()


# -- link config ----------------------------------------------------------------------


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


def _hex_list(addresses: Iterable[int]) -> str:
    return ",".join(f"0x{a:02x}" for a in sorted(addresses))


def parse_operations(ops: Any) -> list[Operation]:
    """Check a transaction's operations (``("read", n)`` / ``("write", data)``, lists too)."""
    if not isinstance(ops, (list, tuple)):
        raise ProviderError(f"I2C operations must be a list, not {type(ops).__name__}", provider="i2c")
    if len(ops) > MAX_OPERATIONS:
        raise ProviderError(f"an I2C transaction has {len(ops)} operations; split it into transactions of at "
                            f"most {MAX_OPERATIONS}", provider="i2c")
    parsed: list[Operation] = []
    total = 0
    for i, op in enumerate(ops):
        if not isinstance(op, (list, tuple)) or len(op) != 2 or op[0] not in ("read", "write"):
            raise ProviderError(f"I2C operation {i} is {op!r}; use (\"read\", length) or (\"write\", bytes)",
                                provider="i2c")
        if op[0] == "read":
            length = op[1]
            if isinstance(length, bool) or not isinstance(length, int) \
                    or not MIN_READ_BYTES <= length <= MAX_READ_BYTES:
                raise ProviderError(f"I2C operation {i} reads {length!r} bytes; read {MIN_READ_BYTES} to "
                                    f"{MAX_READ_BYTES} bytes per operation", provider="i2c")
            parsed.append(("read", length))
            total += length
        else:
            data = _as_bytes(op[1], i)
            if len(data) > MAX_WRITE_BYTES:
                raise ProviderError(f"I2C operation {i} writes {len(data)} bytes; write at most {MAX_WRITE_BYTES} "
                                    f"bytes per operation", provider="i2c")
            parsed.append(("write", data))
            total += len(data)
    if total > MAX_TRANSACTION_BYTES:
        raise PayloadTooLarge(total, MAX_TRANSACTION_BYTES, provider="i2c")
    return parsed


def _as_bytes(data: Any, index: int) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, (list, tuple)) and all(isinstance(b, int) and not isinstance(b, bool) for b in data):
        try:
            return bytes(data)
        except ValueError:
            pass
    raise ProviderError(f"I2C operation {index} writes {data!r}; give bytes or a list of 0-255 integers",
                        provider="i2c")


# -- the handle an actor holds --------------------------------------------------------


class I2cBus:
    """One bus as one link may use it: wasi:i2c's ``i2c`` resource."""

    methods = frozenset({"transaction", "read", "write", "write_read"})

    def __init__(self, provider: I2cProvider, bus: _Bus, link: Link, addresses: frozenset[int]) -> None:
        self.name = bus.name
        self.actor = link.source
        self._provider = provider
        self._bus = bus
        self._addresses = addresses
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def transaction(self, address: int, ops: Sequence[Any]) -> list[bytes]:
        """Run ``ops`` as one transfer at ``address``; the bytes of each read, in order."""
        self._check(address)
        parsed = parse_operations(ops)
        if not parsed:
            return []
        return self._bus.transfer(address, parsed)

    def read(self, address: int, length: int) -> bytes:
        return self.transaction(address, [("read", length)])[0]

    def write(self, address: int, data: bytes) -> None:
        self.transaction(address, [("write", data)])

    def write_read(self, address: int, data: bytes, length: int) -> bytes:
        return self.transaction(address, [("write", data), ("read", length)])[0]

    def close(self) -> None:
        """Forget the handle (the guest dropped it, or its link went). Idempotent."""
        if not self._closed:
            self._closed = True
            self._provider._forget(self)

    def regrant(self, addresses: frozenset[int]) -> None:
        self._addresses = addresses

    def _check(self, address: int) -> None:
        if self._closed:
            raise ProviderError(f"actor {self.actor!r}'s handle on I2C bus {self.name!r} is closed (the guest "
                                f"dropped it, its link was removed or the node stopped); open the bus again",
                                provider="i2c")
        if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= MAX_ADDRESS:
            shown = f"0x{address:x}" if isinstance(address, int) else repr(address)
            raise ProviderError(f"{shown} is not a 7-bit I2C address (0x00-0x7f; 10-bit addresses are not "
                                f"supported)", provider="i2c")
        if address not in self._addresses:
            raise Denied(f"actor {self.actor!r} is not granted I2C address 0x{address:02x} on bus {self.name!r} "
                         f"(link grants: {_hex_list(self._addresses) or 'none'}); add it to the link's "
                         f"`addresses` config", provider="i2c")

    def __repr__(self) -> str:
        return f"<I2cBus {self.name} of {self.actor}{' closed' if self._closed else ''}>"


# -- config ---------------------------------------------------------------------------


@dataclass(frozen=True)
class I2cConfig:
    """``[providers.i2c]`` checked, with the defaults filled in."""

    backend: Literal["smbus", "sim"]
    buses: dict[str, str]
    sim_devices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    auto: bool = False
    """The backend was chosen by ``auto``."""


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
    unknown = sorted(set(config) - {"backend", "buses", "sim_devices"})
    if unknown:
        raise ValueError(f"providers.i2c: unknown key(s) {', '.join(unknown)} (known: backend, buses, sim_devices)")
    override = environ.get(BACKEND_ENV, "").strip()
    requested = override or config.get("backend", "auto")
    if requested not in BACKENDS:
        where = f"{BACKEND_ENV}={override!r}" if override else f"providers.i2c.backend ({requested!r})"
        raise ValueError(f"{where} must be 'auto', 'smbus' or 'sim'")
    adapters = list_adapters(dev_dir)
    backend: Literal["smbus", "sim"] = "sim" if requested == "sim" or (requested == "auto" and not adapters) \
        else "smbus"

    if "buses" in config:
        raw = config["buses"]
        if not isinstance(raw, Mapping):
            raise ValueError('providers.i2c.buses must be a table of bus name = "/dev/i2c-N"')
        buses: dict[str, str] = {}
        for name, device in raw.items():
            if not isinstance(name, str) or not BUS_NAME.match(name):
                raise ValueError(f"providers.i2c.buses: {name!r} is not a bus name (1-32 of A-Z a-z 0-9 _ . -)")
            if not isinstance(device, str) or not device:
                raise ValueError(f'providers.i2c.buses.{name} must be a device path such as "/dev/i2c-1", '
                                 f"not {device!r}")
            buses[name] = device
    elif backend == "smbus":
        if not adapters:
            raise ValueError(f"providers.i2c.backend is 'smbus' but there is no {dev_dir}/i2c-*: enable I2C "
                             f"(`sudo raspi-config nonint do_i2c 0`, or dtparam=i2c_arm=on in config.txt), "
                             f"name the devices in providers.i2c.buses, or use backend = 'sim'")
        buses = adapters
    else:
        buses = {DEFAULT_SIM_BUS: SIM_DEVICE_LABEL}

    sim_devices: dict[str, tuple[str, ...]] = {}
    if "sim_devices" in config:
        raw = config["sim_devices"]
        if not isinstance(raw, Mapping):
            raise ValueError('providers.i2c.sim_devices must be a table of bus name = ["tmp102@0x48", ...]')
        for name, specs in raw.items():
            key = f"providers.i2c.sim_devices.{name}"
            if backend == "sim" and name not in buses:
                raise ValueError(f"{key}: there is no bus {name!r} (buses: {', '.join(buses) or 'none'})")
            if not isinstance(specs, (list, tuple)) or not all(isinstance(s, str) for s in specs):
                raise ValueError(f'{key} must be a list such as ["tmp102@0x48"]')
            seen: set[int] = set()
            for spec in specs:
                try:
                    device = make_device(spec)
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
                if device.address in seen:
                    raise ValueError(f"{key}: two devices at 0x{device.address:02x}")
                seen.add(device.address)
            sim_devices[name] = tuple(specs)
    elif DEFAULT_SIM_BUS in buses:
        sim_devices = {DEFAULT_SIM_BUS: DEFAULT_SIM_DEVICES}
    return I2cConfig(backend=backend, buses=buses, sim_devices=sim_devices, auto=requested == "auto")


def open_smbus(name: str, path: str) -> SMBus:
    """Open ``path`` with smbus2; ValueError naming the config key and what to do."""
    bus = SMBus()
    try:
        bus.open(path)
    except OSError as exc:
        if bus.fd is not None:  # smbus2 keeps the fd when its I2C_FUNCS ioctl fails
            bus.close()
        hints = {
            errno.ENOENT: "; enable I2C (`sudo raspi-config nonint do_i2c 0`, or dtparam=i2c_arm=on in "
                          "config.txt) or fix the path",
            errno.EACCES: "; add the node's user to the `i2c` group",
            errno.EPERM: "; add the node's user to the `i2c` group",
            errno.ENOTTY: "; it is not an I2C adapter",
        }
        reason = exc.strerror or str(exc)
        raise ValueError(f"providers.i2c.buses.{name}: cannot open {path}: {reason}"
                         f"{hints.get(exc.errno or 0, '')}") from exc
    return bus


# -- the provider ---------------------------------------------------------------------

D = TypeVar("D", bound=SimDevice)


class I2cProvider(Provider):
    """Named I2C buses on the node, real (smbus2) or simulated, granted per link."""

    name = "i2c"
    interfaces = (INTERFACE,)
    operations = {INTERFACE: frozenset({"open", "buses"})}

    def __init__(self) -> None:
        super().__init__()
        self.backend: Literal["smbus", "sim"] | None = None
        self._lock = threading.Lock()
        self._buses: dict[str, _Bus] = {}
        self._sim: dict[str, SimBus] = {}
        self._handles: dict[str, set[I2cBus]] = {}
        self._refresh: asyncio.Future[None] | None = None

    async def start(self, ctx: ProviderContext) -> None:
        await super().start(ctx)
        cfg = parse_config(ctx.config, os.environ, DEV_DIR)
        buses: dict[str, _Bus] = {}
        sims: dict[str, SimBus] = {}
        try:
            for name, device in cfg.buses.items():
                if cfg.backend == "sim":
                    sims[name] = SimBus((make_device(s) for s in cfg.sim_devices.get(name, ())), name=name)
                    buses[name] = _Bus(name, device, sims[name])
                else:
                    buses[name] = _Bus(name, device, open_smbus(name, device))
        except BaseException:
            for bus in buses.values():
                bus.close()
            raise
        with self._lock:
            self.backend = cfg.backend
            self._buses = buses
            self._sim = sims
        devices = "; ".join(f"{b}: {', '.join(s)}" for b, s in cfg.sim_devices.items()) or "no devices"
        if cfg.backend == "sim" and cfg.auto:
            log.warning("I2C is SIMULATED: there is no %s/i2c-*, so buses %s are simulated (%s); set "
                        "providers.i2c.backend = 'smbus' to require real buses", DEV_DIR, ", ".join(buses), devices)
        elif cfg.backend == "sim":
            log.info("I2C is simulated (backend sim): buses %s (%s)", ", ".join(buses), devices)
        else:
            if "sim_devices" in ctx.config:
                log.info("providers.i2c.sim_devices is ignored with the smbus backend")
            log.info("I2C buses: %s", ", ".join(f"{n} ({b.device})" for n, b in buses.items()) or "none")
        await asyncio.to_thread(self._scan, list(buses.values()))

    async def stop(self) -> None:
        with self._lock:
            handles = [h for hs in self._handles.values() for h in hs]
            buses = list(self._buses.values())
            self._handles.clear()
            self._buses = {}
            self._sim = {}
        for handle in handles:
            handle.close()
        for bus in buses:
            bus.close()
        refresh, self._refresh = self._refresh, None
        if refresh is not None:
            await asyncio.gather(refresh, return_exceptions=True)

    # Import calls: these run on the actor instance's worker thread.

    def open(self, link: Link, name: str) -> I2cBus:
        granted = granted_buses(link)
        if name not in granted:
            raise Denied(f"actor {link.source!r} is not granted I2C bus {name!r} (link grants: "
                         f"{', '.join(sorted(granted)) or 'none'}); add it to the link's `buses` config",
                         provider=self.name)
        addresses = granted_addresses(link)
        with self._lock:
            bus = self._buses.get(name)
            if bus is None:
                raise NotFound(f"node {self.context.node!r} has no I2C bus {name!r} (its buses: "
                               f"{', '.join(self._buses) or 'none'}); use one of those or add it to "
                               f"providers.i2c.buses", provider=self.name)
            handle = I2cBus(self, bus, link, addresses)
            self._handles.setdefault(link.source, set()).add(handle)
        return handle

    def buses(self, link: Link) -> list[str]:
        granted = granted_buses(link)
        with self._lock:
            return [name for name in self._buses if name in granted]

    # Links

    async def link_added(self, link: Link) -> None:
        addresses = granted_addresses(link)  # refuse a link whose grants do not parse
        granted = granted_buses(link)
        with self._lock:
            missing = sorted(granted - set(self._buses))
            handles = list(self._handles.get(link.source, ()))
        if missing:
            log.warning("actor %s is granted I2C bus(es) %s, which node %s does not have (it has: %s)",
                        link.source, ", ".join(missing), self.context.node, ", ".join(self._buses) or "none")
        for handle in handles:  # a link put again takes effect on the open handles
            if handle.name in granted:
                handle.regrant(addresses)
            else:
                handle.close()

    async def link_removed(self, link: Link) -> None:
        with self._lock:
            handles = self._handles.pop(link.source, set())
        for handle in handles:
            handle.close()
        if handles:
            log.info("closed %d I2C handle(s) of actor %s", len(handles), link.source)

    def _forget(self, handle: I2cBus) -> None:
        with self._lock:
            handles = self._handles.get(handle.actor)
            if handles is not None:
                handles.discard(handle)
                if not handles:
                    del self._handles[handle.actor]

    # Inventory

    def health(self) -> Health:
        now = time.monotonic()
        with self._lock:
            buses = list(self._buses.values())
            backend = self.backend
        problems = [f"{b.name}: {err[1]} ({now - err[0]:.0f} s ago)"
                    for b in buses if (err := b.last_error) is not None and now - err[0] < DEGRADED_FOR_S]
        if problems:
            return Health("degraded", "; ".join(problems))
        return Health("ok", "I2C is simulated" if backend == "sim" else "")

    def describe(self) -> dict[str, Any]:
        with self._lock:
            buses = list(self._buses.values())
            backend = self.backend
        self._refresh_scans(buses)
        return {
            "backend": backend,
            "simulated": backend == "sim",
            "buses": [{"name": b.name, "device": b.device, "devices": [f"0x{a:02x}" for a in b.devices()]}
                      for b in buses],
        }

    def _refresh_scans(self, buses: list[_Bus]) -> None:
        stale = [b for b in buses if b.scan_age_s() > SCAN_CACHE_S and not b.closed]
        if not stale or self.ctx is None:
            return
        loop = self.ctx.loop
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if not on_loop:
            self._scan(stale)
        elif self._refresh is None or self._refresh.done():
            # a real bus takes tens of ms to scan: never on the event loop; this answer
            # keeps the previous scan and the next one shows the fresh result
            self._refresh = loop.run_in_executor(None, self._scan, stale)

    @staticmethod
    def _scan(buses: list[_Bus]) -> None:
        for bus in buses:
            found = bus.scan()
            log.debug("I2C scan of %s: %s", bus.name, _hex_list(found) or "nothing")

    # The simulation (tests, demos)

    def sim_bus(self, name: str) -> SimBus:
        """The simulated bus ``name``; Denied when the buses are real."""
        with self._lock:
            if self.backend != "sim":
                raise Denied(f"I2C bus {name!r} is not simulated (backend: {self.backend}); simulated devices "
                             f"exist only with providers.i2c.backend = 'sim'", provider=self.name)
            sim = self._sim.get(name)
        if sim is None:
            raise NotFound(f"there is no simulated I2C bus {name!r} (buses: {', '.join(self._sim) or 'none'})",
                           provider=self.name)
        return sim

    @overload
    def sim_device(self, bus: str, address: int) -> SimDevice: ...

    @overload
    def sim_device(self, bus: str, address: int, kind: type[D]) -> D: ...

    def sim_device(self, bus: str, address: int, kind: type[SimDevice] = SimDevice) -> SimDevice:
        """The simulated device at ``address`` on ``bus`` (optionally checked to be a ``kind``)."""
        sim = self.sim_bus(bus)
        device = sim.device(address)
        if device is None:
            raise NotFound(f"no simulated device at 0x{address:02x} on {bus} (devices: "
                           f"{_hex_list(sim.addresses) or 'none'}); add one to providers.i2c.sim_devices",
                           provider=self.name)
        if not isinstance(device, kind):
            raise NotFound(f"the simulated device at 0x{address:02x} on {bus} is a {device.kind}, not a {kind.kind}",
                           provider=self.name)
        return device
