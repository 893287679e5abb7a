"""Wire payloads of the control interface: the reply envelope, request bodies as JSON
objects, and CloudEvents. Pure functions; docs/protocol.md describes the same fields.

The fields of each control request and of a provider call are declared in
:mod:`drupelet.node.lattice.requests`.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any, NotRequired, TypedDict

from drupelet.node.lattice.errors import BadRequest
from drupelet.node.lattice.errors import UnknownRequest

from drupelet.node.config import LABEL_KEY, NAME  # one rule for names, in the config
DIGEST = re.compile(r"^(sha256:)?[0-9a-fA-F]{64}$")

EVENT_TYPE_PREFIX = "dev.drupelet."


class ErrorBody(TypedDict):
    code: str
    message: str


class Reply(TypedDict):
    """Every control reply: ``ok`` and either ``result`` or ``error``."""

    ok: bool
    result: NotRequired[Any]
    error: NotRequired[ErrorBody]


def ok(result: Any = None) -> bytes:
    return json.dumps({"ok": True, "result": result}, separators=(",", ":")).encode()


def error(code: str, message: str) -> bytes:
    return json.dumps({"ok": False, "error": {"code": code, "message": message}}, separators=(",", ":")).encode()


def parse_reply(data: bytes) -> Reply:
    try:
        doc = json.loads(data or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"reply is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
        raise BadRequest("reply is not a drupelet envelope (no boolean 'ok')")
    return doc  # type: ignore[return-value]


def parse_request(data: bytes) -> dict[str, Any]:
    """A request body: a JSON object; an empty body is an empty object."""
    if not data.strip():
        return {}
    try:
        doc = json.loads(data)
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"request body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    except ValueError as exc:  # an integer past Python's digit limit, say
        raise BadRequest(f"request body is not usable JSON: {str(exc)[:120]}") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"request body must be a JSON object, not {type(doc).__name__}")
    return doc


class CloudEvent(TypedDict):
    specversion: str
    id: str
    source: str
    type: str
    time: str
    datacontenttype: str
    data: Any


def event_source(lattice: str, node: str) -> str:
    """The CloudEvents ``source`` of a node's events: ``drupelet/<lattice>/<node>``."""
    return f"drupelet/{lattice}/{node}"


def event(lattice: str, node: str, kind: str, data: Any) -> bytes:
    """A CloudEvents 1.0 JSON event, type ``dev.drupelet.<kind>``."""
    body: CloudEvent = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": event_source(lattice, node),
        "type": EVENT_TYPE_PREFIX + kind,
        "time": datetime.fromtimestamp(time.time(), timezone.utc).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }
    return json.dumps(body, separators=(",", ":")).encode()


# -- provider calls: bytes inside JSON ---------------------------------------------


def encode(value: Any) -> Any:
    """A provider call's arguments or result as JSON-able values; bytes become
    ``{"$b": "<base64>"}``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`; a malformed ``$b`` is :class:`BadRequest`."""
    if isinstance(value, dict):
        if set(value) == {"$b"} and isinstance(value["$b"], str):
            try:
                return base64.b64decode(value["$b"], validate=True)
            except ValueError:
                raise BadRequest("a $b value is not base64") from None
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


__all__ = ["BadRequest", "CloudEvent", "DIGEST", "ErrorBody", "LABEL_KEY", "NAME", "Reply", "UnknownRequest", "decode",
           "encode", "error", "event", "ok", "parse_reply", "parse_request"]
