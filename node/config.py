"""The node config: one TOML file, declared once, validated on load.

Every section is a msgspec ``Struct`` below (:class:`NodeSection`, :class:`NatsSection`,
:class:`LimitsSection`, :class:`RuntimeSection`, :class:`TrustSection`, :class:`ActorEntry`, :class:`LinkEntry`):
each key's type, default, constraints and meaning are written there and nowhere else.
:func:`parse` validates a document against them, each ``[providers.<name>]`` table against
its provider's own schema (:attr:`drupelet.providers.base.Provider.config_schema`), and
builds a :class:`NodeConfig`, whose defaults are read from the same declarations.
``drupelet config-doc`` and docs/config.md are generated from them by :func:`schema_markdown`.

An unknown key or a wrong value is a :class:`~drupelet.node.errors.ConfigError`: one line
naming the file, the key and what it accepts.

This module sits below every layer of the node (the host, the lattice and the system
code read it); it imports only the providers' schema helper and registry.
It runs past 500 lines because it is the one declaration of every section's keys, with their
meaning, and of the checks across keys: split up, the schema would no longer be one place.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from drupelet.providers.registry import discover_providers
from drupelet.providers.schema import SchemaError, convert, key_docs, markdown_table

from drupelet.node.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
"""A node, lattice, actor or config name: one NATS subject token and one KV key token."""
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

# Bounds on what a node repeats in every ping, heartbeat and inventory: one oversized
# label or config value must not push those past NATS's max payload.
MAX_LABELS = 64
MAX_LABEL_VALUE_BYTES = 256
MAX_CONFIG_ENTRIES = 64
MAX_CONFIG_KEY_BYTES = 256
MAX_CONFIG_VALUE_BYTES = 4096
MAX_CONFIG_BYTES = 16384
"""A whole config table (an actor's, a link's, a named one), keys and values in UTF-8."""

Scalar = str | int | float | bool
"""A config or label value as written; numbers and booleans are kept as their text."""

Positive = Meta(gt=0)
NotNegative = Meta(ge=0)


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A table of the node config."""


class NodeSection(_Section):
    """``[node]``"""

    name: Annotated[str | None, Meta(description="node name, unique in the lattice; default: the host name")] = None
    lattice: Annotated[str, Meta(description="lattice name; subjects are drupelet.<lattice>.…")] = "default"
    labels: Annotated[dict[str, Scalar], Meta(description="labels (string → string) used to select nodes")] = {}
    data_dir: Annotated[str, Meta(description="state, buckets and the compile cache; default: $STATE_DIRECTORY "
                                              "or ~/.local/state/drupelet")] = ""


class NatsSection(_Section):
    """``[nats]``"""

    url: Annotated[str, Meta(description="NATS server to connect to; empty: start an embedded nats-server")] = ""
    embedded_host: Annotated[str, Meta(description="listen address of the embedded server")] = "127.0.0.1"
    embedded_port: Annotated[int, Meta(ge=0, le=65535, description="client port of the embedded server "
                                                                   "(0: any free port)")] = 4222
    embedded_jetstream: Annotated[bool, Meta(description="enable JetStream on the embedded server")] = True
    connect_timeout_s: Annotated[float, Meta(gt=0, le=3600, description="how long to wait for the first connection")] = 5.0
    creds: Annotated[str, Meta(description="NATS credentials file for the connection")] = ""
    jetstream_domain: Annotated[str, Meta(description="JetStream domain of the lattice's shared artifacts and "
                                                      "state (the hub's, in a leaf setup); empty: the connected "
                                                      "server's, or \"hub\" with hub_url")] = ""
    hub_url: Annotated[str, Meta(description="leafnode URL of a hub (nats-leaf://127.0.0.1:7422, tls://…): the "
                                             "embedded server joins it as a leaf, with the node's name as its "
                                             "own JetStream domain; empty: a standalone server")] = ""
    ca: Annotated[str, Meta(description="CA certificate (PEM) the server at url must be signed by (a lattice's "
                                        "ca.pem); empty: the system's CAs, for a tls:// URL")] = ""
    hub_creds: Annotated[str, Meta(description="credentials file of the embedded server's leaf connection to "
                                               "hub_url (the node's .creds from drupelet lattice enroll)")] = ""
    hub_ca: Annotated[str, Meta(description="CA certificate (PEM) the hub's leafnode port must be signed by; empty: "
                                            "the system's CAs")] = ""
    authenticated: Annotated[bool | None, Meta(description=(
        "the lattice authenticates its members (drupelet lattice init): another node's call for an actor is "
        "served only when the lattice state places that actor on it, and only an admin makes the state bucket; "
        "default: true when creds or hub_creds is set"))] = None


MIB = 1 << 20
NATS_MAX_PAYLOAD_BYTES = 64 * MIB
"""nats-server's own ceiling on one message (its max_payload is 1 MiB by default)."""


class LimitsSection(_Section):
    """``[limits]``: what one actor, one message or one request may cost the node (README, "Limits")."""

    call_deadline_ms: Annotated[int, Meta(ge=1, le=600_000, description="how long one call into an actor may run "
                                                                         "(epoch deadline)")] = 5000
    max_memory_bytes: Annotated[int, Meta(ge=64 << 10, le=4 << 30, description=(
        "linear-memory cap per actor instance"))] = 256 * MIB
    memory_budget_bytes: Annotated[int, Meta(ge=0, le=1 << 40, description=(
        "the node's memory budget for actors: a start or scale whose instances × max_memory_bytes, with every "
        "other actor's, would exceed it is refused; 0: three quarters of the machine's memory"))] = 0
    max_instances: Annotated[int, Meta(ge=1, le=1000, description="instances one actor may run on this node")] = 100
    max_payload_bytes: Annotated[int, Meta(ge=1, le=NATS_MAX_PAYLOAD_BYTES, description=(
        "largest message body or value an actor may send or receive (a remote call carries it base64-encoded: "
        "512 KiB stays under nats-server's 1 MiB default max_payload)"))] = 512 << 10
    max_queue: Annotated[int, Meta(ge=1, le=100_000, description="messages waiting per actor before deliveries "
                                                                  "are refused")] = 1000
    actor_queue_bytes: Annotated[int, Meta(ge=1, le=1 << 40, description=(
        "message bytes waiting per actor (its queue and its deliveries in flight) before deliveries are refused "
        "with overloaded; at least max_payload_bytes"))] = 8 * MIB
    node_queue_bytes: Annotated[int, Meta(ge=1, le=1 << 40, description=(
        "message bytes waiting for all actors of the node together before deliveries are refused with "
        "overloaded; at least actor_queue_bytes"))] = 32 * MIB
    publish_bytes_per_s: Annotated[int, Meta(ge=1024, le=1 << 40, description=(
        "bytes per second one actor may publish or send as requests (bursts of twice max_payload_bytes); past "
        "it a publish waits, and after a second is refused with busy"))] = 8 * MIB
    log_line_bytes: Annotated[int, Meta(ge=64, le=MIB, description=(
        "longest actor log line; a longer one is cut there and says how much was cut"))] = 4096
    log_lines_per_s: Annotated[float, Meta(ge=0.1, le=100_000, description=(
        "actor log lines per second, per actor, kept on average; lines beyond the rate and its burst are dropped "
        "and counted (actor list: logs_dropped)"))] = 50.0
    log_burst_lines: Annotated[int, Meta(ge=1, le=100_000, description=(
        "actor log lines let through at once above the rate"))] = 200
    stop_timeout_s: Annotated[float, Meta(ge=0, le=600, description="how long stopping an actor waits for "
                                                                    "in-flight calls")] = 5.0
    remote_call_timeout_ms: Annotated[int, Meta(ge=1, le=600_000, description=(
        "deadline of a call to a provider on another node (a link's timeout_ms config overrides it)"))] = 2000
    health_check_interval_s: Annotated[float, Meta(ge=0.05, le=3600, description=(
        "how often provider health is read; a change is an event"))] = 5.0
    heartbeat_interval_s: Annotated[float, Meta(ge=0.05, le=3600, description=(
        "how often the node publishes a heartbeat event with its inventory"))] = 30.0
    trap_backoff_base_ms: Annotated[int, Meta(ge=0, le=3_600_000, description=(
        "first delay before replacing an instance that keeps trapping"))] = 100
    trap_backoff_max_ms: Annotated[int, Meta(ge=0, le=3_600_000, description=(
        "longest such delay (at least trap_backoff_base_ms)"))] = 30000


class RuntimeSection(_Section):
    """``[runtime]``"""

    epoch_tick_ms: Annotated[int, Meta(ge=1, le=1000, description="granularity of call deadlines")] = 10
    compile_in_subprocess: Annotated[bool, Meta(description="compile components in a short-lived child "
                                                            "process")] = True
    compile_memory_bytes: Annotated[int, Meta(ge=0, le=1 << 40, description=(
        "address space the compile child may take (RLIMIT_AS); a compile past it is refused, saying so; 0: no "
        "limit"))] = 1 << 30
    compile_timeout_s: Annotated[float, Meta(ge=1, le=3600, description="longest a compile may run")] = 600.0
    compile_queue: Annotated[int, Meta(ge=0, le=1000, description=(
        "compiles that may wait while one runs (one runs at a time); one more is refused"))] = 8
    cache_dir: Annotated[str, Meta(description="compile cache; default: <data_dir>/cache")] = ""
    cache_budget_bytes: Annotated[int, Meta(ge=0, le=1 << 40, description=(
        "disk the compile cache and the artifact cache may take together; past it, the files no running actor "
        "uses are deleted, least recently used first; 0: no limit"))] = 2 << 30


class TrustSection(_Section):
    """``[trust]``: which signed actors this node runs (docs/security.md)."""

    keys: Annotated[list[str], Meta(description="issuer public keys (nkeys, A… or O…) whose signed actors run here; "
                                                "[]: any valid signature")] = []
    allow_unsigned: Annotated[bool, Meta(description="run actors without claims (each with a WARNING); the SD "
                                                     "image's boot file sets false")] = True
    clock_skew_s: Annotated[float, Meta(ge=0, le=86400, description="slack allowed on the claims' expiry and not-before "
                                                          "times")] = 300.0


class ActorEntry(_Section):
    """``[[actors]]``: an actor the node starts from a file."""

    name: Annotated[str, Meta(description="actor name")]
    file: Annotated[str, Meta(description="path to the component, relative to the config file")]
    instances: Annotated[int, Meta(ge=1, le=1000, description="how many instances to run (at most "
                                                            "limits.max_instances)")] = 1
    config: Annotated[dict[str, Scalar], Meta(description="config values the actor reads through "
                                                           "wasi:config")] = {}


class LinkEntry(_Section):
    """``[[links]]``: a link of this node's own (the lattice's links come from its state)."""

    source: Annotated[str, Meta(description="actor name")]
    interface: Annotated[str, Meta(description="an interface (wasi:keyvalue/store) or a package (wasi:keyvalue)")]
    target: Annotated[str, Meta(description="local/<provider> or <node>/<provider>")]
    config: Annotated[dict[str, Scalar], Meta(description="link config")] = {}


SECTIONS: dict[str, type[_Section]] = {"node": NodeSection, "nats": NatsSection, "limits": LimitsSection,
                                       "runtime": RuntimeSection, "trust": TrustSection}
"""The tables of the node config, by name; ``[providers.<name>]``, ``[[actors]]`` and
``[[links]]`` come after them."""
ENTRIES: dict[str, type[_Section]] = {"actors": ActorEntry, "links": LinkEntry}
TOP_LEVEL = (*SECTIONS, "providers", *ENTRIES)

DERIVED = {"node": {"name": "the host name", "data_dir": "$STATE_DIRECTORY or ~/.local/state/drupelet"},
           "nats": {"authenticated": "true with creds or hub_creds"},
           "runtime": {"cache_dir": "<data_dir>/cache"}}
"""Keys whose default is worked out at run time, with how (the docs show this)."""


def _default(section: type[_Section], key: str) -> Any:
    for f in msgspec.structs.fields(section):
        if f.name == key:
            if f.default_factory is not msgspec.NODEFAULT:
                return f.default_factory()
            return f.default
    raise KeyError(key)


def default_node_name() -> str:
    host = socket.gethostname().split(".")[0]
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "-", host)[:63].strip("-")
    return cleaned or "node"


def default_data_dir() -> Path:
    state = os.environ.get("STATE_DIRECTORY")  # systemd's StateDirectory=
    if state:
        return Path(state.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "drupelet"


@dataclass(frozen=True)
class ActorSpec:
    """An ``[[actors]]`` entry, validated, its file resolved."""

    name: str
    file: Path
    instances: int = 1
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LinkSpec:
    """A ``[[links]]`` entry, validated."""

    source: str
    interface: str
    target: str
    config: dict[str, str] = field(default_factory=dict)


def _d(section: type[_Section], key: str) -> Any:
    """A :class:`NodeConfig` field default read from the section's declaration."""
    value = _default(section, key)
    return field(default_factory=lambda: type(value)(value)) if isinstance(value, (dict, list)) else value


@dataclass
class NodeConfig:
    """The node config as the node uses it: the sections flattened (``[nats] url`` is
    ``nats_url``), paths resolved. Defaults come from the section declarations."""

    name: str = field(default_factory=default_node_name)
    lattice: str = _d(NodeSection, "lattice")
    labels: dict[str, str] = field(default_factory=dict)
    data_dir: Path = field(default_factory=default_data_dir)
    nats_url: str = _d(NatsSection, "url")
    nats_embedded_host: str = _d(NatsSection, "embedded_host")
    nats_embedded_port: int = _d(NatsSection, "embedded_port")
    nats_embedded_jetstream: bool = _d(NatsSection, "embedded_jetstream")
    nats_connect_timeout_s: float = _d(NatsSection, "connect_timeout_s")
    nats_creds: str = _d(NatsSection, "creds")
    nats_jetstream_domain: str = _d(NatsSection, "jetstream_domain")
    nats_hub_url: str = _d(NatsSection, "hub_url")
    nats_ca: str = _d(NatsSection, "ca")
    nats_hub_creds: str = _d(NatsSection, "hub_creds")
    nats_hub_ca: str = _d(NatsSection, "hub_ca")
    nats_authenticated: bool | None = _d(NatsSection, "authenticated")
    call_deadline_ms: int = _d(LimitsSection, "call_deadline_ms")
    max_memory_bytes: int = _d(LimitsSection, "max_memory_bytes")
    memory_budget_bytes: int = _d(LimitsSection, "memory_budget_bytes")
    max_instances: int = _d(LimitsSection, "max_instances")
    max_payload_bytes: int = _d(LimitsSection, "max_payload_bytes")
    max_queue: int = _d(LimitsSection, "max_queue")
    actor_queue_bytes: int = _d(LimitsSection, "actor_queue_bytes")
    node_queue_bytes: int = _d(LimitsSection, "node_queue_bytes")
    publish_bytes_per_s: int = _d(LimitsSection, "publish_bytes_per_s")
    log_line_bytes: int = _d(LimitsSection, "log_line_bytes")
    log_lines_per_s: float = _d(LimitsSection, "log_lines_per_s")
    log_burst_lines: int = _d(LimitsSection, "log_burst_lines")
    stop_timeout_s: float = _d(LimitsSection, "stop_timeout_s")
    heartbeat_interval_s: float = _d(LimitsSection, "heartbeat_interval_s")
    health_check_interval_s: float = _d(LimitsSection, "health_check_interval_s")
    remote_call_timeout_ms: int = _d(LimitsSection, "remote_call_timeout_ms")
    trap_backoff_base_ms: int = _d(LimitsSection, "trap_backoff_base_ms")
    trap_backoff_max_ms: int = _d(LimitsSection, "trap_backoff_max_ms")
    epoch_tick_ms: int = _d(RuntimeSection, "epoch_tick_ms")
    compile_in_subprocess: bool = _d(RuntimeSection, "compile_in_subprocess")
    compile_memory_bytes: int = _d(RuntimeSection, "compile_memory_bytes")
    compile_timeout_s: float = _d(RuntimeSection, "compile_timeout_s")
    compile_queue: int = _d(RuntimeSection, "compile_queue")
    cache_budget_bytes: int = _d(RuntimeSection, "cache_budget_bytes")
    cache_dir: Path | None = None
    trust_keys: list[str] = _d(TrustSection, "keys")
    trust_allow_unsigned: bool = _d(TrustSection, "allow_unsigned")
    trust_clock_skew_s: float = _d(TrustSection, "clock_skew_s")
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    actors: list[ActorSpec] = field(default_factory=list)
    links: list[LinkSpec] = field(default_factory=list)
    source: str = ""

    @property
    def authenticated(self) -> bool:
        """Whether the node is a member of an authenticated lattice (``[nats] authenticated``)."""
        if self.nats_authenticated is not None:
            return self.nats_authenticated
        return bool(self.nats_creds or self.nats_hub_creds)

    @property
    def compile_cache_dir(self) -> Path:
        return self.cache_dir or (self.data_dir / "cache")

    @property
    def artifact_cache_dir(self) -> Path:
        """Where the node keeps the artifacts it fetched from the lattice."""
        return self.data_dir / "artifacts"

    def check(self) -> None:
        """Checks across keys and of values set in code or on the command line (the
        file's values were checked against the declarations when it was parsed)."""
        _check_name(self.name, "node.name", self.source)
        _check_name(self.lattice, "node.lattice", self.source)
        check_labels(self.labels, "node.labels", self.source)
        for key, section in (("limits", LimitsSection), ("runtime", RuntimeSection)):
            table = {f.name: getattr(self, f.name) for f in msgspec.structs.fields(section) if f.name != "cache_dir"}
            _convert(table, section, key, self.source)
        nats = {"embedded_port": self.nats_embedded_port, "connect_timeout_s": self.nats_connect_timeout_s}
        _convert(nats, NatsSection, "nats", self.source)
        if self.nats_hub_url:
            _check_hub_url(self.nats_hub_url, bool(self.nats_url), self.source)
        for key in ("hub_creds", "hub_ca"):
            if getattr(self, f"nats_{key}") and not self.nats_hub_url:
                raise ConfigError("is for the embedded server's leaf connection: set nats.hub_url too",
                                  key=f"nats.{key}", path=self.source)
        _convert({"clock_skew_s": self.trust_clock_skew_s}, TrustSection, "trust", self.source)
        check_issuer_keys(self.trust_keys, "trust.keys", self.source)
        for key, low_key in (("trap_backoff_max_ms", "trap_backoff_base_ms"),
                             ("actor_queue_bytes", "max_payload_bytes"), ("node_queue_bytes", "actor_queue_bytes")):
            if getattr(self, key) < getattr(self, low_key):
                raise ConfigError(f"must be at least limits.{low_key} ({getattr(self, low_key)}), got "
                                  f"{getattr(self, key)}", key=f"limits.{key}", path=self.source)
        seen: set[str] = set()
        for i, link in enumerate(self.links):
            check_config_table(link.config, f"links[{i}].config", self.source)
        for i, actor in enumerate(self.actors):
            check_config_table(actor.config, f"actors[{i}].config", self.source)
            _check_name(actor.name, f"actors[{i}].name", self.source)
            if not 1 <= actor.instances <= self.max_instances:
                raise ConfigError(f"must be between 1 and limits.max_instances ({self.max_instances}), got "
                                  f"{actor.instances}", key=f"actors[{i}].instances", path=self.source)
            if actor.name in seen:
                raise ConfigError(f"actor {actor.name!r} is declared twice", key=f"actors[{i}].name",
                                  path=self.source)
            seen.add(actor.name)


#: The hub's JetStream domain, as systemd/nats-hub.conf.in names it: where a leaf's node finds the
#: lattice's artifacts and state unless ``[nats] jetstream_domain`` says otherwise.
HUB_JETSTREAM_DOMAIN = "hub"
#: URL schemes nats-server takes for a leafnode remote.
LEAF_SCHEMES = ("nats-leaf", "tls", "nats", "ws", "wss")


def _check_hub_url(url: str, external: bool, path: str) -> None:
    key = "nats.hub_url"
    if external:
        raise ConfigError("joins a hub through the embedded server; with nats.url (or --nats) set the node runs "
                          "none: leave one of them out", key=key, path=path)
    scheme, sep, rest = url.partition("://")
    host, colon, port = rest.rstrip("/").rpartition(":")
    if not sep or scheme not in LEAF_SCHEMES or not host or not colon or not port.isdigit() \
            or not 1 <= int(port) <= 65535 or any(c.isspace() or c in "\"'{}[]#;," for c in url):
        raise ConfigError(f"{url!r} is not a hub's leafnode URL: write <scheme>://<host>:<port> with a scheme of "
                          f"{', '.join(LEAF_SCHEMES)}, e.g. nats-leaf://127.0.0.1:7422", key=key, path=path)


def check_issuer_keys(keys: list[str], key: str, path: str) -> None:
    """Each of ``keys`` an account or operator public key."""
    from drupelet.node.security.keys import ISSUER_ROLES, BadKey, decode_public

    for i, value in enumerate(keys):
        try:
            decode_public(value, roles=ISSUER_ROLES)
        except BadKey as exc:
            raise ConfigError(f"{value[:8]}…: not an issuer public key ({exc.message}); actors are signed by "
                              "an account (A…) or operator (O…) key", key=f"{key}[{i}]", path=path) from None


def _check_name(value: str, key: str, path: str) -> None:
    if not NAME.match(value):
        raise ConfigError(f"{value!r} is not a valid name: use 1-63 of A-Z a-z 0-9 _ - (not starting with _ or -)",
                          key=key, path=path)


def check_labels(labels: Mapping[str, Any], key: str, path: str) -> None:
    if len(labels) > MAX_LABELS:
        raise ConfigError(f"{len(labels)} labels; a node has at most {MAX_LABELS}", key=key, path=path)
    for name, value in labels.items():
        if not LABEL_KEY.match(name) or not isinstance(value, str):
            raise ConfigError(f"label {name!r}={value!r}: keys are 1-63 of A-Z a-z 0-9 _ . - (not starting with "
                              ". _ or -), values strings", key=key, path=path)
        if len(value.encode()) > MAX_LABEL_VALUE_BYTES:
            raise ConfigError(f"label {name!r}: its value is {len(value.encode())} bytes; at most "
                              f"{MAX_LABEL_VALUE_BYTES}", key=key, path=path)


def check_config_table(table: Mapping[str, str], key: str, path: str) -> None:
    """An actor's or a link's config: bounded, so inventories stay small."""
    if len(table) > MAX_CONFIG_ENTRIES:
        raise ConfigError(f"{len(table)} entries; at most {MAX_CONFIG_ENTRIES}", key=key, path=path)
    total = 0
    for name, value in table.items():
        size = len(name.encode()), len(value.encode())
        if size[0] > MAX_CONFIG_KEY_BYTES or size[1] > MAX_CONFIG_VALUE_BYTES:
            raise ConfigError(f"{name[:40]!r}: keys are at most {MAX_CONFIG_KEY_BYTES} bytes, values "
                              f"{MAX_CONFIG_VALUE_BYTES}", key=key, path=path)
        total += sum(size)
    if total > MAX_CONFIG_BYTES:
        raise ConfigError(f"{total} bytes in all; at most {MAX_CONFIG_BYTES}", key=key, path=path)


def _string_table(value: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    """A table of scalars as strings (``5`` → ``"5"``, ``true`` → ``"true"``)."""
    out = {}
    for k, v in value.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        if isinstance(v, (int, float)):
            v = str(v)
        if not isinstance(v, str):
            raise ConfigError(f"value of {k!r} must be a string, number or boolean", key=key, path=path)
        out[str(k)] = v
    return out


def _typed(value: Any, expected: type | tuple[type, ...], key: str, path: str) -> Any:
    """One value against a plain type (the boot file's older checks use it)."""
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table",
             list: "a list"}
    want = " or ".join(names.get(t, t.__name__) for t in (expected if isinstance(expected, tuple) else (expected,)))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and expected is not bool:
        raise ConfigError(f"expected {want}, got a boolean", key=key, path=path)
    if not isinstance(value, expected):
        raise ConfigError(f"expected {want}, got {type(value).__name__} {value!r}", key=key, path=path)
    return value


def _convert(table: Any, cls: type[_Section], where: str, path: str) -> Any:
    try:
        return convert(table, cls, where=where)
    except SchemaError as exc:
        raise ConfigError(exc.reason, key=exc.key or where, path=path) from None


def _path(base: Path, value: str) -> Path:
    return base / Path(value).expanduser()


def parse(doc: Mapping[str, Any], *, path: str = "", base_dir: Path | None = None,
          check_providers: bool = True) -> NodeConfig:
    """Validate a parsed TOML document and build a :class:`NodeConfig`.

    ``check_providers``: validate each ``[providers.<name>]`` table against the installed
    provider's schema (the default; a config naming a provider that is not installed is
    refused)."""
    base = base_dir or Path.cwd()
    for top in doc:
        if top not in TOP_LEVEL:
            raise ConfigError(f"unknown section (known: {', '.join(sorted(TOP_LEVEL))})", key=top, path=path)
    node, nats, limits, runtime, trust = (_convert(doc.get(key, {}), cls, key, path)
                                          for key, cls in SECTIONS.items())
    cfg = NodeConfig(source=path)
    if node.name is not None:
        cfg.name = node.name
    cfg.lattice = node.lattice
    cfg.labels = _string_table(node.labels, "node.labels", path)
    if node.data_dir:
        cfg.data_dir = _path(base, node.data_dir)
    for f in msgspec.structs.fields(NatsSection):
        setattr(cfg, f"nats_{f.name}", getattr(nats, f.name))
    for key in ("creds", "ca", "hub_creds", "hub_ca"):
        if getattr(nats, key):
            setattr(cfg, f"nats_{key}", str(_path(base, getattr(nats, key))))
    for section in (limits, runtime):
        for f in msgspec.structs.fields(section):
            if f.name != "cache_dir":
                setattr(cfg, f.name, getattr(section, f.name))
    cfg.cache_dir = _path(base, runtime.cache_dir) if runtime.cache_dir else None
    cfg.trust_keys = [k.strip() for k in trust.keys]
    cfg.trust_allow_unsigned = trust.allow_unsigned
    cfg.trust_clock_skew_s = trust.clock_skew_s
    providers = doc.get("providers", {})
    if not isinstance(providers, dict) or not all(isinstance(v, dict) for v in providers.values()):
        raise ConfigError("expected tables [providers.<name>]", key="providers", path=path)
    cfg.providers = {k: dict(v) for k, v in providers.items()}
    if check_providers:
        check_provider_tables(cfg.providers, path=path)
    for i, entry in enumerate(_entries(doc, "actors", path)):
        actor = _convert(entry, ActorEntry, f"actors[{i}]", path)
        cfg.actors.append(ActorSpec(name=actor.name, file=base / actor.file, instances=actor.instances,
                                    config=_string_table(actor.config, f"actors[{i}].config", path)))
    for i, entry in enumerate(_entries(doc, "links", path)):
        link = _convert(entry, LinkEntry, f"links[{i}]", path)
        cfg.links.append(LinkSpec(source=link.source, interface=link.interface, target=link.target,
                                  config=_string_table(link.config, f"links[{i}].config", path)))
    cfg.check()
    return cfg


def _entries(doc: Mapping[str, Any], key: str, path: str) -> list[Any]:
    raw = doc.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"expected a list of tables ([[{key}]])", key=key, path=path)
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise ConfigError("expected a table", key=f"{key}[{i}]", path=path)
    return raw


ENABLED_KEY = "enabled"
"""The node's own key in every ``[providers.<name>]`` table (the rest is the provider's)."""


def provider_table(tables: Mapping[str, Mapping[str, Any]], name: str) -> dict[str, Any]:
    """A provider's own keys from the node config (without ``enabled``)."""
    table = dict(tables.get(name, {}))
    table.pop(ENABLED_KEY, None)
    return table


def check_provider_tables(tables: Mapping[str, Mapping[str, Any]], *, path: str = "") -> None:
    """Validate every ``[providers.<name>]`` table against its provider's schema, at load:
    a bad key fails the config, not the provider's first use."""
    installed = discover_providers()
    for name, table in tables.items():
        where = f"providers.{name}"
        flag = table.get(ENABLED_KEY, True)
        if not isinstance(flag, bool):
            raise ConfigError("expected true or false", key=f"{where}.{ENABLED_KEY}", path=path)
        cls = installed.get(name)
        if cls is None:
            raise ConfigError(f"no provider {name!r} is installed (installed: "
                              f"{', '.join(sorted(installed)) or 'none'})", key=where, path=path)
        if flag is False:
            continue
        try:
            cls.parse_config(provider_table(tables, name), where=where)
        except SchemaError as exc:
            raise ConfigError(exc.reason, key=exc.key or where, path=path) from exc
        except ValueError as exc:
            raise ConfigError(str(exc).removeprefix(f"{where}: "), key=where, path=path) from exc


def load(path: Path) -> NodeConfig:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=str(path)) from exc
    return parse(doc, path=str(path), base_dir=path.parent.resolve())


def schema_markdown() -> str:
    """The config reference as Markdown tables: the node's sections, ``[[actors]]``,
    ``[[links]]``, then every installed provider's ``[providers.<name>]``."""
    parts = []
    for key, cls in SECTIONS.items():
        parts.append(f"### [{key}]\n\n{markdown_table(key_docs(cls, derived=DERIVED.get(key)))}\n")
    for key, cls in ENTRIES.items():
        parts.append(f"### [[{key}]]\n\n{markdown_table(key_docs(cls))}\n")
    for name, provider in sorted(discover_providers().items()):
        schema = provider.config_schema
        doc = (provider.__doc__ or "").strip().splitlines()
        head = f"### [providers.{name}]\n\n" + (f"{doc[0].replace('``', '`')}\n\n" if doc else "")
        enabled = f"Every provider table also takes `{ENABLED_KEY} = false`, which keeps the provider from starting."
        if schema is None:
            parts.append(f"{head}This provider declares no schema: it checks its table when it starts. {enabled}\n")
        elif not msgspec.structs.fields(schema):
            parts.append(f"{head}No keys of its own. {enabled}\n")
        else:
            parts.append(f"{head}{markdown_table(key_docs(schema))}\n\n{enabled}\n")
    return "\n".join(parts)


__all__ = ["ActorEntry", "ActorSpec", "LABEL_KEY", "LimitsSection", "LinkEntry", "LinkSpec", "NAME", "NatsSection",
           "NodeConfig", "NodeSection", "RuntimeSection", "SECTIONS", "TrustSection", "check_labels", "check_provider_tables",
           "default_data_dir", "default_node_name", "load", "parse", "provider_table", "schema_markdown"]

