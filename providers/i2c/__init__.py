"""The ``i2c`` provider: named I2C buses for ``drupelet:hardware/i2c-bus`` and ``wasi:i2c``.

An actor opens a bus by name (``open("i2c1")``) and gets a handle (:class:`I2cBus`) on
which it runs ``wasi:i2c/i2c@0.2.0-draft`` transfers: ``transaction``, ``read``,
``write`` and ``write-read``. Each call is one combined transfer (``I2C_RDWR``: repeated
starts, one stop), so ``write-read`` of a register pointer and its value cannot be split
by another actor's transfer.

Node config ``[providers.i2c]``: the keys, their defaults and meanings are declared once
in :class:`~.config.I2cSettings` (``drupelet config-doc`` prints them): ``backend``
(``auto``, ``smbus`` or ``sim``), ``buses`` and ``sim_devices``.

Link config (for ``drupelet:hardware/i2c-bus``):

| key | meaning |
|---|---|
| ``buses`` | comma-separated bus names the actor may open; absent grants none |
| ``addresses`` | comma-separated 7-bit addresses the actor may address on them, decimal or hex (``0x48,0x3c``); absent grants none |

Limits: addresses 0x00-0x7f (10-bit addresses are not supported); a read is 1 to 4096
bytes, a write up to 8192 (i2c-dev's own limit); a transaction has at most 42
operations (``I2C_RDWR_IOCTL_MAX_MSGS``) and 16384 bytes in all.

Transfer errors are :class:`~.backends.I2cError`, whose ``code`` is ``i2c:<kind>`` or
``i2c:no-acknowledge:<source>``, made from the kernel's errno (the table is in
:mod:`.backends`).

A failed transfer fails that call only: the bus stays open. :meth:`I2cProvider.health`
reports ``degraded`` with the last error for ``DEGRADED_FOR_S`` seconds, or until the
bus's next successful transfer.

For the inventory each bus is scanned like ``i2cdetect -r``: a 1-byte read at 0x08-0x77,
taking the bus lock per probe only; results are kept ``SCAN_CACHE_S`` seconds and
refreshed off the event loop.

The package, like gpiozero's ``pins/``: :mod:`.provider` (the provider and the handle an
actor holds), :mod:`.backends` (the backend base class, smbus2, the open bus, the errors),
:mod:`.simulation` (the simulated bus and its devices beside them) and :mod:`.config` (the
schema and the link config).
"""
from __future__ import annotations

from .backends import (
    ERRNO_KINDS,
    MAX_ADDRESS,
    Bus,
    BusDriver,
    I2cBackend,
    I2cError,
    SmbusBackend,
    error_code_parts,
    open_smbus,
)
from .config import (
    BACKEND_ENV,
    BACKENDS,
    I2cConfig,
    I2cSettings,
    granted_addresses,
    granted_buses,
    list_adapters,
    parse_config,
    validate,
)
from .provider import INTERFACE, I2cBus, I2cProvider, parse_operations
from .simulation import SimBackend, SimBus, SimDevice, Ssd1306Sink, Tmp102, make_device

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "ERRNO_KINDS",
    "INTERFACE",
    "MAX_ADDRESS",
    "Bus",
    "BusDriver",
    "I2cBackend",
    "I2cBus",
    "I2cConfig",
    "I2cError",
    "I2cProvider",
    "I2cSettings",
    "SimBackend",
    "SimBus",
    "SimDevice",
    "SmbusBackend",
    "Ssd1306Sink",
    "Tmp102",
    "error_code_parts",
    "granted_addresses",
    "granted_buses",
    "list_adapters",
    "make_device",
    "open_smbus",
    "parse_config",
    "parse_operations",
    "validate",
]
