"""Tests for drupelet.node.tools.build: Python actors into components with componentize-py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import wasmtime
from wasmtime.component import Component

from drupelet.node.tools import build
from drupelet.node.tools.build import BuildError, build_python_actor, generate_bindings, load_actor_spec
from drupelet.node.tools.build import example_dir
from fixtures_actors import COMPONENT_HEADER

ACTOR_WORLD_IMPORTS = {
    "wasi:logging/logging@0.1.0-draft",
    "wasi:config/store@0.2.0-rc.1",
    "wasi:keyvalue/store@0.2.0-draft",
    "wasi:keyvalue/atomics@0.2.0-draft",
    "wasi:keyvalue/batch@0.2.0-draft",
    "wasmcloud:messaging/consumer@0.2.0",
    # Not in the world itself: the handler's and consumer's `use types.{broker-message}`.
    "wasmcloud:messaging/types@0.2.0",
}
# componentize-py imports the whole WASI CLI world at its own 0.2.x version.
WASI_CLI_PACKAGES = ("wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/",
                     "wasi:filesystem/", "wasi:sockets/")


def _needs_componentize_py() -> None:
    try:
        build.find_componentize_py()
    except BuildError as e:
        pytest.skip(str(e))


def _actor(tmp_path: Path, source: str | None, toml: str | None = None) -> Path:
    src = tmp_path / "actor"
    src.mkdir()
    if source is not None:
        (src / "app.py").write_text(source)
    if toml is not None:
        (src / "actor.toml").write_text(toml)
    return src


# -- slow: real builds ------------------------------------------------------------


@pytest.mark.slow
def test_build_counter(tmp_path: Path) -> None:
    _needs_componentize_py()
    out = tmp_path / "out" / "counter.wasm"

    result = build_python_actor(example_dir("counter"), out)

    data = out.read_bytes()
    assert result.output == out.resolve()
    assert result.size_bytes == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.seconds > 0
    assert data.startswith(COMPONENT_HEADER)
    assert [p.name for p in out.parent.iterdir()] == ["counter.wasm"]  # no temp file left

    engine = wasmtime.Engine()
    component_type = Component(engine, data).type
    imports = set(component_type.imports(engine))
    exports = set(component_type.exports(engine))
    assert "wasi:keyvalue/atomics@0.2.0-draft" in imports
    assert "wasmcloud:messaging/consumer@0.2.0" in imports
    assert {i for i in imports if not i.startswith(WASI_CLI_PACKAGES)} == ACTOR_WORLD_IMPORTS
    assert "wasmcloud:messaging/handler@0.2.0" in exports


@pytest.mark.slow
def test_syntax_error_is_reported_with_file_and_line(tmp_path: Path) -> None:
    _needs_componentize_py()
    src = _actor(tmp_path, "def handle(:\n    pass\n")
    out = tmp_path / "broken.wasm"

    with pytest.raises(BuildError) as info:
        build_python_actor(src, out)

    err = info.value
    assert "SyntaxError" in str(err)
    assert f'"{src}/app.py", line 1' in err.stderr  # the guest's /0/ mapped back to src
    assert "Stack backtrace" not in err.stderr
    assert err.returncode not in (None, 0)
    assert err.src_dir == src
    assert not out.exists()
    assert list(tmp_path.glob(".broken.wasm.*")) == []


# -- fast: checks before componentize-py runs ----------------------------------------


def test_missing_app_module(tmp_path: Path) -> None:
    src = _actor(tmp_path, None)
    with pytest.raises(BuildError, match=r"no app\.py in .*actor"):
        build_python_actor(src, tmp_path / "x.wasm")
    assert not (tmp_path / "x.wasm").exists()


def test_missing_module_named_in_actor_toml(tmp_path: Path) -> None:
    src = _actor(tmp_path, "", toml='module = "main"\n')
    with pytest.raises(BuildError, match=r"no main\.py in"):
        build_python_actor(src, tmp_path / "x.wasm")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist"):
        build_python_actor(tmp_path / "nope", tmp_path / "x.wasm")


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('modul = "app"\n', "unknown key.*modul"),
        ('module = "my-app"\n', "module: not a Python module name"),
        ('module = "wit_world"\n', "clashes"),
        ("world = 3\n", "world: not a WIT world name"),
        ("module = \n", "cannot read"),
    ],
)
def test_bad_actor_toml(tmp_path: Path, toml: str, problem: str) -> None:
    src = _actor(tmp_path, "", toml=toml)
    with pytest.raises(BuildError, match=problem):
        load_actor_spec(src)


def test_actor_toml_defaults_and_values(tmp_path: Path) -> None:
    assert load_actor_spec(tmp_path) == build.BuildSpec(module="app", world="actor")
    (tmp_path / "actor.toml").write_text('module = "pkg.main"\nworld = "actor"\n')
    assert load_actor_spec(tmp_path) == build.BuildSpec(module="pkg.main", world="actor")


def test_componentize_py_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build.shutil, "which", lambda *a, **k: None)
    monkeypatch.setattr(build.importlib.util, "find_spec", lambda name: None)
    src = _actor(tmp_path, "")
    with pytest.raises(BuildError, match=r"pip install 'drupelet\[build\]'"):
        build_python_actor(src, tmp_path / "x.wasm")


def test_packaged_wit_dir_has_the_world() -> None:
    wit = build.packaged_wit_dir()
    assert (wit / "world.wit").is_file()
    assert (wit / "deps" / "keyvalue" / "atomic.wit").is_file()


def test_generate_bindings(tmp_path: Path) -> None:
    _needs_componentize_py()
    out = generate_bindings(tmp_path / "bindings")
    handler = (out / "wit_world" / "exports" / "__init__.py").read_text()
    assert "class Handler(Protocol):" in handler
    assert "def handle_message(self, msg: types.BrokerMessage) -> None:" in handler
    assert (out / "componentize_py_types.py").is_file()


def test_generate_bindings_unknown_world(tmp_path: Path) -> None:
    _needs_componentize_py()
    with pytest.raises(BuildError, match="componentize-py failed") as info:
        generate_bindings(tmp_path / "bindings", world="no-such-world")
    assert "no-such-world" in str(info.value)


def test_stderr_tail_drops_rust_backtrace(tmp_path: Path) -> None:
    stderr = "\n".join(
        ["Traceback (most recent call last):", '  File "/0/app.py", line 3', "boom",
         "", "Caused by:", "    ValueError: boom", "", "Stack backtrace:",
         *[f"  {i}: frame" for i in range(100)]]
    )
    tail = build._stderr_tail(stderr, tmp_path)
    assert "Stack backtrace" not in tail
    assert f'"{tmp_path}/app.py", line 3' in tail
    assert build._summary(tail) == "ValueError: boom"
    long = "\n".join(f"line {i}" for i in range(100))
    assert build._stderr_tail(long, None).splitlines() == [f"line {i}" for i in range(70, 100)]


def test_which_is_tried_next_to_the_interpreter_first(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str | None] = []

    def which(cmd: str, path: str | None = None) -> str | None:
        calls.append(path)
        return "/venv/bin/componentize-py" if path is not None else None

    monkeypatch.setattr(build.shutil, "which", which)
    assert build.find_componentize_py() == ["/venv/bin/componentize-py"]
    assert calls and calls[0] is not None


def test_counter_example_is_packaged() -> None:
    src = example_dir("counter")
    assert (src / "app.py").is_file()
    assert load_actor_spec(src) == build.BuildSpec(module="app", world="actor")


def test_current_build_is_the_recorded_component_of_unchanged_sources(tmp_path: Path) -> None:
    src = _actor(tmp_path, "print('hi')\n")
    out = tmp_path / "a.wasm"
    out.write_bytes(COMPONENT_HEADER + b"built")
    record = tmp_path / "a.wasm.sources"
    record.write_text(json.dumps({"source_key": build.source_key(src),
                                  "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}))
    found = build.current_build(src, out)
    assert found is not None and found.up_to_date and found.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    (src / "app.py").write_text("print('changed')\n")  # changed sources: build again
    assert build.current_build(src, out) is None
    (src / "app.py").write_text("print('hi')\n")
    assert build.current_build(src, out) is not None
    out.write_bytes(COMPONENT_HEADER + b"edited")  # a component changed since it was built: build again
    assert build.current_build(src, out) is None
    record.unlink()
    assert build.current_build(src, out) is None
