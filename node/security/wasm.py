"""The claims' custom section in a WebAssembly binary: find, strip and embed it.

Core modules and components alike: the JWT lives in a custom section named
``wasmcloud_jwt`` (``jwt`` before wascap 0.9) at the binary's top level. Stripping follows
wascap's ``strip_custom_section``: every section is written again with a minimal LEB128
size, nested core modules and components (component sections 1 and 4) are stripped
recursively, and the claims' hash is the SHA-256 of that output, so a binary signed by
wasmCloud's tooling hashes the same here.
"""

from __future__ import annotations

import hashlib

from .errors import BadWasm

__all__ = ["SECTION", "SECTION_NAMES", "content_hash", "embed", "find_jwt", "is_component", "strip"]

SECTION = "wasmcloud_jwt"
SECTION_NAMES = (SECTION, "jwt")
MAGIC = b"\0asm"
MODULE_HEADER = MAGIC + b"\x01\0\0\0"
COMPONENT_HEADER = MAGIC + b"\x0d\0\x01\0"
_NESTED = (1, 4)  # component sections holding a core module / a component


def _leb(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise BadWasm("truncated: a section size runs past the end")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def is_component(data: bytes) -> bool:
    return data[:8] == COMPONENT_HEADER


def _sections(data: bytes) -> list[tuple[int, bytes]]:
    """``(section id, payload)`` of each top-level section."""
    if data[:8] not in (MODULE_HEADER, COMPONENT_HEADER):
        raise BadWasm("not a WebAssembly module or component (no \\0asm header of version 1)")
    out, i = [], 8
    while i < len(data):
        sid = data[i]
        size, start = _leb(data, i + 1)
        end = start + size
        if end > len(data):
            raise BadWasm("truncated: a section runs past the end")
        out.append((sid, data[start:end]))
        i = end
    return out


def _custom_name(payload: bytes) -> str:
    size, start = _leb(payload, 0)
    return payload[start:start + size].decode("utf-8", "replace")


def _section(sid: int, payload: bytes) -> bytes:
    return bytes([sid]) + _uleb(len(payload)) + payload


def strip(data: bytes) -> bytes:
    """``data`` without any claims section, written as wascap writes it before hashing."""
    component = is_component(data)
    out = bytearray(data[:8])
    for sid, payload in _sections(data):
        if sid == 0 and _custom_name(payload) in SECTION_NAMES:
            continue
        if component and sid in _NESTED:
            payload = strip(payload)
        out += _section(sid, payload)
    return bytes(out)


def content_hash(data: bytes) -> str:
    """The claims' ``hash``: uppercase hex SHA-256 of :func:`strip` of ``data``."""
    return hashlib.sha256(strip(data)).hexdigest().upper()


def find_jwt(data: bytes) -> str | None:
    """The JWT in ``data``'s top-level claims section, or None for an unsigned binary."""
    for sid, payload in _sections(data):
        if sid == 0 and _custom_name(payload) in SECTION_NAMES:
            size, start = _leb(payload, 0)
            try:
                return payload[start + size:].decode("ascii")
            except UnicodeDecodeError:
                raise BadWasm("the claims section is not a JWT (not ASCII)") from None
    return None


def embed(data: bytes, jwt: str) -> bytes:
    """:func:`strip` of ``data`` with ``jwt`` appended in a ``wasmcloud_jwt`` section."""
    name = SECTION.encode()
    return strip(data) + _section(0, _uleb(len(name)) + name + jwt.encode("ascii"))
