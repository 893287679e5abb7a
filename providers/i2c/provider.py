"""The i2c provider itself: named buses granted per link, and the handle an actor holds.

See the package docstring (:mod:`drupelet.providers.i2c`) for what it offers actors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, overload

from ..base import Denied, Health, Link, NotFound, PayloadTooLarge, Provider, ProviderContext, ProviderError
from . import config
from .backends import MAX_ADDRESS, Bus, I2cBackend, Operation, SmbusBackend
from .config import I2cSettings, granted_addresses, granted_buses, hex_list
from .simulation import SimBackend, SimBus, SimDevice

log = logging.getLogger(__name__)

INTERFACE = "drupelet:hardware/i2c-bus"
MIN_READ_BYTES, MAX_READ_BYTES = 1, 4096
MAX_WRITE_BYTES = 8192
MAX_OPERATIONS = 42
MAX_TRANSACTION_BYTES = 16384
SCAN_CACHE_S = 30.0
DEGRADED_FOR_S = 60.0


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

    def __init__(self, provider: I2cProvider, bus: Bus, link: Link, addresses: frozenset[int]) -> None:
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
                         f"(link grants: {hex_list(self._addresses) or 'none'}); add it to the link's "
                         f"`addresses` config", provider="i2c")

    def __repr__(self) -> str:
        return f"<I2cBus {self.name} of {self.actor}{' closed' if self._closed else ''}>"


# -- the provider ---------------------------------------------------------------------

D = TypeVar("D", bound=SimDevice)


class I2cProvider(Provider):
    """Named I2C buses on the node, real (smbus2) or simulated, granted per link."""

    name = "i2c"
    interfaces = (INTERFACE,)
    operations = {INTERFACE: frozenset({"open", "buses"})}
    config_schema = I2cSettings

    def __init__(self) -> None:
        super().__init__()
        self.backend: Literal["smbus", "sim"] | None = None
        self._lock = threading.Lock()
        self._buses: dict[str, Bus] = {}
        self._sim: dict[str, SimBus] = {}
        self._handles: dict[str, set[I2cBus]] = {}
        self._refresh: asyncio.Future[None] | None = None

    @classmethod
    def parse_config(cls, table: Mapping[str, Any], *, where: str = "") -> I2cSettings:
        """Check a ``[providers.i2c]`` table, across keys too; looks at no device. ``auto``, the
        default buses and the environment override are decided at start."""
        return config.validate(table, where=where or f"providers.{cls.name}")

    async def start(self, ctx: ProviderContext) -> None:
        await super().start(ctx)
        dev_dir = config.DEV_DIR
        cfg = await asyncio.to_thread(config.parse_config, ctx.config, os.environ, dev_dir)
        backend: I2cBackend = SimBackend(cfg.sim_devices) if cfg.backend == "sim" else SmbusBackend()
        buses = await asyncio.to_thread(self._open_buses, backend, cfg.buses)
        with self._lock:
            self.backend = cfg.backend
            self._buses = buses
            self._sim = dict(backend.buses) if isinstance(backend, SimBackend) else {}
        devices = "; ".join(f"{b}: {', '.join(s)}" for b, s in cfg.sim_devices.items()) or "no devices"
        if cfg.backend == "sim" and cfg.auto:
            log.warning("I2C is SIMULATED: there is no %s/i2c-*, so buses %s are simulated (%s); set "
                        "providers.i2c.backend = 'smbus' to require real buses", dev_dir, ", ".join(buses), devices)
        elif cfg.backend == "sim":
            log.info("I2C is simulated (backend sim): buses %s (%s)", ", ".join(buses), devices)
        else:
            if "sim_devices" in ctx.config:
                log.info("providers.i2c.sim_devices is ignored with the smbus backend")
            log.info("I2C buses: %s", ", ".join(f"{n} ({b.device})" for n, b in buses.items()) or "none")
        await asyncio.to_thread(self._scan, list(buses.values()))

    @staticmethod
    def _open_buses(backend: I2cBackend, wanted: Mapping[str, str]) -> dict[str, Bus]:
        """Open every configured bus, or none: a failure closes those already open."""
        buses: dict[str, Bus] = {}
        try:
            for name, device in wanted.items():
                buses[name] = Bus(name, device, backend.open_bus(name, device))
        except BaseException:
            for bus in buses.values():
                bus.close()
            raise
        return buses

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

    def _refresh_scans(self, buses: list[Bus]) -> None:
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
    def _scan(buses: list[Bus]) -> None:
        for bus in buses:
            found = bus.scan()
            log.debug("I2C scan of %s: %s", bus.name, hex_list(found) or "nothing")

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
                           f"{hex_list(sim.addresses) or 'none'}); add one to providers.i2c.sim_devices",
                           provider=self.name)
        if not isinstance(device, kind):
            raise NotFound(f"the simulated device at 0x{address:02x} on {bus} is a {device.kind}, not a {kind.kind}",
                           provider=self.name)
        return device
