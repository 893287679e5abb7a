"""The fuzz of a running node: hypothesis strategies for hostile payloads, and a campaign
that sends them to every control subject, every provider-call subject and an actor's
delivery subject, counting what came back.

Used by tests/test_fuzz.py (a few thousand messages in the default run) and by
scripts/fuzz.sh (100,000 or more, or a number of seconds, with the counts printed).

What a campaign checks, for every message:

* a request with a reply subject gets a reply before its timeout (``unanswered`` counts
  those that did not);
* a control or provider-call reply is a drupelet envelope (``{"ok": …}``), and never
  ``internal`` (a handler's exception); a delivery's reply is the actor's answer or the
  ``Drupelet-Error`` headers;
* a request that would change the node (``actor.stop``, ``link.put``…) is sent only when
  it does not parse: malformed input must change nothing, and the state is compared
  afterwards (tests/test_fuzz.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drupelet.node.lattice import protocol, requests, subjects
from drupelet.node.lattice.errors import BadRequest

LATTICE = "test"
NODE = "pi-1"
ACTOR = "e1"
SOURCE = "a"
"""The actor whose links to every provider of the node the provider calls claim to come from."""

READ_ONLY = frozenset(requests.read_verbs(requests.REQUESTS))
"""Control verbs that change nothing even when they parse: sent with any body."""
LATTICE_ANSWERED = sorted(requests.read_verbs(requests.LATTICE_REQUESTS))
"""The lattice verbs a node answers: the others (``link.put``…) an admin's client writes into
the lattice state itself, and no node subscribes to them."""

PROVIDER_OPS: dict[str, tuple[str, list[str]]] = {
    "keyvalue": ("wasi:keyvalue/store", ["open", "handle.get", "handle.set", "handle.delete", "handle.exists",
                                         "handle.list_keys", "handle.increment", "handle.get_many",
                                         "handle.set_many", "handle.delete_many", "handle.release", "handle.x"]),
    "messaging": ("wasmcloud:messaging/consumer", ["publish", "request", "subscribe"]),
    "gpio": ("drupelet:hardware/gpio", ["configure_input", "configure_output", "read", "write", "toggle",
                                        "set_pwm", "stop"]),
    "i2c": ("drupelet:hardware/i2c-bus", ["open", "buses", "handle.read", "handle.write", "handle.transaction",
                                          "handle.write_read", "handle.release"]),
    "display": ("drupelet:hardware/display", ["info", "clear", "text", "line", "rectangle", "image", "flush",
                                              "contrast", "power"]),
    "clock": ("drupelet:hardware/clock", ["now"]),
    "nosuch": ("x:y/z", ["open"]),
}
"""Provider-call subjects, each with its link's interface and the operations tried on it
(real ones, and some that are not)."""

MAGIC = (b"spin", b"logs", b"publ")
"""Bodies that make the hostile actor misbehave on purpose (tests/test_budgets.py sends those);
any other body it echoes."""


# -- payloads ---------------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                | st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=20)
"""Any JSON value: what a field sent with the wrong type looks like."""

raw_hostile = st.sampled_from([
    b"", b" ", b"null", b"[]", b"0", b'"x"', b"{", b"}", b"\xff\xfe", b'{"a":', b"[" * 5000 + b"]" * 5000,
    b'{"x":' * 3000 + b"1" + b"}" * 3000, b"9" * 5000, b'{"name":' + b"9" * 5000 + b"}",
    b'{"op":["open"]}', b'{"args":"k"}', b'{"handle":1e400}', b'{"name":"\\ud800"}', b"\x00" * 64,
    b'{"labels":{"big":"' + b"x" * 1_000_000 + b'"}}', b'{"name":"' + b"x" * 300_000 + b'"}',
])
"""Bytes that broke a node before, or might: nesting past the recursion limit, integers past
the digit limit, lone surrogates, a megabyte of label."""


def truncated(body: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(0, max(0, len(body) - 1)).map(lambda n: body[:n])


def bodies_for(fields: list[str]) -> st.SearchStrategy[bytes]:
    """Objects with a request's own field names (and others), valued by anything: wrongly
    typed, out of range, oversized; and those, truncated."""
    keys = st.sampled_from(fields + ["extra", "$b"]) if fields else st.sampled_from(["extra", "name"])
    oversized = st.integers(1, 4).map(lambda n: "x" * (70_000 * n))
    objects = st.dictionaries(keys, json_values | oversized | st.sampled_from([ACTOR, NODE, "", "local/keyvalue"]),
                              max_size=len(fields) + 2)
    encoded = objects.map(lambda d: json.dumps(d).encode())
    return st.one_of(encoded, encoded.flatmap(truncated), st.binary(max_size=300), raw_hostile,
                     json_values.map(lambda v: json.dumps(v).encode()))


def _field_names(verb: str) -> list[str]:
    import msgspec

    return [f.encode_name for f in msgspec.structs.fields(requests.REQUESTS[verb])]


@st.composite
def control_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """(subject, body): a node verb, a lattice verb or one neither knows, with a body that
    does not parse when the verb would change something."""
    kind = draw(st.sampled_from(["node", "lattice", "unknown"]))
    if kind == "unknown":
        verb = draw(st.sampled_from(["nope", "actor", "actor.start.x", "ping", "inventory.x"]))
        return subjects.node_control(LATTICE, NODE, verb), draw(bodies_for([]))
    verbs = sorted(requests.NODE_REQUESTS) if kind == "node" else LATTICE_ANSWERED
    verb = draw(st.sampled_from(verbs))
    body = draw(bodies_for(_field_names(verb)))
    if verb not in READ_ONLY:
        body = draw(st.just(body).filter(lambda b, v=verb: not _parses(v, b)))
    subject = subjects.node_control(LATTICE, NODE, verb) if kind == "node" else subjects.lattice_control(LATTICE, verb)
    return subject, body


def _parses(verb: str, body: bytes) -> bool:
    try:
        requests.parse(verb, protocol.parse_request(body))
    except BadRequest:
        return False
    return True


def _b(data: bytes) -> dict[str, str]:
    import base64

    return {"$b": base64.b64encode(data).decode()}


arg_values = json_values | st.binary(max_size=64).map(_b) | st.sampled_from(
    [{"$b": "!!"}, {"$b": 5}, 10**30, "x" * 2000, [["k", 50_000_000]], [["k", {"$b": "eA=="}]], ["k"], []])


usual_args = st.sampled_from([["scratch"], ["kept"], ["k"], ["k", {"$b": "eA=="}], ["k", 1], [20], [20, True],
                              [21, 0.5], ["i2c1"], [72, [["read", 2]]], ["hello.x", {"$b": "eA=="}, None]])


@st.composite
def provider_calls(draw: st.DrawFn) -> tuple[str, bytes]:
    """(subject, body) of a provider call: envelopes that reach the provider with hostile
    arguments (handles of buckets and buses the fuzz opened included), envelopes with a
    hostile field, and bytes that are no envelope at all."""
    chance = draw(st.randoms(use_true_random=False))  # hypothesis leans to 0 and first choices: rare is high

    def mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any], odds: float = 0.85) -> Any:
        """``usual`` most of the time, else ``other``: envelopes right enough to reach the
        provider, with a field wrong now and then."""
        return draw(other if chance.random() > odds else usual)

    provider = draw(st.sampled_from(sorted(PROVIDER_OPS)))
    interface, ops = PROVIDER_OPS[provider]
    caller = draw(st.sampled_from(["x", "y", NODE]))  # the calling node, as the subject names it
    subject = subjects.provider_calls(LATTICE, NODE, provider, caller)
    call: dict[str, Any] = {
        "caller": mostly(st.just(caller), st.sampled_from([NODE, "", "a b", "y"]) | json_values),
        "source": mostly(st.just(SOURCE), st.sampled_from(["other", ACTOR]) | json_values),
        "interface": mostly(st.just(interface), st.sampled_from(["wasi:keyvalue/batch", "x"]) | json_values),
        "op": mostly(st.sampled_from(ops), json_values),
        "args": mostly(usual_args | st.lists(arg_values, max_size=4), json_values),
        "handle": mostly(st.integers(1, 6), st.sampled_from([None, 10**20, -1, "1"]) | json_values),
    }
    if chance.random() > 0.9:  # a field left out
        del call[draw(st.sampled_from(sorted(call)))]
    if chance.random() > 0.9:
        call[draw(st.sampled_from(["extra", "$h", "ok"]))] = draw(json_values)
    body = json.dumps(call).encode()
    return subject, mostly(st.just(body), st.one_of(truncated(body), raw_hostile, st.binary(max_size=200)))


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """(subject, body, headers) of a message to the actor (the hostile one, echoing): any bytes (text or not,
    up to 200 KB), with or without a Drupelet-Subject header of any text."""
    body = draw(st.binary(max_size=300) | st.text(max_size=300).map(str.encode)
                | st.integers(1, 200_000).map(lambda n: b"x" * n))
    if body.startswith(MAGIC):
        body = b"!" + body
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers[subjects.HEADER_SUBJECT] = draw(st.text(min_size=1, max_size=80).filter(
            lambda t: "\r" not in t and "\n" not in t and ":" not in t))
    return subjects.deliver(LATTICE, ACTOR), body, headers


# -- a campaign -------------------------------------------------------------------------------


@dataclass
class Tally:
    """What came back, by target (control, provider, delivery)."""

    sent: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)
    unanswered: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for target in sorted(self.sent):
            out.append(f"fuzz {target}: {self.sent[target]} sent, {self.answered[target]} answered, "
                       f"{self.unanswered[target]} unanswered, {self.malformed[target]} malformed replies")
        out.append("fuzz replies by code: " + ", ".join(f"{c} {n}" for c, n in self.codes.most_common()))
        return out


def examples_per_target() -> int:
    return int(os.environ.get("DRUPELET_FUZZ_EXAMPLES", "700"))


def seconds() -> float:
    return float(os.environ.get("DRUPELET_FUZZ_SECONDS", "0"))


def campaign(nc: Any, loop: asyncio.AbstractEventLoop, tally: Tally, *, examples: int, timeout_s: float = 5.0,
             until: float = 0.0) -> None:
    """Send ``examples`` generated messages to each target (over and over until the
    monotonic time ``until``, when given), from this thread, through ``nc`` on ``loop``."""

    def request(subject: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
        async def go() -> Any:
            return await nc.request(subject, body, timeout=timeout_s, headers=headers or None)
        return asyncio.run_coroutine_threadsafe(go(), loop).result(timeout_s + 5)

    def send(target: str, subject: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
        """Send one message and count what came back; a body past what the server takes is
        cut to fit (it arrives truncated, which is hostile too)."""
        import nats.errors

        if len(body) > nc.max_payload - 4096:  # the client library refuses it before it leaves
            body = body[:nc.max_payload - 4096]
        tally.sent[target] += 1
        try:
            msg = request(subject, body, headers)
        except nats.errors.TimeoutError:
            tally.unanswered[target] += 1
            tally.failures.append(f"{target}: no reply on {subject} to {body[:120]!r}")
            return None
        tally.answered[target] += 1
        return msg

    def envelope(target: str, msg: Any, what: bytes) -> None:
        try:
            reply = protocol.parse_reply(msg.data)
        except BadRequest:
            tally.malformed[target] += 1
            tally.failures.append(f"{target}: not an envelope: {msg.data[:200]!r} for {what[:120]!r}")
            return
        code = "ok" if reply["ok"] else reply.get("error", {}).get("code", "?")
        tally.codes[f"{target}:{code}"] += 1
        if code == "internal":
            tally.failures.append(f"{target}: internal error {reply} for {what[:200]!r}")

    common = settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                      suppress_health_check=list(HealthCheck), print_blob=False)

    @common
    @given(control_requests())
    def control(item: tuple[str, bytes]) -> None:
        msg = send("control", *item)
        if msg is not None:
            envelope("control", msg, item[1])

    @common
    @given(provider_calls())
    def provider(item: tuple[str, bytes]) -> None:
        msg = send("provider", *item)
        if msg is not None:
            envelope("provider", msg, item[1])

    @common
    @given(deliveries())
    def delivery(item: tuple[str, bytes, dict[str, str]]) -> None:
        subject, body, headers = item
        msg = send("delivery", subject, body, headers)
        if msg is None:
            return
        error = (msg.headers or {}).get(subjects.HEADER_ERROR)
        tally.codes[f"delivery:{error or 'ok'}"] += 1
        if error is None and msg.data != body:
            tally.malformed["delivery"] += 1
            tally.failures.append(f"delivery: echoed {msg.data[:80]!r} for {body[:80]!r}")

    runs: list[Callable[[], None]] = [control, provider, delivery]
    while True:
        for run in runs:
            run()
        if time.monotonic() >= until:
            return


__all__ = ["ACTOR", "NODE", "SOURCE", "Tally", "campaign", "examples_per_target", "seconds"]
