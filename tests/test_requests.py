"""Control request bodies, declared once in drupelet.node.lattice.requests: validation,
the replies' words, the bounds, and the protocol document's tables."""

from __future__ import annotations

import random
import types
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
from nats.aio.client import Client as NatsClient

from drupelet.node.host.api import HostApi
from drupelet.node.lattice import requests, wire
from drupelet.node.lattice.admin import LATTICE_WRITES
from drupelet.node.lattice.control import ControlPlane, Route
from drupelet.node.lattice.errors import BadRequest, UnknownRequest
from drupelet.node.lattice.requests import (LATTICE_REQUESTS, NODE_REQUESTS, REQUESTS, ActorStart, DisplaySnapshot,
                                            GpioSimulate, markdown_requests, parse)

ROOT = Path(__file__).resolve().parent.parent
DIGEST = "ab" * 32


@pytest.mark.parametrize("verb,body,field,message", [
    ("actor.scale", {"name": "echo", "instances": "many"}, "instances",
     "instances: must be an integer, got a string 'many'"),
    ("actor.scale", {"name": "echo", "instances": 0}, "instances", "instances: must be between 1 and 1000, got 0"),
    ("actor.scale", {"name": "echo", "instances": True}, "instances", "instances: must be an integer, got true"),
    ("actor.scale", {"name": "echo"}, "instances", "instances: is required"),
    ("actor.stop", {"name": "echo", "force": True}, "", "unknown field(s) force (allowed: name)"),
    ("actor.stop", {}, "name", "name: is required"),
    ("actor.stop", {"name": None}, "name", "name: is required"),
    ("actor.stop", {"name": "../etc"}, "name",
     "name: '../etc' is not valid: 1 to 63 of A-Z a-z 0-9 _ -, starting with a letter or digit"),
    ("actor.start", {"name": "x", "digest": "abc"}, "digest", "digest: 'abc' is not valid: sha256: and 64 hex digits"),
    ("actor.start", {"name": "x"}, "", "give exactly one of digest or reference"),
    ("actor.start", {"name": "x", "digest": DIGEST, "reference": "counter"}, "",
     "give exactly one of digest or reference"),
    ("actor.start", {"name": "x", "reference": "r" * 257}, "reference",
     "reference: must be at most 256 bytes (UTF-8), got 257"),
    ("actor.start", {"name": "x", "reference": "c", "config": {"n": 1}}, "config",
     "config: must be an object of strings, but the value of 'n' is an integer 1"),
    ("inventory", {"verbose": True}, "",
     "unknown field(s) verbose (this request takes none: send {} or an empty body)"),
    ("labels.put", {"labels": {"k": 1}}, "labels", "labels: must be an object of strings, but the value of 'k' is"),
    ("labels.put", {"labels": [1]}, "labels", "labels: must be an object of strings, got a list"),
    ("labels.put", {"labels": {"a b": "1"}}, "labels",
     "labels: key 'a b' is not valid: 1 to 63 of A-Z a-z 0-9 _ . -, starting with a letter or digit"),
    ("labels.del", {"keys": ["a", 2]}, "keys", "keys: must be a list of strings, but item 1 is an integer 2"),
    ("gpio.simulate", {"pin": 17, "level": "low"}, "level", "level: must be true or false, got a string 'low'"),
    ("gpio.simulate", {"level": True}, "pin", "pin: is required"),
    ("gpio.simulate", {"pin": 64, "level": True}, "pin", "pin: must be between 0 and 63, got 64"),
    ("display.snapshot", {"provider": ""}, "provider", "provider: '' is not valid"),
    ("link.put", {"source": "a", "interface": "wasi:keyvalue"}, "target", "target: is required"),
    ("config.put", {"name": "x", "values": "a=b"}, "values", "values: must be an object of strings, got a string"),
])
def test_a_body_that_does_not_fit_is_refused_in_one_line(verb: str, body: dict[str, Any], field: str,
                                                         message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse(verb, body)
    assert info.value.code == "bad-request" and info.value.field == field
    assert info.value.message.startswith(message), info.value.message
    assert "\n" not in info.value.message


def test_an_unknown_verb_is_an_unknown_request() -> None:
    with pytest.raises(UnknownRequest, match="unknown request 'actor.explode' \\(known: actor.list, "):
        parse("actor.explode", {})


def test_a_body_that_fits_gets_its_defaults() -> None:
    start = parse("actor.start", {"name": "echo", "digest": "sha256:" + DIGEST})
    assert start == ActorStart(name="echo", digest="sha256:" + DIGEST, reference=None, instances=1, config={})
    assert parse("actor.start", {"name": "e", "reference": "echo", "instances": None, "config": {"a": "b"}}) == \
        ActorStart(name="e", reference="echo", config={"a": "b"})
    assert parse("display.snapshot", {}) == DisplaySnapshot(provider="display")
    assert parse("gpio.simulate", {"pin": 0, "level": False}) == GpioSimulate(pin=0, level=False, provider="gpio")
    assert parse("link.list", {}) == requests.LinkList()


@pytest.mark.parametrize("verb,body,message", [
    ("labels.put", {"labels": {"note": "x" * (wire.MAX_LABEL_VALUE_BYTES + 1)}},
     "labels: the value of 'note' must be at most 256 bytes (UTF-8), got 257"),
    # 200 characters but 400 bytes: msgspec counts characters, the bound is in bytes
    ("labels.put", {"labels": {"note": "é" * 200}},
     "labels: the value of 'note' must be at most 256 bytes (UTF-8), got 400"),
    ("labels.put", {"labels": {f"k{i}": "v" for i in range(wire.MAX_LABELS + 1)}},
     "labels: must have at most 64 entries, got 65"),
    ("config.put", {"name": "x", "values": {"pem": "x" * (wire.MAX_CONFIG_VALUE_BYTES + 1)}},
     "values: the value of 'pem' must be at most 4096 bytes (UTF-8), got 4097"),
    ("config.put", {"name": "x", "values": {"k" * 257: "v"}},
     "values: key 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk…' must be at most 256 bytes (UTF-8), got 257"),
    ("config.put", {"name": "x", "values": {f"k{i}": "v" * 1000 for i in range(17)}},
     "values: must be at most 16384 bytes in all (keys and values, UTF-8), got 17041"),
    ("link.put", {"source": "a", "interface": "wasi:keyvalue", "target": "local/keyvalue",
                  "config": {f"k{i}": "v" for i in range(wire.MAX_CONFIG_ENTRIES + 1)}},
     "config: must have at most 64 entries, got 65"),
    ("actor.start", {"name": "a", "reference": "c", "config": {"x": "y" * 5000}},
     "config: the value of 'x' must be at most 4096 bytes (UTF-8), got 5000"),
])
def test_sizes_are_bounded(verb: str, body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse(verb, body)
    assert info.value.code == "bad-request" and info.value.message.startswith(message), info.value.message


def test_the_labels_a_put_would_leave_are_bounded_too() -> None:
    requests.check_labels_total({f"k{i}": "v" for i in range(wire.MAX_LABELS)})
    with pytest.raises(BadRequest, match="labels: the node would have 65 labels; at most 64 are allowed"):
        requests.check_labels_total({f"k{i}": "v" for i in range(wire.MAX_LABELS + 1)})


def _noise(rng: random.Random, depth: int = 0) -> Any:
    choices: list[Any] = [None, True, False, 0, -1, 1, 63, 64, 1000, 1001, 2 ** 40, 1.5, "", "echo", "../etc",
                          "sha256:" + DIGEST, DIGEST, "é" * 300, "x" * 5000, "local/keyvalue"]
    if depth < 2:
        choices += [[_noise(rng, depth + 1) for _ in range(rng.randrange(3))],
                    {rng.choice(["a", "k", "a b", "é"]): _noise(rng, depth + 1) for _ in range(rng.randrange(3))}]
    return rng.choice(choices)


def test_any_body_is_a_request_or_a_one_line_bad_request() -> None:
    """Fuzzed bodies: parse never fails with anything but BadRequest, never with two lines."""
    rng = random.Random(8)
    accepted = 0
    for _ in range(3000):
        verb = rng.choice(sorted(REQUESTS))
        names = [f.encode_name for f in msgspec.structs.fields(REQUESTS[verb])] + ["extra"]
        body = {name: _noise(rng) for name in rng.sample(names, rng.randrange(len(names) + 1))}
        try:
            parsed = parse(verb, body)
        except BadRequest as exc:
            assert exc.message and "\n" not in exc.message, (verb, body, exc.message)
            assert exc.field == "" or exc.field in names, (verb, body, exc.field)
        else:
            accepted += 1
            assert isinstance(parsed, REQUESTS[verb])
            assert wire.struct_fault(REQUESTS[verb], msgspec.to_builtins(parsed)) is None
    assert accepted > 50  # the fuzz also reaches bodies that fit


def test_every_verb_the_control_plane_serves_is_declared_and_routed_to_its_struct() -> None:
    """Every node verb; of the lattice verbs the reads (an admin's client writes the others
    into the lattice state itself: a node's credentials may not)."""
    host = cast(HostApi, types.SimpleNamespace(lattice="t", name="n"))
    plane = ControlPlane(host, cast(NatsClient, object()))
    lattice_reads = {v: c for v, c in LATTICE_REQUESTS.items() if c.reads}
    assert sorted(lattice_reads) == ["config.get", "link.list", "revocation.list"]
    for tables, declared in ((plane.node_verbs, NODE_REQUESTS), (plane.lattice_verbs, lattice_reads)):
        assert sorted(tables) == sorted(declared)
        for verb, handler in tables.items():
            assert isinstance(handler, Route) and handler.request is declared[verb], verb
    assert sorted(LATTICE_WRITES) == ["config.put", "link.del", "link.put", "revocation.put"]


def test_every_field_is_described() -> None:
    for verb, cls in REQUESTS.items():
        assert (cls.__doc__ or "").strip(), verb
        for f in msgspec.structs.fields(cls):
            meta = wire.meta_of(f.type)
            assert meta is not None and meta.description, f"{verb}.{f.encode_name} has no description"


def test_the_protocol_document_has_the_generated_request_tables() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    for verbs in (NODE_REQUESTS, LATTICE_REQUESTS):
        assert markdown_requests(verbs) in doc, (
            "docs/protocol.md's request tables are stale: paste python -c 'from drupelet.node.lattice.requests "
            "import *; print(markdown_requests(NODE_REQUESTS))' (and LATTICE_REQUESTS) in their place")


def test_the_tables_show_types_defaults_and_bounds() -> None:
    text = markdown_requests(["actor.start", "inventory"])
    assert "| `instances` | integer, 1 to 1000 | `1` | instances to run |" in text
    assert "| `name` | string: 1 to 63 of A-Z a-z 0-9 _ -, starting with a letter or digit | required |" in text
    assert "values at most 4096 bytes; 16384 bytes in all | `{}` |" in text
    assert "**`inventory`**: The node's inventory. No fields: the body is `{}` or empty." in text
