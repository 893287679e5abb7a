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

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from drupelet.node.tools.build import build_python_actor, example_dir, find_componentize_py, packaged_wit_dir, source_key

CACHE_ENV = "DRUPELET_TEST_CACHE"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
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
    return cached_python_actor(example_dir(name), name)


def cached_python_actor(src: Path, name: str) -> Path:
    """The component built from the Python actor directory ``src``, building it if the cache misses."""
    find_componentize_py()  # raises BuildError with the install hint: a missing tool fails, never skips
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


# -- JavaScript components (componentize-js, from npm) --------------------------------------

COMPONENTIZE_JS = "@bytecodealliance/componentize-js@0.23.0"
"""The componentize-js release the JavaScript test components are built with."""
JS_BUILD_TIMEOUT_S = 900.0


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("the JavaScript test components need node and npm: apt-get install -y nodejs npm "
                           "(scripts/test.sh installs them as root)")
    return npm


def js_source_key(src: Path) -> str:
    """SHA-256 over a JavaScript component's sources and WIT, and the componentize-js release."""
    digest = hashlib.sha256(COMPONENTIZE_JS.encode())
    for path in sorted(p for p in src.rglob("*") if p.is_file() and p.suffix in (".js", ".wit")):
        digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def componentize_js_cli() -> Path:
    """componentize-js's command line, installed with npm into the test cache once."""
    tools = cache_dir() / "npm" / COMPONENTIZE_JS.rsplit("@", 1)[1]
    cli = tools / "node_modules" / "@bytecodealliance" / "componentize-js" / "src" / "cli.js"
    if not cli.is_file():
        tools.mkdir(parents=True, exist_ok=True)
        subprocess.run([_npm(), "install", "--prefix", str(tools), "--no-audit", "--no-fund", "--loglevel=error",
                        COMPONENTIZE_JS], check=True, timeout=JS_BUILD_TIMEOUT_S, stdout=subprocess.DEVNULL)
    return cli


def cached_js_actor(name: str, world: str) -> Path:
    """The component built from ``tests/fixtures/<name>`` (``<name>.js`` or ``counter.js``
    and ``wit/``) with componentize-js, building it if the cache misses."""
    src = FIXTURES / name
    out = cache_dir() / f"{name}-{js_source_key(src)[:16]}.wasm"
    if out.is_file():
        with out.open("rb") as f:
            if f.read(len(COMPONENT_HEADER)) == COMPONENT_HEADER:
                return out
    cli = componentize_js_cli()
    source = next(src.glob("*.js"))
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    _npm()
    result = subprocess.run(["node", str(cli), str(source), "--wit", str(src / "wit"), "-n", world, "-o", str(tmp)],
                            capture_output=True, text=True, timeout=JS_BUILD_TIMEOUT_S)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"componentize-js failed to build {src}:\n{result.stderr[-3000:]}")
    os.replace(tmp, out)
    return out


@pytest.fixture(scope="session")
def js_http_counter_wasm() -> Path:
    """The JavaScript http-keyvalue-counter (tests/fixtures/js-http-counter), built with
    componentize-js outside drupelet's WIT (cached across sessions)."""
    return cached_js_actor("js-http-counter", "counter")


@pytest.fixture(scope="session")
def http_counter_wasm() -> Path:
    """Path to the built ``http-counter`` example component (cached across sessions)."""
    return cached_actor("http-counter")


@pytest.fixture(scope="session")
def http_probe_wasm() -> Path:
    """The ``http-probe`` test actor (tests/fixtures/http-probe): echoes, traps, fetches."""
    return cached_python_actor(FIXTURES / "http-probe", "http-probe")


@pytest.fixture(scope="session")
def shared_compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compile cache for the session's nodes that run the HTTP test components: each
    is compiled once (~10 s for a componentize-py or componentize-js component)."""
    return tmp_path_factory.mktemp("compile-cache")
