"""The node config: one TOML file, validated on load against one schema.

Every key, its type, default and meaning is in :data:`SCHEMA`; ``docs/config.md`` is
generated from the same table by ``drupelet config-doc``. An unknown key or a wrong type
is a :class:`~drupelet.node.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drupelet.node.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


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


# (section, key) -> (type, default, doc). A default of None means "derived", see doc.
SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], Any, str]]] = {
    "node": {
        "name": (str, None, "node name, unique in the lattice; default: the host name"),
        "lattice": (str, "default", "lattice name; subjects are drupelet.<lattice>.…"),
        "labels": (dict, {}, "labels (string → string) used to select nodes"),
        "data_dir": (str, None, "state, buckets and the compile cache; default: $STATE_DIRECTORY or ~/.local/state/drupelet"),
    },
    "nats": {
        "url": (str, "", "NATS server to connect to; empty: start an embedded nats-server"),
        "embedded_host": (str, "127.0.0.1", "listen address of the embedded server"),
        "embedded_port": (int, 4222, "client port of the embedded server (0: any free port)"),
        "embedded_jetstream": (bool, True, "enable JetStream on the embedded server"),
        "connect_timeout_s": (float, 5.0, "how long to wait for the first connection"),
        "creds": (str, "", "NATS credentials file for the connection"),
        "jetstream_domain": (str, "", "JetStream domain of the lattice's shared artifacts and state (the hub's, in a leaf setup); empty: the connected server's"),
    },
    "limits": {
        "call_deadline_ms": (int, 5000, "how long one call into an actor may run (epoch deadline)"),
        "max_memory_bytes": (int, 256 << 20, "linear-memory cap per actor instance"),
        "max_payload_bytes": (int, 1 << 20, "largest message body or value an actor may send or receive"),
        "max_queue": (int, 1000, "messages waiting per actor before deliveries are refused"),
        "stop_timeout_s": (float, 5.0, "how long stopping an actor waits for in-flight calls"),
        "remote_call_timeout_ms": (int, 2000, "deadline of a call to a provider on another node (a link's "
                                   "timeout_ms config overrides it)"),
        "health_check_interval_s": (float, 5.0, "how often provider health is read; a change is an event"),
        "heartbeat_interval_s": (float, 30.0, "how often the node publishes a heartbeat event with its inventory"),
        "trap_backoff_base_ms": (int, 100, "first delay before replacing an instance that keeps trapping"),
        "trap_backoff_max_ms": (int, 30000, "longest such delay"),
    },
    "runtime": {
        "epoch_tick_ms": (int, 10, "granularity of call deadlines"),
        "compile_in_subprocess": (bool, True, "compile components in a short-lived child process"),
        "cache_dir": (str, None, "compile cache; default: <data_dir>/cache"),
    },
}

ACTOR_KEYS: dict[str, tuple[type | tuple[type, ...], Any, str]] = {
    "name": (str, None, "actor name (required)"),
    "file": (str, None, "path to the component, relative to the config file (required)"),
    "instances": (int, 1, "how many instances to run"),
    "config": (dict, {}, "config values the actor reads through wasi:config"),
}

LINK_KEYS: dict[str, tuple[type | tuple[type, ...], Any, str]] = {
    "source": (str, None, "actor name (required)"),
    "interface": (str, None, "an interface (wasi:keyvalue/store) or a package (wasi:keyvalue) (required)"),
    "target": (str, None, "local/<provider> or <node>/<provider> (required)"),
    "config": (dict, {}, "link config, string values"),
}


@dataclass(frozen=True)
class ActorSpec:
    name: str
    file: Path
    instances: int = 1
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LinkSpec:
    source: str
    interface: str
    target: str
    config: dict[str, str] = field(default_factory=dict)


@dataclass
class NodeConfig:
    name: str = field(default_factory=default_node_name)
    lattice: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    data_dir: Path = field(default_factory=default_data_dir)
    nats_url: str = ""
    nats_embedded_host: str = "127.0.0.1"
    nats_embedded_port: int = 4222
    nats_embedded_jetstream: bool = True
    nats_connect_timeout_s: float = 5.0
    nats_creds: str = ""
    nats_jetstream_domain: str = ""
    call_deadline_ms: int = 5000
    max_memory_bytes: int = 256 << 20
    max_payload_bytes: int = 1 << 20
    max_queue: int = 1000
    stop_timeout_s: float = 5.0
    heartbeat_interval_s: float = 30.0
    health_check_interval_s: float = 5.0
    remote_call_timeout_ms: int = 2000
    trap_backoff_base_ms: int = 100
    trap_backoff_max_ms: int = 30000
    epoch_tick_ms: int = 10
    compile_in_subprocess: bool = True
    cache_dir: Path | None = None
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    actors: list[ActorSpec] = field(default_factory=list)
    links: list[LinkSpec] = field(default_factory=list)
    source: str = ""

    @property
    def compile_cache_dir(self) -> Path:
        return self.cache_dir or (self.data_dir / "cache")

    def check(self) -> None:
        """Cross-field checks, also run after command-line overrides."""
        _check_name(self.name, "node.name", self.source)
        _check_name(self.lattice, "node.lattice", self.source)
        for key, value in self.labels.items():
            if not LABEL_KEY.match(key) or not isinstance(value, str):
                raise ConfigError(f"label {key!r}={value!r}: keys are [A-Za-z0-9_.-], values strings",
                                  key="node.labels", path=self.source)
        positive: dict[str, int | float] = {
            "limits.call_deadline_ms": self.call_deadline_ms,
            "limits.max_memory_bytes": self.max_memory_bytes,
            "limits.max_payload_bytes": self.max_payload_bytes,
            "limits.max_queue": self.max_queue,
            "runtime.epoch_tick_ms": self.epoch_tick_ms,
            "nats.connect_timeout_s": self.nats_connect_timeout_s,
            "limits.heartbeat_interval_s": self.heartbeat_interval_s,
            "limits.health_check_interval_s": self.health_check_interval_s,
            "limits.remote_call_timeout_ms": self.remote_call_timeout_ms,
        }
        for limit_key, limit in positive.items():
            if limit <= 0:
                raise ConfigError(f"must be greater than 0, got {limit}", key=limit_key, path=self.source)
        not_negative: dict[str, int | float] = {
            "limits.stop_timeout_s": self.stop_timeout_s,
            "limits.trap_backoff_base_ms": self.trap_backoff_base_ms,
            "limits.trap_backoff_max_ms": self.trap_backoff_max_ms,
        }
        for limit_key, limit in not_negative.items():
            if limit < 0:
                raise ConfigError(f"must not be negative, got {limit}", key=limit_key, path=self.source)
        if self.trap_backoff_max_ms < self.trap_backoff_base_ms:
            raise ConfigError(f"must be at least limits.trap_backoff_base_ms ({self.trap_backoff_base_ms}), "
                              f"got {self.trap_backoff_max_ms}", key="limits.trap_backoff_max_ms", path=self.source)
        if not 0 <= self.nats_embedded_port <= 65535:
            raise ConfigError(f"not a port number: {self.nats_embedded_port}", key="nats.embedded_port",
                              path=self.source)
        seen: set[str] = set()
        for i, actor in enumerate(self.actors):
            if actor.name in seen:
                raise ConfigError(f"actor {actor.name!r} is declared twice", key=f"actors[{i}].name",
                                  path=self.source)
            seen.add(actor.name)


def _check_name(value: str, key: str, path: str) -> None:
    if not NAME.match(value):
        raise ConfigError(f"{value!r} is not a valid name: use 1-63 of A-Z a-z 0-9 _ - (not starting with _ or -)",
                          key=key, path=path)


def _typed(value: Any, expected: type | tuple[type, ...], key: str, path: str) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and expected is not bool:
        raise ConfigError(f"expected {_type_name(expected)}, got a boolean", key=key, path=path)
    if not isinstance(value, expected):
        raise ConfigError(f"expected {_type_name(expected)}, got {type(value).__name__} {value!r}", key=key, path=path)
    return value


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table", list: "a list"}
    if isinstance(t, tuple):
        return " or ".join(names.get(x, x.__name__) for x in t)
    return names.get(t, t.__name__)


def _string_table(value: dict[str, Any], key: str, path: str) -> dict[str, str]:
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


def _entries(raw: Any, section: str, keys: dict[str, tuple[Any, Any, str]], path: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"expected a list of tables ([[{section}]])", key=section, path=path)
    out = []
    for i, entry in enumerate(raw):
        where = f"{section}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError("expected a table", key=where, path=path)
        for k in entry:
            if k not in keys:
                raise ConfigError(f"unknown key (known: {', '.join(keys)})", key=f"{where}.{k}", path=path)
        values: dict[str, Any] = {}
        for k, (typ, default, _doc) in keys.items():
            if k not in entry:
                if default is None:
                    raise ConfigError("is required", key=f"{where}.{k}", path=path)
                values[k] = default
                continue
            values[k] = _typed(entry[k], typ, f"{where}.{k}", path)
        values["config"] = _string_table(values["config"], f"{where}.config", path)
        out.append(values)
    return out


def parse(doc: dict[str, Any], *, path: str = "", base_dir: Path | None = None) -> NodeConfig:
    """Validate a parsed TOML document and build a NodeConfig."""
    base = base_dir or Path.cwd()
    cfg = NodeConfig(source=path)
    known_top = set(SCHEMA) | {"providers", "actors", "links"}
    for top in doc:
        if top not in known_top:
            raise ConfigError(f"unknown section (known: {', '.join(sorted(known_top))})", key=top, path=path)
    for section, keys in SCHEMA.items():
        table = doc.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError("expected a table", key=section, path=path)
        for k in table:
            if k not in keys:
                raise ConfigError(f"unknown key (known: {', '.join(keys)})", key=f"{section}.{k}", path=path)
        for k, (typ, _default, _doc) in keys.items():
            if k not in table:
                continue
            value = _typed(table[k], typ, f"{section}.{k}", path)
            attr = k if section in ("node", "limits", "runtime") else f"nats_{k}"
            if k == "labels":
                value = _string_table(value, "node.labels", path)
            if k in ("data_dir", "cache_dir", "creds"):
                value = (base / Path(value).expanduser()) if value else None
                if value is None:
                    continue
                if k == "creds":
                    value = str(value)
            setattr(cfg, attr, value)
    providers = doc.get("providers", {})
    if not isinstance(providers, dict) or not all(isinstance(v, dict) for v in providers.values()):
        raise ConfigError("expected tables [providers.<name>]", key="providers", path=path)
    cfg.providers = {k: dict(v) for k, v in providers.items()}
    for values in _entries(doc.get("actors"), "actors", ACTOR_KEYS, path):
        cfg.actors.append(ActorSpec(name=values["name"], file=base / values["file"], instances=values["instances"],
                                    config=values["config"]))
    for values in _entries(doc.get("links"), "links", LINK_KEYS, path):
        cfg.links.append(LinkSpec(**values))
    cfg.check()
    return cfg


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
    """The config reference as Markdown tables (used by the docs)."""
    lines = []
    for section, keys in SCHEMA.items():
        lines += [f"### [{section}]", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for k, (typ, default, doc) in keys.items():
            shown = "(derived)" if default is None else f"`{_toml(default)}`"
            lines.append(f"| `{k}` | {_type_name(typ)} | {shown} | {_md(doc)} |")
        lines.append("")
    for title, keys in (("[[actors]]", ACTOR_KEYS), ("[[links]]", LINK_KEYS)):
        lines += [f"### {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for k, (typ, default, doc) in keys.items():
            shown = "—" if default is None else f"`{_toml(default)}`"
            lines.append(f"| `{k}` | {_type_name(typ)} | {shown} | {_md(doc)} |")
        lines.append("")
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{}"
    return str(value)


def _md(text: str) -> str:
    """Placeholders like <data_dir> and paths in backticks, so Markdown keeps them."""
    return re.sub(r"(\S*<[^>\s]+>\S*)", r"`\1`", text)
