"""The boot file's schema: every section and key of ``drupelet.toml``, declared once.

Each section is a msgspec ``Struct`` (:mod:`drupelet.providers.schema`) whose fields
carry their type, default and meaning; :data:`SECTIONS` lists them by table name. From
that one declaration come the type checks and defaults (:func:`parse_section`), the
reference tables (:func:`boot_markdown`) and the example file's test. What one field's
type cannot say (a name's characters, a hub URL, pins shared with I2C bus 1; a .creds
file and nkey checksums in :mod:`.nkeys`) is checked across keys by :func:`parse_boot`.

Every error is a :class:`~drupelet.node.errors.ConfigError` of one line that names the
file and the key, such as ``drupelet.toml: hardware.gpio.pins: 40 is not a GPIO of the
40-pin header: …``. ``images/drupelet.toml`` is the documented example.
"""

from __future__ import annotations

import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from drupelet.providers.schema import SchemaError, convert, key_docs, markdown_table

from drupelet.node.config import LABEL_KEY, NAME
from drupelet.node.errors import ConfigError

from .nkeys import check_ca, check_credentials, check_trusted_keys

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
I2C_DEVICE = re.compile(r"^/dev/i2c-[0-9]{1,3}$")
I2C_BUS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
NO_DISPLAY = "none"
MIN_I2C_ADDRESS, MAX_I2C_ADDRESS = 0x03, 0x77
MIN_PANEL_PX, MAX_PANEL_PX = 8, 1024
MAX_I2C_PORT = 255
MAX_ROTATE = 3



# -- the declaration -----------------------------------------------------------------------

SafeState = Literal["low", "high", "input"]
SAFE_STATES: tuple[str, ...] = typing.get_args(SafeState)
DisplayDriver = Literal["none", "ssd1306", "sh1106", "ssd1309", "dummy"]
DISPLAY_DRIVERS: tuple[str, ...] = typing.get_args(DisplayDriver)


S = typing.TypeVar("S", bound="Section")


class Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of the boot file's sections."""


class NodeSection(Section):
    """The node: its name, its lattice and the labels that select it."""

    name: Annotated[str, Meta(description="node name, unique in the lattice: 1-63 of A-Z a-z 0-9 _ - (not "
                                          "starting with _ or -); also the JetStream domain of the Pi's "
                                          "nats-server")]
    lattice: Annotated[str, Meta(description="lattice name (same rules as the name); subjects are "
                                             "drupelet.<lattice>.…")] = "default"
    labels: Annotated[dict[str, str | int | float | bool],
                      Meta(description="labels (string → string) that select nodes; numbers and true/false "
                                       "become strings")] = {}


class HubSection(Section):
    """The hub this Pi's nats-server joins as a leaf node."""

    url: Annotated[str, Meta(description="the hub's leafnode URL: nats-leaf://, tls://, nats://, ws:// or wss:// "
                                         "with host:port")]
    credentials: Annotated[str, Meta(description="the whole text of the node's NATS .creds file for the leaf "
                                                 "connection (drupelet lattice enroll writes it); required unless "
                                                 "open")] = ""
    ca: Annotated[str, Meta(description="the PEM text of the CA that signed the hub's TLS certificate (the lattice "
                                        "directory's ca.pem); required unless open")] = ""
    jetstream_domain: Annotated[str, Meta(description="the hub's JetStream domain, where the lattice's artifacts "
                                                      "and state live; must differ from node.name")] = "hub"
    open: Annotated[bool, Meta(description="join a hub that asks for no credentials, over plain TCP if the URL "
                                           "says so: anyone who reaches that hub controls this Pi; for a hub on "
                                           "your own network only")] = False


class TrustSection(Section):
    """Who may sign the actors this node runs."""

    keys: Annotated[list[str], Meta(description="issuer public keys (nkeys, A… or O…) whose signed actors this "
                                                "node runs; []: any valid signature")] = []
    allow_unsigned: Annotated[bool, Meta(description="run actors that carry no signed claims (each with a "
                                                     "WARNING in the log)")] = False
    clock_skew_s: Annotated[float, Meta(ge=0, description="slack on the claims' expiry and not-before times, "
                                                          "for a Pi whose clock is not yet set")] = 300.0


class GpioSection(Section):
    """The GPIO pins actors may be granted (the gpio provider on lgpio)."""

    pins: Annotated[list[int], Meta(description="BCM pins (0 to 27) actors may be granted; [] turns GPIO off; 2 "
                                                "and 3 only without /dev/i2c-1")] = \
        msgspec.field(default_factory=lambda: list(DEFAULT_GPIO_PINS))
    safe_state: Annotated[dict[str, SafeState],
                          Meta(description="pin (in quotes) → where an output goes when its actor lets go "
                                           "(default low)")] = {}


class I2cSection(Section):
    """The I2C buses actors may open (the i2c provider on /dev/i2c-N)."""

    buses: Annotated[dict[str, str], Meta(description="bus name → /dev/i2c-N; {} turns I2C off")] = \
        msgspec.field(default_factory=lambda: {"i2c1": I2C1_DEVICE})


class DisplaySection(Section):
    """A small OLED panel on I2C (the display provider on luma.oled)."""

    driver: Annotated[DisplayDriver,
                      Meta(description="the panel's controller; dummy: simulated; none: no display")] = "none"
    port: Annotated[int, Meta(ge=0, le=MAX_I2C_PORT,
                              description="I2C bus number of the panel: /dev/i2c-<port>")] = 1
    address: Annotated[int | str, Meta(description="7-bit I2C address of the panel, 0x03 to 0x77; the default is "
                                                   "0x3C; a string such as \"0x3D\" is read as a number")] = 0x3C
    width: Annotated[int, Meta(ge=MIN_PANEL_PX, le=MAX_PANEL_PX, description="panel width in pixels")] = 128
    height: Annotated[int, Meta(ge=MIN_PANEL_PX, le=MAX_PANEL_PX, description="panel height in pixels")] = 64
    rotate: Annotated[int, Meta(ge=0, le=MAX_ROTATE, description="quarter turns clockwise")] = 0


SECTIONS: dict[str, type[Section]] = {
    "node": NodeSection,
    "hub": HubSection,
    "trust": TrustSection,
    "hardware.gpio": GpioSection,
    "hardware.i2c": I2cSection,
    "hardware.display": DisplaySection,
}
"""Every table of the boot file, in the order the example shows them."""
HARDWARE_PARTS = tuple(s.removeprefix("hardware.") for s in SECTIONS if s.startswith("hardware."))


def boot_markdown() -> str:
    """The boot file reference: one Markdown table per section, from :data:`SECTIONS`."""
    parts = []
    for section, cls in SECTIONS.items():
        intro = (cls.__doc__ or "").strip().splitlines()[0]
        parts += [f"### [{section}]", "", intro, "", markdown_table(key_docs(cls)), ""]
    return "\n".join(parts)


# -- the validated file ------------------------------------------------------------------


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
    hub_ca: str
    """Normalised PEM text of the hub's CA, or empty."""
    hub_open: bool
    """The hub asks for no credentials (``[hub] open``): the node is in an open lattice."""
    trusted_keys: tuple[str, ...]
    allow_unsigned: bool
    clock_skew_s: float
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


# -- reading and checking --------------------------------------------------------------------


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
    top_level = {section.split(".")[0] for section in SECTIONS}
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
    for section in SECTIONS:
        head, _, part = section.partition(".")
        table = hardware.get(part, {}) if part else doc.get(head, {})
        if not isinstance(table, dict):
            raise ConfigError(f"expected a table [{section}]", key=section, path=path)
        tables[section] = table
    return tables


def parse_section(section: str, table: Mapping[str, Any], cls: type[S], path: str) -> S:
    """One section, typed and with its defaults, as :data:`SECTIONS` declares it. A value
    outside a range the declaration bounds on both sides is told with both bounds."""
    try:
        return convert(table, cls, where=section)
    except SchemaError as exc:
        name = exc.key.removeprefix(f"{section}.")
        value = table.get(name)
        hint = typing.get_type_hints(cls, include_extras=True).get(name)
        meta = next((m for m in typing.get_args(hint)[1:] if isinstance(m, Meta)), None) if hint else None
        if (meta is not None and meta.ge is not None and meta.le is not None and isinstance(value, int)
                and not isinstance(value, bool) and not meta.ge <= value <= meta.le):
            raise ConfigError(f"must be from {meta.ge} to {meta.le}, not {value}", key=exc.key, path=path) from None
        raise ConfigError(exc.reason, key=exc.key, path=path) from None


def parse_boot(doc: Mapping[str, Any], *, path: str = "") -> BootConfig:
    """Validate a parsed boot file and build a :class:`BootConfig`."""
    tables = _tables(doc, path)
    node = parse_section("node", tables["node"], NodeSection, path)
    hub = parse_section("hub", tables["hub"], HubSection, path)
    trust = parse_section("trust", tables["trust"], TrustSection, path)
    gpio = parse_section("hardware.gpio", tables["hardware.gpio"], GpioSection, path)
    i2c = parse_section("hardware.i2c", tables["hardware.i2c"], I2cSection, path)
    display = parse_section("hardware.display", tables["hardware.display"], DisplaySection, path)
    _check_name(node.name, "node.name", path)
    _check_name(node.lattice, "node.lattice", path)
    labels = {key: _label_value(value) for key, value in node.labels.items()}
    for key in labels:
        if not LABEL_KEY.match(key):
            raise ConfigError(f"label {key!r}: keys are 1-63 of A-Z a-z 0-9 _ . - (not starting with . _ or -)",
                              key="node.labels", path=path)
    _check_hub_url(hub.url, path)
    _check_name(hub.jetstream_domain, "hub.jetstream_domain", path)
    if hub.jetstream_domain == node.name:
        raise ConfigError(f"{node.name!r} is also node.name, which is the JetStream domain of this Pi's own "
                          "server: the hub's domain must differ (the hub template names it \"hub\")",
                          key="hub.jetstream_domain", path=path)
    gpio_pins, safe_state = _gpio(gpio, path)
    buses = _i2c_buses(i2c.buses, path)
    if I2C1_DEVICE in buses.values():
        taken = sorted(set(gpio_pins) & set(I2C1_PINS))
        if taken:
            bus = next(name for name, device in buses.items() if device == I2C1_DEVICE)
            raise ConfigError(f"GPIO {' and '.join(map(str, taken))} {'carry' if len(taken) > 1 else 'carries'} "
                              f"I2C bus 1 (hardware.i2c.buses.{bus} = "
                              f"\"{I2C1_DEVICE}\"): remove {'them' if len(taken) > 1 else 'it'} from the pins, or "
                              "the bus from hardware.i2c.buses", key="hardware.gpio.pins", path=path)
    credentials = check_credentials(hub.credentials, path)
    ca = check_ca(hub.ca, path)
    if not hub.open:
        _check_secure_hub(hub.url, credentials, ca, path)
    return BootConfig(
        source=path, name=node.name, lattice=node.lattice, labels=labels,
        hub_url=hub.url, hub_jetstream_domain=hub.jetstream_domain,
        credentials=credentials, hub_ca=ca, hub_open=hub.open,
        trusted_keys=check_trusted_keys(trust.keys, path), allow_unsigned=trust.allow_unsigned,
        clock_skew_s=trust.clock_skew_s,
        gpio_pins=gpio_pins, gpio_safe_state=safe_state, i2c_buses=buses,
        display=display_spec(display, path),
    )


SECURE_SCHEMES = ("tls", "wss")
"""Leafnode URL schemes that encrypt the connection."""


def _check_secure_hub(url: str, credentials: str, ca: str, path: str) -> None:
    """A Pi joins a hub only with its credentials, over TLS signed by the lattice's CA, unless
    the boot file says the hub is open."""
    how = ("paste what `drupelet lattice enroll` wrote, or set hub.open = true for a hub on your own network that "
           "asks for no credentials")
    if urlsplit(url).scheme not in SECURE_SCHEMES:
        raise ConfigError(f"{url!r} is not encrypted: a Pi joins a hub over tls:// (or wss://); {how}",
                          key="hub.url", path=path)
    if not credentials:
        raise ConfigError(f"required: the node's .creds file, without which the hub refuses this Pi; {how}",
                          key="hub.credentials", path=path)
    if not ca:
        raise ConfigError(f"required: the lattice's CA (ca.pem), without which the Pi cannot tell the hub from an "
                          f"impostor; {how}", key="hub.ca", path=path)


def _check_name(value: str, key: str, path: str) -> None:
    if not NAME.match(value):
        raise ConfigError(f"{value!r} is not a valid name: use 1-63 of A-Z a-z 0-9 _ - (not starting with _ or -)",
                          key=key, path=path)


def _label_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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


def _gpio(values: GpioSection, path: str) -> tuple[tuple[int, ...], dict[int, str]]:
    for pin in values.pins:
        if pin not in HEADER_PINS:
            raise ConfigError(f"{pin!r} is not a GPIO of the 40-pin header: BCM numbers 0 to 27, such as "
                              "[17, 27]", key="hardware.gpio.pins", path=path)
    pins = tuple(sorted(set(values.pins)))
    safe: dict[int, str] = {}
    for key, state in values.safe_state.items():
        where = f"hardware.gpio.safe_state.{key}"
        if not re.fullmatch(r"[0-9]{1,2}", key):
            raise ConfigError("the key must be a BCM pin number in quotes, such as \"27\" = \"low\"", key=where,
                              path=path)
        if int(key) not in pins:
            raise ConfigError(f"pin {int(key)} is not in hardware.gpio.pins", key=where, path=path)
        safe[int(key)] = state
    return pins, safe


def _i2c_buses(raw: Mapping[str, str], path: str) -> dict[str, str]:
    buses: dict[str, str] = {}
    for name, device in raw.items():
        where = f"hardware.i2c.buses.{name}"
        if not I2C_BUS_NAME.match(name):
            raise ConfigError("a bus name is 1-32 of A-Z a-z 0-9 _ . -, such as i2c1", key=where, path=path)
        if not I2C_DEVICE.match(device):
            raise ConfigError(f"must be an I2C device file such as \"{I2C1_DEVICE}\", not {device!r}", key=where,
                              path=path)
        if device in buses.values():
            raise ConfigError(f"{device} is already named {next(n for n, d in buses.items() if d == device)!r}",
                              key=where, path=path)
        buses[name] = device
    return buses


def display_spec(values: DisplaySection, path: str) -> DisplaySpec | None:
    """The panel ``[hardware.display]`` describes, or None for driver ``none``; the
    address may be written as a string (``"0x3C"``)."""
    key = "hardware.display.address"
    address = values.address
    if isinstance(address, str):
        try:
            address = int(address, 0)
        except ValueError:
            raise ConfigError(f"{values.address!r} is not an I2C address: write it like 0x3C", key=key,
                              path=path) from None
    if not MIN_I2C_ADDRESS <= address <= MAX_I2C_ADDRESS:
        raise ConfigError(f"0x{address:02X} is not a 7-bit I2C device address: it is from 0x{MIN_I2C_ADDRESS:02X} "
                          f"to 0x{MAX_I2C_ADDRESS:02X} (most SSD1306 panels are 0x3C, some 0x3D)", key=key, path=path)
    if values.driver == NO_DISPLAY:
        return None
    return DisplaySpec(driver=values.driver, port=values.port, address=address, width=values.width,
                       height=values.height, rotate=values.rotate)
