"""Explicit ``result`` values for host functions.

wasmtime-py lowers a Python value into a WIT ``result`` by guessing the case from the
value's class. For ``result<option<list<u8>>, error>`` the guess is ambiguous (``none``
matches any object) and an error would be lowered as ``ok``. Host functions here return
:class:`Ok` or :class:`Err` instead, and :func:`install` teaches ``ResultType`` to lower
them directly.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from wasmtime import _ffi as ffi
from wasmtime.component import Record
from wasmtime.component._types import ResultType


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
    ty = self.ok if is_ok else self.err
    payload = None
    if ty is not None:
        raw = ffi.wasmtime_component_val_t()
        ty.convert_to_c(store, val.value, ctypes.pointer(raw))
        payload = ffi.wasmtime_component_val_new(ctypes.byref(raw))
    ptr.contents.kind = ffi.WASMTIME_COMPONENT_RESULT
    ptr.contents.of.result.is_ok = is_ok
    ptr.contents.of.result.val = payload


def install() -> None:
    global _installed
    if not _installed:
        ResultType.convert_to_c = _convert_to_c  # type: ignore[method-assign]
        _installed = True
