"""Errors of actors in wasmtime: a component that does not compile or start, a call that
traps or runs past its deadline. The host's own call failures build on :class:`CallFailed`."""

from __future__ import annotations

from drupelet.node.errors import DrupeletError


class ActorError(DrupeletError):
    """Root of the errors about one actor; ``actor`` names it."""

    code = "actor-error"

    def __init__(self, message: str, *, actor: str) -> None:
        super().__init__(message)
        self.actor = actor


class CompileError(DrupeletError, ValueError):
    """The bytes are not a component this engine can compile."""

    code = "invalid-component"


class StartRefused(ActorError):
    """The actor cannot start: bad component, missing imports, failed instantiation."""

    code = "start-refused"

    def __init__(self, message: str, *, actor: str, missing: list[str] | None = None) -> None:
        super().__init__(message, actor=actor)
        self.missing = list(missing or [])


class CallFailed(ActorError):
    """One call into an actor failed; the actor keeps running."""

    code = "call-failed"


class NoReply(CallFailed):
    """The handler returned Ok for a message that asked for a reply without publishing
    one to its reply subject: the requester is told at once instead of timing out."""

    code = "no-reply"


class Trapped(CallFailed):
    """The guest trapped. ``trap`` is wasmtime's description."""

    code = "trap"

    def __init__(self, message: str, *, actor: str, trap: str) -> None:
        super().__init__(message, actor=actor)
        self.trap = trap


class DeadlineExceeded(Trapped, TimeoutError):
    code = "deadline-exceeded"

    def __init__(self, message: str, *, actor: str, trap: str, deadline_ms: int) -> None:
        super().__init__(message, actor=actor, trap=trap)
        self.deadline_ms = deadline_ms


class WasmtimeVersionError(DrupeletError, ImportError):
    """The installed wasmtime-py is not the release the runtime was written against."""

    code = "wasmtime-version"
