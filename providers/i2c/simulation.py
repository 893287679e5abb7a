"""The simulated I2C backend (``sim``): buses with register-level models of the devices
drupelet's demos use, a peer of the real backend in :mod:`.backends`.

:class:`SimBus` offers the part of :class:`smbus2.SMBus` the ``i2c`` provider (and luma's
``i2c`` serial interface, given ``bus=``) use: ``i2c_rdwr(*msgs)`` with smbus2's own
:class:`smbus2.i2c_msg` objects, ``write_i2c_block_data``, ``read_i2c_block_data`` and
``close``. The provider therefore has one code path for real and simulated buses, and
the simulation fails the way the kernel does:

| situation | the kernel (i2c-dev) | :class:`SimBus` |
|---|---|---|
| nothing at the address | ``OSError(ENXIO)`` (``EREMOTEIO`` on i2c-bcm2835) | ``OSError(ENXIO)`` |
| more than 42 messages, or a message over 8192 bytes | ``OSError(EINVAL)`` | ``OSError(EINVAL)`` |
| a fault from :meth:`SimBus.inject` | — | ``OSError(<errno>)`` for that transfer |
| the bus was closed | ``OSError(EBADF)`` | ``OSError(EBADF)`` |

A device is a :class:`SimDevice`: subclasses must override ``read`` and ``write`` (one
I2C message each, the address already matched) and set ``kind``. Two ship here:

``Tmp102`` (``tmp102@0x48``)
    The TI TMP102 digital temperature sensor's register interface: a pointer register
    selects temperature (0x00, read-only), configuration (0x01, power-on 0x60A0),
    T_LOW (0x02, power-on 75 °C = 0x4B00) or T_HIGH (0x03, power-on 80 °C = 0x5000).
    A 1-byte write sets the pointer, a 3-byte write sets the pointer and the 16-bit
    register (MSB first); a read returns the pointed register, MSB first, repeated.
    Temperatures are 12-bit left-justified two's complement at 0.0625 °C per LSB, or
    13-bit with bit 0 set when the configuration's EM bit is set. The shutdown bit
    freezes the temperature register until a one-shot (OS) write. The alert bit (AL)
    follows comparator mode without a fault queue; conversions are instantaneous.
``Ssd1306Sink`` (``ssd1306@0x3c``)
    Acknowledges what the SSD1306 OLED controller's I2C interface accepts: a control
    byte (0x00 commands, 0x40 display data; Co=1 pairs) and its payload. It counts
    command and data bytes, keeps the last command bytes, tracks display on/off
    (0xAE/0xAF) and contrast (0x81), and answers a read with the status byte (bit 6 set
    while the display is off), so a scan finds it and luma can drive it.

Devices are named in config as ``<kind>@<address>`` (see :func:`make_device`);
:class:`SimBackend` puts them on the buses ``providers.i2c.sim_devices`` names. Tests and
demos reach them through :meth:`I2cProvider.sim_device
<drupelet.providers.i2c.I2cProvider.sim_device>` to change a temperature or inject a fault.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from smbus2 import i2c_msg

from .backends import I2cBackend

I2C_M_RD = 0x0001
"""``i2c_msg.flags`` bit of a read message (uapi/linux/i2c.h)."""
I2C_M_TEN = 0x0010
"""``i2c_msg.flags`` bit of a 10-bit address, which no simulated device uses."""
MAX_MESSAGES = 42
"""``I2C_RDWR_IOCTL_MAX_MSGS`` of i2c-dev."""
MAX_MESSAGE_BYTES = 8192
"""i2c-dev refuses a message longer than this."""
MAX_ADDRESS = 0x7F


def _os_error(code: int, detail: str) -> OSError:
    return OSError(code, f"{os.strerror(code)} ({detail})")


class SimDevice:
    """A device on a :class:`SimBus`, answering at one 7-bit address.

    Subclasses must override ``read(length)`` (return exactly ``length`` bytes) and
    ``write(data)``, and set ``kind`` (the name used in ``<kind>@<address>``). They may
    raise ``OSError`` to fail a message the way the device would (a NACK on data). The
    bus serialises transfers; a device guards state that tests change from other
    threads with its own lock.
    """

    kind = "device"

    def __init__(self, address: int) -> None:
        if not 0 <= address <= MAX_ADDRESS:
            raise ValueError(f"{address!r} is not a 7-bit I2C address (0x00-0x7f)")
        self.address = address
        self._lock = threading.Lock()

    def read(self, length: int) -> bytes:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at 0x{self.address:02x}>"


# -- TMP102 ---------------------------------------------------------------------------

TMP102_TEMPERATURE = 0x00
TMP102_CONFIGURATION = 0x01
TMP102_T_LOW = 0x02
TMP102_T_HIGH = 0x03

TMP102_CONFIG_POWER_ON = 0x60A0
TMP102_T_LOW_POWER_ON = 0x4B00
TMP102_T_HIGH_POWER_ON = 0x5000

CONFIG_OS = 0x8000
"""One-shot: written 1 in shutdown mode, starts one conversion."""
CONFIG_RESOLUTION = 0x6000
"""R1 R0, read-only, always 11 (12-bit)."""
CONFIG_POL = 0x0400
CONFIG_SD = 0x0100
CONFIG_AL = 0x0020
"""Alert, read-only."""
CONFIG_EM = 0x0010
"""Extended mode: 13-bit temperatures."""
CONFIG_WRITABLE = 0x1FD0
"""F1 F0 POL TM SD CR1 CR0 EM; OS is handled apart, R1 R0 and AL are read-only."""

CELSIUS_PER_LSB = 0.0625


def tmp102_encode(celsius: float, extended: bool = False) -> int:
    """A temperature as the TMP102 register holds it (saturating at the format's range)."""
    counts = round(celsius / CELSIUS_PER_LSB)
    if extended:
        counts = max(-4096, min(4095, counts))
        return ((counts & 0x1FFF) << 3) | 0x0001
    counts = max(-2048, min(2047, counts))
    return (counts & 0x0FFF) << 4


def tmp102_decode(raw: int, extended: bool = False) -> float:
    """A TMP102 temperature, T_LOW or T_HIGH register value in °C."""
    bits, shift = (13, 3) if extended else (12, 4)
    counts = (raw >> shift) & ((1 << bits) - 1)
    if counts & (1 << (bits - 1)):
        counts -= 1 << bits
    return counts * CELSIUS_PER_LSB


class Tmp102(SimDevice):
    """The TMP102's pointer and four registers (see the module docstring)."""

    kind = "tmp102"

    def __init__(self, address: int = 0x48, celsius: float = 21.0) -> None:
        super().__init__(address)
        self.pointer = TMP102_TEMPERATURE
        self._ambient = celsius
        self._measured = celsius
        self._config = TMP102_CONFIG_POWER_ON
        self._t_low = TMP102_T_LOW_POWER_ON
        self._t_high = TMP102_T_HIGH_POWER_ON
        self._alert = False

    def set_temperature(self, celsius: float) -> None:
        """Set the temperature the sensor sees; it reads back at the next conversion."""
        with self._lock:
            self._ambient = celsius
            if not self._config & CONFIG_SD:
                self._convert()

    @property
    def celsius(self) -> float:
        """The temperature the register holds, decoded."""
        with self._lock:
            return tmp102_decode(self._register(TMP102_TEMPERATURE), self._extended)

    def register(self, pointer: int) -> int:
        """A register's 16-bit value, as a read would return it."""
        with self._lock:
            return self._register(pointer & 0x03)

    @property
    def _extended(self) -> bool:
        return bool(self._config & CONFIG_EM)

    def _convert(self) -> None:
        self._measured = self._ambient
        # comparator mode (no fault queue): active from T_HIGH until below T_LOW
        measured = tmp102_decode(tmp102_encode(self._measured, self._extended), self._extended)
        if measured >= tmp102_decode(self._t_high, self._extended):
            self._alert = True
        elif measured < tmp102_decode(self._t_low, self._extended):
            self._alert = False

    def _register(self, pointer: int) -> int:
        if pointer == TMP102_TEMPERATURE:
            return tmp102_encode(self._measured, self._extended)
        if pointer == TMP102_CONFIGURATION:
            al = bool(self._config & CONFIG_POL) == self._alert
            return (self._config & ~(CONFIG_AL | CONFIG_OS)) | CONFIG_RESOLUTION | (CONFIG_AL if al else 0)
        if pointer == TMP102_T_LOW:
            return self._t_low
        return self._t_high

    def write(self, data: bytes) -> None:
        if not data:
            return  # an address-only write: acknowledged, nothing changes
        with self._lock:
            self.pointer = data[0] & 0x03
            if len(data) < 3:
                return  # a pointer write (a lone MSB is discarded, as on the chip)
            value = (data[1] << 8) | data[2]
            if self.pointer == TMP102_CONFIGURATION:
                self._config = (value & CONFIG_WRITABLE) | (self._config & ~CONFIG_WRITABLE)
            elif self.pointer == TMP102_T_LOW:
                self._t_low = value
            elif self.pointer == TMP102_T_HIGH:
                self._t_high = value
            else:
                return  # the temperature register is read-only: acknowledged and dropped
            one_shot = self.pointer == TMP102_CONFIGURATION and bool(value & CONFIG_OS)
            if one_shot or not self._config & CONFIG_SD:
                self._convert()

    def read(self, length: int) -> bytes:
        with self._lock:
            value = self._register(self.pointer).to_bytes(2, "big")
        return (value * (length // 2 + 1))[:length]


# -- SSD1306 --------------------------------------------------------------------------

SSD1306_CONTROL_CO = 0x80
SSD1306_CONTROL_DATA = 0x40
SSD1306_DISPLAY_OFF = 0xAE
SSD1306_DISPLAY_ON = 0xAF
SSD1306_SET_CONTRAST = 0x81
SSD1306_STATUS_OFF = 0x40

_SSD1306_ARGUMENTS = {
    0x20: 1, 0x21: 2, 0x22: 2, 0x26: 6, 0x27: 6, 0x29: 5, 0x2A: 5, 0x81: 1, 0x8D: 1,
    0xA3: 2, 0xA8: 1, 0xD3: 1, 0xD5: 1, 0xD9: 1, 0xDA: 1, 0xDB: 1,
}
"""Argument bytes that follow an SSD1306 command byte."""


class Ssd1306Sink(SimDevice):
    """Accepts SSD1306 command and data writes and remembers what it saw."""

    kind = "ssd1306"

    def __init__(self, address: int = 0x3C) -> None:
        super().__init__(address)
        self.command_bytes = 0
        self.data_bytes = 0
        self.last_commands: bytes = b""
        self.display_on = False
        self.contrast = 0x7F
        self._pending: list[int] = []
        self._expect = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            i = 0
            commands = bytearray()
            while i < len(data):
                control = data[i]
                continuation = bool(control & SSD1306_CONTROL_CO)
                payload = data[i + 1:i + 2] if continuation else data[i + 1:]
                i += 1 + len(payload)
                if control & SSD1306_CONTROL_DATA:
                    self.data_bytes += len(payload)
                else:
                    commands += payload
                if not continuation:
                    break
            if commands:
                self.command_bytes += len(commands)
                self.last_commands = bytes(commands)
                for byte in commands:
                    self._command(byte)

    def _command(self, byte: int) -> None:
        if self._expect:
            self._pending.append(byte)
            self._expect -= 1
            if not self._expect and self._pending[0] == SSD1306_SET_CONTRAST:
                self.contrast = self._pending[1]
            return
        if byte == SSD1306_DISPLAY_ON:
            self.display_on = True
        elif byte == SSD1306_DISPLAY_OFF:
            self.display_on = False
        self._pending = [byte]
        self._expect = _SSD1306_ARGUMENTS.get(byte, 0)

    def read(self, length: int) -> bytes:
        with self._lock:
            status = 0 if self.display_on else SSD1306_STATUS_OFF
        return bytes([status]) * length


# -- devices by name ------------------------------------------------------------------

DEVICE_KINDS: dict[str, Callable[[int], SimDevice]] = {
    Tmp102.kind: Tmp102,
    Ssd1306Sink.kind: Ssd1306Sink,
}


def make_device(spec: str) -> SimDevice:
    """A device from ``<kind>@<address>`` (``tmp102@0x48``); ValueError says what is wrong."""
    kind, sep, where = spec.strip().partition("@")
    if not sep or kind not in DEVICE_KINDS:
        raise ValueError(f"{spec!r} is not <kind>@<address> with kind one of {', '.join(sorted(DEVICE_KINDS))}")
    try:
        address = int(where, 0)
    except ValueError:
        raise ValueError(f"{spec!r}: {where!r} is not an address (use 0x48 or 72)") from None
    return DEVICE_KINDS[kind](address)


# -- the bus --------------------------------------------------------------------------


class SimBus:
    """The :class:`smbus2.SMBus` subset drupelet uses, backed by :class:`SimDevice` objects."""

    def __init__(self, devices: Iterable[SimDevice] = (), *, name: str = "sim") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._devices: dict[int, SimDevice] = {}
        self._faults: dict[int, list[int]] = {}
        self._closed = False
        self.transfers = 0
        """How many ``i2c_rdwr`` calls reached the devices or failed on one."""
        for device in devices:
            self.add(device)

    # devices and faults (tests, the node's demo)

    def add(self, device: SimDevice) -> None:
        with self._lock:
            if device.address in self._devices:
                raise ValueError(f"address 0x{device.address:02x} on {self.name} is taken by {self._devices[device.address]!r}")
            self._devices[device.address] = device

    def remove(self, address: int) -> SimDevice:
        with self._lock:
            return self._devices.pop(address)

    def device(self, address: int) -> SimDevice | None:
        with self._lock:
            return self._devices.get(address)

    @property
    def addresses(self) -> list[int]:
        with self._lock:
            return sorted(self._devices)

    def inject(self, address: int, errno_value: int, count: int = 1) -> None:
        """Fail the next ``count`` transfers that address ``address`` with ``OSError(errno_value)``."""
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        with self._lock:
            self._faults.setdefault(address, []).extend([errno_value] * count)

    # the smbus2.SMBus subset

    def i2c_rdwr(self, *msgs: i2c_msg) -> None:
        """Run the messages in order, as one combined transfer (repeated starts)."""
        if not 1 <= len(msgs) <= MAX_MESSAGES:
            raise _os_error(errno.EINVAL, f"{len(msgs)} messages; i2c-dev takes 1 to {MAX_MESSAGES}")
        for msg in msgs:
            if msg.len > MAX_MESSAGE_BYTES:
                raise _os_error(errno.EINVAL, f"a message of {msg.len} bytes; i2c-dev takes up to {MAX_MESSAGE_BYTES}")
            if msg.flags & I2C_M_TEN or msg.addr > MAX_ADDRESS:
                raise _os_error(errno.EINVAL, f"address 0x{msg.addr:x} is not a 7-bit address")
        with self._lock:
            if self._closed:
                raise _os_error(errno.EBADF, f"simulated bus {self.name} is closed")
            self.transfers += 1
            for address in dict.fromkeys(int(m.addr) for m in msgs):
                faults = self._faults.get(address)
                if faults:
                    code = faults.pop(0)
                    if not faults:
                        del self._faults[address]
                    raise _os_error(code, f"injected at 0x{address:02x} on {self.name}")
            for msg in msgs:
                device = self._devices.get(msg.addr)
                if device is None:
                    raise _os_error(errno.ENXIO, f"nothing at 0x{msg.addr:02x} on {self.name}")
                if msg.flags & I2C_M_RD:
                    data = device.read(msg.len)
                    if len(data) != msg.len:
                        raise RuntimeError(f"{device!r} returned {len(data)} bytes for a {msg.len}-byte read")
                    ctypes.memmove(msg.buf, data, msg.len)
                else:
                    device.write(ctypes.string_at(msg.buf, msg.len))

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int],
                             force: bool | None = None) -> None:
        self.i2c_rdwr(i2c_msg.write(i2c_addr, [register, *data]))

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int,
                            force: bool | None = None) -> list[int]:
        read = i2c_msg.read(i2c_addr, length)
        self.i2c_rdwr(i2c_msg.write(i2c_addr, [register]), read)
        return list(ctypes.string_at(read.buf, read.len))

    def close(self) -> None:
        with self._lock:
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed


# -- the backend ------------------------------------------------------------------------


class SimBackend(I2cBackend):
    """Simulated buses, each a :class:`SimBus` with the devices ``sim_devices`` names for it."""

    name = "sim"
    simulated = True

    def __init__(self, sim_devices: Mapping[str, Sequence[str]]) -> None:
        self.sim_devices = {bus: tuple(specs) for bus, specs in sim_devices.items()}
        self.buses: dict[str, SimBus] = {}
        """The buses opened so far, by name."""

    def open_bus(self, name: str, device: str) -> SimBus:
        bus = SimBus((make_device(spec) for spec in self.sim_devices.get(name, ())), name=name)
        self.buses[name] = bus
        return bus
