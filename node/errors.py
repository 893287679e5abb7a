"""The node's exceptions: one root, with fields a caller can act on."""

from __future__ import annotations


class DrupeletError(Exception):
    """Root of every error the node raises on purpose."""

    code = "error"

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class InvalidRequest(DrupeletError, ValueError):
    """A request to the host that cannot be carried out as given."""

    code = "bad-request"


class ConfigError(DrupeletError, ValueError):
    """The node config is not valid. ``key`` is the dotted path of the offending key."""

    code = "bad-config"

    def __init__(self, message: str, *, key: str = "", path: str = "") -> None:
        where = f"{path}: " if path else ""
        what = f"{key}: " if key else ""
        super().__init__(f"{where}{what}{message}")
        self.key = key
        self.path = path


class ActorError(DrupeletError):
    def __init__(self, message: str, *, actor: str) -> None:
        super().__init__(message)
        self.actor = actor


class ActorNotFound(ActorError, LookupError):
    code = "actor-not-found"


class ActorExists(ActorError):
    code = "actor-exists"


class StartRefused(ActorError):
    """The actor cannot start: bad component, missing imports, failed instantiation."""

    code = "start-refused"

    def __init__(self, message: str, *, actor: str, missing: list[str] | None = None) -> None:
        super().__init__(message, actor=actor)
        self.missing = list(missing or [])


class CallFailed(ActorError):
    """One call into an actor failed; the actor keeps running."""

    code = "call-failed"


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


class HandlerError(CallFailed):
    """The actor's handler returned its error value."""

    code = "handler-error"


class Overloaded(CallFailed):
    code = "overloaded"


class PayloadTooLarge(CallFailed, ValueError):
    code = "payload-too-large"

    def __init__(self, message: str, *, actor: str, size: int, limit: int) -> None:
        super().__init__(message, actor=actor)
        self.size = size
        self.limit = limit


class ActorStopped(CallFailed):
    code = "actor-stopped"


class LinkError(DrupeletError, ValueError):
    code = "bad-link"

    def __init__(self, message: str, *, source: str = "", interface: str = "", target: str = "") -> None:
        super().__init__(message)
        self.source = source
        self.interface = interface
        self.target = target


class ProviderNotFound(DrupeletError, LookupError):
    code = "provider-not-found"


class NatsUnavailable(DrupeletError, ConnectionError):
    code = "nats-unavailable"


class StateError(DrupeletError):
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


class HardwareError(DrupeletError):
    """A hardware request (snapshot, simulated input) a provider refused; ``code`` is the
    provider's (``denied``, ``io``…)."""

    def __init__(self, message: str, *, code: str = "hardware") -> None:
        super().__init__(message)
        self.code = code
