"""Host resources passed to and from host functions as plain integers.

wasmtime-py turns every resource handle that crosses a host function into two
``Managed`` Python objects (a ``ResourceAny``, then the ``ResourceHost`` of its
``to_host``), each with its C allocation and finaliser; for ``wasi:http``, where almost
every call takes a ``borrow<…>`` and many return an ``own<…>``, that is most of a call's
cost. Functions added with :func:`add_func` here receive a resource parameter as its
``rep`` (an ``int``: the index of the host's object) and may return :class:`HostRep` for
an ``own<…>``, converted with the same C calls wasmtime-py makes and no Python objects
in between. The semantics are wasmtime-py's: a borrow ends when the function has the rep,
an owned handle passes to the host.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from wasmtime import StoreContext, WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import LinkerInstance
from wasmtime.component._enter import catch_exceptions, enter_wasm
from wasmtime.component._linker import FUNCTIONS
from wasmtime.component._types import BorrowType, OwnType

from drupelet.node.runtime import values
from drupelet.node.runtime.sched import IN_IMPORT, import_box
from drupelet.node.runtime.values import FUNC_CACHES, _types_of


class HostRep(NamedTuple):
    """An owned handle to a host resource: its rep and its host type id."""

    rep: int
    type_id: int


def _to_any(store: StoreContext, value: HostRep) -> Any:
    host = ffi.wasmtime_component_resource_host_new(True, value.rep, value.type_id)
    found = ctypes.POINTER(ffi.wasmtime_component_resource_any_t)()
    err = ffi.wasmtime_component_resource_host_to_any(store._context(), host, ctypes.byref(found))
    ffi.wasmtime_component_resource_host_delete(host)
    if err:
        raise WasmtimeError._from_ptr(err)
    return found


def _handle_to_c(original: Any) -> Any:
    """``convert_to_c`` of ``own``/``borrow`` that also takes a :class:`HostRep`."""
    def convert(self: Any, store: Any, val: Any, ptr: Any) -> None:
        if type(val) is HostRep:
            ptr.contents.kind = ffi.WASMTIME_COMPONENT_RESOURCE
            ptr.contents.of.resource = _to_any(store, val)
            return
        original(self, store, val, ptr)
    return convert


_own_to_c = _handle_to_c(OwnType.convert_to_c)
_borrow_to_c = _handle_to_c(BorrowType.convert_to_c)


def _handle_classes(original: Any) -> Any:
    """``add_classes`` of ``own``/``borrow``: a :class:`HostRep` is a handle too, so a
    variant case that holds one (``stream-error.last-operation-failed``) is found for it."""
    def add_classes(self: Any, found: set[type]) -> None:
        original(self, found)
        found.add(HostRep)
    return add_classes


_own_classes = _handle_classes(OwnType.add_classes)
_borrow_classes = _handle_classes(BorrowType.add_classes)


def install() -> None:
    """Teach ``own``/``borrow`` lowering to take a :class:`HostRep` (idempotent)."""
    OwnType.convert_to_c = _own_to_c  # type: ignore[method-assign]
    BorrowType.convert_to_c = _borrow_to_c  # type: ignore[method-assign]
    OwnType.add_classes = _own_classes  # type: ignore[method-assign]
    BorrowType.add_classes = _borrow_classes  # type: ignore[method-assign]


def _rep_of(store: StoreContext, raw: Any) -> int:
    """The rep of a host resource handed in as a C value (the handle is dropped here)."""
    handle = ffi.take_pointer(raw.of, "resource")
    host = ctypes.POINTER(ffi.wasmtime_component_resource_host_t)()
    err = ffi.wasmtime_component_resource_any_to_host(store._context(), handle, ctypes.byref(host))
    ffi.wasmtime_component_resource_any_delete(handle)
    if err:
        raise WasmtimeError._from_ptr(err)
    rep = int(ffi.wasmtime_component_resource_host_rep(host))
    ffi.wasmtime_component_resource_host_delete(host)
    return rep


_CONVERTERS: dict[int, list[Any]] = {}
FUNC_CACHES.append(_CONVERTERS)


@ffi.wasmtime_component_func_callback_t  # type: ignore[untyped-decorator]
def _func_impl(idx: Any, context: Any, ty_raw: Any, args: Any, nargs: int, results: Any, nresults: int) -> Any:
    def run(store: StoreContext) -> None:
        box = import_box()  # the call is in an import (a stream read may wait), not computing (sched.py)
        if box is not None:
            box[0] = IN_IMPORT
        try:
            key = idx or 0
            params, result_ty = _types_of(key, ty_raw, store)
            converters = _CONVERTERS.get(key)
            if converters is None:
                converters = [None if isinstance(ty, (BorrowType, OwnType)) else ty.convert_from_c for ty in params]
                _CONVERTERS[key] = converters
            pyargs = [_rep_of(store, args[i]) if conv is None else conv(args[i]) for i, conv in enumerate(converters)]
            result = FUNCTIONS.get(key)(store, *pyargs)
            if result_ty is not None:
                result_ty.convert_to_c(store, result, results)
        finally:
            if box is not None:
                box[0] = time.monotonic()
    return catch_exceptions(context, run)


def add_func(inst: LinkerInstance, name: str, func: Callable[..., Any]) -> None:
    """``values.add_func``, with top-level resource parameters handed to ``func`` as reps."""
    values.add_func(inst, name, func, _func_impl)


class TypedFunc:
    """An exported function called with its WIT types read once: wasmtime-py's ``Func``
    asks the C API for them and rebuilds their Python objects on every call. The values
    are lowered and lifted as ``Func`` does (a :class:`HostRep` as an owned handle)."""

    def __init__(self, func: Any, store: Any) -> None:
        fty = func.type(store)
        self._func = func
        self._raw = func._func
        self.params = [ty for _, ty in fty.params]
        self.result = fty.result

    def __call__(self, store: Any, *params: Any) -> Any:
        if len(params) != len(self.params):
            raise TypeError(f"{len(params)} parameters given, {len(self.params)} expected")
        values = (ffi.wasmtime_component_val_t * len(params))()
        lowered = 0
        try:
            for ty, value in zip(self.params, params):
                ty.convert_to_c(store, value, ctypes.pointer(values[lowered]))
                lowered += 1
            space = ffi.wasmtime_component_val_t() if self.result is not None else None

            def run() -> Any:
                return ffi.wasmtime_component_func_call(ctypes.byref(self._raw), store._context(), values, lowered,
                                                        ctypes.byref(space) if space is not None else None,
                                                        1 if space is not None else 0)
            enter_wasm(run)
            return None if space is None else self.result.convert_from_c(space)
        finally:
            for i in range(lowered):
                ffi.wasmtime_component_val_delete(ctypes.byref(values[i]))

    def post_return(self, store: Any) -> None:
        self._func.post_return(store)
