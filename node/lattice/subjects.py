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


def http(lattice: str, actor: str, origin: str) -> str:
    """HTTP requests to an actor's ``wasi:http/incoming-handler``, taken by the http provider
    of node ``origin``: the origin is part of the subject, and a node's credentials let it
    publish only requests that name itself (:func:`http_from`), so the actor's node knows
    which listener a request came from by NATS alone (:func:`caller_of`)."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.http.{token(actor, 'actor')}.{token(origin, 'node')}"


def http_to(lattice: str, actor: str) -> str:
    """HTTP requests to ``actor`` from every node; queue group = the actor's name."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.http.{token(actor, 'actor')}.*"


def http_from(lattice: str, origin: str) -> str:
    """HTTP requests taken by node ``origin``'s listeners, for any actor."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.http.*.{token(origin, 'node')}"


def http_all(lattice: str) -> str:
    """HTTP requests to every actor from every node."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.http.*.*"


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


def provider_calls(lattice: str, node: str, provider: str, caller: str) -> str:
    """Calls from actors on node ``caller`` to ``provider`` on ``node``: the caller is part
    of the subject, and a node's credentials let it publish only calls that name itself
    (:func:`provider_calls_from`), so the provider's node knows who calls from NATS alone."""
    return (f"{PREFIX}.{token(lattice, 'lattice')}.prov.{token(node, 'node')}.{token(provider, 'provider')}"
            f".{token(caller, 'node')}")


def provider_calls_all(lattice: str, node: str) -> str:
    """Calls to every provider of ``node``, from any node."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.prov.{token(node, 'node')}.*.*"


def provider_calls_from(lattice: str, caller: str) -> str:
    """Calls from actors on ``caller`` to any provider of any node."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.prov.*.*.{token(caller, 'node')}"


def caller_of(subject: str) -> str:
    """The calling node of a provider call's subject, or the origin of an HTTP request's
    (its last token)."""
    return subject.rpartition(".")[2]


def deliver_prefix(lattice: str) -> str:
    return f"{PREFIX}.{token(lattice, 'lattice')}.deliver."


def deliver_all(lattice: str) -> str:
    """Messages to every actor of the lattice."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.deliver.>"


def lattice_all(lattice: str) -> str:
    """Every subject of the lattice's own protocol."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.>"


def events_of(lattice: str, node: str) -> str:
    """Every event ``node`` publishes about itself."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.evt.{token(node, 'node')}.>"


def logs_of(lattice: str, node: str) -> str:
    """The log lines of every actor on ``node``."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.logs.{token(node, 'node')}.>"


def node_control_any(lattice: str, verb: str) -> str:
    """The request ``verb`` to any node (a permission pattern)."""
    return f"{PREFIX}.{token(lattice, 'lattice')}.ctl.node.*.{verb}"


def node_of_event(subject: str) -> str:
    """The node an event's subject (``drupelet.<lattice>.evt.<node>.<kind>``) names."""
    parts = subject.split(".")
    return parts[3] if len(parts) > 4 else ""


# -- reply inboxes ------------------------------------------------------------------------

INBOXES = "_INBOX.>"
"""Every reply inbox (nats-py's default prefix is ``_INBOX``)."""
INBOX_PREFIX = "_INBOX."
"""How every reply inbox's subject starts."""


def inbox_prefix(identity: str) -> str:
    """The reply inbox prefix of a lattice user or node, ``_INBOX.<identity>``: each one's
    credentials let it subscribe to its own inboxes only, so no one reads another's replies."""
    return f"_INBOX.{token(identity, 'user')}"


def inboxes_of(identity: str) -> str:
    return f"{inbox_prefix(identity)}.>"


# -- JetStream ----------------------------------------------------------------------------

def jetstream_api(suffix: str, domain: str | None = None) -> str:
    """A JetStream API subject (``STREAM.INFO.KV_x``), in ``domain`` when given; domain ``*``
    is every domain (a permission pattern)."""
    return f"$JS.{domain}.API.{suffix}" if domain else f"$JS.API.{suffix}"


JETSTREAM_FLOW_CONTROL = "$JS.FC.>"
"""Where a push consumer's client answers flow control (ordered consumers: KV watches, object reads)."""


def kv_put(bucket: str, key: str, domain: str | None = None) -> str:
    """The subject a write to ``key`` of KV ``bucket`` is published on.

    Without a domain it is the bucket's own subject; with one it goes through that
    domain's JetStream API prefix, which the servers route to the domain (across leaf
    connections too) and map onto the bucket's subject.
    """
    subject = f"$KV.{bucket}.{key}"
    return jetstream_api(subject, domain) if domain else subject


def object_store_meta(bucket: str, encoded_name: str) -> str:
    """The subject of an object's metadata in object store ``bucket`` (its name base64url-encoded)."""
    return f"$O.{bucket}.M.{encoded_name}"


def object_store_all(bucket: str) -> str:
    """Every chunk and metadata subject of object store ``bucket``."""
    return f"$O.{bucket}.>"
