"""Engine configuration and ahead-of-time compilation of components.

Compiling a componentize-py actor takes seconds and hundreds of MB, so the node compiles
in a short-lived child process (``python -m drupelet.node.runtime.aot SRC DST``) and
maps the result with ``Component.deserialize_file``. The parent and the child build their
engines from :func:`engine_config`, so the artifact always matches.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import platform
import sys
from pathlib import Path

import wasmtime
from wasmtime.component import Component

from drupelet.providers.base import atomic_write

ENGINE_FLAGS = "epoch=1;cm=1;opt=speed"
"""Part of the cache key: change it whenever :func:`engine_config` changes."""

_TRIPLES = {
    "x86_64": "x86_64-unknown-linux-gnu",
    "amd64": "x86_64-unknown-linux-gnu",
    "aarch64": "aarch64-unknown-linux-gnu",
    "arm64": "aarch64-unknown-linux-gnu",
}


def host_target() -> str:
    machine = platform.machine().lower()
    return _TRIPLES.get(machine, f"{machine}-unknown-{sys.platform}")


def wasmtime_version() -> str:
    return importlib.metadata.version("wasmtime")


def engine_config(target: str | None = None) -> wasmtime.Config:
    cfg = wasmtime.Config()
    cfg.epoch_interruption = True
    cfg.wasm_component_model = True
    cfg.cranelift_opt_level = "speed"
    if target is not None and target != host_target():
        cfg.target = target
    return cfg


def cache_key(wasm: bytes, target: str | None = None) -> str:
    """SHA-256 of the component, wasmtime version, target triple and engine flags."""
    digest = hashlib.sha256(wasm).hexdigest()
    flags = hashlib.sha256(ENGINE_FLAGS.encode()).hexdigest()[:8]
    return f"{digest}-wasmtime{wasmtime_version()}-{target or host_target()}-{flags}"


def compile_bytes(wasm: bytes, target: str | None = None) -> bytes:
    engine = wasmtime.Engine(engine_config(target))
    return bytes(Component(engine, wasm).serialize())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drupelet.node.runtime.aot",
                                     description="Compile a wasm component for drupelet's engine.")
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--target", default=None, help="target triple (default: this machine)")
    args = parser.parse_args(argv)
    try:
        data = compile_bytes(args.src.read_bytes(), args.target)
    except wasmtime.WasmtimeError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"cannot read {args.src}: {exc.strerror}\n")
        return 2
    atomic_write(args.dst, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
