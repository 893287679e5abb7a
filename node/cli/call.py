"""``drupelet call ACTOR SUBJECT [BODY]``: one message to an actor's handler, its reply printed.

A plain NATS request on the actor's delivery subject, as any NATS client could send it
(docs/protocol.md); the connection comes from :func:`drupelet.node.lattice.connect.connect`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import nats.errors
from nats.aio.msg import Msg

from drupelet.node.cli.common import CliError, connection
from drupelet.node.cli.output import emit
from drupelet.node.lattice import subjects
from drupelet.node.lattice.client import open_connection
from drupelet.node.lattice.connect import close_quietly

CONNECT_TIMEOUT_S = 3.0


def call(args: argparse.Namespace) -> int:
    body = sys.stdin.buffer.read() if args.body == "-" else args.body.encode()
    reply = asyncio.run(_request(args, body))
    headers = reply.headers or {}
    if subjects.HEADER_ERROR in headers:
        message = headers.get(subjects.HEADER_MESSAGE, "")
        if args.json:
            emit(args, {"ok": False, "error": headers[subjects.HEADER_ERROR], "message": message}, "", one_line=True)
            return 1
        raise CliError(f"{headers[subjects.HEADER_ERROR]}: {message}")
    if args.json:
        emit(args, {"ok": True, "body": reply.data.decode("utf-8", "replace")}, "", one_line=True)
    else:
        sys.stdout.buffer.write(reply.data + (b"" if reply.data.endswith(b"\n") else b"\n"))
    return 0


async def _request(args: argparse.Namespace, body: bytes) -> Msg:
    how = connection(args)
    lattice = how["lattice"]
    try:
        subject = subjects.deliver(lattice, args.actor)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    nc, grant = await open_connection(how["url"], creds=how["creds"], tls_ca=how["tls_ca"],
                                      timeout_s=CONNECT_TIMEOUT_S)
    try:
        if grant is not None:
            grant.check_publish(subject, f"a message to actor {args.actor}")
        return await nc.request(subject, body, timeout=args.timeout, headers={subjects.HEADER_SUBJECT: args.subject})
    except nats.errors.NoRespondersError:
        raise CliError(f"no actor {args.actor!r} is running in lattice {lattice!r}") from None
    except nats.errors.TimeoutError:
        raise CliError(f"actor {args.actor!r} sent no reply within {args.timeout:g} s") from None
    finally:
        await close_quietly(nc)
