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
import os
import platform
import re
import subprocess
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


_PROBE = "import sys, wasmtime\nc = wasmtime.Config()\nc.target = sys.argv[1]\nwasmtime.Engine(c)\n"


class UnsupportedTarget(ValueError):
    """This install's wasmtime cannot compile for the target asked for."""


def check_target(target: str | None) -> None:
    """:class:`UnsupportedTarget` unless this install's wasmtime can build for ``target``.

    The PyPI wheels carry a backend for their own architecture only, and wasmtime aborts the
    whole process (a Rust panic) when an engine is made for a target its build left out, so
    the engine is tried in a child first."""
    if target is None or target == host_target():
        return
    probe = subprocess.run([sys.executable, "-c", _PROBE, target], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "RUST_BACKTRACE": "0"}, stdin=subprocess.DEVNULL)
    if probe.returncode == 0:
        return
    if "target is disabled" in probe.stderr:
        reason = "its build carries no backend for that architecture (compile on a machine of that kind)"
    else:
        lines = [line.strip() for line in probe.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else f"the engine could not be made (exit status {probe.returncode})"
        reason = re.sub(r"^[\w.]+(Error|Exception): ", "", last)  # the child's exception, without its class
    raise UnsupportedTarget(f"wasmtime {wasmtime_version()} here cannot compile for {target}: {reason}")


def compile_bytes(wasm: bytes, target: str | None = None) -> bytes:
    engine = wasmtime.Engine(engine_config(target))
    return bytes(Component(engine, wasm).serialize())


_OUT_OF_MEMORY_TEXT = "memory allocation of the compile failed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drupelet.node.runtime.aot",
                                     description="Compile a wasm component for drupelet's engine.")
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--target", default=None, help="target triple (default: this machine)")
    parser.add_argument("--memory-limit", type=int, default=0, metavar="BYTES",
                        help="address space this process may take (RLIMIT_AS); 0: no limit")
    args = parser.parse_args(argv)
    if args.memory_limit > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (args.memory_limit, args.memory_limit))
    try:
        check_target(args.target)
        data = compile_bytes(args.src.read_bytes(), args.target)
    except UnsupportedTarget as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    except wasmtime.WasmtimeError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    except MemoryError:
        sys.stderr.write(f"{_OUT_OF_MEMORY_TEXT}: the compile went past --memory-limit {args.memory_limit}\n")
        return 3
    except OSError as exc:
        sys.stderr.write(f"cannot read {args.src}: {exc.strerror}\n")
        return 2
    atomic_write(args.dst, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
