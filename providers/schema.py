"""Config schemas declared once, as msgspec ``Struct`` classes, and read many ways.

A schema is a ``Struct`` (``kw_only=True``, ``forbid_unknown_fields=True``) whose fields
carry their type, default and meaning (``Annotated[int, Meta(ge=1, description=...)]``).
From that one declaration come:

* validation at load time (:func:`convert`), with one-line errors that name the key and
  what it accepts, such as ``providers.gpio.safe_state.17: must be one of low, high,
  input, not 'off'``;
* the reference tables of ``drupelet config-doc`` and docs/config.md (:func:`key_docs`).

msgspec was chosen over pydantic for the boot path of a Pi: importing it costs ~24 ms
and ~5 MB, pydantic ~90 ms and ~21 MB.

This module is shared by the node and the providers and imports neither.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

import msgspec

S = TypeVar("S", bound=msgspec.Struct)

_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


class NoKeys(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The schema of a table that takes no keys: any key is refused, naming it."""


class SchemaError(ValueError):
    """A value does not match its schema. ``key`` is the dotted path of the culprit."""

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.reason = message


def convert(raw: Mapping[str, Any], cls: type[S], *, where: str = "") -> S:
    """Validate ``raw`` (a parsed TOML or JSON table) against ``cls``.

    ``where`` prefixes every key in an error (``providers.gpio``). Unknown keys are
    refused with the list of known ones; a wrong type or value names the allowed ones.
    """
    if not isinstance(raw, Mapping):
        raise SchemaError(f"expected a table, got {_kind(raw)}", key=where)
    known = _field_names(cls)
    if not known and raw:
        raise SchemaError(f"takes no keys, got {', '.join(sorted(map(str, raw)))}", key=where)
    for key in raw:
        if key not in known:
            raise SchemaError(f"unknown key (known: {', '.join(known)})", key=_join(where, str(key)))
    try:
        return msgspec.convert(dict(raw), type=cls, strict=True)
    except msgspec.ValidationError as exc:
        raise _explain(exc, raw, cls, where) from None


@functools.cache
def _field_names(cls: type[msgspec.Struct]) -> list[str]:
    return [f.encode_name for f in msgspec.structs.fields(cls)]


def _join(where: str, key: str) -> str:
    if not where:
        return key
    return f"{where}{key}" if key.startswith("[") else f"{where}.{key}"


def _explain(exc: msgspec.ValidationError, raw: Mapping[str, Any], cls: type[msgspec.Struct],
             where: str) -> SchemaError:
    text = str(exc)
    match = _PATH.search(text)
    path = match.group("path") if match else ""
    message = text[:match.start()] if match else text
    top = path.lstrip(".").split(".")[0].split("[")[0]
    field = next((f for f in msgspec.structs.fields(cls) if f.encode_name == top), None)
    if "[...]" in path and field is not None:
        path = _dict_culprit(raw.get(top), field.type, path)
    key = _join(where, path.lstrip(".")) if path else where
    value = _lookup(raw, path)
    if field is not None:
        choices = _choices(field.type)
        if choices and (message.startswith("Invalid enum value") or message.startswith("Expected `str`")):
            return SchemaError(f"must be one of {', '.join(map(str, choices))}, not {value!r}", key=key)
        if message.startswith("Expected"):
            expected = _describe_expected(message)
            if value is _MISSING:
                return SchemaError(f"expected {expected}", key=key)
            if "`, got `" in message:  # the wrong type
                return SchemaError(f"expected {expected}, got {_kind(value)} {value!r}", key=key)
            return SchemaError(f"expected {expected}, got {value!r}", key=key)
    if message.startswith("Object missing required field"):
        name = message.split("`")[1] if "`" in message else "?"
        return SchemaError("is required", key=_join(key, name))
    return SchemaError(message[:1].lower() + message[1:], key=key)


def _dict_culprit(table: Any, tp: Any, path: str) -> str:
    """msgspec reports a bad value of a table as ``.field[...]``; find which key it was."""
    value_type = get_args(_unwrap(tp))[-1] if get_args(_unwrap(tp)) else Any
    if isinstance(table, Mapping):
        for key, value in table.items():
            try:
                msgspec.convert(value, type=value_type, strict=True)
            except msgspec.ValidationError:
                return path.replace("[...]", f".{key}", 1)
    return path


_MISSING = object()


def _lookup(raw: Any, path: str) -> Any:
    """The value at a msgspec path such as ``.pins[3]`` or ``.safe_state[...]``."""
    value = raw
    for token in re.findall(r"\.([^.\[]+)|\[([^\]]*)\]", path):
        name, index = token
        try:
            if name:
                value = value[name]
            elif index == "...":
                return _MISSING
            else:
                value = value[int(index)]
        except (KeyError, IndexError, TypeError, ValueError):
            return _MISSING
    return value


_TYPE_WORDS = {"int": "an integer", "str": "a string", "float": "a number", "bool": "true or false",
               "object": "a table", "array": "a list", "null": "nothing"}


def _describe_expected(message: str) -> str:
    """``Expected `int` >= 1`` → ``an integer >= 1``; ``Expected `int | str` `` → ``an integer or a string``."""
    match = re.match(r"Expected `([^`]+)`(.*?)(?:, got `[^`]*`)?$", message)
    if not match:
        return message
    names = [n.strip() for n in match.group(1).split("|")]
    words = " or ".join(_TYPE_WORDS.get(n, n) for n in names)
    return words + re.sub(r"(\d)\.0\b", r"\1", match.group(2).rstrip())


def _kind(value: Any) -> str:
    if value is _MISSING:
        return "nothing"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is typing.Annotated:
        tp = get_args(tp)[0]
    return tp


def _choices(tp: Any) -> tuple[Any, ...]:
    """The values of a ``Literal`` field (also inside a list or dict value)."""
    tp = _unwrap(tp)
    origin = get_origin(tp)
    if origin is Literal:
        return get_args(tp)
    if origin in (list, tuple, dict) and get_args(tp):
        return _choices(get_args(tp)[-1])
    return ()


def _meta(tp: Any) -> msgspec.Meta | None:
    if get_origin(tp) is typing.Annotated:
        for extra in get_args(tp)[1:]:
            if isinstance(extra, msgspec.Meta):
                return extra
    return None


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    """One key of a schema, as the docs show it."""

    key: str
    type: str
    default: str
    meaning: str


def type_name(tp: Any) -> str:
    """A person's name for a field type: ``an integer >= 1``, ``low, high or input``…"""
    meta = _meta(tp)
    tp = _unwrap(tp)
    origin = get_origin(tp)
    if origin is Literal:
        names = [str(v) for v in get_args(tp)]
        text = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
    elif origin in (typing.Union, types.UnionType):
        text = " or ".join(type_name(a) for a in get_args(tp) if a is not type(None))
    elif origin is list or tp is list:
        inner = get_args(tp)
        text = f"a list of {_plural_of(inner[0])}" if inner else "a list"
    elif origin is dict or tp is dict:
        inner = get_args(tp)
        text = f"a table of {_plural_of(inner[1])}" if inner else "a table"
    else:
        text = {int: "an integer", str: "a string", float: "a number", bool: "true or false"}.get(tp, str(tp))
    if meta is not None:
        bounds = [f"{sign} {_number(getattr(meta, attr))}" for attr, sign in
                  (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")) if getattr(meta, attr) is not None]
        if bounds:
            text += " " + ", ".join(bounds)
    return text


def _plural_of(tp: Any) -> str:
    """``int`` → ``integers``; ``str | int | bool`` → ``strings, integers or booleans``."""
    inner = _unwrap(tp)
    if get_origin(inner) in (typing.Union, types.UnionType):
        words = [_plural(type_name(a)).replace("true or false", "booleans") for a in get_args(inner)
                 if a is not type(None)]
        return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]
    return _plural(type_name(tp)).replace("true or false", "booleans")


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            word, _, rest = text[len(article):].partition(" ")
            return f"{word}s" + (f" {rest}" if rest else "")
    return text


def toml_literal(value: Any) -> str:
    """A default as TOML shows it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + " }" if value else "{}"
    return str(value)


def key_docs(cls: type[msgspec.Struct], *, derived: Mapping[str, str] | None = None) -> list[KeyDoc]:
    """One :class:`KeyDoc` per field of ``cls``, in declaration order. ``derived`` names
    fields whose default is computed at run time, with how (shown instead of a value)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    docs = []
    for f in msgspec.structs.fields(cls):
        tp = hints.get(f.name, f.type)
        meta = _meta(tp)
        if derived and f.encode_name in derived:
            default = f"({derived[f.encode_name]})"
        elif f.default is not msgspec.NODEFAULT:
            default = f"`{toml_literal(f.default)}`"
        elif f.default_factory is not msgspec.NODEFAULT:
            default = f"`{toml_literal(f.default_factory())}`"
        else:
            default = "required"
        docs.append(KeyDoc(key=f.encode_name, type=type_name(tp), default=default,
                           meaning=(meta.description if meta is not None and meta.description else "")))
    return docs


def _code_placeholders(text: str) -> str:
    """Placeholders like <data_dir> and paths in backticks, so Markdown keeps them."""
    return re.sub(r"([^\s(`]*<[^>\s]+>[^\s)`]*)", r"`\1`", text)


def markdown_table(docs: list[KeyDoc]) -> str:
    """The rows of :func:`key_docs` as a Markdown table."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for doc in docs:
        meaning = _code_placeholders(doc.meaning).replace("|", "\\|")
        default = doc.default if doc.default.startswith("`") else _code_placeholders(doc.default)
        lines.append(f"| `{doc.key}` | {doc.type.replace('|', '/')} | {default} | {meaning} |")
    return "\n".join(lines)


__all__ = ["KeyDoc", "NoKeys", "SchemaError", "convert", "key_docs", "markdown_table", "toml_literal", "type_name"]
