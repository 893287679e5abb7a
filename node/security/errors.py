"""Why an actor is refused: one root, :class:`SecurityError`, and one class per reason.

Each class's ``code`` is the reason a person reads (``drupelet claims``, the CLI's error, the
node's log, the ``actor_refused`` event) and the code a control reply carries.
"""

from __future__ import annotations

from drupelet.node.errors import DrupeletError

__all__ = ["BadKey", "BadSignature", "BadWasm", "CapsMissing", "Expired", "HashMismatch", "NotYetValid",
           "Revoked", "SecurityError", "Unsigned", "UnknownIssuer"]


class SecurityError(DrupeletError):
    """An actor, key or signature the node does not accept. ``actor`` names what was checked."""

    code = "refused"

    def __init__(self, message: str, *, actor: str = "") -> None:
        super().__init__(message)
        self.actor = actor


class BadKey(SecurityError, ValueError):
    """Not an nkey (seed or public key) of the kind asked for."""

    code = "bad-key"


class BadWasm(SecurityError, ValueError):
    """Not a WebAssembly module or component, or its sections do not parse."""

    code = "bad-wasm"


class Unsigned(SecurityError):
    code = "unsigned"


class BadSignature(SecurityError):
    """The JWT does not parse, or its signature is not the issuer's."""

    code = "bad-signature"


class HashMismatch(SecurityError):
    """The bytes changed after signing: their hash is not the one the claims sign."""

    code = "hash-mismatch"


class UnknownIssuer(SecurityError):
    code = "unknown-issuer"


class Expired(SecurityError):
    code = "expired"


class NotYetValid(SecurityError):
    code = "not-yet-valid"


class Revoked(SecurityError):
    code = "revoked"


class CapsMissing(SecurityError):
    """An import or link the claims' ``caps`` do not cover. ``allowed`` is what they list."""

    code = "caps"

    def __init__(self, message: str, *, actor: str = "", missing: tuple[str, ...] = (),
                 allowed: tuple[str, ...] = ()) -> None:
        super().__init__(message, actor=actor)
        self.missing = missing
        self.allowed = allowed
