"""The runtime: the only part of drupelet that imports wasmtime.

:class:`Runtime` owns the engine (epoch interruption on, one epoch ticker thread), the
linker with every interface drupelet serves, and the on-disk compile cache.
:class:`ActorInstance` is one instance of a component in its own store, driven by one
worker thread.
"""

from drupelet.node.runtime.bindings import HANDLER_EXPORT, NODE_SERVED, SERVED_VERSIONS, ImportHost, missing_imports, split_version
from drupelet.node.runtime.engine import (ActorInstance, CompileError, Limits, LoadedComponent, Runtime, RuntimeConfig, read_component,
                     wat_to_wasm)

__all__ = [
    "ActorInstance", "CompileError", "HANDLER_EXPORT", "ImportHost", "Limits", "LoadedComponent",
    "NODE_SERVED", "Runtime", "RuntimeConfig", "SERVED_VERSIONS", "missing_imports", "read_component",
    "split_version", "wat_to_wasm",
]
