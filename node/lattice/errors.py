"""Errors of everything that speaks NATS: connections, control requests and replies, the
lattice state, the artifact store."""

from __future__ import annotations

from drupelet.node.errors import DrupeletError


class LatticeError(DrupeletError):
    """Root of the lattice layer's errors."""

    code = "lattice"


class NatsUnavailable(LatticeError, ConnectionError):
    code = "nats-unavailable"


class NatsServerError(LatticeError, RuntimeError):
    """The embedded nats-server could not be found, started or stopped.

    ``summary`` is the one-line message without the log, ``log_tail`` holds the
    last lines of the server's log when there is one, ``returncode`` the exit
    status when the process has exited.
    """

    code = "nats-server"

    def __init__(
        self,
        message: str,
        *,
        log_tail: str | None = None,
        returncode: int | None = None,
    ) -> None:
        self.summary = message
        if log_tail:
            message = f"{message}\n--- last lines of the nats-server log ---\n{log_tail}"
        super().__init__(message)
        self.log_tail = log_tail
        self.returncode = returncode


# -- requests and replies -------------------------------------------------------


class AuthError(LatticeError):
    """A lattice directory, a role or credentials that cannot be used."""

    code = "auth"


class NotPermitted(LatticeError, PermissionError):
    """The credentials do not allow what was asked: refused before anything was sent, or by
    the NATS server (a permissions violation)."""

    code = "not-permitted"


class BadRequest(LatticeError, ValueError):
    """A control request that cannot be carried out as sent. ``field`` names the culprit."""

    code = "bad-request"

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class UnknownRequest(BadRequest):
    code = "unknown-request"


class Starting(LatticeError):
    """The node is restoring its state and cannot answer this request yet."""

    code = "starting"


class NoNode(LatticeError, LookupError):
    """No node answers (at all, or by that name, or with those labels)."""

    code = "no-node"


class Unreachable(LatticeError, ConnectionError):
    code = "unreachable"


class NoAnswer(LatticeError, TimeoutError):
    code = "timeout"


class ErrorReply(LatticeError):
    """A node answered with an error, or a lattice write was refused as a node would refuse
    it. The code is the node's (``actor-not-found``…): this error stands for one raised in
    another process, so its code comes with the reply."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.reply_code = code

    @property
    def code(self) -> str:  # type: ignore[override]
        return self.reply_code


# -- the lattice state ----------------------------------------------------------


class StateError(LatticeError):
    """A problem with the lattice's shared state (the KV bucket and its local copy).

    ``key`` is the state key involved ("" when none), ``bucket`` the KV bucket.
    """

    code = "state-error"

    def __init__(self, message: str, *, key: str = "", bucket: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.bucket = bucket


class BadStateEntry(StateError, ValueError):
    """A state key or value is malformed (wrong key shape, missing or mistyped field)."""

    code = "bad-state-entry"


class StateUnavailable(StateError, ConnectionError):
    """The shared state bucket cannot be reached; nothing was changed locally."""

    code = "state-unavailable"


# -- artifacts ------------------------------------------------------------------


class ArtifactError(LatticeError):
    """Root of the artifact store's errors. ``digest`` is the bare hex digest, if known."""

    code = "artifact"

    def __init__(self, message: str, *, digest: str = "") -> None:
        super().__init__(message)
        self.digest = digest


class InvalidDigest(ArtifactError, ValueError):
    """``text`` is not a SHA-256 digest this module accepts."""

    code = "bad-digest"

    def __init__(self, message: str, *, text: str) -> None:
        super().__init__(message)
        self.text = text


class ArtifactNotFound(ArtifactError, LookupError):
    code = "artifact-not-found"

    def __init__(self, message: str, *, digest: str) -> None:
        super().__init__(message, digest=digest)


class DigestMismatch(ArtifactError):
    """Bytes fetched for ``expected`` hash to ``actual``; they were refused."""

    code = "digest-mismatch"

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(message, digest=expected)
        self.expected = expected
        self.actual = actual


class ArtifactTooLarge(ArtifactError, ValueError):
    code = "artifact-too-large"

    def __init__(self, message: str, *, size: int, limit: int, digest: str = "") -> None:
        super().__init__(message, digest=digest)
        self.size = size
        self.limit = limit


class ArtifactStoreUnavailable(ArtifactError, NatsUnavailable):
    """No NATS connection, JetStream is not enabled (or not in that domain), or it timed out."""

    code = "artifact-store-unavailable"
