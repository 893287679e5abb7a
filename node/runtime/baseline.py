"""Raw wasmtime-py baselines for ``drupelet bench``: no node, no links, trivial imports.

They live in the runtime because only the runtime imports wasmtime. Each uses the
node's engine and the compile cache, so compilation is not part of any figure.
"""

from __future__ import annotations

import time

import wasmtime
from wasmtime import Store
from wasmtime.component import Linker, Record, ResourceHost, ResourceType

from drupelet.node.runtime.engine import Runtime
from drupelet.node.runtime.values import Ok

_BUCKET = 77


class RawKvLoop:
    """kvloop.wat under a bare linker whose ``open`` and ``get`` do nothing."""

    def __init__(self, runtime: Runtime, wasm: bytes) -> None:
        loaded = runtime.load(wasm)
        self.store = Store(runtime.engine)
        self.store.set_epoch_deadline(1 << 30)
        linker = Linker(runtime.engine)
        with linker.root() as root:
            with root.add_instance("wasi:keyvalue/store@0.2.0-draft") as kv:
                kv.add_resource("bucket", ResourceType.host(_BUCKET), lambda store, rep: None)
                kv.add_func("open", lambda store, name: Ok(ResourceHost.own(1, _BUCKET)))
                # A borrowed handle must be released before the call returns; to_host does
                # that, exactly as the node's binding does. Results are returned as Ok(...),
                # which lowers faster than wasmtime-py's guess from a bare value, so the
                # baseline is the fastest raw call, not a handicapped one.
                kv.add_func("[method]bucket.get", lambda store, this, key: this.to_host(store) and Ok(None))
                kv.add_func("[method]bucket.set", lambda store, this, key, value: this.to_host(store) and Ok(None))
        self.instance = linker.instantiate(self.store, loaded.component)
        func = self.instance.get_func(self.store, "run")
        assert func is not None
        self.run = func

    def per_call_s(self, n: int) -> float:
        t0 = time.perf_counter()
        ok = self.run(self.store, n)
        self.run.post_return(self.store)
        elapsed = time.perf_counter() - t0
        assert ok == n
        return elapsed / n

    def close(self) -> None:
        self.store.close()


class RawHandler:
    """The ``handle-message`` export called directly, one call per message."""

    def __init__(self, runtime: Runtime, wasm: bytes) -> None:
        loaded = runtime.load(wasm)
        self.store = Store(runtime.engine)
        self.store.set_epoch_deadline(1 << 30)
        linker = Linker(runtime.engine)
        with linker.root() as root:
            with root.add_instance("wasmcloud:messaging/types@0.2.0"):
                pass
        instance = linker.instantiate(self.store, loaded.component)
        idx = instance.get_export_index(self.store, "wasmcloud:messaging/handler@0.2.0")
        fidx = instance.get_export_index(self.store, "handle-message", idx)
        func = instance.get_func(self.store, fidx) if fidx else None
        if func is None:
            raise wasmtime.WasmtimeError("component exports no wasmcloud:messaging/handler")
        self.func = func

    def per_call_s(self, n: int, body: bytes) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            msg = Record()
            setattr(msg, "subject", "bench.msg")
            setattr(msg, "body", body)
            setattr(msg, "reply-to", None)
            self.func(self.store, msg)
            self.func.post_return(self.store)
        return (time.perf_counter() - t0) / n

    def close(self) -> None:
        self.store.close()
