"""Value types of the wire, declared once and shared by the control requests
(:mod:`drupelet.node.lattice.requests`) and the lattice-state values
(:mod:`drupelet.node.lattice.state`), and the words for a value that does not fit one.

A type here is an ``Annotated`` msgspec type: its ``Meta`` carries the bounds
(``ge``/``le``, ``pattern``, ``max_length``), ``extra={"rule": …}`` the rule of a pattern
as a person reads it, and ``extra={"max_bytes": …}`` the bound on all the keys and values
of an object. msgspec validates; :func:`struct_fault` and :func:`fault` say what is wrong
in one line (``must be between 1 and 1000, got 0``, ``'../etc' is not valid: …``) and add
the one bound msgspec cannot check: a string's ``max_length`` here counts **UTF-8 bytes**
(msgspec counts characters, which is never more).

The bounds keep one oversized value from making a node invisible: labels ride in every
ping reply and heartbeat, and link and named config in the state every node reads, so
a label value, a config value or a whole config table is a few KiB at most.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Final, get_args, get_origin

import msgspec
from msgspec import Meta

from drupelet.node.config import (MAX_CONFIG_BYTES, MAX_CONFIG_ENTRIES, MAX_CONFIG_KEY_BYTES, MAX_CONFIG_VALUE_BYTES,
                                  MAX_LABEL_VALUE_BYTES, MAX_LABELS)
from drupelet.node.lattice.protocol import DIGEST, LABEL_KEY, NAME

#: Labels on one node, and the size of each value (keys are bounded by their pattern).
#: A config table (an actor's, a link's or a named one): entries, their sizes, and all of it.
#: Free-form strings of requests: an artifact's pushed name, an interface, a link target.
MAX_REFERENCE_BYTES: Final = 256
MAX_INTERFACE_BYTES: Final = 256
MAX_TARGET_BYTES: Final = 128

NAME_RULE: Final = "1 to 63 of A-Z a-z 0-9 _ -, starting with a letter or digit"
LABEL_KEY_RULE: Final = "1 to 63 of A-Z a-z 0-9 _ . -, starting with a letter or digit"
DIGEST_RULE: Final = "sha256: and 64 hex digits, or the 64 hex digits alone, either case"

Name = Annotated[str, Meta(pattern=NAME.pattern, extra={"rule": NAME_RULE})]
"""An actor, provider, node or config name."""
Digest = Annotated[str, Meta(pattern=DIGEST.pattern, extra={"rule": DIGEST_RULE})]
LabelKey = Annotated[str, Meta(pattern=LABEL_KEY.pattern, extra={"rule": LABEL_KEY_RULE})]
LabelValue = Annotated[str, Meta(max_length=MAX_LABEL_VALUE_BYTES)]
Labels = Annotated[dict[LabelKey, LabelValue], Meta(max_length=MAX_LABELS)]
"""A node's labels (``labels.put``, ``labels.<node>``)."""
ConfigKey = Annotated[str, Meta(max_length=MAX_CONFIG_KEY_BYTES)]
ConfigValue = Annotated[str, Meta(max_length=MAX_CONFIG_VALUE_BYTES)]
ConfigMap = Annotated[dict[ConfigKey, ConfigValue],
                      Meta(max_length=MAX_CONFIG_ENTRIES, extra={"max_bytes": MAX_CONFIG_BYTES})]
"""String → string config: an actor's ``wasi:config``, a link's, a named config."""


# -- what is wrong with a value ---------------------------------------------------------


def counts_bytes(tp: Any) -> bool:
    """Whether a bound of ``tp`` (or of what it holds) is a string length, which msgspec
    counts in characters and this module in UTF-8 bytes (they differ only past ASCII)."""
    meta = meta_of(tp)
    base = _unwrap(tp)
    if base is str:
        return meta is not None and meta.max_length is not None
    return any(counts_bytes(a) for a in get_args(base))


def has_total(tp: Any) -> bool:
    """Whether ``tp`` (or what it holds) bounds the bytes of a whole table, which msgspec
    cannot check at all."""
    meta = meta_of(tp)
    if meta is not None and _extra(meta, "max_bytes", None) is not None:
        return True
    return any(has_total(a) for a in get_args(_unwrap(tp)))


def is_ascii(value: Any) -> bool:
    """Whether every string in ``value`` is ASCII (then characters are bytes)."""
    if isinstance(value, str):
        return value.isascii()
    if isinstance(value, dict):
        return all(is_ascii(k) and is_ascii(v) for k, v in value.items())
    if isinstance(value, list):
        return all(is_ascii(v) for v in value)
    return True


def struct_fault(cls: type[msgspec.Struct], raw: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first field of ``raw`` that does not fit ``cls``, as (field, what is wrong),
    or None. Fields ``raw`` has that ``cls`` does not declare are not looked at."""
    for f in msgspec.structs.fields(cls):
        if f.encode_name not in raw:
            if f.required:
                return f.encode_name, "is required"
            continue
        problem = fault(f.type, raw[f.encode_name])
        if problem is not None:
            return f.encode_name, problem
    return None


def fault(tp: Any, value: Any, subject: str = "") -> str | None:
    """What is wrong with ``value`` as a ``tp``, or None if it fits. The words read after
    ``field:``; ``subject`` names the value inside them (``key 'a b'``)."""
    meta = meta_of(tp)
    base = _unwrap(tp)
    lead = f"{subject} " if subject else ""
    origin = get_origin(base)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(base) if a is not type(None)]
        if value is None and len(options) < len(get_args(base)):
            return None
        problems = [fault(a, value, subject) for a in options]
        if any(p is None for p in problems):
            return None
        if len(problems) == 1:
            return problems[0]
        return f"{lead}must be {' or '.join(map(rule, options))}, got {_shown(value)}"
    if not _is_kind(base, value):
        return f"{lead}must be {rule(tp)}, got {_shown(value)}"
    if base is int:
        return _range_fault(meta, value, lead)
    if base is str:
        return _string_fault(meta, value, subject)
    if origin is dict or origin is list:
        return _container_fault(tp, value, subject)
    return None


def _range_fault(meta: Meta | None, value: int, lead: str) -> str | None:
    if meta is None:
        return None
    low = meta.ge if meta.ge is not None else (meta.gt + 1 if meta.gt is not None else None)
    high = meta.le if meta.le is not None else (meta.lt - 1 if meta.lt is not None else None)
    if (low is None or value >= low) and (high is None or value <= high):
        return None
    if low is not None and high is not None:
        return f"{lead}must be between {low} and {high}, got {value}"
    return f"{lead}must be an integer ≥ {low}, got {value}" if low is not None else \
        f"{lead}must be an integer ≤ {high}, got {value}"


def _string_fault(meta: Meta | None, value: str, subject: str) -> str | None:
    if meta is None:
        return None
    if meta.pattern is not None and not re.search(meta.pattern, value):
        return f"{subject or _shown(value, kind=False)} is not valid: {_extra(meta, 'rule', f'match {meta.pattern}')}"
    size = len(value.encode("utf-8"))
    if meta.max_length is not None and size > meta.max_length:
        return f"{subject + ' ' if subject else ''}must be at most {meta.max_length} bytes (UTF-8), got {size}"
    return None


def _container_fault(tp: Any, value: dict[Any, Any] | list[Any], subject: str) -> str | None:
    meta = meta_of(tp)
    lead = f"{subject} " if subject else ""
    args = get_args(_unwrap(tp))
    if meta is not None and meta.max_length is not None and len(value) > meta.max_length:
        what = "entries" if isinstance(value, dict) else "items"
        return f"{lead}must have at most {meta.max_length} {what}, got {len(value)}"
    if isinstance(value, list):
        for i, item in enumerate(value):
            if args and not _is_kind(_unwrap(args[0]), item):
                return f"{lead}must be {rule(tp)}, but item {i} is {_shown(item)}"
            problem = fault(args[0], item, f"item {i}") if args else None
            if problem is not None:
                return problem
        return None
    key_type, value_type = args if args else (Any, Any)
    for k, v in value.items():
        if not _is_kind(_unwrap(value_type), v):
            return f"{lead}must be {rule(tp)}, but the value of {_shown(k, kind=False)} is {_shown(v)}"
        name = _shown(k, kind=False)
        problem = fault(key_type, k, f"key {name}") or fault(value_type, v, f"the value of {name}")
        if problem is not None:
            return problem
    limit = _extra(meta, "max_bytes", None) if meta is not None else None
    if isinstance(limit, int):
        size = sum(len(str(k).encode("utf-8")) + len(str(v).encode("utf-8")) for k, v in value.items())
        if size > limit:
            return f"{lead}must be at most {limit} bytes in all (keys and values, UTF-8), got {size}"
    return None


# -- the words for a type ---------------------------------------------------------------


def rule(tp: Any) -> str:
    """A type in a sentence: ``a string``, ``an object of strings``, ``true or false``."""
    base = _unwrap(tp)
    origin = get_origin(base)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(rule(a) for a in get_args(base) if a is not type(None))
    if origin is dict or base is dict:
        args = get_args(base)
        return f"an object of {_plural(rule(args[1]))}" if args else "an object"
    if origin is list or base is list:
        args = get_args(base)
        return f"a list of {_plural(rule(args[0]))}" if args else "a list"
    return {bool: "true or false", int: "an integer", str: "a string", float: "a number"}.get(base, str(base))


def describe(tp: Any) -> str:
    """A type with its bounds, for the protocol document: ``integer, 1 to 1000``."""
    meta = meta_of(tp)
    base = _unwrap(tp)
    origin = get_origin(base)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(base) if a is not type(None))
    if origin is dict:
        key_type, value_type = get_args(base)
        parts = [f"keys {_bounds(key_type)}" if _bounds(key_type) else "",
                 f"values {_bounds(value_type)}" if _bounds(value_type) else ""]
        if meta is not None and meta.max_length is not None:
            parts.insert(0, f"at most {meta.max_length} entries")
        limit = _extra(meta, "max_bytes", None) if meta is not None else None
        if limit is not None:
            parts.append(f"{limit} bytes in all")
        inner = "; ".join(p for p in parts if p)
        return f"object of {_plural(rule(value_type)).removeprefix('a ')}" + (f": {inner}" if inner else "")
    if origin is list:
        (item,) = get_args(base)
        parts = [f"at most {meta.max_length}" if meta is not None and meta.max_length is not None else "",
                 f"each {_bounds(item)}" if _bounds(item) else ""]
        inner = ", ".join(p for p in parts if p)
        return f"list of {_plural(rule(item))}" + (f": {inner}" if inner else "")
    word = rule(tp).removeprefix("an ").removeprefix("a ")
    bounds = _bounds(tp)
    return f"{word}: {bounds}" if bounds and meta is not None and meta.pattern else \
        (f"{word}, {bounds}" if bounds else word)


def _bounds(tp: Any) -> str:
    meta = meta_of(tp)
    if meta is None:
        return ""
    if meta.pattern is not None:
        return str(_extra(meta, "rule", f"matching {meta.pattern}"))
    if _unwrap(tp) is str and meta.max_length is not None:
        return f"at most {meta.max_length} bytes"
    low, high = meta.ge, meta.le
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"≥ {low}"
    if high is not None:
        return f"≤ {high}"
    return ""


def default_text(f: msgspec.structs.FieldInfo) -> str:
    """A field's default as the protocol document shows it: ``required``, ``1``, ``{}``…"""
    if f.required:
        return "required"
    value = f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
    return "none" if value is None else f"`{json.dumps(value)}`"


# -- helpers ----------------------------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


_META_FIELDS: Final = ("gt", "ge", "lt", "le", "multiple_of", "pattern", "min_length", "max_length", "tz", "title",
                       "description", "examples", "extra_json_schema")


def meta_of(tp: Any) -> Meta | None:
    """The ``Meta`` of an ``Annotated`` type, merged as msgspec merges them when
    ``Annotated`` types nest (``Annotated[Name, Meta(description=…)]``)."""
    metas = [m for m in get_args(tp)[1:] if isinstance(m, Meta)] if get_origin(tp) is Annotated else []
    if len(metas) <= 1:
        return metas[0] if metas else None
    merged: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for m in metas:
        merged.update({name: getattr(m, name) for name in _META_FIELDS if getattr(m, name) is not None})
        if isinstance(m.extra, dict):
            extra.update(m.extra)
    return Meta(**merged, extra=extra or None)


def _extra(meta: Meta | None, name: str, default: Any) -> Any:
    extra = meta.extra if meta is not None else None
    return extra.get(name, default) if isinstance(extra, dict) else default


def _is_kind(base: Any, value: Any) -> bool:
    """Whether ``value`` is of the JSON kind ``base`` takes (bounds aside)."""
    origin = get_origin(base)
    if origin in (typing.Union, types.UnionType):
        return any(_is_kind(_unwrap(a), value) for a in get_args(base))
    if base is type(None):
        return value is None
    if base is bool:
        return type(value) is bool
    if base is int:
        return type(value) is int
    if base is float:
        return type(value) in (int, float)
    if base is str:
        return isinstance(value, str)
    if origin is dict or base is dict:
        return isinstance(value, dict)
    if origin is list or base is list:
        return isinstance(value, list)
    return True


def _shown(value: Any, *, kind: bool = True) -> str:
    """A value in a message: ``a string 'many'``, ``an integer 5``, ``an object``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and len(value) > 36:
        text = repr(value[:35] + "…")
    else:
        text = repr(value) if len(repr(value)) <= 40 else repr(value)[:39] + "…"
    if not kind:
        return text
    if isinstance(value, str):
        return f"a string {text}"
    if isinstance(value, int):
        return f"an integer {text}"
    if isinstance(value, float):
        return f"a number {text}"
    if isinstance(value, dict):
        return "an object"
    return "a list" if isinstance(value, list) else type(value).__name__


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            word, _, rest = text[len(article):].partition(" ")
            return f"{word}s" + (f" {rest}" if rest else "")
    return text


__all__ = [
    "ConfigKey", "ConfigMap", "ConfigValue", "DIGEST_RULE", "Digest", "LABEL_KEY_RULE", "LabelKey", "LabelValue",
    "Labels", "MAX_CONFIG_BYTES", "MAX_CONFIG_ENTRIES", "MAX_CONFIG_KEY_BYTES", "MAX_CONFIG_VALUE_BYTES",
    "MAX_INTERFACE_BYTES", "MAX_LABELS", "MAX_LABEL_VALUE_BYTES", "MAX_REFERENCE_BYTES", "MAX_TARGET_BYTES",
    "NAME_RULE", "Name", "default_text", "describe", "fault", "meta_of", "rule", "struct_fault",
]
