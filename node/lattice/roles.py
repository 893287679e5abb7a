"""Who may do what in an authenticated lattice: each role's NATS subject permissions.

Every permission is derived from the functions that build the subjects
(:mod:`drupelet.node.lattice.subjects`), from the request declarations (a verb whose
``Request.reads`` is true is a read; :mod:`drupelet.node.lattice.requests`) and from who
writes which key of the lattice state (:data:`~drupelet.node.lattice.statekeys.WRITERS`):
nothing here is a hand-typed subject.

============  ===========================================================================
role          may
============  ===========================================================================
``admin``     everything in the lattice's account: control every node, write the lattice
              state (links, named config, desired actors, revocations), push artifacts,
              create, purge and delete the state bucket and the artifact store
``viewer``    ping the nodes, send them the requests that only read (inventory, actor
              and link lists, logs, a display snapshot, a pin's level), follow events
              and logs, read the lattice state and the artifact store
``node``      one per node, scoped to its name: answer its own control requests and
              provider calls, publish its own events and logs, call other nodes'
              providers *as itself*, deliver to actors, hand the HTTP requests its
              listeners take to the actors' nodes *as itself* (and take them), read the lattice state and the
              artifacts, write its own records (its labels); plus the application
              subjects it was enrolled with (``messaging``)
``client``    an application: deliver to actors (``drupelet call``) and publish and
              subscribe to the application subjects it was given
============  ===========================================================================

Each user's reply inboxes are ``_INBOX.<name>.…`` (:func:`subjects.inbox_prefix`), and only
its own are in its subscribe permissions, so no user reads another's replies. A node may
publish to every inbox: NATS's response permission does not cross a leaf connection
(nats-server issue 2949), and a node answers requests from everyone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from drupelet.providers.messaging import PROTECTED_SUBJECTS, REPLY_INBOXES, check_subject, protected_match, \
    subjects_overlap

from drupelet.node.lattice import requests, subjects
from drupelet.node.lattice.artifacts import bucket_name as artifacts_bucket
from drupelet.node.lattice.errors import AuthError, NotPermitted
from drupelet.node.lattice.statekeys import bucket_name as state_bucket, kv_subject, own_keys
from drupelet.node.security.natsjwt import Permissions

__all__ = ["ROLES", "AuthError", "NotPermitted", "check_messaging", "permissions", "permits"]

ADMIN, VIEWER, NODE, CLIENT = "admin", "viewer", "node", "client"
ROLES: Final = (ADMIN, VIEWER, NODE, CLIENT)
EVERYTHING = ">"
ANY_DOMAIN = "*"
NODE_FOLLOWS = ("actor_stopped", "node_stopped")
"""The other nodes' events a node acts on (its provider server releases what they held)."""
RESPONSE_TTL_S = 60.0


JETSTREAM_READS: Final = ("INFO", "STREAM.NAMES", "STREAM.INFO.*", "STREAM.MSG.GET.*", "DIRECT.GET.>",
                           "CONSUMER.CREATE.>", "CONSUMER.INFO.>")
"""The JetStream API that reads and nothing else: account and stream info, getting a message,
and the ordered consumers of a KV watch or an object read (nats-py looks a stream up by name
first). None of it writes, purges or deletes a stream."""


def lattice_reads(lattice: str) -> list[str]:
    """Reading the lattice state and the artifact store, in the connected server's JetStream
    domain and in any other (a leaf's node reads the hub's), and deleting the consumers it made."""
    streams = (f"KV_{state_bucket(lattice)}", f"OBJ_{artifacts_bucket(lattice)}")
    return [*(subjects.jetstream_api(api, domain) for domain in (None, ANY_DOMAIN) for api in JETSTREAM_READS),
            *(subjects.jetstream_api(f"CONSUMER.DELETE.{stream}.*", domain)
              for domain in (None, ANY_DOMAIN) for stream in streams),
            subjects.JETSTREAM_FLOW_CONTROL]


def read_requests(lattice: str) -> list[str]:
    """Every request that only reads: ping, a node's reads, the lattice's reads."""
    return [subjects.ping(lattice),
            *(subjects.node_control_any(lattice, v) for v in requests.read_verbs(requests.NODE_REQUESTS)),
            *(subjects.lattice_control(lattice, v) for v in requests.read_verbs(requests.LATTICE_REQUESTS))]


def own_state_writes(lattice: str, node: str) -> list[str]:
    """The keys ``node`` writes itself (:data:`WRITERS`), from its own server's domain and any other."""
    bucket = state_bucket(lattice)
    return [kv_subject(bucket, key, domain) for key in own_keys(node) for domain in (None, ANY_DOMAIN)]


def check_messaging(patterns: Iterable[str]) -> tuple[str, ...]:
    """Application subjects a node or client may use: valid NATS subjects (wildcards allowed)
    that reach none of the lattice's own subjects or reply inboxes. :class:`AuthError` otherwise."""
    out = []
    for pattern in patterns:
        pattern = pattern.strip()
        if not pattern:
            continue
        try:
            check_subject(pattern)
        except Exception as exc:
            raise AuthError(f"--messaging {pattern!r}: {exc}") from None
        clash = protected_match(pattern, PROTECTED_SUBJECTS + REPLY_INBOXES)
        if clash is not None:
            raise AuthError(f"--messaging {pattern!r} would reach {clash}, the lattice's own subjects or reply "
                            "inboxes: give application subjects such as sensors.>")
        out.append(pattern)
    return tuple(dict.fromkeys(out))


def permissions(role: str, lattice: str, name: str, *, messaging: Iterable[str] = ()) -> Permissions:
    """The subject permissions of ``name`` in ``role`` (``name`` is the node's name for a node)."""
    subjects.token(name, "user")
    apps = check_messaging(messaging)
    return _dedup(_permissions(role, lattice, name, apps))


def _dedup(p: Permissions) -> Permissions:
    return Permissions(tuple(dict.fromkeys(p.pub_allow)), p.pub_deny, tuple(dict.fromkeys(p.sub_allow)), p.sub_deny,
                       p.responses, p.response_ttl_s)


def _permissions(role: str, lattice: str, name: str, apps: tuple[str, ...]) -> Permissions:
    inbox = subjects.inboxes_of(name)
    if role == ADMIN:
        return Permissions(pub_allow=(EVERYTHING,), sub_allow=(EVERYTHING,))
    if role == VIEWER:
        return Permissions(
            pub_allow=tuple([*read_requests(lattice), *lattice_reads(lattice)]),
            sub_allow=(subjects.events_all(lattice), subjects.logs_all(lattice), inbox))
    if role == NODE:
        return Permissions(
            pub_allow=tuple([subjects.events_of(lattice, name), subjects.logs_of(lattice, name),
                             subjects.provider_calls_from(lattice, name), subjects.deliver_all(lattice),
                             subjects.http_from(lattice, name),
                             subjects.ping(lattice), subjects.INBOXES, *lattice_reads(lattice),
                             *own_state_writes(lattice, name), *apps]),
            sub_allow=tuple([subjects.ping(lattice), subjects.node_control_all(lattice, name),
                             *(subjects.lattice_control(lattice, v)
                               for v in requests.read_verbs(requests.LATTICE_REQUESTS)),
                             *(subjects.events_of_kind(lattice, kind) for kind in NODE_FOLLOWS),
                             subjects.provider_calls_all(lattice, name), subjects.deliver_all(lattice),
                             subjects.http_all(lattice), inbox,
                             *apps]))
    if role == CLIENT:
        return Permissions(pub_allow=(subjects.deliver_all(lattice), *apps), sub_allow=(inbox, *apps),
                           responses=1, response_ttl_s=RESPONSE_TTL_S)
    raise AuthError(f"unknown role {role!r}: one of {', '.join(ROLES)}")


def permits(allow: Iterable[str], deny: Iterable[str], subject: str) -> bool:
    """Whether a subject passes an allow list (empty: everything) and a deny list, by NATS's rules."""
    allowed = list(allow)
    if allowed and not any(subjects_overlap(subject, pattern) for pattern in allowed):
        return False
    return not any(subjects_overlap(subject, pattern) for pattern in deny)


@dataclass(frozen=True)
class Grant:
    """What one user's credentials allow, as a client reads them from its own ``.creds``."""

    name: str
    role: str
    permissions: Permissions

    def may_publish(self, subject: str) -> bool:
        return permits(self.permissions.pub_allow, self.permissions.pub_deny, subject)

    def check_publish(self, subject: str, what: str) -> None:
        """:class:`NotPermitted` unless these credentials may publish ``subject`` (``what`` says
        what it is for a person: ``actor.start to pi-1``)."""
        if not self.may_publish(subject):
            raise NotPermitted(f"not permitted: {self.role} {self.name!r} may not send {what} "
                               f"({subject} is outside its credentials' permissions)")
