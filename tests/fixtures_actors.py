"""Built example actors for tests, cached across test sessions.

A componentize-py build takes ~10 s, so each example is built at most once per change:
the component is cached under ``$DRUPELET_TEST_CACHE`` (default
``~/.cache/drupelet-test``, or ``$XDG_CACHE_HOME/drupelet-test``) as
``<name>-<key>.wasm``, where the key hashes the actor's sources, every WIT file shipped
with drupelet, and the componentize-py version. Delete the directory to force a rebuild.

Register in ``conftest.py``::

    from fixtures_actors import counter_wasm  # noqa: F401

Tests that use these fixtures may build on a cold cache: mark them ``@pytest.mark.slow``.
They fail with the install hint when componentize-py is not installed (it is in
the ``test`` extra).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drupelet.node.tools.build import build_python_actor, example_dir, find_componentize_py, packaged_wit_dir, source_key

CACHE_ENV = "DRUPELET_TEST_CACHE"
COMPONENT_HEADER = b"\x00asm\x0d\x00\x01\x00"
"""Wasm magic, then the component-model version (0x0d) and layer (1)."""


def cache_dir() -> Path:
    """Where built test actors are kept between sessions."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "drupelet-test"


def cached_actor(name: str) -> Path:
    """The built component of example actor ``name``, building it if the cache misses."""
    find_componentize_py()  # raises BuildError with the install hint: a missing tool fails, never skips
    src = example_dir(name)
    wit = packaged_wit_dir()
    out = cache_dir() / f"{name}-{source_key(src, wit)[:16]}.wasm"
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


@pytest.fixture(scope="session")
def thermometer_wasm() -> Path:
    """Path to the built ``thermometer`` hardware demo component (cached across sessions)."""
    return cached_actor("thermometer")
