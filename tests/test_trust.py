"""The trust policy on a real node (real nats-server, real wasmtime): who may run, with what.

The node trusts only issuer A and refuses unsigned actors, as the SD image does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drupelet.node.config import NodeConfig
from drupelet.node.lattice.natsserver import EmbeddedNatsServer
from drupelet.node.node import Node
from drupelet.node.runtime import read_component
from drupelet.node.security import claims as wc
from drupelet.node.security import keys, wasm
from drupelet.node.security.errors import SecurityError

WAT = Path(__file__).resolve().parent.parent / "actors" / "wat"
A = keys.generate("account")
B = keys.generate("account")


def echo() -> bytes:
    return read_component(WAT / "echo.wat")


def signed(by: keys.KeyPair = A, caps: tuple[str, ...] = ("wasmcloud:messaging",), **kw: Any) -> bytes:
    return wc.sign(echo(), by, name="echo", ver="1.0.0", caps=caps, **kw)[0]


@pytest.fixture
async def node(tmp_path: Path, nats_server: EmbeddedNatsServer) -> AsyncIterator[tuple[Node, list[tuple[str, dict[str, Any]]]]]:
    cfg = NodeConfig(name="pi-1", lattice="test", data_dir=tmp_path / "data", nats_url=nats_server.url,
                     call_deadline_ms=400, epoch_tick_ms=5, stop_timeout_s=2.0, trust_keys=[A.public],
                     trust_allow_unsigned=False)
    n = Node(cfg)
    await n.start()
    events: list[tuple[str, dict[str, Any]]] = []
    n.host.on_event(lambda kind, data: events.append((kind, data)))
    try:
        yield n, events
    finally:
        await n.stop()


async def test_actor_signed_by_a_trusted_issuer_starts_and_shows_its_claims(node: Any) -> None:
    n, events = node
    await n.host.start_actor("echo", signed())
    await n.host.put_link("echo", "wasmcloud:messaging", "local/messaging")
    assert await n.call("echo", "s", b"hi") == b"hi"
    listed = next(a for a in n.host.list_actors() if a["name"] == "echo")
    assert (listed["signed"], listed["issuer"], listed["claims_name"], listed["version"]) == (True, A.public, "echo",
                                                                                           "1.0.0")
    assert listed["subject"].startswith("M")
    started = [d for k, d in events if k == "actor_started"]
    assert started and started[0]["issuer"] == A.public and started[0]["signed"] is True


@pytest.mark.parametrize("reason,make", [
    ("unsigned", echo),
    ("unknown-issuer", lambda: signed(B)),
    ("hash-mismatch", lambda: signed().replace(b"echo", b"ecno", 1)),
    ("bad-signature", lambda: wasm.embed(echo(), wc.encode(wc.read_claims(signed()), B))),  # type: ignore[arg-type]
    ("expired", lambda: signed(expires_in_s=60, now=time.time() - 3600)),
    ("not-yet-valid", lambda: signed(not_before_in_s=3600)),
    ("caps", lambda: signed(caps=("wasi:keyvalue",))),
])
async def test_refusals_have_a_reason_in_the_error_the_log_and_an_event(node: Any, reason: str, make: Any,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    n, events = node
    data = make()
    caplog.set_level(logging.WARNING)
    with pytest.raises(SecurityError) as err:
        await n.host.start_actor("echo", data)
    assert err.value.code == reason and "\n" not in err.value.message and "echo" in err.value.message
    assert "echo" not in n.host.actors
    assert any(f"refused ({reason})" in r.getMessage() for r in caplog.records)
    refused = [d for k, d in events if k == "actor_refused"]
    assert refused and (refused[0]["actor"], refused[0]["reason"]) == ("echo", reason)
    await n.host.start_actor("echo", signed())  # the node keeps running and admits a good actor


async def test_revoked_subject_is_refused(node: Any) -> None:
    n, _ = node
    data = signed()
    claims = wc.read_claims(data)
    assert claims is not None
    n.host.trust.set_revoked({claims.subject})
    with pytest.raises(SecurityError) as err:
        await n.host.start_actor("echo", data)
    assert err.value.code == "revoked"


async def test_link_outside_the_caps_is_refused_with_what_the_claims_allow(node: Any) -> None:
    n, events = node
    await n.host.start_actor("echo", signed())
    with pytest.raises(SecurityError, match=r"wasi:keyvalue/store.*they allow: wasmcloud:messaging") as err:
        await n.host.put_link("echo", "wasi:keyvalue/store", "local/keyvalue")
    assert err.value.code == "caps"
    assert n.host.link_for("echo", "wasi:keyvalue/store") is None
    assert [d["reason"] for k, d in events if k == "actor_refused"] == ["caps"]


async def test_a_lattice_link_outside_the_caps_is_not_applied(node: Any, nats_server: EmbeddedNatsServer) -> None:
    """A link written to the lattice state by a node that does not run the actor: the node
    that runs it refuses to apply it (and announces why)."""
    import json

    import nats

    from drupelet.node.lattice.state import bucket_name, link_key
    from waiting import wait_for_async

    n, events = node
    await n.host.start_actor("echo", signed())
    nc = await nats.connect(nats_server.url)
    try:
        kv = await nc.jetstream().key_value(bucket_name("test"))
        value = {"source": "echo", "interface": "wasi:keyvalue/store", "target": "local/keyvalue", "config": {}}
        await kv.put(link_key("echo", "wasi:keyvalue/store"), json.dumps(value).encode())

        async def refused() -> bool:
            return any(k == "actor_refused" for k, _ in events)

        await wait_for_async(refused, 10, "the node to refuse the link")
    finally:
        await nc.close()
    assert n.host.link_for("echo", "wasi:keyvalue/store") is None
    assert [d["reason"] for k, d in events if k == "actor_refused"] == ["caps"]


async def test_the_same_refusal_again_is_announced_once(node: Any) -> None:
    """A desired actor that keeps being retried does not flood the log and the events."""
    n, events = node
    for _ in range(3):
        with pytest.raises(SecurityError):
            await n.host.start_actor("echo", echo())
    assert [d["reason"] for k, d in events if k == "actor_refused"] == ["unsigned"]
    with pytest.raises(SecurityError):
        await n.host.start_actor("echo", signed(B))  # another reason is news
    assert [d["reason"] for k, d in events if k == "actor_refused"] == ["unsigned", "unknown-issuer"]
