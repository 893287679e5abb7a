"""How the i2c provider reaches its buses: the backend base class, the real backend (smbus2
on the kernel's ``/dev/i2c-N``), the open bus every transfer goes through, and the errors
a transfer raises. The simulated backend is beside it in :mod:`.simulation`.

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

A failed transfer fails that call only: the bus stays open.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal, Protocol

from smbus2 import SMBus, i2c_msg

from ..base import ProviderError, Unavailable

log = logging.getLogger(__name__)

MAX_ADDRESS = 0x7F
"""The highest 7-bit address (10-bit addresses are not supported)."""
SCAN_FIRST, SCAN_LAST = 0x08, 0x77

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

    @property
    def code(self) -> str:  # type: ignore[override]
        """``i2c:<kind>`` or ``i2c:no-acknowledge:<source>``: read from the fields, never set."""
        return f"i2c:{self.kind}:{self.source}" if self.source else f"i2c:{self.kind}"

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


# -- the open bus ---------------------------------------------------------------------


class BusDriver(Protocol):
    """What a bus backend offers: the part of :class:`smbus2.SMBus` the provider uses.
    :class:`smbus2.SMBus` (real) and :class:`.simulation.SimBus` (simulated) both are one."""

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None: ...

    def close(self) -> None: ...


Operation = tuple[Literal["read"], int] | tuple[Literal["write"], bytes]


class Bus:
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


# -- backends -------------------------------------------------------------------------


class I2cBackend:
    """Where the provider's buses come from.

    A backend must override:
        ``open_bus(name, device)``  open the bus the config names ``name`` (``device`` is
                        its ``providers.i2c.buses`` value) and return its :class:`BusDriver`.
                        The provider calls it off the event loop, so it may block. When the
                        bus cannot be opened it raises ValueError naming the key
                        (``providers.i2c.buses.<name>: cannot open …``) and what to do.
        ``name``        the backend's name in the config (``smbus``, ``sim``).

    A backend may override:
        ``simulated``   True when the buses are not real (the inventory and the health say
                        so, and the provider hands out the simulated devices).

    Each driver a backend returns is the provider's to close (once, at stop).
    """

    name: ClassVar[str] = ""
    simulated: ClassVar[bool] = False

    def open_bus(self, name: str, device: str) -> BusDriver:
        raise NotImplementedError


class SmbusBackend(I2cBackend):
    """The kernel's i2c-dev adapters through smbus2."""

    name = "smbus"

    def open_bus(self, name: str, device: str) -> BusDriver:
        return open_smbus(name, device)


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
