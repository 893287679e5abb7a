"""The root of every error the node raises on purpose, and the config error below every layer.

Each layer keeps its errors in one module, each rooted here, each with its ``code`` on the
class (the code a control reply carries):

=============================  ===========================================================
module                         errors
=============================  ===========================================================
``drupelet.node.errors``       :class:`DrupeletError`, :class:`ConfigError`
``drupelet.node.runtime.errors``  actors in wasmtime: compile, start, traps, deadlines
``drupelet.node.host.errors``  the host API: requests, actors, links, providers, hardware
``drupelet.node.lattice.errors``  NATS: connections, requests, state, artifacts, replies
``drupelet.node.security.errors``  signed actors: keys, claims, one class per refusal reason
``drupelet.node.system.…``     the data-directory lock (``DataDirInUse``)
=============================  ===========================================================

Providers have their own root, :class:`drupelet.providers.base.ProviderError`: they never
import the node.
"""

from __future__ import annotations


class DrupeletError(Exception):
    """Root of every error the node raises on purpose."""

    code = "error"

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class ConfigError(DrupeletError, ValueError):
    """The node config is not valid. ``key`` is the dotted path of the offending key."""

    code = "bad-config"

    def __init__(self, message: str, *, key: str = "", path: str = "") -> None:
        where = f"{path}: " if path else ""
        what = f"{key}: " if key else ""
        super().__init__(f"{where}{what}{message}")
        self.key = key
        self.path = path
