"""Errors of the host API: requests it refuses, actors, links, providers and hardware."""

from __future__ import annotations

from drupelet.node.errors import DrupeletError
from drupelet.node.runtime.errors import ActorError, CallFailed, StartRefused

__all__ = ["ActorError", "ActorExists", "ActorNotFound", "ActorStopped", "CallFailed", "HandlerError",
           "HardwareBusy", "HardwareDenied", "HardwareError", "HardwareIO", "HardwareNotFound", "InvalidRequest",
           "LinkError", "Overloaded", "PayloadTooLarge", "ProviderFailed", "ProviderNotFound", "StartRefused",
           "hardware_error"]


class InvalidRequest(DrupeletError, ValueError):
    """A request to the host that cannot be carried out as given."""

    code = "bad-request"


class ActorNotFound(ActorError, LookupError):
    code = "actor-not-found"


class ActorExists(ActorError):
    code = "actor-exists"


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


class ProviderFailed(DrupeletError):
    """A provider failed to start, or is already running."""

    code = "provider-failed"


class HardwareError(DrupeletError):
    """A hardware request (snapshot, simulated input) that a provider refused."""

    code = "hardware"


class HardwareDenied(HardwareError, PermissionError):
    code = "denied"


class HardwareBusy(HardwareError):
    code = "busy"


class HardwareNotFound(HardwareError, LookupError):
    code = "not-found"


class HardwareIO(HardwareError, OSError):
    code = "io"


_HARDWARE = {cls.code: cls for cls in (HardwareDenied, HardwareBusy, HardwareNotFound, HardwareIO)}


def hardware_error(message: str, provider_code: str) -> HardwareError:
    """The hardware error for a provider's error code (``denied``, ``io``…)."""
    return _HARDWARE.get(provider_code, HardwareError)(message)
