"""Writing one entry of the lattice state's KV bucket, with errors a person can act on.

Shared by the node's view of the state (:mod:`drupelet.node.lattice.state`, which writes its
own records) and an admin's client (:mod:`drupelet.node.lattice.admin`, which writes the
rest). nats-py's ``KeyValue.put``/``delete`` publish to ``$KV.<bucket>.<key>``, which does not
reach a bucket in another JetStream domain across a leaf connection; writes here go to
``$JS.<domain>.API.$KV.<bucket>.<key>`` (what the Go client does), see :func:`kv_subject`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from drupelet.node.lattice.errors import StateError, StateUnavailable
from drupelet.node.lattice.statekeys import kv_subject

__all__ = ["UNREACHABLE", "describe_error", "encode_value", "publish_entry"]

# What "cannot reach the bucket" looks like: every nats-py error (timeouts, no responders,
# JetStream API errors such as "service unavailable"), socket errors, asyncio timeouts.
UNREACHABLE: Final = (nats.errors.Error, OSError, asyncio.TimeoutError)


def encode_value(value: Mapping[str, Any]) -> bytes:
    """A state value as the nodes write it: compact JSON, sorted keys."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


def describe_error(exc: BaseException) -> str:
    """Why the bucket cannot be reached, for a person."""
    if isinstance(exc, (nats.js.errors.ServiceUnavailableError, nats.js.errors.NoStreamResponseError,
                        nats.errors.NoRespondersError)):
        return "no JetStream server answers for it"  # these carry no useful text of their own
    if isinstance(exc, nats.js.errors.BucketNotFoundError):
        return "it does not exist: an admin's first write makes it"
    if isinstance(exc, asyncio.TimeoutError):  # nats.errors.TimeoutError too
        return "no answer in time"
    if isinstance(exc, nats.js.errors.APIError) and exc.description:
        return f"{type(exc).__name__}: {exc.description}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def publish_entry(nc: NatsClient, js: JetStreamContext, bucket: str, key: str, data: bytes,
                        headers: dict[str, str] | None, *, domain: str | None, timeout_s: float) -> int:
    """Publish one KV entry (a value, or a delete marker with ``headers``) and return its
    revision; :class:`StateUnavailable` when the bucket cannot be reached, :class:`StateError`
    when JetStream refuses it."""
    where = f"lattice state bucket {bucket}" + (f" (JetStream domain {domain})" if domain else "")
    if not nc.is_connected:
        # nats-py would buffer the message and send it after reconnecting: a write
        # reported as failed could then still happen.
        raise StateUnavailable(f"cannot write {key}: NATS is disconnected", key=key, bucket=bucket)
    try:
        ack = await js.publish(kv_subject(bucket, key, domain), data, headers=headers)
    except nats.errors.TimeoutError as exc:
        raise StateUnavailable(f"cannot write {key}: the {where} did not answer within {timeout_s:g} s; "
                               "the change may or may not have been stored", key=key, bucket=bucket) from exc
    except (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError,
            nats.js.errors.ServiceUnavailableError) as exc:
        raise StateUnavailable(f"cannot write {key}: the {where} is unreachable ({describe_error(exc)})",
                               key=key, bucket=bucket) from exc
    except nats.js.errors.APIError as exc:
        raise StateError(f"cannot write {key}: JetStream refused it: {exc.description or describe_error(exc)}",
                         key=key, bucket=bucket) from exc
    except UNREACHABLE as exc:
        raise StateUnavailable(f"cannot write {key}: {describe_error(exc)}", key=key, bucket=bucket) from exc
    return int(ack.seq)
