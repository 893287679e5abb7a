"""Whom a node trusts and what a signed actor may touch.

:class:`TrustPolicy` is the node's ``[trust]`` config plus the lattice's revocations;
:func:`admit` turns an actor's bytes into its :class:`Identity` or raises the refusal
(:mod:`.errors`). Caps name interfaces or whole packages (``wasi:keyvalue``,
``wasi:keyvalue/atomics``); wasmCloud 0.x contract ids map to today's packages through
:data:`CONTRACT_IDS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from .claims import Claims, inspect
from .errors import CapsMissing, Revoked, SecurityError, UnknownIssuer

__all__ = ["CONTRACT_IDS", "Identity", "TrustPolicy", "admit", "caps_allow", "check_caps", "normalize_cap"]

log = logging.getLogger(__name__)

CONTRACT_IDS = {
    "wasmcloud:keyvalue": "wasi:keyvalue",
    "wasmcloud:builtin:logging": "wasi:logging",
    "wasmcloud:messaging": "wasmcloud:messaging",
    "wasmcloud:httpserver": "wasi:http/incoming-handler",
    "wasmcloud:httpclient": "wasi:http/outgoing-handler",
}
"""wasmCloud 0.x capability contract ids and the package each stands for here."""

IMPLIED = {"wasi:i2c": ("drupelet:hardware/i2c-bus",)}
"""Caps that also cover the interface through which the node hands their package out
(a ``wasi:i2c`` bus is opened with ``drupelet:hardware/i2c-bus``)."""


def normalize_cap(cap: str) -> str:
    """A cap as a package or interface without version: 0.x contract ids mapped."""
    cap = cap.strip()
    return CONTRACT_IDS.get(cap, cap.partition("@")[0])


def caps_allow(caps: Iterable[str], interface: str) -> bool:
    """Whether ``caps`` cover ``interface`` (``pkg:name/iface``, any ``@version`` ignored)."""
    base = interface.partition("@")[0]
    package = base.partition("/")[0]
    return any(cap in (base, package) or base in IMPLIED.get(cap, ()) for cap in map(normalize_cap, caps))


@dataclass(frozen=True)
class TrustPolicy:
    """``keys``: trusted issuer public keys (empty: any valid signature is trusted);
    ``allow_unsigned``: unsigned actors run (with a warning); ``clock_skew_s``: slack on
    ``exp``/``nbf``; ``revoked``: subject and issuer keys refused everywhere."""

    keys: tuple[str, ...] = ()
    allow_unsigned: bool = True
    clock_skew_s: float = 300.0
    revoked: frozenset[str] = field(default_factory=frozenset)

    def with_revoked(self, revoked: Iterable[str]) -> TrustPolicy:
        return TrustPolicy(self.keys, self.allow_unsigned, self.clock_skew_s, frozenset(revoked))


@dataclass(frozen=True)
class Identity:
    """Who an admitted actor is; ``claims`` is None for an unsigned one."""

    claims: Claims | None
    hash: str

    @property
    def signed(self) -> bool:
        return self.claims is not None

    @property
    def caps(self) -> tuple[str, ...]:
        return () if self.claims is None else self.claims.caps

    def describe(self) -> dict[str, Any]:
        """The fields inventory, ``actor list`` and events carry."""
        c = self.claims
        return {"signed": c is not None, "issuer": c.issuer if c else None, "subject": c.subject if c else None,
                "claims_name": c.name if c else None, "version": c.ver if c else None,
                "caps": list(c.caps) if c else None}


def admit(data: bytes, policy: TrustPolicy, *, actor: str, now: float | None = None) -> Identity:
    """The identity of ``data`` if ``policy`` lets it run, else the refusal."""
    found = inspect(data, actor=actor, now=time.time() if now is None else now, skew_s=policy.clock_skew_s)
    error: SecurityError | None = found.error
    if error is not None and error.code == "unsigned" and policy.allow_unsigned:
        log.warning("actor %s is unsigned: it runs because this node's [trust] allow_unsigned is true", actor)
        return Identity(None, found.hash)
    if error is not None:
        raise error
    claims = found.claims
    assert claims is not None
    for key, what in ((claims.subject, "subject"), (claims.issuer, "issuer")):
        if key in policy.revoked:
            raise Revoked(f"{actor}: its {what} {key[:8]}… is revoked", actor=actor)
    if policy.keys and claims.issuer not in policy.keys:
        raise UnknownIssuer(f"{actor}: signed by {claims.issuer[:8]}…, which this node does not trust "
                            f"([trust] keys)", actor=actor)
    return Identity(claims, found.hash)


def check_caps(identity: Identity, interfaces: Collection[str], *, actor: str, what: str) -> None:
    """:class:`CapsMissing` unless a signed actor's caps cover every one of ``interfaces``.

    Unsigned actors (admitted by ``allow_unsigned``) carry no claims to hold them to."""
    if identity.claims is None:
        return
    missing = tuple(sorted({i.partition("@")[0] for i in interfaces if not caps_allow(identity.caps, i)}))
    if missing:
        allowed = ", ".join(identity.caps) or "no caps"
        raise CapsMissing(f"{actor}: {what} {', '.join(missing)}, which its claims do not allow (they allow: "
                          f"{allowed})", actor=actor, missing=missing, allowed=identity.caps)
