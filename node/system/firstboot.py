"""First-boot configuration: the boot partition's ``drupelet.toml``, installed to ``/etc/drupelet``.

``drupelet firstboot`` runs at every boot (``drupelet-firstboot.service``, before the
node and its local nats-server). It reads the one file a person edits on the SD card's
FAT boot partition, validates it against :data:`BOOT_SCHEMA` (``images/drupelet.toml``
is the documented example), and installs what the rest of the image reads:

| file in ``/etc/drupelet`` | what it is | mode |
|---|---|---|
| ``node.toml`` | the node config (:mod:`.config`): name, lattice, labels, the local NATS server and the hub's JetStream domain, the hardware providers on their real backends; checked with the node's own loader before it is installed | 0644 |
| ``nats-leaf.conf`` | ``systemd/nats-leaf.conf.in`` with the node name, the hub URL, the credentials file and ``<state>/nats`` filled in | 0644 |
| ``leaf.creds`` | the leaf connection's credentials; absent when the boot file has none | 0600, owned by the ``drupelet`` user when it exists (it runs nats-server) |
| ``trusted-keys`` | the issuer public keys of ``[trust] keys``, one a line | 0644 |

The boot file is the source of truth and stays where it is: editing it and rebooting
applies the change, and these four files are rewritten from it (hand edits to them last
until the next boot). Each is compared with what is installed; only a file whose content,
mode or owner differs is touched, content always through :func:`atomic_write`, so a
boot with an unchanged file writes nothing to the card.

A file that does not validate changes nothing in ``/etc/drupelet``. The reason, naming
the file and the key, goes to the log as one line (the journal, under systemd), to
``drupelet.toml.error`` beside the boot file (a person can read it from another computer;
it is deleted once a good file is applied), and onto the display when the new file or
the installed node config names one (drawn through :mod:`drupelet.providers.display` on
its real backend; a display that cannot be opened is skipped).

Exit status: 0 when the file was applied or there is nothing to do, 1 when it was not
applied (a bad file, or ``/etc/drupelet`` could not be written).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import importlib.resources
import logging
import os
import pwd
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from drupelet.providers.base import ProviderError, atomic_write

from drupelet.node.config import LABEL_KEY, _check_name, _string_table, _typed, parse
from drupelet.node.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

    from drupelet.providers.display import DisplayBackend

log = logging.getLogger(__name__)

BOOT_FILE = Path("/boot/firmware/drupelet.toml")
ETC_DIR = Path("/etc/drupelet")
STATE_DIR = Path("/var/lib/drupelet")
ERROR_SUFFIX = ".error"
"""``drupelet.toml.error``: why the boot file was not applied, beside it."""

NODE_TOML = "node.toml"
LEAF_CONF = "nats-leaf.conf"
LEAF_CREDS = "leaf.creds"
TRUSTED_KEYS = "trusted-keys"
LEAF_TEMPLATE = "nats-leaf.conf.in"
TEMPLATE_PACKAGE = "drupelet.systemd"
"""Where the wheel ships ``systemd/`` (package data); a checkout has it beside ``node/``."""

LOCAL_NATS_URL = "nats://127.0.0.1:4222"
"""The Pi's own nats-server (the leaf), as ``nats-leaf.conf.in`` has it listen."""
SERVICE_USER = "drupelet"
"""The user the image runs the node and nats-server as; it owns ``leaf.creds``."""
PUBLIC_MODE = 0o644
SECRET_MODE = 0o600
MAX_BOOT_FILE_BYTES = 64 << 10

HUB_SCHEMES = ("nats-leaf", "tls", "nats", "ws", "wss")
HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
UNSAFE_CHARS = re.compile(r'[\s"\'\\{}\[\]#;,]|[\x00-\x1f\x7f]')
"""Nothing that could end a quoted string or a value in the rendered nats-server config."""

HEADER_PINS = range(0, 28)
"""BCM numbers of the 40-pin header's GPIOs."""
I2C1_PINS = (2, 3)
"""SDA and SCL of ``/dev/i2c-1`` on every 40-pin Raspberry Pi."""
I2C1_DEVICE = "/dev/i2c-1"
DEFAULT_GPIO_PINS = tuple(range(4, 28))
"""The header's GPIOs but 0 and 1 (the HAT ID EEPROM) and 2 and 3 (I2C bus 1)."""
SAFE_STATES = ("low", "high", "input")
I2C_DEVICE = re.compile(r"^/dev/i2c-[0-9]{1,3}$")
I2C_BUS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
NO_DISPLAY = "none"
DISPLAY_DRIVERS = (NO_DISPLAY, "ssd1306", "sh1106", "ssd1309", "dummy")
MIN_I2C_ADDRESS, MAX_I2C_ADDRESS = 0x03, 0x77
MIN_PANEL_PX, MAX_PANEL_PX = 8, 1024
MAX_I2C_PORT = 255
MAX_ROTATE = 3
DISPLAY_FONT_PX = (11, 10)
"""Text sizes to try on the display, largest first."""

# nkeys: base32 of a prefix byte, a 32-byte Ed25519 key and a CRC-16 (XMODEM), little-endian.
NKEY_PUBLIC_CHARS = 56
NKEY_ISSUERS = {0 << 3: "account", 14 << 3: "operator"}
NKEY_KINDS = {0 << 3: "an account key", 14 << 3: "an operator key", 20 << 3: "a user key", 13 << 3: "a server key",
              2 << 3: "a cluster key", 18 << 3: "a private seed", 15 << 3: "a private key"}
NKEY_USER_SEED = re.compile(r"^SU[A-Z2-7]{56}$")
JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
CREDS_BLOCK = r"-{3,}[^\n]*BEGIN WHAT[^\n]*-{3,}\n\s*(\S+)\s*\n-{3,}[^\n]*END WHAT[^\n]*-{3,}"
CREDS_JWT = re.compile(CREDS_BLOCK.replace("WHAT", "NATS USER JWT"))
CREDS_SEED = re.compile(CREDS_BLOCK.replace("WHAT", "USER NKEY SEED"))

Spec = tuple[type | tuple[type, ...], Any, str]
"""(type, default, meaning); a default of None means the key is required."""

BOOT_SCHEMA: dict[str, dict[str, Spec]] = {
    "node": {
        "name": (str, None, "node name, unique in the lattice; also the JetStream domain of the Pi's "
                            "nats-server (required)"),
        "lattice": (str, "default", "lattice name; subjects are drupelet.<lattice>.…"),
        "labels": (dict, {}, "labels (string → string) that select nodes"),
    },
    "hub": {
        "url": (str, None, "the hub's leafnode URL: nats-leaf://, tls://, nats://, ws:// or wss:// with "
                           "host:port (required)"),
        "credentials": (str, "", "the whole text of a NATS .creds file for the leaf connection; empty: none"),
        "jetstream_domain": (str, "hub", "the hub's JetStream domain, where the lattice's artifacts and state live"),
    },
    "trust": {
        "keys": (list, [], "issuer public keys (nkeys, A… or O…) trusted to sign actors; enforcement is planned"),
    },
    "hardware.gpio": {
        "pins": (list, list(DEFAULT_GPIO_PINS), "BCM pins actors may be granted; [] turns GPIO off"),
        "safe_state": (dict, {}, "pin → low, high or input: where an output goes when its actor lets go "
                                 "(default low)"),
    },
    "hardware.i2c": {
        "buses": (dict, {"i2c1": I2C1_DEVICE}, "bus name → /dev/i2c-N; {} turns I2C off"),
    },
    "hardware.display": {
        "driver": (str, NO_DISPLAY, "none, ssd1306, sh1106, ssd1309, or dummy (simulated)"),
        "port": (int, 1, "I2C bus number of the panel (/dev/i2c-<port>)"),
        "address": ((int, str), 0x3C, "I2C address of the panel, 0x03 to 0x77"),
        "width": (int, 128, "panel width in pixels"),
        "height": (int, 64, "panel height in pixels"),
        "rotate": (int, 0, "quarter turns clockwise, 0 to 3"),
    },
}
HARDWARE_PARTS = ("gpio", "i2c", "display")


# -- the boot file ---------------------------------------------------------------------


@dataclass(frozen=True)
class DisplaySpec:
    """``[hardware.display]`` with a panel (driver not ``none``)."""

    driver: str
    port: int
    address: int
    width: int
    height: int
    rotate: int

    def provider_config(self) -> dict[str, Any]:
        """``[providers.display]`` of the node config."""
        return {"driver": self.driver, "interface": "i2c", "port": self.port, "address": self.address,
                "width": self.width, "height": self.height, "rotate": self.rotate}


@dataclass(frozen=True)
class BootConfig:
    """A validated boot file."""

    source: str
    name: str
    lattice: str
    labels: Mapping[str, str]
    hub_url: str
    hub_jetstream_domain: str
    credentials: str
    """Normalised .creds text (LF line ends, one final newline), or empty."""
    trusted_keys: tuple[str, ...]
    gpio_pins: tuple[int, ...]
    gpio_safe_state: Mapping[int, str]
    i2c_buses: Mapping[str, str]
    display: DisplaySpec | None

    def provider_configs(self) -> dict[str, dict[str, Any]]:
        """``[providers.gpio|i2c|display]`` on the real backends; ``enabled = false`` for a part turned off."""
        off: dict[str, Any] = {"enabled": False}
        gpio = {"backend": "lgpio", "pins": list(self.gpio_pins),
                "safe_state": {str(pin): state for pin, state in sorted(self.gpio_safe_state.items())}}
        i2c = {"backend": "smbus", "buses": dict(self.i2c_buses)}
        return {"gpio": gpio if self.gpio_pins else off,
                "i2c": i2c if self.i2c_buses else off,
                "display": self.display.provider_config() if self.display else off}


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file a person wrote on a laptop (a UTF-8 BOM and CRLF are fine)."""
    try:
        size = path.stat().st_size
        if size > MAX_BOOT_FILE_BYTES:
            raise ConfigError(f"is {size} bytes; a boot file is at most {MAX_BOOT_FILE_BYTES}", path=str(path))
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8",
                          path=str(path)) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=str(path)) from exc


def load_boot_file(path: Path) -> BootConfig:
    """Read and validate a boot file; :class:`ConfigError` names the file and the key."""
    return parse_boot(read_toml(path), path=str(path))


def _tables(doc: Mapping[str, Any], path: str) -> dict[str, Mapping[str, Any]]:
    """The boot file's tables by section name (``hardware.gpio``…); unknown ones are errors."""
    top_level = {section.split(".")[0] for section in BOOT_SCHEMA}
    for key in doc:
        if key not in top_level:
            raise ConfigError(f"unknown section (known: {', '.join(sorted(top_level))})", key=key, path=path)
    hardware = doc.get("hardware", {})
    if not isinstance(hardware, dict):
        raise ConfigError("expected tables [hardware.gpio], [hardware.i2c], [hardware.display]", key="hardware",
                          path=path)
    for key in hardware:
        if key not in HARDWARE_PARTS:
            raise ConfigError(f"unknown section (known: {', '.join(f'hardware.{p}' for p in HARDWARE_PARTS)})",
                              key=f"hardware.{key}", path=path)
    tables: dict[str, Mapping[str, Any]] = {}
    for section in BOOT_SCHEMA:
        head, _, part = section.partition(".")
        table = hardware.get(part, {}) if part else doc.get(head, {})
        if not isinstance(table, dict):
            raise ConfigError(f"expected a table [{section}]", key=section, path=path)
        tables[section] = table
    return tables


def _section(section: str, table: Mapping[str, Any], path: str) -> dict[str, Any]:
    """One section's values, typed, defaults filled in, required keys present."""
    keys = BOOT_SCHEMA[section]
    for k in table:
        if k not in keys:
            raise ConfigError(f"unknown key (known: {', '.join(keys)})", key=f"{section}.{k}", path=path)
    values: dict[str, Any] = {}
    for k, (typ, default, _doc) in keys.items():
        if k in table:
            values[k] = _typed(table[k], typ, f"{section}.{k}", path)
        elif default is None:
            raise ConfigError("is required", key=f"{section}.{k}", path=path)
        else:
            values[k] = default.copy() if isinstance(default, (list, dict)) else default
    return values


def parse_boot(doc: Mapping[str, Any], *, path: str = "") -> BootConfig:
    """Validate a parsed boot file and build a :class:`BootConfig`."""
    tables = _tables(doc, path)
    v = {section: _section(section, tables[section], path) for section in BOOT_SCHEMA}
    node, hub = v["node"], v["hub"]
    _check_name(node["name"], "node.name", path)
    _check_name(node["lattice"], "node.lattice", path)
    labels = _string_table(node["labels"], "node.labels", path)
    for key in labels:
        if not LABEL_KEY.match(key):
            raise ConfigError(f"label {key!r}: keys are 1-63 of A-Z a-z 0-9 _ . - (not starting with . _ or -)",
                              key="node.labels", path=path)
    _check_hub_url(hub["url"], path)
    _check_name(hub["jetstream_domain"], "hub.jetstream_domain", path)
    if hub["jetstream_domain"] == node["name"]:
        raise ConfigError(f"{node['name']!r} is also node.name, which is the JetStream domain of this Pi's own "
                          "server: the hub's domain must differ (the hub template names it \"hub\")",
                          key="hub.jetstream_domain", path=path)
    gpio_pins, safe_state = _gpio(v["hardware.gpio"], path)
    buses = _i2c_buses(v["hardware.i2c"]["buses"], path)
    if I2C1_DEVICE in buses.values():
        taken = sorted(set(gpio_pins) & set(I2C1_PINS))
        if taken:
            bus = next(name for name, device in buses.items() if device == I2C1_DEVICE)
            raise ConfigError(f"GPIO {' and '.join(map(str, taken))} {'carry' if len(taken) > 1 else 'carries'} "
                              f"I2C bus 1 (hardware.i2c.buses.{bus} = "
                              f"\"{I2C1_DEVICE}\"): remove {'them' if len(taken) > 1 else 'it'} from the pins, or "
                              "the bus from hardware.i2c.buses", key="hardware.gpio.pins", path=path)
    return BootConfig(
        source=path, name=node["name"], lattice=node["lattice"], labels=labels,
        hub_url=hub["url"], hub_jetstream_domain=hub["jetstream_domain"],
        credentials=_credentials(hub["credentials"], path),
        trusted_keys=_trusted_keys(v["trust"]["keys"], path),
        gpio_pins=gpio_pins, gpio_safe_state=safe_state, i2c_buses=buses,
        display=_display(v["hardware.display"], path),
    )


def _check_hub_url(url: str, path: str) -> None:
    key = "hub.url"
    example = "such as tls://hub.example.net:7422 or nats-leaf://192.168.1.10:7422"
    bad = UNSAFE_CHARS.search(url)
    if bad:
        raise ConfigError(f"{url!r} contains {bad.group()!r}: write the bare URL, {example}", key=key, path=path)
    parts = urlsplit(url)
    if parts.scheme not in HUB_SCHEMES or not url.startswith(f"{parts.scheme}://"):
        raise ConfigError(f"{url!r} is not a leafnode URL: it starts with "
                          f"{', '.join(s + '://' for s in HUB_SCHEMES)}, {example}", key=key, path=path)
    host = parts.hostname or ""
    if not host or not (HOST.match(host) or _is_ipv6(host)):
        raise ConfigError(f"{url!r} has no valid host name: write {parts.scheme}://<host>:<port>, {example}",
                          key=key, path=path)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port is None:
        raise ConfigError(f"{url!r} has no port: add the hub's leafnode port (7422 unless the hub says otherwise), "
                          f"{example}", key=key, path=path)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{url!r}: the port must be a number from 1 to 65535", key=key, path=path)
    if parts.query or parts.fragment or (parts.path not in ("", "/") and parts.scheme not in ("ws", "wss")):
        raise ConfigError(f"{url!r}: only ws:// and wss:// URLs may have a path, and none has ? or #",
                          key=key, path=path)


def _is_ipv6(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _credentials(text: str, path: str) -> str:
    key = "hub.credentials"
    text = text.replace("\r\n", "\n").strip()
    if not text:
        return ""
    how = ("paste the whole .creds file between ''' and ''' (from '-----BEGIN NATS USER JWT-----' to "
           "'------END USER NKEY SEED------')")
    jwt, seed = CREDS_JWT.search(text), CREDS_SEED.search(text)
    if jwt is None:
        raise ConfigError(f"not a NATS .creds file: no 'BEGIN NATS USER JWT' block; {how}", key=key, path=path)
    if seed is None:
        raise ConfigError(f"not a NATS .creds file: no 'BEGIN USER NKEY SEED' block; {how}", key=key, path=path)
    if not JWT.match(jwt.group(1)):
        raise ConfigError(f"the user JWT is not a JWT (three base64url parts joined by dots); {how}", key=key,
                          path=path)
    if not NKEY_USER_SEED.match(seed.group(1)) or _nkey_crc_error(seed.group(1)):
        raise ConfigError(f"the user nkey seed is not a user seed (SU followed by 56 base32 characters with a "
                          f"valid checksum); {how}", key=key, path=path)
    return text + "\n"


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the nkeys checksum."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _nkey_crc_error(key: str) -> str | None:
    """Why ``key`` is not a well-formed nkey (base32, checksum), or None."""
    try:
        raw = base64.b32decode(key + "=" * (-len(key) % 8))
    except (binascii.Error, ValueError):
        return "it is not base32 (A-Z and 2-7)"
    if len(raw) < 3 or _crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
        return "its checksum does not match (a typo, or a character lost when copying)"
    return None


def _trusted_keys(keys: list[Any], path: str) -> tuple[str, ...]:
    out: list[str] = []
    for i, key in enumerate(keys):
        where = f"trust.keys[{i}]"
        if not isinstance(key, str):
            raise ConfigError(f"expected a string (a public key such as \"ADX…\"), got {key!r}", key=where, path=path)
        key = key.strip()
        if len(key) != NKEY_PUBLIC_CHARS or not re.fullmatch(r"[A-Z2-7]+", key):
            what = "a private seed: never put a seed here, only its public key" if key.startswith("S") else \
                f"a public nkey is {NKEY_PUBLIC_CHARS} characters of A-Z and 2-7, got {len(key)}"
            raise ConfigError(f"{key[:4]}…: not an issuer public key ({what})", key=where, path=path)
        problem = _nkey_crc_error(key)
        if problem:
            raise ConfigError(f"{key[:8]}… is not a valid public key: {problem}", key=where, path=path)
        prefix = base64.b32decode(key)[0]
        if prefix not in NKEY_ISSUERS:
            kind = NKEY_KINDS.get(prefix, "not an issuer key")
            raise ConfigError(f"{key[:8]}… is {kind}: actors are signed by an account (A…) or operator (O…) key",
                              key=where, path=path)
        if key not in out:
            out.append(key)
    return tuple(out)


def _gpio(values: Mapping[str, Any], path: str) -> tuple[tuple[int, ...], dict[int, str]]:
    raw = values["pins"]
    for pin in raw:
        if isinstance(pin, bool) or not isinstance(pin, int) or pin not in HEADER_PINS:
            raise ConfigError(f"{pin!r} is not a GPIO of the 40-pin header: BCM numbers 0 to 27, such as "
                              "[17, 27]", key="hardware.gpio.pins", path=path)
    pins = tuple(sorted(set(raw)))
    safe: dict[int, str] = {}
    for key, state in values["safe_state"].items():
        where = f"hardware.gpio.safe_state.{key}"
        if not re.fullmatch(r"[0-9]{1,2}", key):
            raise ConfigError("the key must be a BCM pin number in quotes, such as \"27\" = \"low\"", key=where,
                              path=path)
        if int(key) not in pins:
            raise ConfigError(f"pin {int(key)} is not in hardware.gpio.pins", key=where, path=path)
        if state not in SAFE_STATES:
            raise ConfigError(f"must be one of {', '.join(SAFE_STATES)}, not {state!r}", key=where, path=path)
        safe[int(key)] = state
    return pins, safe


def _i2c_buses(raw: Mapping[str, Any], path: str) -> dict[str, str]:
    buses: dict[str, str] = {}
    for name, device in raw.items():
        where = f"hardware.i2c.buses.{name}"
        if not I2C_BUS_NAME.match(name):
            raise ConfigError("a bus name is 1-32 of A-Z a-z 0-9 _ . -, such as i2c1", key=where, path=path)
        if not isinstance(device, str) or not I2C_DEVICE.match(device):
            raise ConfigError(f"must be an I2C device file such as \"{I2C1_DEVICE}\", not {device!r}", key=where,
                              path=path)
        if device in buses.values():
            raise ConfigError(f"{device} is already named {next(n for n, d in buses.items() if d == device)!r}",
                              key=where, path=path)
        buses[name] = device
    return buses


def _display(values: Mapping[str, Any], path: str) -> DisplaySpec | None:
    def ranged(key: str, lo: int, hi: int) -> int:
        value: int = values[key]
        if not lo <= value <= hi:
            raise ConfigError(f"must be from {lo} to {hi}, not {value}", key=f"hardware.display.{key}", path=path)
        return value

    driver = values["driver"]
    if driver not in DISPLAY_DRIVERS:
        raise ConfigError(f"must be one of {', '.join(DISPLAY_DRIVERS)}, not {driver!r}",
                          key="hardware.display.driver", path=path)
    address = values["address"]
    if isinstance(address, str):
        try:
            address = int(address, 0)
        except ValueError:
            raise ConfigError(f"{values['address']!r} is not an I2C address: write it like 0x3C",
                              key="hardware.display.address", path=path) from None
    if not MIN_I2C_ADDRESS <= address <= MAX_I2C_ADDRESS:
        raise ConfigError(f"0x{address:02X} is not a 7-bit I2C device address: it is from 0x{MIN_I2C_ADDRESS:02X} "
                          f"to 0x{MAX_I2C_ADDRESS:02X} (most SSD1306 panels are 0x3C, some 0x3D)",
                          key="hardware.display.address", path=path)
    spec = DisplaySpec(driver=driver, port=ranged("port", 0, MAX_I2C_PORT), address=address,
                       width=ranged("width", MIN_PANEL_PX, MAX_PANEL_PX),
                       height=ranged("height", MIN_PANEL_PX, MAX_PANEL_PX), rotate=ranged("rotate", 0, MAX_ROTATE))
    return None if driver == NO_DISPLAY else spec


# -- what gets installed ---------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """One file in the config directory: its bytes (None: it must not exist), mode and owner."""

    path: Path
    data: bytes | None
    mode: int = PUBLIC_MODE
    owner: tuple[int, int] | None = None
    """(uid, gid), or None to leave it to whoever writes it."""


@dataclass(frozen=True)
class Change:
    output: Output
    action: Literal["write", "remove", "metadata"]


def toml_string(value: str) -> str:
    """A TOML basic string."""
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    out = []
    for ch in value:
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """A TOML value for the node config: strings, integers, booleans, lists, inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_string(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }" \
            if value else "{}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _generated_header(boot: str) -> str:
    return (f"# Generated by `drupelet firstboot` from {boot}.\n"
            "# Edit that file and reboot: this one is rewritten from it at every boot.\n")


def render_node_toml(cfg: BootConfig) -> str:
    """``/etc/drupelet/node.toml``: the node on the Pi's leaf server, the hardware on real backends."""
    lines = [_generated_header(cfg.source), "[node]", f"name = {toml_string(cfg.name)}",
             f"lattice = {toml_string(cfg.lattice)}", f"labels = {toml_value(dict(cfg.labels))}", "",
             "[nats]", f"url = {toml_string(LOCAL_NATS_URL)}",
             f"jetstream_domain = {toml_string(cfg.hub_jetstream_domain)}"]
    for name, table in cfg.provider_configs().items():
        lines += ["", f"[providers.{name}]"]
        for key, value in table.items():
            shown = f"0x{value:02X}" if (name, key) == ("display", "address") else toml_value(value)
            lines.append(f"{key} = {shown}")
    return "\n".join(lines) + "\n"


def leaf_template() -> str:
    """The text of ``nats-leaf.conf.in``, from the installed package or the source checkout."""
    tried = []
    try:
        packaged = importlib.resources.files(TEMPLATE_PACKAGE) / LEAF_TEMPLATE
        if packaged.is_file():
            return packaged.read_text(encoding="utf-8")
        tried.append(f"{TEMPLATE_PACKAGE}/{LEAF_TEMPLATE}")
    except (ModuleNotFoundError, ValueError, OSError):  # not installed, or an editable install's namespace
        tried.append(f"package {TEMPLATE_PACKAGE}")
    checkout = Path(__file__).resolve().parents[2] / "systemd" / LEAF_TEMPLATE
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    tried.append(str(checkout))
    raise FileNotFoundError(f"the nats-server template {LEAF_TEMPLATE} is not installed (looked in "
                            f"{', '.join(tried)}); reinstall drupelet")


def render_leaf_conf(template: str, cfg: BootConfig, *, creds: Path | None, store_dir: Path) -> str:
    """``nats-leaf.conf.in`` with its placeholders filled in (outside comments); without
    credentials, the line that names them is left out."""
    values = {"NODE": cfg.name, "HUB_URL": cfg.hub_url, "CREDS": str(creds) if creds else "",
              "STORE_DIR": str(store_dir)}
    out = [_generated_header(cfg.source) + f"# The @PLACEHOLDERS@ of {LEAF_TEMPLATE}, described below, are "
           "filled in.\n\n"]
    for line in template.splitlines(keepends=True):
        if line.lstrip().startswith("#"):
            out.append(line)
            continue
        if creds is None and "@CREDS@" in line:
            continue
        for key, value in values.items():
            line = line.replace(f"@{key}@", value)
        left = re.search(r"@[A-Z_]+@", line)
        if left:
            raise ValueError(f"{LEAF_TEMPLATE} has a placeholder firstboot does not know: {left.group()}")
        out.append(line)
    return "".join(out)


def render_trusted_keys(cfg: BootConfig) -> str:
    return (_generated_header(cfg.source) +
            "# Issuer public keys (nkeys) trusted to sign actors, one a line. Signature checks are planned:\n"
            "# the node does not enforce them yet.\n" + "".join(f"{key}\n" for key in cfg.trusted_keys))


def _service_owner() -> tuple[int, int] | None:
    """(uid, gid) of :data:`SERVICE_USER` when we run as root and it exists."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def outputs(cfg: BootConfig, *, etc: Path, state: Path) -> list[Output]:
    """What ``etc`` must hold for ``cfg``, in the order it is written."""
    for what, directory in (("--etc", etc), ("--state", state)):
        if UNSAFE_CHARS.search(str(directory)):
            raise ValueError(f"{what} {str(directory)!r}: a directory path without spaces, quotes or brackets, please")
    creds = etc / LEAF_CREDS
    node_toml = render_node_toml(cfg)
    _check_node_toml(node_toml, cfg, etc / NODE_TOML)
    leaf = render_leaf_conf(leaf_template(), cfg, creds=creds if cfg.credentials else None,
                            store_dir=state / "nats")
    return [
        Output(creds, cfg.credentials.encode() if cfg.credentials else None, SECRET_MODE, _service_owner()),
        Output(etc / TRUSTED_KEYS, render_trusted_keys(cfg).encode()),
        Output(etc / LEAF_CONF, leaf.encode()),
        Output(etc / NODE_TOML, node_toml.encode()),
    ]


def _check_node_toml(text: str, cfg: BootConfig, target: Path) -> None:
    """The node config loads with the node's own loader, and each hardware provider takes
    its table; a failure here is a bug of this module, reported against the boot file."""
    from drupelet.providers import display, gpio, i2c

    try:
        parse(tomllib.loads(text), path=str(target), base_dir=target.parent)
    except ConfigError as exc:
        raise ConfigError(f"the node config made from it does not load: {exc}", path=cfg.source) from exc
    checks: dict[str, Callable[[dict[str, Any]], object]] = {
        "gpio": lambda t: gpio.parse_config(t, {}), "i2c": lambda t: i2c.parse_config(t, {}, Path("/dev")),
              "display": lambda t: display.parse_config(t, {})}
    for name, table in cfg.provider_configs().items():
        # a simulated display has nothing more to check (and its check warns that it is simulated)
        if table.get("enabled", True) and table.get("driver") != "dummy":
            try:
                checks[name](table)
            except ValueError as exc:
                raise ConfigError(f"the {name} provider refuses the config made from it: {exc}",
                                  key=f"hardware.{name}", path=cfg.source) from exc


def plan(wanted: Iterable[Output]) -> list[Change]:
    """The changes that make the files match ``wanted``: nothing for a file that already does."""
    changes: list[Change] = []
    for out in wanted:
        try:
            st = out.path.stat()
            current = out.path.read_bytes()
        except FileNotFoundError:
            if out.data is not None:
                changes.append(Change(out, "write"))
            continue
        if out.data is None:
            changes.append(Change(out, "remove"))
        elif current != out.data:
            changes.append(Change(out, "write"))
        elif (st.st_mode & 0o7777) != out.mode or (out.owner and (st.st_uid, st.st_gid) != out.owner):
            changes.append(Change(out, "metadata"))
    return changes


def apply(changes: Iterable[Change]) -> None:
    """Write, fix and remove files; removals last (the config that named them is rewritten first)."""
    ordered = sorted(changes, key=lambda c: c.action == "remove")
    for change in ordered:
        out = change.output
        if change.action == "remove":
            out.path.unlink(missing_ok=True)
            _fsync_dir(out.path.parent)
            continue
        if change.action == "write":
            assert out.data is not None
            atomic_write(out.path, out.data)  # created 0600: never readable by others before its chmod
        if out.owner:
            os.chown(out.path, *out.owner)
        os.chmod(out.path, out.mode)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- telling a person ------------------------------------------------------------------


def error_file(boot: Path) -> Path:
    return boot.with_name(boot.name + ERROR_SUFFIX)


def _error_text(boot: Path, reason: str, kept: str) -> str:
    return (f"drupelet could not apply {boot.name} when the Pi booted:\n\n"
            f"    {reason}\n\n"
            f"{kept}\n"
            f"Fix {boot.name} on this partition and boot the Pi again; this file is deleted once the\n"
            "fix is applied. The example drupelet.toml in drupelet's images/ folder explains every key.\n")


def _write_if_changed(path: Path, data: bytes) -> None:
    if not (path.is_file() and path.read_bytes() == data):
        atomic_write(path, data)


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


def _new_display(boot: Path) -> DisplaySpec | None:
    """The boot file's display, when its [hardware.display] alone is valid and names one."""
    try:
        doc = read_toml(boot)
        hardware = doc.get("hardware")
        table = hardware.get("display") if isinstance(hardware, dict) else None
        if not isinstance(table, dict):
            return None
        return _display(_section("hardware.display", table, str(boot)), str(boot))
    except ConfigError:
        return None


def _failure_display(boot: Path, etc: Path) -> dict[str, Any] | None:
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


def _fail(boot: Path, etc: Path, reason: str, short: str, *, dry_run: bool) -> int:
    """Report a boot file that was not applied: log, error file, display. Returns 1."""
    if dry_run:
        log.error("%s (dry run: nothing was written)", reason)
        return 1
    installed = (etc / NODE_TOML).exists()
    kept = (f"Nothing in {etc} was changed: the node keeps its previous configuration." if installed else
            f"Nothing is installed in {etc} yet, so the node cannot start until the file is fixed.")
    log.error("%s. %s", reason, kept)
    try:
        _write_if_changed(error_file(boot), _error_text(boot, reason, kept).encode())
    except OSError as exc:
        log.warning("could not write %s: %s", error_file(boot), exc)
    display_config = _failure_display(boot, etc)
    if display_config is not None:
        show_on_display(display_config, f"{boot.name} error", short)
    return 1


def firstboot(*, boot: Path = BOOT_FILE, etc: Path = ETC_DIR, state: Path = STATE_DIR, dry_run: bool = False) -> int:
    """Validate ``boot`` and install it to ``etc`` (see the module docstring). Returns the exit status."""
    etc, state = etc.absolute(), state.absolute()
    if not boot.exists():
        print(f"drupelet firstboot: no {boot}, nothing to do")
        return 0
    try:
        cfg = load_boot_file(boot)
        changes = plan(outputs(cfg, etc=etc, state=state))
    except ConfigError as exc:
        short = str(exc).removeprefix(f"{exc.path}: ") if exc.path else str(exc)
        return _fail(boot, etc, str(exc), short, dry_run=dry_run)
    except (OSError, ValueError) as exc:
        return _fail(boot, etc, f"cannot prepare the files for {etc}: {exc}", str(exc), dry_run=dry_run)
    verbs = {"write": "write", "remove": "remove", "metadata": "fix the mode or owner of"}
    if dry_run:
        for change in changes:
            print(f"would {verbs[change.action]} {change.output.path}")
        print(f"drupelet firstboot: {boot} is valid; " +
              (f"{len(changes)} change(s) to {etc}" if changes else f"{etc} already matches it"))
        return 0
    try:
        apply(changes)
    except OSError as exc:
        return _fail(boot, etc, f"cannot install {boot} into {etc}: {exc}", str(exc), dry_run=False)
    try:
        error_file(boot).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove the old %s: %s", error_file(boot), exc)
    if changes:
        done = "; ".join(f"{verbs[c.action]} {c.output.path.name}" for c in changes)
        print(f"drupelet firstboot: applied {boot} to {etc}: {done}")
    else:
        print(f"drupelet firstboot: {etc} already matches {boot}; nothing written")
    return 0


# -- command line ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``drupelet firstboot``."""
    parser.add_argument("--boot", type=Path, default=BOOT_FILE, metavar="FILE",
                        help=f"the boot file to apply (default {BOOT_FILE})")
    parser.add_argument("--etc", type=Path, default=ETC_DIR, metavar="DIR",
                        help=f"where node.toml, nats-leaf.conf, leaf.creds and trusted-keys go (default {ETC_DIR})")
    parser.add_argument("--state", type=Path, default=STATE_DIR, metavar="DIR",
                        help=f"the node's state directory; the leaf server's JetStream store is <DIR>/nats "
                             f"(default {STATE_DIR})")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and print what would change, write nothing")


def run(args: argparse.Namespace) -> int:
    """``drupelet firstboot`` after parsing (called by :func:`drupelet.node.cli.main`)."""
    return firstboot(boot=args.boot, etc=args.etc, state=args.state, dry_run=args.dry_run)


def main(argv: list[str] | None = None) -> int:
    """``drupelet firstboot [options]`` as a function: the CLI with that subcommand."""
    from drupelet.node.cli.main import main as cli_main

    return cli_main(["firstboot", *(argv or [])])
