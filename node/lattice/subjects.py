"""NATS subjects of the lattice, built by small pure functions (see docs/protocol.md)."""

from __future__ import annotations

import re

PREFIX = "drupelet"
TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")

HEADER_SUBJECT = "Drupelet-Subject"
"""On a delivery: the subject the actor's handler sees (default: the delivery subject)."""
HEADER_ERROR = "Drupelet-Error"
"""On a reply from the node: an error code (the actor did not answer)."""
HEADER_MESSAGE = "Drupelet-Message"
"""With Drupelet-Error: what went wrong, for a person."""
HEADER_FORWARDED = "Drupelet-Forwarded"
"""On a delivery: a message a provider's subscription received on another node and forwarded
here. Its reply subject may have other responders, so a handler that returns without
replying is not an error sent back to it."""


def token(value: str, what: str) -> str:
    if not TOKEN.match(value):
        raise ValueError(f"{what} {value!r} cannot be a subject token: use A-Z a-z 0-9 _ -")
    return value


def deliver(lattice: str, actor: str) -> str:
    """Messages to an actor's handler; queue group = the actor's name."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.deliver.{token(actor, 'actor')}"


def http(lattice: str, actor: str) -> str:
    """HTTP requests to an actor's ``wasi:http/incoming-handler``; queue group = the actor's name."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.http.{token(actor, 'actor')}"


def logs(lattice: str, node: str, actor: str) -> str:
    return f"{PREFIX}.{token(lattice, 'lattice')}.logs.{token(node, 'node')}.{token(actor, 'actor')}"


def logs_all(lattice: str) -> str:
    return f"{PREFIX}.{token(lattice, 'lattice')}.logs.>"


CONTROL_QUEUE = "drupelet-ctl"
"""Queue group of lattice-wide control requests: one node answers each."""


def ping(lattice: str) -> str:
    """Every node answers; a client collects replies for a short window."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.ctl.ping"


def node_control(lattice: str, node: str, verb: str) -> str:
    """A request to one node: ``verb`` is ``inventory``, ``actor.start``, …"""
    return f"{PREFIX}.{token(lattice, 'lattice')}.ctl.node.{token(node, 'node')}.{verb}"


def node_control_all(lattice: str, node: str) -> str:
    return f"{PREFIX}.{token(lattice, 'lattice')}.ctl.node.{token(node, 'node')}.>"


def lattice_control(lattice: str, verb: str) -> str:
    """A lattice-wide request (``link.put``, ``config.get``…), answered by one node."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.ctl.{verb}"


def events(lattice: str, node: str, kind: str) -> str:
    return f"{PREFIX}.{token(lattice, 'lattice')}.evt.{token(node, 'node')}.{kind}"


def events_all(lattice: str) -> str:
    return f"{PREFIX}.{token(lattice, 'lattice')}.evt.>"


def events_of_kind(lattice: str, kind: str) -> str:
    """One kind of event from every node."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.evt.*.{kind}"


def provider_calls(lattice: str, node: str, provider: str) -> str:
    """Calls from other nodes' actors to ``provider`` on ``node``."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.prov.{token(node, 'node')}.{token(provider, 'provider')}"


def provider_calls_all(lattice: str, node: str) -> str:
    """Calls to every provider of ``node``."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.prov.{token(node, 'node')}.*"


def deliver_prefix(lattice: str) -> str:
    return f"{PREFIX}.{token(lattice, 'lattice')}.deliver."
