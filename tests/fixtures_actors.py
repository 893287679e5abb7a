"""Built example actors for tests, cached across test sessions.

A componentize-py build takes ~10 s, so each example is built at most once per change:
the component is cached under ``$DRUPELET_TEST_CACHE`` (default
``~/.cache/drupelet-test``, or ``$XDG_CACHE_HOME/drupelet-test``) as
``<name>-<key>.wasm``, where the key hashes the actor's sources, every WIT file shipped
with drupelet, and the componentize-py version. Delete the directory to force a rebuild.

Register in ``conftest.py``::

    from fixtures_actors import counter_wasm  # noqa: F401

Tests that use these fixtures may build on a cold cache: mark them ``@pytest.mark.slow``.
They are skipped when componentize-py is not installed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import os
from pathlib import Path

import pytest

from drupelet.node.build import (
    BuildError,
    build_python_actor,
    find_componentize_py,
    packaged_wit_dir,
)

CACHE_ENV = "DRUPELET_TEST_CACHE"
COMPONENT_HEADER = b"\x00asm\x0d\x00\x01\x00"
"""Wasm magic, then the component-model version (0x0d) and layer (1)."""
_SOURCE_SUFFIXES = (".py", ".toml")


def example_dir(name: str) -> Path:
    """The directory of an example actor shipped in ``drupelet.actors``."""
    return Path(str(importlib.resources.files("drupelet.actors") / "examples" / name))


def cache_dir() -> Path:
    """Where built test actors are kept between sessions."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "drupelet-test"


def build_key(src_dir: Path, wit_dir: Path) -> str:
    """SHA-256 over the actor's sources, all WIT files, and the componentize-py version."""
    h = hashlib.sha256()
    try:
        tool = importlib.metadata.version("componentize-py")
    except importlib.metadata.PackageNotFoundError:
        tool = "unknown"
    h.update(f"componentize-py {tool}\0".encode())
    sources = [
        p for p in src_dir.rglob("*")
        if p.is_file() and p.suffix in _SOURCE_SUFFIXES and "__pycache__" not in p.parts
    ]
    wits = [p for p in wit_dir.rglob("*.wit") if p.is_file()]
    for label, base, files in (("src", src_dir, sources), ("wit", wit_dir, wits)):
        for path in sorted(files):
            h.update(f"{label}/{path.relative_to(base).as_posix()}\0".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def cached_actor(name: str) -> Path:
    """The built component of example actor ``name``, building it if the cache misses."""
    try:
        find_componentize_py()
    except BuildError as e:
        pytest.skip(str(e))
    src = example_dir(name)
    wit = packaged_wit_dir()
    out = cache_dir() / f"{name}-{build_key(src, wit)[:16]}.wasm"
    if out.is_file():
        with out.open("rb") as f:
            if f.read(len(COMPONENT_HEADER)) == COMPONENT_HEADER:
                return out
    # build_python_actor replaces ``out`` atomically, so concurrent sessions are safe.
    build_python_actor(src, out, wit_dir=wit)
    return out


@pytest.fixture(scope="session")
def counter_wasm() -> Path:
    """Path to the built ``counter`` example component (cached across sessions)."""
    return cached_actor("counter")
