"""The engine: one wasmtime Engine per node, a compile cache, and actor instances."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import Store, WasiConfig
from wasmtime.component import Component, ComponentInstanceType, Func, FuncType, Linker

from drupelet.providers.base import atomic_write

from drupelet.node.runtime.errors import CompileError, DeadlineExceeded, NoReply, StartRefused, Trapped
from drupelet.node.runtime import bindings
from drupelet.node.runtime import aot as aot
from drupelet.node.runtime import handles, values
from drupelet.node.runtime import wasi_http, wasi_io
from drupelet.node.runtime.bindings import Imports, InstanceContext
from drupelet.providers.base import HttpExchange
from drupelet.node.runtime.sched import LongCalls, can_demote

log = logging.getLogger(__name__)

WASM_MAGIC = b"\x00asm"
CORE_MODULE_LAYER = b"\x01\x00\x00\x00"
COMPONENT_LAYER = b"\x0d\x00\x01\x00"


@dataclass(frozen=True)
class RuntimeConfig:
    cache_dir: Path
    epoch_tick_ms: int = 10
    compile_in_subprocess: bool = True
    compile_timeout_s: float = 600.0
    compile_memory_bytes: int = 1 << 30
    """The compile child's address space (RLIMIT_AS); 0: no limit."""
    compile_queue: int = 8
    """Compiles that may wait while one runs; one more is refused."""


@dataclass(frozen=True)
class Limits:
    call_deadline_ms: int = 5000
    max_memory_bytes: int = 256 << 20
    max_payload_bytes: int = 1 << 20


@dataclass
class LoadedComponent:
    digest: str
    component: Component
    imports: list[str]
    exports: list[str]
    from_cache: bool
    load_ms: float
    size_bytes: int
    import_funcs: dict[str, list[str]] = field(default_factory=dict)
    """Of a component served with the Python WASI: per imported WASI or ``wasi:http``
    interface, the functions it imports."""

    @property
    def has_handler(self) -> bool:
        return bindings.HANDLER_EXPORT in self.exports

    @property
    def http_export(self) -> str | None:
        """The exported ``wasi:http/incoming-handler@0.2.x``, if any."""
        return next((e for e in self.exports if e.startswith(f"{bindings.HTTP_INCOMING}@0.2.")), None)

    @property
    def speaks_http(self) -> bool:
        """Whether the component exports or imports ``wasi:http``: it then runs on the
        Python WASI (:mod:`.wasi_io`), since ``wasi:http`` is served from Python."""
        return self.http_export is not None or any(i.startswith("wasi:http/") for i in self.imports)


def check_wasm_header(wasm: bytes) -> None:
    if len(wasm) < 8 or wasm[:4] != WASM_MAGIC:
        raise CompileError("not a WebAssembly binary (no \\0asm header)")
    if wasm[4:8] == CORE_MODULE_LAYER:
        raise CompileError("this is a core wasm module, not a component; "
                           "build it as a component (componentize-py, cargo-component, "
                           "or `wasm-tools component new`)")
    if wasm[4:8] != COMPONENT_LAYER:
        raise CompileError(f"unsupported component encoding version {wasm[4:8].hex()}")


class Runtime:
    """Owns the engine, its epoch ticker, the linker and the compile cache."""

    def __init__(self, config: RuntimeConfig) -> None:
        values.install()
        handles.install()
        self.config = config
        self.engine = wasmtime.Engine(aot.engine_config())
        self.linker = Linker(self.engine)
        bindings.define_all(self.linker)
        self._linker_lock = threading.Lock()
        self._stop = threading.Event()
        self.long_calls = LongCalls(can_demote())
        """Calls past LONG_CALL_MS go on at idle priority (sched.py); the ticker demotes them."""
        self._ticker = threading.Thread(target=self._tick, name="drupelet-epoch", daemon=True)
        self._ticker.start()
        self._loaded: dict[str, LoadedComponent] = {}
        self._http_linkers: dict[str, Linker] = {}
        self._load_lock = threading.Lock()
        """Guards ``_loaded``; never held across a compile, so a cached start never waits for one."""
        self._compile_turn = threading.Lock()
        """One compile at a time; the others wait their turn (at most ``compile_queue`` of them)."""
        self._compile_waiting = 0
        self._compile_lock = threading.Lock()
        self._compiling: subprocess.Popen[str] | None = None
        self._no_compiles = False

    @property
    def tick_ms(self) -> int:
        return self.config.epoch_tick_ms

    def _tick(self) -> None:
        interval = self.config.epoch_tick_ms / 1000.0
        while not self._stop.wait(interval):
            self.engine.increment_epoch()
            self.long_calls.sweep()

    def stop_compiling(self) -> None:
        """Kill a compile in progress and refuse new ones (the node is stopping). Idempotent."""
        with self._compile_lock:
            self._no_compiles = True
            child = self._compiling
        if child is not None and child.poll() is None:
            log.info("stopping: killing the compile in progress (pid %d)", child.pid)
            child.kill()

    def close(self) -> None:
        """Kill a compile in progress and stop the epoch ticker. Idempotent."""
        self.stop_compiling()
        self._stop.set()
        if self._ticker.is_alive() and self._ticker is not threading.current_thread():
            self._ticker.join(timeout=2)

    # -- loading and the compile cache -------------------------------------------------

    def cache_path(self, wasm: bytes) -> Path:
        return self.config.cache_dir / f"{aot.cache_key(wasm)}.cwasm"

    def load(self, wasm: bytes) -> LoadedComponent:
        """Compile ``wasm`` (or map it from the cache) and describe its imports and exports.

        Compiles run one at a time, at most ``compile_queue`` waiting (one more is a
        :class:`CompileError`); a component already in the cache, or mapped, never waits."""
        check_wasm_header(wasm)
        digest = hashlib.sha256(wasm).hexdigest()
        with self._load_lock:
            known = self._loaded.get(digest)
        if known is not None:  # already mapped in this process: as good as the cache
            return dataclasses.replace(known, from_cache=True, load_ms=0.0)
        started = time.perf_counter()
        path = self.cache_path(wasm)
        component = self._from_cache(path)
        from_cache = component is not None
        if component is None:
            self._compile_in_turn(wasm, path)
            component = Component.deserialize_file(self.engine, str(path))
        ctype = component.type
        imports = ctype.imports(self.engine)
        loaded = LoadedComponent(
            digest=digest,
            component=component,
            imports=sorted(imports),
            exports=sorted(ctype.exports(self.engine)),
            from_cache=from_cache,
            load_ms=0.0,
            size_bytes=len(wasm),
        )
        if loaded.speaks_http:
            loaded.import_funcs = _python_wasi_imports(self.engine, imports)
        loaded.load_ms = (time.perf_counter() - started) * 1000.0
        with self._load_lock:
            return self._loaded.setdefault(digest, loaded)

    def _from_cache(self, path: Path) -> Component | None:
        if not path.exists():
            return None
        try:
            component = Component.deserialize_file(self.engine, str(path))
        except wasmtime.WasmtimeError as exc:
            log.warning("compile cache entry %s is unusable (%s); compiling again", path.name, exc)
            path.unlink(missing_ok=True)
            return None
        try:
            os.utime(path)  # recently used: the cache's disk budget evicts the least recently used first
        except OSError:
            pass
        return component

    def _compile_in_turn(self, wasm: bytes, path: Path) -> None:
        with self._compile_lock:
            if self._compile_waiting > self.config.compile_queue:  # one compiling, compile_queue waiting
                raise CompileError(f"{self._compile_waiting} compiles are running or waiting (one runs at a time, "
                                   f"[runtime] compile_queue = {self.config.compile_queue} may wait); try again "
                                   "later")
            self._compile_waiting += 1
        try:
            with self._compile_turn:
                if not path.exists():  # the same component may have been compiled while this one waited
                    self._compile(wasm, path)
        finally:
            with self._compile_lock:
                self._compile_waiting -= 1

    def cached_digests(self) -> set[str]:
        """Digests of the components mapped in this process."""
        with self._load_lock:
            return set(self._loaded)

    def forget(self, digest: str) -> None:
        with self._load_lock:
            self._loaded.pop(digest, None)
            self._http_linkers.pop(digest, None)

    def linker_for(self, loaded: LoadedComponent) -> Linker:
        """The node's linker (wasmtime's WASI), or for a component that speaks
        ``wasi:http`` one of its own with the Python WASI (built once per component)."""
        if not loaded.speaks_http:
            return self.linker
        with self._load_lock:
            linker = self._http_linkers.get(loaded.digest)
            if linker is None:
                linker = Linker(self.engine)
                with linker.root() as root:
                    bindings.define_served(root)
                    for name, funcs in sorted(loaded.import_funcs.items()):
                        base = name.partition("@")[0]
                        if base in wasi_http.FUNCS:
                            wasi_http.define(root, name, funcs)
                        else:
                            wasi_io.define_instance(root, name, wasi_io.FUNCS[base], wasi_io.RESOURCES.get(base, {}),
                                                    funcs)
                self._http_linkers[loaded.digest] = linker
            return linker

    def _compile(self, wasm: bytes, dst: Path) -> None:
        started = time.perf_counter()
        if not self.config.compile_in_subprocess:
            try:
                atomic_write(dst, aot.compile_bytes(wasm))
            except wasmtime.WasmtimeError as exc:
                raise CompileError(f"wasmtime refused the component: {_first_line(str(exc))}") from exc
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(prefix="src-", suffix=".wasm", dir=dst.parent, delete=False) as fh:
                fh.write(wasm)
                src = Path(fh.name)
            try:
                returncode, stderr = self._run_compiler(src, dst)
            finally:
                src.unlink(missing_ok=True)
            if returncode != 0:
                limit = self.config.compile_memory_bytes
                if limit and (_OUT_OF_MEMORY in stderr or returncode in (-6, 134)):
                    raise CompileError(f"compiling needs more than the {limit >> 20} MiB of address space "
                                       "[runtime] compile_memory_bytes allows the compile child; raise it to "
                                       "compile this component here, or compile it elsewhere")
                raise CompileError(f"wasmtime refused the component: {_first_line(stderr)}")
        log.info("compiled component to %s in %.1f s", dst.name, time.perf_counter() - started)

    def _run_compiler(self, src: Path, dst: Path) -> tuple[int, str]:
        """Run the compile child; :meth:`close` kills it (a node stopping mid-compile)."""
        with self._compile_lock:
            if self._no_compiles:
                raise CompileError("the node is stopping; not compiling")
            proc = subprocess.Popen(
                # runpy warns that the package imported aot before running it: harmless, and
                # it would stand first in the reason a refused start shows
                [sys.executable, "-W", "ignore::RuntimeWarning:runpy", "-m", "drupelet.node.runtime.aot",
                 "--memory-limit", str(self.config.compile_memory_bytes), str(src), str(dst)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "RUST_BACKTRACE": "0"},
            )
            self._compiling = proc
        try:
            _, stderr = proc.communicate(timeout=self.config.compile_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise CompileError(f"compiling took longer than {self.config.compile_timeout_s:.0f} s") from None
        finally:
            with self._compile_lock:
                self._compiling = None
        if self._no_compiles:
            raise CompileError("the node stopped while the component was compiling")
        return proc.returncode, stderr

    @property
    def compiling(self) -> bool:
        """Whether a compile child is running now."""
        return self._compiling is not None

    # -- instances ------------------------------------------------------------------

    def instantiate(self, loaded: LoadedComponent, host: Imports, limits: Limits,
                    stdout: Callable[[bytes], None], stderr: Callable[[bytes], None]) -> ActorInstance:
        """Create one instance. Call from the thread that will run it."""
        return ActorInstance(self, loaded, host, limits, stdout, stderr)


def _python_wasi_imports(engine: wasmtime.Engine, imports: dict[str, Any]) -> dict[str, list[str]]:
    """Per imported interface served by the Python WASI: the function names imported."""
    out: dict[str, list[str]] = {}
    for name, ext in imports.items():
        base = name.partition("@")[0]
        if base not in wasi_io.FUNCS and base not in wasi_http.FUNCS:
            continue
        ty = ext.ty
        if isinstance(ty, ComponentInstanceType):
            out[name] = sorted(n for n, e in ty.exports(engine).items() if isinstance(e.ty, FuncType))
    return out


_OUT_OF_MEMORY = "memory allocation of"
"""How the Rust allocator says it failed (then it aborts) in the compile child under its limit."""


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "no reason given"
    # wasmtime's first line is often generic; keep the most specific "Caused by" too
    first = lines[0]
    for i, line in enumerate(lines):
        if line.startswith("Caused by") and i + 1 < len(lines):
            return f"{first} ({lines[-1].lstrip('0123456789: ')})"
    return first


@dataclass
class CallStats:
    calls: int = 0
    traps: int = 0
    last_trap: str = ""
    started_at: float = field(default_factory=time.time)


class ActorInstance:
    """One instance of a component in its own Store. Not thread-safe: one thread uses it."""

    def __init__(self, runtime: Runtime, loaded: LoadedComponent, host: Imports, limits: Limits,
                 stdout: Callable[[bytes], None], stderr: Callable[[bytes], None]) -> None:
        self.runtime = runtime
        self.loaded = loaded
        self.limits = limits
        self.ctx = InstanceContext(host)
        self.ctx.stdout, self.ctx.stderr = stdout, stderr
        self.stats = CallStats()
        self.store = Store(runtime.engine)
        wasi = WasiConfig()
        wasi.argv = [host.actor]
        wasi.stdout_custom = stdout
        wasi.stderr_custom = stderr
        self.store.set_wasi(wasi)
        self.store.set_limits(memory_size=limits.max_memory_bytes)
        self.store.set_epoch_deadline(self._ticks(limits.call_deadline_ms))
        bindings.set_current(self.ctx)
        self.ctx.call_deadline = time.monotonic() + limits.call_deadline_ms / 1000.0
        try:
            linker = runtime.linker_for(loaded)
            with runtime._linker_lock:
                self.instance = linker.instantiate(self.store, loaded.component)
        except wasmtime.WasmtimeError as exc:
            raise StartRefused(f"actor {host.actor!r} failed to instantiate: {_first_line(str(exc))}",
                               actor=host.actor) from exc
        finally:
            bindings.set_current(None)
        self._handler: Func | None = None
        if loaded.has_handler:
            idx = self.instance.get_export_index(self.store, bindings.HANDLER_EXPORT)
            fidx = self.instance.get_export_index(self.store, "handle-message", idx) if idx else None
            self._handler = self.instance.get_func(self.store, fidx) if fidx else None
        self._http: handles.TypedFunc | None = None
        if loaded.http_export is not None:
            idx = self.instance.get_export_index(self.store, loaded.http_export)
            fidx = self.instance.get_export_index(self.store, "handle", idx) if idx else None
            func = self.instance.get_func(self.store, fidx) if fidx else None
            self._http = handles.TypedFunc(func, self.store) if func is not None else None

    def _ticks(self, deadline_ms: int) -> int:
        return max(1, -(-deadline_ms // self.runtime.tick_ms))

    def call(self, export: str, *args: object, deadline_ms: int | None = None) -> object:
        """Call a top-level exported function by name (tests, benchmarks)."""
        func = self.instance.get_func(self.store, export)
        if func is None:
            raise LookupError(f"actor {self.ctx.host.actor!r} exports no function {export!r}")
        return self._invoke(func, args, deadline_ms)

    def handle_message(self, subject: str, body: bytes, reply_to: str | None,
                       deadline_ms: int | None = None) -> str | None:
        """Deliver to ``wasmcloud:messaging/handler``; returns None or the handler's error string.
        :class:`NoReply` when the message has a reply subject and the handler returned Ok
        without publishing to it."""
        if self._handler is None:
            raise LookupError(f"actor {self.ctx.host.actor!r} does not export {bindings.HANDLER_EXPORT}")
        msg = values.record(subject=subject, body=body, reply_to=reply_to)
        self.ctx.reply_to, self.ctx.replied = reply_to, False
        try:
            result = self._invoke(self._handler, (msg,), deadline_ms)
        finally:
            self.ctx.reply_to = None
        if result is None and reply_to and not self.ctx.replied:
            raise NoReply(f"actor {self.ctx.host.actor!r}: handler finished without replying", actor=self.ctx.host.actor)
        return None if result is None else str(result)

    def handle_http(self, exchange: HttpExchange, deadline_ms: int | None = None) -> None:
        """Deliver an HTTP request to ``wasi:http/incoming-handler``; the exchange gets the
        response (or a failure: the component trapped, or answered with an error code)."""
        if self._http is None:
            raise LookupError(f"actor {self.ctx.host.actor!r} does not export {bindings.HTTP_INCOMING}")
        bindings.set_current(self.ctx)
        try:
            wasi_http.handle_incoming(self._http, exchange, lambda func, args: self._invoke(func, args, deadline_ms))
        finally:
            bindings.set_current(None)

    def _invoke(self, func: Func | handles.TypedFunc, args: tuple[object, ...], deadline_ms: int | None) -> object:
        deadline = self.limits.call_deadline_ms if deadline_ms is None else deadline_ms
        actor = self.ctx.host.actor
        self.store.set_epoch_deadline(self._ticks(deadline))
        self.ctx.call_deadline = time.monotonic() + deadline / 1000.0
        bindings.set_current(self.ctx)
        self.stats.calls += 1
        tid = self.runtime.long_calls.started(deadline / 1000.0)
        try:
            result = func(self.store, *args)
            func.post_return(self.store)
            return result
        except wasmtime.WasmtimeError as exc:
            text = str(exc)
            self.stats.traps += 1
            self.stats.last_trap = _first_line(text)
            if "wasm trap: interrupt" in text:
                raise DeadlineExceeded(f"actor {actor!r} exceeded its {deadline} ms deadline",
                                       actor=actor, trap="interrupt", deadline_ms=deadline) from exc
            raise Trapped(f"actor {actor!r} trapped: {_trap_reason(text)}", actor=actor, trap=text) from exc
        finally:
            self.runtime.long_calls.ended(tid)
            bindings.set_current(None)

    def memory_bytes(self) -> int:
        return 0

    def close(self) -> None:
        self.ctx.release_all()
        self.store.close()


def _trap_reason(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("wasm trap:"):
            return line[len("wasm trap:"):].strip()
    return _first_line(text)


def wat_to_wasm(text: str) -> bytes:
    """Assemble WebAssembly text (core or component) into a binary."""
    try:
        return bytes(wasmtime.wat2wasm(text))
    except wasmtime.WasmtimeError as exc:
        raise CompileError(f"not valid WebAssembly text: {_first_line(str(exc))}") from exc


def read_component(path: Path) -> bytes:
    """Read a component file; ``.wat`` files are assembled first."""
    if path.suffix == ".wat":
        return wat_to_wasm(path.read_text("utf-8"))
    return path.read_bytes()
