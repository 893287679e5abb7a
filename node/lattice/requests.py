"""The body of every control request, declared once: a msgspec ``Struct`` per verb.

Each field carries its type, default, bounds and meaning (the shared types of
:mod:`drupelet.node.lattice.wire`). From these declarations come

* validation (:func:`parse`): a request body, already a JSON object, becomes the verb's
  ``Struct`` or a :class:`~drupelet.node.lattice.errors.BadRequest` whose ``field``
  names the culprit and whose message is one line (``instances: must be between 1 and
  1000, got 0``, ``unknown field(s) force (allowed: name)``, ``name: is required``);
  a field sent as ``null`` counts as missing; rules across fields
  (:meth:`Request.check`) run after each field passed its own;
* the request tables of docs/protocol.md (:func:`markdown_requests`).

:data:`NODE_REQUESTS` are the verbs of ``drupelet.<lattice>.ctl.node.<node>.<verb>``,
:data:`LATTICE_REQUESTS` those of ``drupelet.<lattice>.ctl.<verb>``; :data:`REQUESTS`
is both (``link.list`` is in each, with the same empty body).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec
from msgspec import Meta

from drupelet.providers.schema import SchemaError, convert

from drupelet.node.lattice import wire
from drupelet.node.lattice.errors import BadRequest, UnknownRequest
from drupelet.node.lattice.wire import (MAX_INTERFACE_BYTES, MAX_LABEL_VALUE_BYTES, MAX_LABELS, MAX_REFERENCE_BYTES,
                                        MAX_TARGET_BYTES, ConfigMap, Digest, Labels, Name)

R = TypeVar("R", bound="Request")

MAX_INSTANCES = 1000
MAX_PIN = 63
MAX_OPERATION_CHARS = 64
MAX_REPLY_CHARS = 256


class Request(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A control request's body. The class docstring's first line is the verb's summary."""

    reads: ClassVar[bool] = False
    """True for a verb that only reads (a viewer may send it); the roles' permissions
    (:mod:`drupelet.node.lattice.roles`) are derived from this flag."""

    def check(self) -> None:
        """Rules across fields, after every field passed its own; :class:`BadRequest` if broken."""


# -- node requests ------------------------------------------------------------------


class Inventory(Request):
    """The node's inventory."""

    reads = True


class ActorList(Request):
    """The actors this node runs."""

    reads = True


class ActorStart(Request):
    """Start a component from the artifact store as an actor (an admin's client then records it in the lattice state)."""

    name: Annotated[Name, Meta(description="the actor's name, unique on the node")]
    digest: Annotated[Digest | None, Meta(description="the SHA-256 of an artifact; give this or reference")] = None
    reference: Annotated[Annotated[str, Meta(max_length=MAX_REFERENCE_BYTES)] | None, Meta(description=(
        "a digest, or the name an artifact was pushed with; give this or digest"))] = None
    instances: Annotated[int, Meta(ge=1, le=MAX_INSTANCES, description="instances to run")] = 1
    config: Annotated[ConfigMap, Meta(description="the actor's wasi:config values")] = {}

    def check(self) -> None:
        if bool(self.digest) == bool(self.reference):
            raise BadRequest("give exactly one of digest or reference")


class ActorStop(Request):
    """Stop an actor (an admin's client deletes its record in the lattice state first)."""

    name: Annotated[Name, Meta(description="the actor's name")]


class ActorScale(Request):
    """Run another number of instances of an actor."""

    name: Annotated[Name, Meta(description="the actor's name")]
    instances: Annotated[int, Meta(ge=1, le=MAX_INSTANCES, description="instances to run from now on")]


class ProviderStart(Request):
    """Start an installed provider that is not running."""

    name: Annotated[Name, Meta(description="the provider's name (its entry point)")]


class ProviderStop(Request):
    """Stop a running provider."""

    name: Annotated[Name, Meta(description="the provider's name")]


class LabelsPut(Request):
    """Add labels to the node's (a key it has is overwritten)."""

    labels: Annotated[Labels, Meta(description="the labels to add")] = {}


class LabelsDel(Request):
    """Remove labels from the node's."""

    keys: Annotated[list[Annotated[str, Meta(max_length=MAX_LABEL_VALUE_BYTES)]],
                    Meta(max_length=MAX_LABELS, description="the keys to remove; keys the node does not have "
                                                            "are ignored")] = []


class LinkList(Request):
    """The links this node applies (node request), or every link in the lattice state (lattice request)."""

    reads = True


class DisplaySnapshot(Request):
    """The display's last flushed frame, as PNG."""

    reads = True

    provider: Annotated[Name, Meta(description="a running display provider of this node")] = "display"


class GpioSimulate(Request):
    """Drive a simulated input pin, as a button would."""

    pin: Annotated[int, Meta(ge=0, le=MAX_PIN, description="the pin, BCM numbering")]
    level: Annotated[bool, Meta(description="true drives it high, false low")]
    provider: Annotated[Name, Meta(description="a running GPIO provider of this node")] = "gpio"


class GpioRead(Request):
    """Read an allowed pin's level, whoever holds it."""

    reads = True

    pin: Annotated[int, Meta(ge=0, le=MAX_PIN, description="the pin, BCM numbering")]
    provider: Annotated[Name, Meta(description="a running GPIO provider of this node")] = "gpio"


class GpioWrite(Request):
    """Drive an allowed pin that no actor owns high or low."""

    pin: Annotated[int, Meta(ge=0, le=MAX_PIN, description="the pin, BCM numbering")]
    level: Annotated[bool, Meta(description="true drives it high, false low")]
    provider: Annotated[Name, Meta(description="a running GPIO provider of this node")] = "gpio"


class LogsRecent(Request):
    """The last lines the node's actors logged (kept in memory, a few hundred per actor)."""

    reads = True

    actor: Annotated[Name | None, Meta(description="only this actor's lines")] = None
    lines: Annotated[int, Meta(ge=1, le=1000, description="at most this many lines, the newest")] = 100


# -- lattice requests ---------------------------------------------------------------


class LinkPut(Request):
    """Link an actor's import of an interface (or of a whole package) to a provider."""

    source: Annotated[Name, Meta(description="the actor's name")]
    interface: Annotated[str, Meta(max_length=MAX_INTERFACE_BYTES, description=(
        "an interface (wasi:keyvalue/store) or a package (wasi:keyvalue); a version suffix is dropped"))]
    target: Annotated[str, Meta(max_length=MAX_TARGET_BYTES, description=(
        "local/PROVIDER (the node the actor runs on) or NODE/PROVIDER"))]
    config: Annotated[ConfigMap, Meta(description=(
        "the link config: for the provider (grants, subscriptions) and, under the actor's own, "
        "for its wasi:config"))] = {}


class LinkDel(Request):
    """Delete an actor's links for an interface, or for every interface of a package."""

    source: Annotated[Name, Meta(description="the actor's name")]
    interface: Annotated[str, Meta(max_length=MAX_INTERFACE_BYTES, description="an interface or a package")]


class ConfigPut(Request):
    """Store named config (replacing what that name had)."""

    name: Annotated[Name, Meta(description="the config's name")]
    values: Annotated[ConfigMap, Meta(description="its values")] = {}


class ConfigGet(Request):
    """The values stored under a name."""

    reads = True

    name: Annotated[Name, Meta(description="the config's name")]


class RevocationPut(Request):
    """Revoke an actor subject key (M…) or an issuer key (A…, O…) on every node."""

    key: Annotated[str, Meta(max_length=56, description="the public nkey to revoke")]


class RevocationList(Request):
    """Every revoked key in the lattice state."""

    reads = True


NODE_REQUESTS: dict[str, type[Request]] = {
    "inventory": Inventory,
    "actor.start": ActorStart,
    "actor.stop": ActorStop,
    "actor.scale": ActorScale,
    "actor.list": ActorList,
    "provider.start": ProviderStart,
    "provider.stop": ProviderStop,
    "labels.put": LabelsPut,
    "labels.del": LabelsDel,
    "link.list": LinkList,
    "display.snapshot": DisplaySnapshot,
    "gpio.simulate": GpioSimulate,
    "gpio.read": GpioRead,
    "gpio.write": GpioWrite,
    "logs.recent": LogsRecent,
}
LATTICE_REQUESTS: dict[str, type[Request]] = {
    "link.put": LinkPut,
    "link.del": LinkDel,
    "link.list": LinkList,
    "config.put": ConfigPut,
    "config.get": ConfigGet,
    "revocation.put": RevocationPut,
    "revocation.list": RevocationList,
}
REQUESTS: dict[str, type[Request]] = NODE_REQUESTS | LATTICE_REQUESTS


def read_verbs(table: Mapping[str, type[Request]]) -> list[str]:
    """The verbs of ``table`` that only read."""
    return [verb for verb, cls in table.items() if cls.reads]


def write_verbs(table: Mapping[str, type[Request]]) -> list[str]:
    return [verb for verb, cls in table.items() if not cls.reads]


# -- validation ---------------------------------------------------------------------


class ProviderCall(Request):
    """A call from an actor on another node to a provider here (``drupelet.<lattice>.prov.<node>.<provider>.<caller>``)."""

    source: Annotated[Name, Meta(description="the calling actor")]
    interface: Annotated[str, Meta(max_length=MAX_INTERFACE_BYTES, description=(
        "the interface of the actor's link, without a version (wasi:keyvalue/store)"))]
    op: Annotated[str, Meta(max_length=MAX_OPERATION_CHARS, description=(
        "the operation: one the provider lists, or handle.<method> on a resource an operation returned"))]
    args: Annotated[list[Any], Meta(description="the arguments; bytes as {\"$b\": \"<base64>\"}")] = []
    handle: Annotated[int | None, Meta(description="the handle a bucket. or handle. operation acts on")] = None
    caller: Annotated[Name | None, Meta(description=(
        "the calling actor's node; optional, and the subject's last token when given: the subject is what counts"))] = None
    reply: Annotated[Annotated[str, Meta(max_length=MAX_REPLY_CHARS)] | None, Meta(description=(
        "the reply subject of the message the calling actor is handling, which it may answer through this "
        "provider; honoured for a reply inbox (_INBOX.…) only"))] = None


class HttpDelivery(Request):
    """An HTTP request for an actor on another node (``drupelet.<lattice>.http.<actor>``)."""

    node: Annotated[Name, Meta(description="the node whose http provider took the request")]
    exchange: Annotated[int, Meta(ge=1, description="the request's id on that node, named in read_body, respond "
                                                    "and write_body calls to the provider")]
    method: Annotated[str, Meta(min_length=1, max_length=32, description="as sent (GET, POST…)")]
    path: Annotated[str, Meta(min_length=1, max_length=16384, description="the path with the query")]
    provider: Annotated[Name, Meta(description="that provider's name")] = "http"
    scheme: Annotated[str, Meta(max_length=16, description="http or https")] = "http"
    authority: Annotated[str, Meta(max_length=1024, description="the Host header")] = ""
    headers: Annotated[list[tuple[str, Any]], Meta(description="[name, value] pairs; values as {\"$b\": …}")] = []
    body: Annotated[Any, Meta(description="the body's first chunk, as {\"$b\": \"<base64>\"}")] = None
    more: Annotated[bool, Meta(description="true: the rest of the body is read with read_body calls")] = False
    reuse: Annotated[bool, Meta(description="true: any running instance may answer (the link's instances = "
                                            "reuse); false: an instance of its own")] = False


class HttpAnswer(Request):
    """The reply to an :class:`HttpDelivery`: the end of the actor's response."""

    status: Annotated[int, Meta(ge=100, le=999, description=(
        "the response status, unless a respond call sent it already"))] | None = None
    headers: Annotated[list[tuple[str, Any]], Meta(description="the response fields, with status")] = []
    body: Annotated[Any, Meta(description="the rest of the body (earlier chunks went by write_body)")] = None
    trailers: Annotated[list[tuple[str, Any]] | None, Meta(description="the trailers, if any")] = None
    failure: Annotated[str, Meta(max_length=1024, description=(
        "why the actor gave no whole response; the client gets a 500"))] | None = None


def parse(verb: str, body: Mapping[str, Any]) -> Request:
    """``body`` (a JSON object) as the request ``verb`` declares; :class:`UnknownRequest`
    for a verb with no declaration, :class:`BadRequest` for a body that does not fit."""
    cls = REQUESTS.get(verb)
    if cls is None:
        raise UnknownRequest(f"unknown request {verb!r} (known: {', '.join(sorted(REQUESTS))})")
    return parse_as(cls, body)


@functools.cache
def _shape(cls: type[msgspec.Struct]) -> tuple[frozenset[str], tuple[str, ...], frozenset[str], frozenset[str]]:
    """(the field names, sorted, those whose length bound counts UTF-8 bytes, those with a
    total in bytes), read once per class: a provider call is parsed on every remote call."""
    fields = msgspec.structs.fields(cls)
    names = tuple(sorted(f.encode_name for f in fields))
    byte_bound = frozenset(f.encode_name for f in fields if wire.counts_bytes(f.type))
    totals = frozenset(f.encode_name for f in fields if wire.has_total(f.type))
    return frozenset(names), names, byte_bound, totals


def parse_as(cls: type[R], body: Mapping[str, Any]) -> R:
    """``body`` as a ``cls``, or :class:`BadRequest` naming the first field that does not fit.

    The common case costs one msgspec conversion: the explainers that word a refusal, and
    the UTF-8 byte count of bounded fields, run only when a field could need them."""
    known, allowed, byte_bound, totals = _shape(cls)
    unknown = sorted(str(k) for k in body if k not in known)
    if unknown:
        listed = f"allowed: {', '.join(allowed)}" if allowed else "this request takes none: send {} or an empty body"
        raise BadRequest(f"unknown field(s) {', '.join(unknown)} ({listed})")
    present = {k: v for k, v in body.items() if v is not None}
    try:
        request = msgspec.convert(present, type=cls, strict=True)
    except msgspec.ValidationError:
        try:
            convert(present, cls)
        except SchemaError as exc:
            found = wire.struct_fault(cls, present)
            if found is None:  # msgspec saw what the explainer missed: say it as msgspec did
                raise BadRequest(exc.reason, field=exc.key.split(".")[0].split("[")[0]) from None
            raise BadRequest(found[1], field=found[0]) from None
        raise  # convert agreed with msgspec.convert until now: a bug in one of them
    if any(name in present for name in totals) or any(
            not wire.is_ascii(present[name]) for name in byte_bound if name in present):
        found = wire.struct_fault(cls, present)  # what msgspec cannot count: UTF-8 bytes
        if found is not None:
            raise BadRequest(found[1], field=found[0])
    request.check()
    return request


def check_labels_total(labels: Mapping[str, str]) -> None:
    """The labels a node would have after a ``labels.put``: at most :data:`MAX_LABELS`."""
    if len(labels) > MAX_LABELS:
        raise BadRequest(f"the node would have {len(labels)} labels; at most {MAX_LABELS} are allowed",
                         field="labels")


# -- the protocol document ------------------------------------------------------------


def markdown_requests(verbs: Iterable[str] | None = None) -> str:
    """For each verb (all of :data:`REQUESTS` by default), its summary and a table of its
    fields: the request tables of docs/protocol.md."""
    blocks = []
    for verb in (REQUESTS if verbs is None else verbs):
        cls = REQUESTS[verb]
        summary = (inspect.getdoc(cls) or "").splitlines()[0].rstrip(".")
        fields = msgspec.structs.fields(cls)
        if not fields:
            blocks.append(f"**`{verb}`**: {summary}. No fields: the body is `{{}}` or empty.")
            continue
        lines = [f"**`{verb}`**: {summary}.", "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for f in fields:
            meta = wire.meta_of(f.type)
            meaning = meta.description if meta is not None and meta.description else ""
            lines.append(f"| `{f.encode_name}` | {wire.describe(f.type)} | {wire.default_text(f)} | "
                         f"{meaning.replace('|', '/')} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


__all__ = [
    "ActorList", "ActorScale", "ActorStart", "ActorStop", "ConfigGet", "ConfigPut", "DisplaySnapshot",
    "GpioRead", "GpioSimulate", "GpioWrite", "Inventory", "LATTICE_REQUESTS", "LabelsDel", "LabelsPut",
    "LinkDel", "LinkList", "LinkPut", "LogsRecent", "NODE_REQUESTS", "ProviderStart", "ProviderStop",
    "REQUESTS", "Request", "check_labels_total", "markdown_requests", "parse", "parse_as",
]
