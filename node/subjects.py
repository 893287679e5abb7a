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


def token(value: str, what: str) -> str:
    if not TOKEN.match(value):
        raise ValueError(f"{what} {value!r} cannot be a subject token: use A-Z a-z 0-9 _ -")
    return value


def deliver(lattice: str, actor: str) -> str:
    """Messages to an actor's handler; queue group = the actor's name."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.deliver.{token(actor, 'actor')}"


def logs(lattice: str, node: str, actor: str) -> str:
    return f"{PREFIX}.{token(lattice, 'lattice')}.logs.{token(node, 'node')}.{token(actor, 'actor')}"


def logs_all(lattice: str) -> str:
    return f"{PREFIX}.{token(lattice, 'lattice')}.logs.>"
