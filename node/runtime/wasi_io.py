"""A Python ``wasi:io`` (errors, pollables, streams) and the WASI 0.2 functions that hand
its resources out, for components that speak ``wasi:http``.

Why Python: wasmtime-py's C API cannot hand an incoming request to a component's export,
so ``wasi:http/types`` is served from Python (:mod:`~drupelet.node.runtime.wasi_http`).
Its bodies are ``wasi:io`` streams and its futures ``wasi:io`` pollables, and a
component's resource type must be one and the same everywhere it appears: the streams
``wasi:http`` returns, the ones ``wasi:cli/stdout`` returns, the ones
``wasi:filesystem``'s descriptors would return. So such a component gets a linker of its
own (:func:`define_imports`) on which every WASI 0.2 interface it imports is served from
here: io, clocks, random, the CLI functions (arguments, an empty environment, stdin at
its end, stdout and stderr into the actor's log), and the same empty filesystem (no
preopens) and sockets (nothing allowed) that the node's other actors get from wasmtime.

Each function runs on the calling instance's worker thread and finds the instance
through :func:`~drupelet.node.runtime.bindings.current`. Resources live in the
instance's resource table; the guest's handle is the table index.

Why this module is past 500 lines: it is one WIT package family (io and the functions
that return its resources) served by one resource table; the HTTP types that build on
it are in their own module.
"""

from __future__ import annotations

import os
import random as _insecure
import threading
import time
from collections.abc import Callable
from typing import Any

from wasmtime import StoreContext, WasmtimeError
from wasmtime.component import LinkerInstance, ResourceAny, ResourceType, Variant

from drupelet.node.runtime.bindings import InstanceContext, current
from drupelet.node.runtime.handles import HostRep, add_func
from drupelet.node.runtime.values import Err, Ok, record

# Host resource type ids (the node's other resources use small numbers in bindings.py).
ERROR = 0x101
POLLABLE = 0x102
INPUT_STREAM = 0x103
OUTPUT_STREAM = 0x104
TERMINAL_INPUT = 0x105
TERMINAL_OUTPUT = 0x106
DESCRIPTOR = 0x107
DIRECTORY_ENTRY_STREAM = 0x108
NETWORK = 0x109
TCP_SOCKET = 0x10A
UDP_SOCKET = 0x10B
INCOMING_DATAGRAM_STREAM = 0x10C
OUTGOING_DATAGRAM_STREAM = 0x10D
RESOLVE_ADDRESS_STREAM = 0x10E

WRITE_BUDGET = 64 << 10
"""What ``check-write`` allows at a time (bytes)."""
POLL_SLICE_S = 0.005
"""How often a poll over pollables that wait on other threads looks again."""

Funcs = dict[str, Callable[..., Any]]
Handle = int | ResourceAny
"""A resource handed to a host function: its rep (a top-level parameter,
:mod:`.handles`) or, inside an option or a list, wasmtime-py's handle."""


# -- resources ------------------------------------------------------------------------

def own(obj: Any, type_id: int) -> HostRep:
    """Put ``obj`` in the calling instance's table and hand the guest an owned handle."""
    return HostRep(current().add_resource(obj), type_id)


def _rep(store: StoreContext, handle: Handle) -> int:
    return handle if type(handle) is int else handle.to_host(store).rep  # type: ignore[union-attr]


def get(store: StoreContext, handle: Handle) -> Any:
    """The object behind a borrowed handle (the borrow ends here, as it must)."""
    obj = current().resources.get(_rep(store, handle))
    if obj is None:
        raise WasmtimeError("a handle the host does not know was passed")
    return obj


def take(store: StoreContext, handle: Handle) -> Any:
    """The object behind an owned handle the guest gave up (out of the table)."""
    obj = current().resources.pop(_rep(store, handle), None)
    if obj is None:
        raise WasmtimeError("a handle the host does not know was passed")
    return obj


def drop(store: StoreContext, rep: int) -> None:
    """The guest dropped a handle: forget the object; tell it if it cares (``dropped()``)."""
    ctx: InstanceContext | None = _ctx_or_none()
    if ctx is None:
        return
    obj = ctx.resources.pop(rep, None)
    dropped = getattr(obj, "dropped", None)
    if callable(dropped):
        dropped()


def _ctx_or_none() -> InstanceContext | None:
    try:
        return current()
    except RuntimeError:
        return None


class IoError:
    """A ``wasi:io/error``: a message, and the HTTP error code it stands for, if any."""

    def __init__(self, message: str, http_code: Variant | None = None) -> None:
        self.message = message
        self.http_code = http_code


def stream_failed(message: str, http_code: Variant | None = None) -> Err:
    """``stream-error.last-operation-failed`` (its cases differ in payload type, so
    wasmtime-py lowers them untagged: the error handle, or None for ``closed``)."""
    return Err(own(IoError(message, http_code), ERROR))


CLOSED = Err(None)
"""``stream-error.closed``."""


# -- pollables ------------------------------------------------------------------------

class Pollable:
    """Ready now (the default), at a monotonic deadline, when an event is set, or when
    ``check()`` says so (it may do the work it waits for, on the calling thread)."""

    def __init__(self, *, deadline_ns: int | None = None, event: threading.Event | None = None,
                 check: Callable[[], bool] | None = None) -> None:
        self.deadline_ns = deadline_ns
        self.event = event
        self.check = check

    def ready(self) -> bool:
        if self.check is not None:
            return self.check()
        if self.event is not None:
            return self.event.is_set()
        if self.deadline_ns is not None:
            return time.monotonic_ns() >= self.deadline_ns
        return True


READY = Pollable()


def wait_any(pollables: list[Pollable]) -> list[int]:
    """Block until one is ready; the indices of the ready ones. A wait never outlasts the
    instance's call deadline: past it the guest resumes and its epoch deadline traps it."""
    limit = time.monotonic() + current().wait_limit_s()
    while True:
        ready = [i for i, p in enumerate(pollables) if p.ready()]
        if ready:
            return ready
        now = time.monotonic()
        if now >= limit:
            return []
        deadlines = [p.deadline_ns for p in pollables if p.deadline_ns is not None]
        pause = limit - now
        if deadlines:
            pause = min(pause, max(0.0, (min(deadlines) - time.monotonic_ns()) / 1e9))
        events = [p.event for p in pollables if p.event is not None]
        others = any(p.check is not None for p in pollables)
        if len(events) == 1 and not others and not deadlines:
            events[0].wait(pause)
        elif events or others:
            time.sleep(min(pause, POLL_SLICE_S))
        else:
            time.sleep(pause)


def _pollable_ready(store: StoreContext, this: Handle) -> bool:
    return bool(get(store, this).ready())


def _pollable_block(store: StoreContext, this: Handle) -> None:
    wait_any([get(store, this)])


def _poll(store: StoreContext, handles: list[Handle]) -> list[int]:
    if not handles:
        raise WasmtimeError("poll: the list of pollables is empty")
    return wait_any([get(store, h) for h in handles])


# -- streams ------------------------------------------------------------------------

class InputStream:
    """Bytes the guest reads. ``source(n)`` returns up to n bytes, b"" at the end; it
    raises :class:`StreamFailed` for a broken source."""

    def __init__(self, source: Callable[[int], bytes], pollable: Pollable = READY) -> None:
        self.source = source
        self.pollable = pollable
        self.closed = False
        self.owner: Any = None
        """The resource this stream is a child of (an incoming body), told when it is dropped."""

    def read(self, n: int) -> Ok | Err:
        if self.closed:
            return CLOSED
        try:
            data = self.source(min(n, 1 << 20)) if n else b""
        except StreamFailed as exc:
            self.closed = True
            return stream_failed(exc.message, exc.http_code)
        if n and not data:
            self.closed = True
            return CLOSED
        return Ok(data)

    def dropped(self) -> None:
        if self.owner is not None:
            self.owner.stream_dropped()


class StreamFailed(Exception):
    def __init__(self, message: str, http_code: Variant | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.http_code = http_code


def empty_source(n: int) -> bytes:
    return b""


class OutputStream:
    """Bytes the guest writes into ``sink(data)``, which may raise :class:`StreamFailed`."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self.sink = sink
        self.closed = False
        self.owner: Any = None

    def write(self, data: bytes) -> Ok | Err:
        if self.closed:
            return CLOSED
        if not data:
            return Ok(None)
        try:
            self.sink(bytes(data))
        except StreamFailed as exc:
            self.closed = True
            return stream_failed(exc.message, exc.http_code)
        return Ok(None)

    def dropped(self) -> None:
        if self.owner is not None:
            self.owner.stream_dropped()


def _in_read(store: StoreContext, this: Handle, n: int) -> Ok | Err:
    stream: InputStream = get(store, this)
    return stream.read(n)


def _in_blocking_read(store: StoreContext, this: Handle, n: int) -> Ok | Err:
    stream: InputStream = get(store, this)
    wait_any([stream.pollable])
    return stream.read(n)


def _in_skip(store: StoreContext, this: Handle, n: int) -> Ok | Err:
    result = _in_read(store, this, n)
    return Ok(len(result.value)) if isinstance(result, Ok) else result


def _in_blocking_skip(store: StoreContext, this: Handle, n: int) -> Ok | Err:
    result = _in_blocking_read(store, this, n)
    return Ok(len(result.value)) if isinstance(result, Ok) else result


def _in_subscribe(store: StoreContext, this: Handle) -> HostRep:
    return own(get(store, this).pollable, POLLABLE)


def _out_check_write(store: StoreContext, this: Handle) -> Ok | Err:
    stream: OutputStream = get(store, this)
    return CLOSED if stream.closed else Ok(WRITE_BUDGET)


def _out_write(store: StoreContext, this: Handle, data: bytes) -> Ok | Err:
    stream: OutputStream = get(store, this)
    return stream.write(data)


def _out_flush(store: StoreContext, this: Handle) -> Ok | Err:
    stream: OutputStream = get(store, this)
    return CLOSED if stream.closed else Ok(None)


def _out_subscribe(store: StoreContext, this: Handle) -> HostRep:
    get(store, this)
    return own(READY, POLLABLE)


def _out_write_zeroes(store: StoreContext, this: Handle, n: int) -> Ok | Err:
    stream: OutputStream = get(store, this)
    return stream.write(bytes(min(n, WRITE_BUDGET)))


def _out_splice(store: StoreContext, this: Handle, src: Handle, n: int) -> Ok | Err:
    out: OutputStream = get(store, this)
    source: InputStream = get(store, src)
    data = source.read(min(n, WRITE_BUDGET))
    if isinstance(data, Err):
        return data
    written = out.write(data.value)
    return Ok(len(data.value)) if isinstance(written, Ok) else written


def _out_blocking_splice(store: StoreContext, this: Handle, src: Handle, n: int) -> Ok | Err:
    wait_any([get(store, src).pollable])
    return _out_splice(store, this, src, n)


def _error_to_debug_string(store: StoreContext, this: Handle) -> str:
    err: IoError = get(store, this)
    return err.message


# -- clocks, random, the CLI ---------------------------------------------------------------

def _mono_now(store: StoreContext) -> int:
    return time.monotonic_ns()


def _one_ns(store: StoreContext) -> int:
    return 1


def _subscribe_instant(store: StoreContext, when: int) -> HostRep:
    return own(Pollable(deadline_ns=when), POLLABLE)


def _subscribe_duration(store: StoreContext, ns: int) -> HostRep:
    return own(Pollable(deadline_ns=time.monotonic_ns() + ns), POLLABLE)


def _wall_now(store: StoreContext) -> Any:
    ns = time.time_ns()
    return record(seconds=ns // 1_000_000_000, nanoseconds=ns % 1_000_000_000)


def _wall_resolution(store: StoreContext) -> Any:
    return record(seconds=0, nanoseconds=1000)


def _random_bytes(store: StoreContext, n: int) -> bytes:
    return os.urandom(min(n, 1 << 20))


def _random_u64(store: StoreContext) -> int:
    return int.from_bytes(os.urandom(8), "little")


def _insecure_bytes(store: StoreContext, n: int) -> bytes:
    return _insecure.randbytes(min(n, 1 << 20))


def _insecure_u64(store: StoreContext) -> int:
    return _insecure.getrandbits(64)


def _insecure_seed(store: StoreContext) -> tuple[int, int]:
    return (_random_u64(store), _random_u64(store))


def _get_environment(store: StoreContext) -> list[tuple[str, str]]:
    return []


def _get_arguments(store: StoreContext) -> list[str]:
    return [current().host.actor]


def _initial_cwd(store: StoreContext) -> None:
    return None


def _exit(store: StoreContext, status: Any) -> None:
    raise WasmtimeError(f"the component called wasi:cli/exit ({'ok' if isinstance(status, Ok) else 'error'})")


def _get_stdin(store: StoreContext) -> HostRep:
    return own(InputStream(empty_source), INPUT_STREAM)


def _get_stdout(store: StoreContext) -> HostRep:
    return own(OutputStream(current().stdout), OUTPUT_STREAM)


def _get_stderr(store: StoreContext) -> HostRep:
    return own(OutputStream(current().stderr), OUTPUT_STREAM)


def _no_terminal(store: StoreContext) -> None:
    return None


def _no_preopens(store: StoreContext) -> list[Any]:
    return []


def _no_error_code(store: StoreContext, err: Handle) -> None:
    get(store, err)
    return None


class _Nothing:
    """A resource with no state (the instance network)."""


def _instance_network(store: StoreContext) -> HostRep:
    return own(_Nothing(), NETWORK)


def _sockets_denied(store: StoreContext, *args: Any) -> Err:
    return Err("access-denied")


# -- the table ------------------------------------------------------------------------

RESOURCES: dict[str, dict[str, int]] = {
    "wasi:io/error": {"error": ERROR},
    "wasi:io/poll": {"pollable": POLLABLE},
    "wasi:io/streams": {"input-stream": INPUT_STREAM, "output-stream": OUTPUT_STREAM},
    "wasi:cli/terminal-input": {"terminal-input": TERMINAL_INPUT},
    "wasi:cli/terminal-output": {"terminal-output": TERMINAL_OUTPUT},
    "wasi:filesystem/types": {"descriptor": DESCRIPTOR, "directory-entry-stream": DIRECTORY_ENTRY_STREAM},
    "wasi:sockets/network": {"network": NETWORK},
    "wasi:sockets/tcp": {"tcp-socket": TCP_SOCKET},
    "wasi:sockets/udp": {"udp-socket": UDP_SOCKET, "incoming-datagram-stream": INCOMING_DATAGRAM_STREAM,
                         "outgoing-datagram-stream": OUTGOING_DATAGRAM_STREAM},
    "wasi:sockets/ip-name-lookup": {"resolve-address-stream": RESOLVE_ADDRESS_STREAM},
}
"""Per interface (without a version): the resources it defines, with their host type ids."""

FUNCS: dict[str, Funcs] = {
    "wasi:io/error": {"[method]error.to-debug-string": _error_to_debug_string},
    "wasi:io/poll": {"[method]pollable.ready": _pollable_ready, "[method]pollable.block": _pollable_block,
                     "poll": _poll},
    "wasi:io/streams": {
        "[method]input-stream.read": _in_read,
        "[method]input-stream.blocking-read": _in_blocking_read,
        "[method]input-stream.skip": _in_skip,
        "[method]input-stream.blocking-skip": _in_blocking_skip,
        "[method]input-stream.subscribe": _in_subscribe,
        "[method]output-stream.check-write": _out_check_write,
        "[method]output-stream.write": _out_write,
        "[method]output-stream.blocking-write-and-flush": _out_write,
        "[method]output-stream.flush": _out_flush,
        "[method]output-stream.blocking-flush": _out_flush,
        "[method]output-stream.subscribe": _out_subscribe,
        "[method]output-stream.write-zeroes": _out_write_zeroes,
        "[method]output-stream.blocking-write-zeroes-and-flush": _out_write_zeroes,
        "[method]output-stream.splice": _out_splice,
        "[method]output-stream.blocking-splice": _out_blocking_splice,
    },
    "wasi:clocks/monotonic-clock": {"now": _mono_now, "resolution": _one_ns,
                                    "subscribe-instant": _subscribe_instant,
                                    "subscribe-duration": _subscribe_duration},
    "wasi:clocks/wall-clock": {"now": _wall_now, "resolution": _wall_resolution},
    "wasi:random/random": {"get-random-bytes": _random_bytes, "get-random-u64": _random_u64},
    "wasi:random/insecure": {"get-insecure-random-bytes": _insecure_bytes,
                             "get-insecure-random-u64": _insecure_u64},
    "wasi:random/insecure-seed": {"insecure-seed": _insecure_seed},
    "wasi:cli/environment": {"get-environment": _get_environment, "get-arguments": _get_arguments,
                             "initial-cwd": _initial_cwd},
    "wasi:cli/exit": {"exit": _exit},
    "wasi:cli/stdin": {"get-stdin": _get_stdin},
    "wasi:cli/stdout": {"get-stdout": _get_stdout},
    "wasi:cli/stderr": {"get-stderr": _get_stderr},
    "wasi:cli/terminal-input": {},
    "wasi:cli/terminal-output": {},
    "wasi:cli/terminal-stdin": {"get-terminal-stdin": _no_terminal},
    "wasi:cli/terminal-stdout": {"get-terminal-stdout": _no_terminal},
    "wasi:cli/terminal-stderr": {"get-terminal-stderr": _no_terminal},
    "wasi:filesystem/types": {"filesystem-error-code": _no_error_code},
    "wasi:filesystem/preopens": {"get-directories": _no_preopens},
    "wasi:sockets/network": {},
    "wasi:sockets/instance-network": {"instance-network": _instance_network},
    "wasi:sockets/tcp-create-socket": {"create-tcp-socket": _sockets_denied},
    "wasi:sockets/udp-create-socket": {"create-udp-socket": _sockets_denied},
    "wasi:sockets/ip-name-lookup": {"resolve-addresses": _sockets_denied},
    "wasi:sockets/tcp": {},
    "wasi:sockets/udp": {},
}
"""Per interface (without a version): the functions served here. A function of these
interfaces not listed (a descriptor's or a socket's methods) can never be reached, since
no descriptor or socket is ever handed out; it traps saying so."""


def unreachable(interface: str, name: str) -> Callable[..., Any]:
    def trap(store: StoreContext, *args: Any) -> Any:
        raise WasmtimeError(f"{interface}: {name} is not available to actors")
    return trap


def define_instance(root: LinkerInstance, import_name: str, funcs: Funcs, resources: dict[str, int],
                    wanted: list[str]) -> None:
    """Define ``import_name`` with ``resources`` and every function in ``wanted`` (the
    names the component imports): from ``funcs``, or a trap for the unreachable ones."""
    interface = import_name.partition("@")[0]
    with root.add_instance(import_name) as inst:
        for res_name, type_id in resources.items():
            inst.add_resource(res_name, ResourceType.host(type_id), drop)
        for name in wanted:
            add_func(inst, name, funcs.get(name) or unreachable(interface, name))
