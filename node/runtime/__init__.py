"""The runtime: the only part of drupelet that imports wasmtime.

:class:`Runtime` owns the engine (epoch interruption on, one epoch ticker thread), the
linker with every interface drupelet serves, and the on-disk compile cache.
:class:`ActorInstance` is one instance of a component in its own store, driven by one
worker thread. :class:`Imports` is what an instance's imports ask of the host.

Imports: ``wasmtime``, ``drupelet.node.errors`` and ``drupelet.providers.base``; nothing
else of the node.
"""

from drupelet.node.runtime.bindings import (HANDLER_EXPORT, HTTP_INCOMING, NODE_SERVED, SERVED_VERSIONS, WASI_P2_PACKAGES, Imports,
                                            missing_imports, split_version)
from drupelet.node.runtime.engine import (ActorInstance, Limits, LoadedComponent, Runtime, RuntimeConfig,
                                          read_component, wat_to_wasm)
from drupelet.node.runtime.errors import CompileError

__all__ = [
    "ActorInstance", "CompileError", "HANDLER_EXPORT", "HTTP_INCOMING", "Imports", "Limits", "LoadedComponent",
    "NODE_SERVED", "Runtime", "RuntimeConfig", "SERVED_VERSIONS", "missing_imports", "read_component",
    "WASI_P2_PACKAGES", "split_version", "wat_to_wasm",
]
