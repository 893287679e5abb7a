"""The lattice state's keys and values, declared once: pure functions and Structs.

Keys are ``.``-separated tokens (see :mod:`drupelet.node.lattice.state` for the table);
values are checked against :data:`STATE_VALUES` by :func:`check_value`. Nothing here
touches NATS or the disk.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal, NamedTuple

import msgspec

from drupelet.node.lattice import subjects, wire
from drupelet.node.lattice.errors import BadStateEntry
from drupelet.node.lattice.wire import ConfigMap, Labels

TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
_HEX = re.compile(r"^(?:[0-9a-f]{2})+$")

Kind = Literal["link", "config", "actor", "labels", "revoked"]

class LinkValue(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """``link.<source>.<hex interface>``: actor ``source``'s import of ``interface``."""

    source: Annotated[str, msgspec.Meta(description="the actor's name (the key's <source>)")]
    interface: Annotated[str, msgspec.Meta(description="one interface (the key's <hex interface>)")]
    target: Annotated[str, msgspec.Meta(description="local/<provider> or <node>/<provider>")]
    config: Annotated[ConfigMap, msgspec.Meta(description="the link config")]


class ActorValue(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """``actor.<node>.<name>``: run ``instances`` of the component ``digest`` on ``node``."""

    name: Annotated[str, msgspec.Meta(description="the actor's name (the key's <actor>)")]
    digest: Annotated[str, msgspec.Meta(description="the artifact's SHA-256")]
    instances: Annotated[int, msgspec.Meta(ge=0, description="instances to run")]
    config: Annotated[ConfigMap, msgspec.Meta(description="the actor's wasi:config values")]
    node: Annotated[str, msgspec.Meta(description="the node that runs it (the key's <node>)")]


class RevokedValue(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """``revoked.<key>``: actors whose claims' subject or issuer is ``key`` run nowhere."""

    key: Annotated[str, msgspec.Meta(max_length=56, description="the public nkey (the key's <key>): an actor "
                                                                "subject M… or an issuer A…/O…")]
    revoked_at: Annotated[float, msgspec.Meta(ge=0, description="Unix time in seconds")]


STATE_VALUES: Final[dict[Kind, Any]] = {"link": LinkValue, "actor": ActorValue, "config": ConfigMap, "labels": Labels,
                                        "revoked": RevokedValue}
"""The declared value of each kind of key: a Struct, or a bounded string → string table."""
_WHOLE: Final[dict[Kind, str]] = {"config": "the named config", "labels": "the labels"}

Writer = Literal["admin", "node"]
WRITERS: Final[dict[Kind, Writer]] = {"link": "admin", "config": "admin", "actor": "admin", "revoked": "admin",
                                      "labels": "node"}
"""Who writes each kind of key in an authenticated lattice: ``admin`` (an admin's client;
nodes only read it) or ``node`` (the node its key names, and admins). The roles' permissions
(:mod:`drupelet.node.lattice.roles`) are derived from this table: a new kind of key is one
line here."""


class StateKey(NamedTuple):
    """A parsed key: ``kind`` and its decoded names.

    ``link`` → (source, interface); ``actor`` → (node, actor); ``config`` → (name,);
    ``labels`` → (node,).
    """

    kind: Kind
    names: tuple[str, ...]


# -- keys (pure functions) ----------------------------------------------------------


def bucket_name(lattice: str) -> str:
    """The KV bucket holding ``lattice``'s shared state."""
    return f"drupelet-{_token(lattice, 'lattice')}-state"


def kv_subject(bucket: str, key: str, domain: str | None = None) -> str:
    """The subject a write to ``key`` is published on (:func:`subjects.kv_put`)."""
    return subjects.kv_put(bucket, key, domain)


def encode_interface(interface: str) -> str:
    """``wasi:keyvalue/store`` → lowercase hex of its UTF-8 bytes (one key token)."""
    if not interface:
        raise BadStateEntry("an interface cannot be empty")
    return interface.encode("utf-8").hex()


def decode_interface(token: str) -> str:
    """The inverse of :func:`encode_interface`; only its exact output is accepted."""
    if not _HEX.match(token):
        raise BadStateEntry(f"{token!r} is not a hex-encoded interface")
    try:
        return bytes.fromhex(token).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadStateEntry(f"{token!r} does not decode to UTF-8 text") from exc


def link_key(source: str, interface: str) -> str:
    return f"link.{_token(source, 'actor')}.{encode_interface(interface)}"


def actor_key(node: str, actor: str) -> str:
    return f"actor.{_token(node, 'node')}.{_token(actor, 'actor')}"


def config_key(name: str) -> str:
    return f"config.{_token(name, 'config name')}"


def labels_key(node: str) -> str:
    return f"labels.{_token(node, 'node')}"


def revoked_key(key: str) -> str:
    return f"revoked.{_token(key, 'revoked key')}"


OWN_KEYS: Final[dict[Kind, Callable[[str], str]]] = {"labels": labels_key}
"""The key a node writes, by node name, for each kind :data:`WRITERS` gives to nodes."""


def own_keys(node: str) -> list[str]:
    """The keys ``node`` may write itself."""
    return [make(node) for make in OWN_KEYS.values()]


def parse_key(key: str) -> StateKey:
    """Split a state key into its kind and decoded names; :class:`BadStateEntry` if it
    is not one of the shapes in the module docstring."""
    parts = key.split(".")
    kind = parts[0]
    if not all(TOKEN.match(p) for p in parts):
        raise BadStateEntry(f"{key!r} is not a state key: tokens are A-Z a-z 0-9 _ -", key=key)
    if kind == "link" and len(parts) == 3:
        try:
            return StateKey("link", (parts[1], decode_interface(parts[2])))
        except BadStateEntry as exc:
            raise BadStateEntry(f"{key!r} is not a link key: {exc.message}", key=key) from exc
    if kind == "actor" and len(parts) == 3:
        return StateKey("actor", (parts[1], parts[2]))
    if kind == "config" and len(parts) == 2:
        return StateKey("config", (parts[1],))
    if kind == "labels" and len(parts) == 2:
        return StateKey("labels", (parts[1],))
    if kind == "revoked" and len(parts) == 2:
        return StateKey("revoked", (parts[1],))
    raise BadStateEntry(f"{key!r} is not a state key (link.<actor>.<hex interface>, config.<name>, "
                        "actor.<node>.<actor>, labels.<node> or revoked.<key>)", key=key)


def _token(value: str, what: str) -> str:
    if not isinstance(value, str) or not TOKEN.match(value):
        raise BadStateEntry(f"{what} {value!r} cannot be part of a state key: use A-Z a-z 0-9 _ -")
    return value


# -- values -------------------------------------------------------------------------


def check_value(key: str, value: object) -> dict[str, Any]:
    """Validate ``value`` for ``key`` against :data:`STATE_VALUES`; return a copy, with any
    fields a newer node added. :class:`BadStateEntry` names the key and what is wrong."""
    parsed = parse_key(key)
    if not isinstance(value, Mapping):
        raise BadStateEntry(f"{key}: the value must be a JSON object, not {type(value).__name__}", key=key)
    clean: dict[str, Any] = copy.deepcopy(dict(value))
    problem = _value_fault(parsed.kind, clean)
    if problem is not None:
        raise BadStateEntry(f"{key}: {problem}", key=key)
    if parsed.kind == "link" and (clean["source"], clean["interface"]) != parsed.names:
        expected = parsed.names
        raise BadStateEntry(f"{key}: the value is for {clean['source']}'s {clean['interface']}, "
                            f"not {expected[0]}'s {expected[1]}", key=key)
    if parsed.kind == "actor" and (clean["node"], clean["name"]) != parsed.names:
        raise BadStateEntry(f"{key}: the value is for actor {clean['name']} on {clean['node']}", key=key)
    if parsed.kind == "revoked" and clean["key"] != parsed.names[0]:
        raise BadStateEntry(f"{key}: the value revokes {clean['key']}", key=key)
    return clean


def _value_fault(kind: Kind, value: dict[str, Any]) -> str | None:
    """What is wrong with ``value`` as the declared value of ``kind``, or None. msgspec
    validates; :mod:`~drupelet.node.lattice.wire` says it in words (and counts UTF-8 bytes)."""
    declared = STATE_VALUES[kind]
    try:
        msgspec.convert(value, type=declared, strict=True)
        refused = ""
    except msgspec.ValidationError as exc:
        refused = str(exc)
    if kind in _WHOLE:
        problem = wire.fault(declared, value, _WHOLE[kind])
    else:
        found = wire.struct_fault(declared, value)
        problem = f"{found[0]}: {found[1]}" if found is not None else None
    return problem or refused or None
