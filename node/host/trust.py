"""Where the trust policy meets the host: admitting an actor, its imports and its links.

:class:`ActorTrust` holds the node's :class:`~drupelet.node.security.policy.TrustPolicy`
(from ``[trust]`` of the node config) and the lattice's revocations, and turns each
refusal into a log line and an ``actor_refused`` event before it is raised. Imports of
interfaces the node serves itself (logging, config, WASI preview 2) need no cap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from drupelet.node.config import NodeConfig
from drupelet.node.runtime import NODE_SERVED, WASI_P2_PACKAGES, split_version
from drupelet.node.security.errors import SecurityError
from drupelet.node.security.policy import Identity, TrustPolicy, admit, check_caps

__all__ = ["ActorTrust", "capability_imports"]

log = logging.getLogger(__name__)

Emit = Callable[[str, dict[str, Any]], None]


def capability_imports(imports: Iterable[str]) -> list[str]:
    """The imports (without version) that only a cap lets an actor have."""
    out = []
    for name in imports:
        base, _ = split_version(name)
        if base in NODE_SERVED or base.startswith(WASI_P2_PACKAGES):
            continue
        out.append(base)
    return sorted(set(out))


class ActorTrust:
    """The node's policy over actors; ``emit`` sends a node event."""

    def __init__(self, config: NodeConfig, emit: Emit) -> None:
        self.policy = TrustPolicy(keys=tuple(config.trust_keys), allow_unsigned=config.trust_allow_unsigned,
                                  clock_skew_s=config.trust_clock_skew_s)
        self._emit = emit
        self._last_refused: dict[str, str] = {}

    def set_revoked(self, revoked: Iterable[str]) -> None:
        self.policy = self.policy.with_revoked(revoked)

    def revoked_reason(self, identity: Identity) -> str | None:
        """Which of ``identity``'s keys is revoked, in words, or None."""
        c = identity.claims
        if c is None:
            return None
        for key, what in ((c.subject, "subject"), (c.issuer, "issuer")):
            if key in self.policy.revoked:
                return f"its {what} {key[:8]}… is revoked"
        return None

    def refused(self, actor: str, exc: SecurityError, **extra: Any) -> SecurityError:
        """Log and announce a refusal; returns ``exc`` for the caller to raise. The same
        refusal again (a desired actor retried every reconcile) is logged at debug only."""
        if self._last_refused.get(actor) == exc.message:
            log.debug("actor %s refused again (%s): %s", actor, exc.code, exc.message)
            return exc
        self._last_refused[actor] = exc.message
        log.warning("actor %s refused (%s): %s", actor, exc.code, exc.message)
        self._emit("actor_refused", {"actor": actor, "reason": exc.code, "detail": exc.message, **extra})
        return exc

    async def admit(self, actor: str, wasm: bytes) -> Identity:
        """The identity of ``wasm`` if it may run here as ``actor``, else the refusal (announced).

        Hashing a component (tens of MB for a componentize-py actor) runs in a worker
        thread, not on the event loop; the refusal is announced back on the loop."""
        try:
            identity = await asyncio.to_thread(admit, wasm, self.policy, actor=actor)
        except SecurityError as exc:
            raise self.refused(actor, exc) from None
        self._last_refused.pop(actor, None)
        return identity

    def check_imports(self, actor: str, identity: Identity, imports: Iterable[str]) -> None:
        try:
            check_caps(identity, capability_imports(imports), actor=actor, what="imports")
        except SecurityError as exc:
            raise self.refused(actor, exc, **identity.describe()) from None

    def check_link(self, actor: str, identity: Identity, interfaces: Iterable[str]) -> None:
        try:
            check_caps(identity, list(interfaces), actor=actor, what="a link would give it")
        except SecurityError as exc:
            raise self.refused(actor, exc, **identity.describe()) from None
