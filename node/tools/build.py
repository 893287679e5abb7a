"""Build Python actors into WebAssembly components with componentize-py.

An actor directory holds the guest module (``app.py`` unless its ``actor.toml`` says
otherwise) and, optionally, ``actor.toml``:

========== ========= ==========================================================
key        default   meaning
========== ========= ==========================================================
module     ``app``   Python module that defines the exported interface classes
world      ``actor`` world of ``drupelet:worlds`` (``actors/wit/world.wit``) to target
========== ========= ==========================================================

The build runs componentize-py in a subprocess against the WIT shipped inside the
``drupelet.actors`` package, so an actor always targets the interfaces this node serves::

    componentize-py -d WIT -w WORLD componentize -p SRC_DIR MODULE -o OUTPUT

componentize-py is an optional dependency (``pip install 'drupelet[build]'``); nothing
here imports it. The node itself never builds: this is for ``drupelet actor build``,
tests, and laptops.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drupelet.node.errors import DrupeletError

log = logging.getLogger(__name__)

Progress = Callable[[float], None]
"""Called with the seconds a build has taken so far, while componentize-py runs."""

ACTOR_TOML = "actor.toml"
DEFAULT_MODULE = "app"
DEFAULT_WORLD = "actor"
COMPONENTIZE_PY = "componentize-py"
INSTALL_HINT = "pip install 'drupelet[build]'"
BUILD_TIMEOUT_S = 900.0
"""A build takes ~10 s on a laptop and minutes on a Pi; past this it is stuck."""
BINDINGS_TIMEOUT_S = 120.0
PROGRESS_INTERVAL_S = 0.25
"""How often a build in progress reports the time it has taken."""
SOURCES_SUFFIX = ".sources"
"""Beside a built component: the source key it was built from and its SHA-256 (see :func:`build_if_changed`)."""
STDERR_TAIL_LINES = 30

_ACTOR_TOML_KEYS = frozenset({"module", "world"})
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_WORLD_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
# Top-level module names that componentize-py generates (or ships) inside the component;
# an app module with one of these names would shadow them.
_RESERVED_MODULES = frozenset(
    {"wit_world", "componentize_py_types", "componentize_py_runtime",
     "componentize_py_async_support", "poll_loop"}
)
# componentize-py mounts each ``-p`` directory in the guest as /0, /1, …
_GUEST_PATH_RE = re.compile(r'"/0/')


class BuildError(DrupeletError):
    """An actor could not be built.

    ``src_dir`` is the actor directory; ``stderr`` the tail of componentize-py's error
    output (empty when the build failed before running it); ``returncode`` its exit
    status, if it ran.
    """

    code = "build-failed"

    def __init__(
        self,
        message: str,
        *,
        src_dir: Path | None = None,
        stderr: str = "",
        returncode: int | None = None,
    ) -> None:
        super().__init__(message)
        self.src_dir = src_dir
        self.stderr = stderr
        self.returncode = returncode


@dataclass(frozen=True)
class BuildResult:
    """A built component: where it is, its size and SHA-256, and how long it took."""

    output: Path
    size_bytes: int
    sha256: str
    seconds: float
    up_to_date: bool = False
    """True when :func:`build_if_changed` kept the component already there."""


@dataclass(frozen=True)
class BuildSpec:
    """How to build one actor directory: the contents of its ``actor.toml``."""

    module: str = DEFAULT_MODULE
    world: str = DEFAULT_WORLD


def packaged_wit_dir() -> Path:
    """The WIT directory shipped in the ``drupelet.actors`` package (``world.wit`` + ``deps/``)."""
    wit = importlib.resources.files("drupelet.actors") / "wit"
    path = Path(str(wit))
    if not (path / "world.wit").is_file():
        raise BuildError(
            f"drupelet's WIT files are not on the filesystem (looked in {wit}); "
            "reinstall drupelet from a wheel or a source checkout"
        )
    return path


def example_dir(name: str) -> Path:
    """The directory of an example actor shipped in ``drupelet.actors``."""
    return Path(str(importlib.resources.files("drupelet.actors") / "examples" / name))


SOURCE_SUFFIXES = (".py", ".toml")


def source_key(src_dir: Path, wit_dir: Path | None = None) -> str:
    """SHA-256 over an actor's sources, every WIT file it builds against, and the
    componentize-py version: equal keys mean a rebuild would change nothing that matters.

    (componentize-py's output is not byte-reproducible, so the key is what identifies a
    build, not the component's digest; :func:`build_if_changed` keeps a component whose key
    has not changed.)
    """
    import importlib.metadata

    wit = wit_dir or packaged_wit_dir()
    h = hashlib.sha256()
    try:
        tool = importlib.metadata.version("componentize-py")
    except importlib.metadata.PackageNotFoundError:
        tool = "unknown"
    h.update(f"componentize-py {tool}\0".encode())
    sources = [p for p in src_dir.rglob("*")
               if p.is_file() and p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts]
    wits = [p for p in wit.rglob("*.wit") if p.is_file()]
    for label, base, files in (("src", src_dir, sources), ("wit", wit, wits)):
        for path in sorted(files):
            h.update(f"{label}/{path.relative_to(base).as_posix()}\0".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def load_actor_spec(src_dir: Path) -> BuildSpec:
    """Read and validate ``src_dir/actor.toml``; defaults when the file is absent."""
    path = src_dir / ACTOR_TOML
    if not path.is_file():
        return BuildSpec()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BuildError(f"{path}: cannot read: {e}", src_dir=src_dir) from e
    unknown = sorted(set(data) - _ACTOR_TOML_KEYS)
    if unknown:
        raise BuildError(
            f"{path}: unknown key(s) {', '.join(unknown)}; "
            f"known keys are {', '.join(sorted(_ACTOR_TOML_KEYS))}",
            src_dir=src_dir,
        )
    module = data.get("module", DEFAULT_MODULE)
    world = data.get("world", DEFAULT_WORLD)
    if not isinstance(module, str) or not _MODULE_RE.match(module):
        raise BuildError(f"{path}: module: not a Python module name: {module!r}", src_dir=src_dir)
    if module.partition(".")[0] in _RESERVED_MODULES:
        raise BuildError(
            f"{path}: module: {module!r} clashes with a module componentize-py generates",
            src_dir=src_dir,
        )
    if not isinstance(world, str) or not _WORLD_RE.match(world):
        raise BuildError(f"{path}: world: not a WIT world name: {world!r}", src_dir=src_dir)
    return BuildSpec(module=module, world=world)


def find_componentize_py() -> list[str]:
    """The command that runs componentize-py, as an argv prefix.

    Looked for next to ``sys.executable`` (the active venv), then on ``PATH``, then as an
    importable ``componentize_py`` module run by this interpreter.
    """
    here = shutil.which(COMPONENTIZE_PY, path=str(Path(sys.executable).parent))
    found = here or shutil.which(COMPONENTIZE_PY)
    if found is not None:
        return [found]
    if importlib.util.find_spec("componentize_py") is not None:
        script = "import sys; from componentize_py import script; sys.exit(script())"
        return [sys.executable, "-c", script]
    raise BuildError(f"componentize-py is not installed; to build Python actors: {INSTALL_HINT}")


def build_python_actor(
    src_dir: Path,
    output: Path,
    *,
    world: str | None = None,
    wit_dir: Path | None = None,
    timeout_s: float = BUILD_TIMEOUT_S,
    progress: Progress | None = None,
) -> BuildResult:
    """Build the Python actor in ``src_dir`` into the component ``output``.

    ``world`` overrides the world named in ``actor.toml`` (default ``actor``); ``wit_dir``
    overrides the WIT shipped with drupelet. ``output`` is replaced atomically, and only
    when the build succeeds. Raises :class:`BuildError` naming the problem: no app module,
    a bad ``actor.toml``, componentize-py missing, or componentize-py's own error (a
    Python exception raised while importing the app, a missing export class, …).
    """
    src_dir = Path(src_dir).resolve()
    output = Path(output).resolve()
    if not src_dir.is_dir():
        raise BuildError(f"actor directory {src_dir} does not exist", src_dir=src_dir)
    spec = load_actor_spec(src_dir)
    target_world = world if world is not None else spec.world
    _check_module_exists(src_dir, spec.module)
    wit = Path(wit_dir).resolve() if wit_dir is not None else packaged_wit_dir()
    cmd = find_componentize_py()

    output.parent.mkdir(parents=True, exist_ok=True)
    # componentize-py creates the file itself (so it gets the usual permissions); it is
    # renamed over ``output`` only once the build has succeeded.
    tmp = output.with_name(f".{output.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    argv = [
        *cmd, "-q", "-d", str(wit), "-w", target_world,
        "componentize", "-p", str(src_dir), spec.module, "-o", str(tmp),
    ]
    log.info("building %s (module %s, world %s) -> %s", src_dir, spec.module, target_world, output)
    log.debug("running %s", argv)
    started = time.monotonic()
    try:
        _run(argv, src_dir=src_dir, timeout_s=timeout_s, what=f"building {src_dir}", progress=progress)
        data = tmp.read_bytes()
        if not data:
            raise BuildError(
                f"componentize-py wrote an empty component for {src_dir}", src_dir=src_dir
            )
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    result = BuildResult(
        output=output,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        seconds=seconds,
    )
    log.info(
        "built %s: %d bytes, sha256 %s, %.1f s",
        output, result.size_bytes, result.sha256[:12], result.seconds,
    )
    return result


def build_if_changed(src_dir: Path, output: Path, *, force: bool = False,
                     progress: Progress | None = None) -> BuildResult:
    """:func:`build_python_actor`, unless :func:`current_build` says ``output`` is up to date:
    then it is kept as it is (``up_to_date``), so a rebuild of unchanged sources keeps the
    component's digest. componentize-py 0.25 itself does not write the same bytes twice (its
    snapshot of the initialised interpreter differs from run to run; upstream issue
    bytecodealliance/componentize-py#247), so without this every rebuild would be a new
    artifact and a fresh compile on every node. ``force`` rebuilds anyway."""
    found = None if force else current_build(src_dir, output)
    if found is not None:
        return found
    src_dir = Path(src_dir).resolve()
    result = build_python_actor(src_dir, output, progress=progress)
    record = _record_path(result.output)
    try:
        record.write_text(json.dumps({"source_key": source_key(src_dir), "sha256": result.sha256}) + "\n",
                          encoding="utf-8")
    except OSError as exc:
        log.warning("cannot write %s (the next build rebuilds): %s", record, exc.strerror)
    return result


def current_build(src_dir: Path, output: Path) -> BuildResult | None:
    """``output`` as it is, when :func:`build_if_changed` built it from the sources ``src_dir`` has
    now (the same :func:`source_key`: actor files, WIT, componentize-py version) and it has not
    changed since (its SHA-256 is the one recorded in ``<output>.sources``); else None."""
    src_dir = Path(src_dir).resolve()
    output = Path(output).resolve()
    record = _record_path(output)
    if not (src_dir.is_dir() and output.is_file() and record.is_file()):
        return None
    try:
        recorded = json.loads(record.read_text(encoding="utf-8"))
        data = output.read_bytes()
    except (OSError, ValueError) as exc:
        log.debug("ignoring %s: %s", record, exc)
        return None
    digest = hashlib.sha256(data).hexdigest()
    if not isinstance(recorded, dict) or recorded.get("sha256") != digest \
            or recorded.get("source_key") != source_key(src_dir):
        return None
    log.info("%s is up to date with %s", output, src_dir)
    return BuildResult(output=output, size_bytes=len(data), sha256=digest, seconds=0.0, up_to_date=True)


def _record_path(output: Path) -> Path:
    return output.with_name(output.name + SOURCES_SUFFIX)


def generate_bindings(
    out_dir: Path,
    world: str = DEFAULT_WORLD,
    *,
    wit_dir: Path | None = None,
) -> Path:
    """Write componentize-py's Python binding stubs for ``world`` into ``out_dir``.

    The stubs (``wit_world``, ``componentize_py_types``, …) are for actor authors' IDEs
    and type checkers; a build generates its own and never uses these.
    """
    out_dir = Path(out_dir).resolve()
    wit = Path(wit_dir).resolve() if wit_dir is not None else packaged_wit_dir()
    argv = [*find_componentize_py(), "-q", "-d", str(wit), "-w", world, "bindings", str(out_dir)]
    log.debug("running %s", argv)
    _run(argv, src_dir=None, timeout_s=BINDINGS_TIMEOUT_S, what=f"generating bindings for {world}")
    log.info("wrote bindings for world %s to %s", world, out_dir)
    return out_dir


def _check_module_exists(src_dir: Path, module: str) -> None:
    rel = Path(*module.split("."))
    candidates = [src_dir / rel.with_suffix(".py"), src_dir / rel / "__init__.py"]
    if not any(c.is_file() for c in candidates):
        raise BuildError(
            f"no {candidates[0].name} in {src_dir}: an actor directory needs the module "
            f"{module!r} (set `module` in {ACTOR_TOML} to use another)",
            src_dir=src_dir,
        )


def _run(argv: list[str], *, src_dir: Path | None, timeout_s: float, what: str,
         progress: Progress | None = None) -> None:
    """Run componentize-py; raise :class:`BuildError` with its stderr tail on failure.
    ``progress`` is called with the seconds elapsed, about every ``PROGRESS_INTERVAL_S``."""
    env = dict(os.environ)
    # A Rust backtrace would bury the Python error that explains the failure.
    env["RUST_BACKTRACE"] = "0"
    env["RUST_LIB_BACKTRACE"] = "0"
    started = time.monotonic()
    try:
        with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, errors="replace", env=env) as running:
            while True:
                elapsed = time.monotonic() - started
                try:
                    stdout, stderr = running.communicate(
                        timeout=max(0.01, min(PROGRESS_INTERVAL_S, timeout_s - elapsed)))
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() - started >= timeout_s:
                        running.kill()
                        running.communicate()
                        raise
                    if progress is not None:
                        progress(time.monotonic() - started)
            proc = subprocess.CompletedProcess(argv, running.returncode, stdout, stderr)
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"{what}: componentize-py did not finish in {timeout_s:.0f} s",
                         src_dir=src_dir) from e
    except OSError as e:
        raise BuildError(f"{what}: cannot run componentize-py ({argv[0]}): {e}; {INSTALL_HINT}",
                         src_dir=src_dir) from e
    if proc.returncode != 0:
        tail = _stderr_tail(proc.stderr or proc.stdout, src_dir)
        summary = _summary(tail) or f"exit status {proc.returncode}"
        raise BuildError(
            f"{what}: componentize-py failed: {summary}\n{tail}",
            src_dir=src_dir,
            stderr=tail,
            returncode=proc.returncode,
        )


def _stderr_tail(stderr: str, src_dir: Path | None) -> str:
    """The last lines of componentize-py's output, before any Rust backtrace, with the
    guest's mount path of the actor directory shown as the real one."""
    text = stderr.split("\nStack backtrace:", 1)[0].rstrip()
    if src_dir is not None:
        text = _GUEST_PATH_RE.sub(lambda _: f'"{src_dir}/', text)
    return "\n".join(text.splitlines()[-STDERR_TAIL_LINES:])


def _summary(tail: str) -> str:
    """The line that names the error: anyhow's ``Caused by:`` cause, else the last line."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line == "Caused by:" and i + 1 < len(lines):
            return lines[i + 1]
    return lines[-1] if lines else ""
