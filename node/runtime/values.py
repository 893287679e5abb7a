"""Explicit ``result`` values for host functions.

wasmtime-py lowers a Python value into a WIT ``result`` by guessing the case from the
value's class. For ``result<option<list<u8>>, error>`` the guess is ambiguous (``none``
matches any object) and an error would be lowered as ``ok``. Host functions here return
:class:`Ok` or :class:`Err` instead, and :func:`install` teaches ``ResultType`` to lower
them directly.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import time
from dataclasses import dataclass
from typing import Any

from collections.abc import Callable

from drupelet.node.runtime.errors import WasmtimeVersionError
from drupelet.node.runtime.sched import IN_IMPORT, import_box

WASMTIME_SERIES = (50, 0)
"""The wasmtime-py release series whose internals this module relies on (pyproject pins
``wasmtime~=50.0.1``): ``_linker.FUNCTIONS``, ``_enter.catch_exceptions``, the C value
layout of results and options. Another series may move them; refuse to run there."""


def check_wasmtime_version(version: str | None = None) -> None:
    """Raise :class:`WasmtimeVersionError` unless ``version`` (default: the installed
    wasmtime) is in :data:`WASMTIME_SERIES`."""
    found = version or importlib.metadata.version("wasmtime")
    parts = tuple(int(p) for p in found.split(".")[:2] if p.isdigit())
    if parts != WASMTIME_SERIES:
        want = ".".join(map(str, WASMTIME_SERIES))
        raise WasmtimeVersionError(f"drupelet's runtime needs wasmtime {want}.x (found {found}); install "
                                   f"it with: pip install 'wasmtime~={want}.1'")


check_wasmtime_version()

from wasmtime import StoreContext, WasmtimeError  # noqa: E402  (only once the version is known)
from wasmtime import _ffi as ffi
from wasmtime.component import LinkerInstance, Record
from wasmtime.component._enter import catch_exceptions
from wasmtime.component._linker import FUNCTIONS
from wasmtime.component._types import FuncType, ListType, OptionType, ResultType, U8, VariantLikeType, VariantType


@dataclass(frozen=True, slots=True)
class Ok:
    value: Any = None


@dataclass(frozen=True, slots=True)
class Err:
    value: Any = None


def record(**fields: Any) -> Record:
    """A WIT record; keyword ``reply_to`` becomes the WIT field ``reply-to``."""
    rec = Record()
    for name, value in fields.items():
        setattr(rec, name.replace("_", "-"), value)
    return rec


_original_convert = ResultType.convert_to_c
_installed = False


def _convert_to_c(self: ResultType, store: Any, val: Any, ptr: Any) -> None:
    if not isinstance(val, (Ok, Err)):
        _original_convert(self, store, val, ptr)
        return
    is_ok = isinstance(val, Ok)
    cases = getattr(self, "_drupelet_cases", None)
    if cases is None:  # types are immutable: read a result's cases once, keep them on it
        cases = (self.ok, self.err)
        setattr(self, "_drupelet_cases", cases)
    ty = cases[0] if is_ok else cases[1]
    payload = None
    if ty is not None:
        raw = ffi.wasmtime_component_val_t()
        _lower(ty, store, val.value, ctypes.pointer(raw))
        payload = ffi.wasmtime_component_val_new(ctypes.byref(raw))
    ptr.contents.kind = ffi.WASMTIME_COMPONENT_RESULT
    ptr.contents.of.result.is_ok = is_ok
    ptr.contents.of.result.val = payload


def _lower(ty: Any, store: Any, val: Any, ptr: Any) -> None:
    """``ty.convert_to_c`` (an option is lowered by :func:`_convert_option_to_c`)."""
    ty.convert_to_c(store, val, ptr)


_original_option = OptionType.convert_to_c


def _convert_option_to_c(self: OptionType, store: Any, val: Any, ptr: Any) -> None:
    """``option<T>`` (T not itself an option) lowered directly: wasmtime-py would re-read
    the option's payload type and re-derive which case a Python value belongs to on every
    call (and finds none for a payload it cannot classify, such as an explicit
    :class:`Ok`); here ``None`` is ``none`` and anything else is ``some``, which is what
    that derivation concludes for such a T."""
    inner = getattr(self, "_drupelet_payload", None)
    if inner is None:
        inner = self.payload
        setattr(self, "_drupelet_payload", inner)
    if type(inner) is OptionType:
        _original_option(self, store, val, ptr)
        return
    some = None
    if val is not None:
        raw = ffi.wasmtime_component_val_t()
        inner.convert_to_c(store, val, ctypes.pointer(raw))
        some = ffi.wasmtime_component_val_new(ctypes.byref(raw))
    ptr.contents.kind = ffi.WASMTIME_COMPONENT_OPTION
    ptr.contents.of.option = some


_original_tagged = VariantLikeType._tagged
_original_variant_cases = VariantType._cases


def _cached_tagged(self: VariantLikeType) -> bool:
    """Whether a variant-like type lowers tagged, worked out once per type object: for
    ``wasi:http``'s ``error-code`` (39 cases) wasmtime-py's answer costs ~0.5 ms, and it
    asks on every conversion of a value of the type, or of a result holding one."""
    found: bool | None = self.__dict__.get("_drupelet_tagged")
    if found is None:
        found = _original_tagged(self)
        self.__dict__["_drupelet_tagged"] = found
    return found


def _cached_variant_cases(self: VariantType) -> Any:
    """A variant's cases, read from the C API once per type object (types are immutable)."""
    found = self.__dict__.get("_drupelet_variant_cases")
    if found is None:
        found = _original_variant_cases(self)
        self.__dict__["_drupelet_variant_cases"] = found
    return found


# -- list<u8> as bytes, in one copy ----------------------------------------------------
#
# The C API holds a ``list<u8>`` as an array of tagged values (``wasmtime_component_val_t``,
# 32 bytes each: the kind in byte 0, the u8 at byte 8). wasmtime-py fills and reads that
# array one Python call per byte, which made a 1 MB message cost a second of CPU with the
# GIL held. Here the array is filled and read in chunks: a strided copy in a bytearray
# (with the GIL) and a memmove to or from the C array (without it).

_VAL_SIZE = ctypes.sizeof(ffi.wasmtime_component_val_t)
_KIND_OFFSET = ffi.wasmtime_component_val_t.kind.offset
_U8_OFFSET = ffi.wasmtime_component_val_t.of.offset
_U8_KIND = bytes([ffi.WASMTIME_COMPONENT_U8.value])

_original_list_to_c = ListType.convert_to_c
_original_list_from_c = ListType.convert_from_c


def _is_bytes(ty: ListType) -> bool:
    known: bool | None = getattr(ty, "_drupelet_bytes", None)
    if known is None:  # an element type is made anew on every read: read it once per list type
        known = isinstance(ty.element, U8)
        setattr(ty, "_drupelet_bytes", known)
    return known


_CHUNK = 32768
"""Bytes handled per step: each step holds the GIL for a fraction of a millisecond, so the
event loop's thread is not kept waiting behind a large message."""


def _list_to_c(self: ListType, store: Any, val: Any, ptr: Any) -> None:
    if not _is_bytes(self):
        _original_list_to_c(self, store, val, ptr)
        return
    if isinstance(val, (bytearray, memoryview)):
        val = bytes(val)
    if not isinstance(val, bytes):
        raise TypeError("expected bytes value")
    count = len(val)
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, count)
    if count:
        base = ctypes.addressof(raw.data.contents)
        step = bytearray(min(count, _CHUNK) * _VAL_SIZE)
        step[_KIND_OFFSET::_VAL_SIZE] = _U8_KIND * (len(step) // _VAL_SIZE)
        for start in range(0, count, _CHUNK):
            part = val[start:start + _CHUNK]
            size = len(part) * _VAL_SIZE
            step[_U8_OFFSET:size:_VAL_SIZE] = part
            ctypes.memmove(base + start * _VAL_SIZE, (ctypes.c_char * size).from_buffer(step), size)
    ptr.contents.kind = ffi.WASMTIME_COMPONENT_LIST
    ptr.contents.of.list = raw


def _list_from_c(self: ListType, c: Any) -> Any:
    if not _is_bytes(self):
        return _original_list_from_c(self, c)
    try:
        count = int(c.of.list.size)
        if not count:
            return b""
        base = ctypes.addressof(c.of.list.data.contents)
        out = bytearray(count)
        step = bytearray(min(count, _CHUNK) * _VAL_SIZE)
        for start in range(0, count, _CHUNK):
            n = min(_CHUNK, count - start)
            ctypes.memmove((ctypes.c_char * (n * _VAL_SIZE)).from_buffer(step), base + start * _VAL_SIZE,
                           n * _VAL_SIZE)
            out[start:start + n] = step[_U8_OFFSET:n * _VAL_SIZE:_VAL_SIZE]
        return bytes(out)
    finally:  # u8 values own nothing: the array goes as a whole
        ffi.wasmtime_component_vallist_delete(ctypes.byref(c.of.list))


def install() -> None:
    global _installed
    if not _installed:
        VariantLikeType._tagged = _cached_tagged  # type: ignore[method-assign]
        VariantType._cases = _cached_variant_cases  # type: ignore[method-assign]
        ResultType.convert_to_c = _convert_to_c  # type: ignore[method-assign]
        OptionType.convert_to_c = _convert_option_to_c  # type: ignore[method-assign]
        ListType.convert_to_c = _list_to_c  # type: ignore[method-assign]
        ListType.convert_from_c = _list_from_c  # type: ignore[method-assign]
        _installed = True


# -- host functions with their types read once ------------------------------------------

_TYPES: dict[int, tuple[list[Any], Any]] = {}
"""Per host function (by its slab index): its parameter types and its result type."""

FUNC_CACHES: list[dict[int, Any]] = [_TYPES]
"""Caches keyed by a host function's slab index, emptied of it when its linker drops the
function: the index is then free for another function with other types."""


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # type: ignore[untyped-decorator]
def func_finalize(idx: Any) -> None:
    """wasmtime-py's finaliser of a host function, which also forgets what was cached of it."""
    key = idx or 0
    for cache in FUNC_CACHES:
        cache.pop(key, None)
    if FUNCTIONS:
        FUNCTIONS.deallocate(key)


def _types_of(idx: int, ty_raw: Any, store: Any) -> tuple[list[Any], Any]:
    cached = _TYPES.get(idx)
    if cached is None:
        with FuncType._from_ptr(ty_raw, owner=store) as fty:
            cached = ([ty for _, ty in fty.params], fty.result)
        _TYPES[idx] = cached
    return cached


@ffi.wasmtime_component_func_callback_t  # type: ignore[untyped-decorator]
def _func_impl(idx: Any, context: Any, ty_raw: Any, args: Any, nargs: int, results: Any, nresults: int) -> Any:
    def run(store: StoreContext) -> None:
        box = import_box()  # the call is in an import, not computing (sched.py)
        if box is not None:
            box[0] = IN_IMPORT
        try:
            key = idx or 0
            params, result_ty = _types_of(key, ty_raw, store)
            pyargs = [ty.convert_from_c(args[i]) for i, ty in enumerate(params)]
            result = FUNCTIONS.get(key)(store, *pyargs)
            if result_ty is not None:
                result_ty.convert_to_c(store, result, results)
        finally:
            if box is not None:
                box[0] = time.monotonic()
    return catch_exceptions(context, run)


def add_func(inst: LinkerInstance, name: str, func: Callable[..., Any], trampoline: Any = None) -> None:
    """``inst.add_func`` with the function's WIT types read on its first call and kept
    (``trampoline``: another C callback that converts values its own way).

    wasmtime-py's own trampoline asks the C API for the parameter and result types on
    every call and builds Python type objects from them; for the node's short import
    calls that is most of the cost. A host function's types never change (the linker
    checks every importing component against the same WIT signature), so they are read
    once. Arguments and results are converted exactly as wasmtime-py does.
    """
    inst._assert_not_locked()
    name_bytes = name.encode("utf-8")
    idx = FUNCTIONS.allocate(func)
    err = ffi.wasmtime_component_linker_instance_add_func(inst.ptr(), ctypes.create_string_buffer(name_bytes),
                                                          len(name_bytes), trampoline or _func_impl, idx,
                                                          func_finalize)
    if err:
        raise WasmtimeError._from_ptr(err)
