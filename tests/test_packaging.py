"""What gets shipped: the wheel installs into a fresh venv and works there; the layers stay apart.

The wheel tests build from a copy of the source tree (so the repository gets no ``build/``),
install the wheel with its dependencies from the package index into a new venv, and run
everything from outside the repository with a clean environment, so nothing can be
imported from the checkout by accident.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]

BUILD_TIMEOUT_S = 300
INSTALL_TIMEOUT_S = 600
RUN_TIMEOUT_S = 120

# Never part of a build: VCS data, environments, caches, outputs, tests.
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                     ".mypy_cache", ".pytest_cache", "out", "*.cwasm", "tests", "images")

WIT_FILES = [
    "wit/world.wit",
    "wit/deps/config/store.wit",
    "wit/deps/config/world.wit",
    "wit/deps/i2c/delay.wit",
    "wit/deps/i2c/i2c.wit",
    "wit/deps/i2c/world.wit",
    "wit/deps/keyvalue/atomic.wit",
    "wit/deps/keyvalue/batch.wit",
    "wit/deps/keyvalue/store.wit",
    "wit/deps/keyvalue/watch.wit",
    "wit/deps/keyvalue/world.wit",
    "wit/deps/logging/logging.wit",
    "wit/deps/logging/world.wit",
    "wit/deps/messaging/messaging.wit",
    "wit/deps/hardware/hardware.wit",
]
ACTOR_FILES = [*WIT_FILES, "wat/echo.wat", "wat/led.wat", "examples/counter/app.py", "examples/counter/actor.toml",
               "examples/thermometer/app.py", "examples/thermometer/actor.toml", "templates/python/app.py.in",
               "templates/python/actor.toml.in", "templates/python/README.md.in"]


def clean_env() -> dict[str, str]:
    """The environment minus anything that could put the checkout on the import path."""
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("DRUPELET_")}


@dataclass
class Installed:
    wheel: Path
    venv: Path
    workdir: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                                cwd=self.workdir, env=clean_env())
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(map(str, args))} failed with {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def py(self, code: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(self.python, "-c", code, check=check)


def _checked(cmd: list[str], timeout: int, cwd: Path) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=clean_env())
    if result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed with {result.returncode}:\n{result.stdout[-4000:]}{result.stderr[-4000:]}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    dist = base / "dist"
    _checked([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(src)], BUILD_TIMEOUT_S, base)
    wheels = sorted(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    _checked([sys.executable, "-m", "venv", str(venv)], RUN_TIMEOUT_S, base)
    _checked([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
              str(wheels[0])], INSTALL_TIMEOUT_S, base)
    workdir = base / "elsewhere"  # not the checkout: `import node` must not find ./node
    workdir.mkdir()
    yield Installed(wheels[0], venv, workdir)


# -- the wheel ---------------------------------------------------------------------------


@pytest.mark.slow
def test_wheel_holds_only_the_drupelet_namespace(installed: Installed) -> None:
    assert installed.wheel.name == f"drupelet-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(installed.wheel) as whl:
        names = whl.namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"drupelet", f"drupelet-{VERSION}.dist-info"}, tops
    for typed in ("drupelet/node/py.typed", "drupelet/providers/py.typed"):
        assert typed in names
    for rel in ACTOR_FILES:
        assert f"drupelet/actors/{rel}" in names
    for unit in ("nats-leaf.conf.in", "drupelet.service", "drupelet-nats.service", "drupelet-firstboot.service"):
        assert f"drupelet/systemd/{unit}" in names  # first boot renders the leaf config from the wheel


@pytest.mark.slow
def test_console_script_prints_the_version(installed: Installed) -> None:
    result = installed.run(installed.venv / "bin" / "drupelet", "--version")
    assert result.stdout == f"drupelet {VERSION}\n"


@pytest.mark.slow
def test_packages_import_from_the_venv(installed: Installed) -> None:
    result = installed.py(
        "import json, importlib, importlib.metadata as md\n"
        "mods = ['drupelet.node', 'drupelet.providers', 'drupelet.node.runtime', 'drupelet.node.host.host', 'drupelet.node.node',\n"
        "        'drupelet.node.cli.main', 'drupelet.actors']\n"
        "files = {m: importlib.import_module(m).__file__ for m in mods}\n"
        "import drupelet.node\n"
        "print(json.dumps({'files': files, 'version': drupelet.node.__version__,\n"
        "                  'dist': md.version('drupelet')}))\n")
    out = json.loads(result.stdout)
    site = installed.venv.resolve()
    for module, file in out["files"].items():
        assert Path(file).resolve().is_relative_to(site), f"{module} came from {file}, not the venv"
    assert out["version"] == out["dist"] == VERSION


@pytest.mark.slow
def test_package_data_is_installed(installed: Installed) -> None:
    result = installed.py(
        "import json\n"
        "from importlib.resources import files\n"
        "root = files('drupelet.actors')\n"
        f"rels = {ACTOR_FILES!r}\n"
        "print(json.dumps({rel: root.joinpath(*rel.split('/')).is_file() for rel in rels}))\n")
    found = json.loads(result.stdout)
    assert (found["wit/world.wit"], found["wat/echo.wat"], found["examples/counter/app.py"]) == (True, True, True)
    missing = [rel for rel, ok in found.items() if not ok]
    assert not missing, f"not installed: {missing}"


@pytest.mark.slow
def test_first_boot_finds_the_leaf_template_in_the_wheel(installed: Installed) -> None:
    result = installed.py("from drupelet.node.system.firstboot import leaf_template\nprint(leaf_template())")
    assert "leafnodes" in result.stdout and "@HUB_URL@" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["node", "providers", "actors"])
def test_no_top_level_package_named_after_a_folder(installed: Installed, name: str) -> None:
    result = installed.py(f"import {name}", check=False)
    assert result.returncode != 0
    assert f"No module named '{name}'" in result.stderr


@pytest.mark.slow
def test_provider_entry_points(installed: Installed) -> None:
    result = installed.py(
        "import json\n"
        "from drupelet.node.host.providers import discover_providers\n"
        "found = discover_providers()\n"
        "print(json.dumps({name: f'{cls.__module__}.{cls.__qualname__}' for name, cls in found.items()}))\n")
    found = json.loads(result.stdout)
    assert found["keyvalue"] == "drupelet.providers.keyvalue.KeyValueProvider"
    assert found["messaging"] == "drupelet.providers.messaging.MessagingProvider"
    assert found["gpio"] == "drupelet.providers.gpio.provider.GpioProvider"
    assert found["i2c"] == "drupelet.providers.i2c.provider.I2cProvider"
    assert found["display"] == "drupelet.providers.display.provider.DisplayProvider"
    assert found["clock"] == "drupelet.providers.clock.ClockProvider"


@pytest.mark.slow
def test_installed_node_finds_nats_server_and_compiles_in_a_child(installed: Installed, tmp_path: Path) -> None:
    result = installed.py(
        "import json\n"
        "from importlib.resources import as_file, files\n"
        "from pathlib import Path\n"
        "from drupelet.node.lattice.natsserver import nats_server_binary\n"
        "from drupelet.node.runtime import Runtime, RuntimeConfig, read_component\n"
        f"rt = Runtime(RuntimeConfig(cache_dir=Path({str(tmp_path / 'cache')!r}), compile_in_subprocess=True))\n"
        "try:\n"
        "    with as_file(files('drupelet.actors') / 'wat' / 'echo.wat') as wat:\n"
        "        loaded = rt.load(read_component(wat))\n"
        "finally:\n"
        "    rt.close()\n"
        "print(json.dumps({'nats_server': str(nats_server_binary()), 'handler': loaded.has_handler,\n"
        "                  'cached': loaded.from_cache}))\n")
    out = json.loads(result.stdout)
    assert Path(out["nats_server"]).parent == installed.venv / "bin"
    assert out["handler"] is True and out["cached"] is False
    assert list((tmp_path / "cache").glob("*.cwasm")), "the child process wrote the compiled artifact"


# -- layering ----------------------------------------------------------------------------


def _imports(path: Path) -> list[tuple[int, str, int]]:
    """(line, dotted name, relative level) of every import in ``path``.

    ``from a import b`` yields both ``a`` and ``a.b`` (b may be a submodule), and
    ``from .. import b`` yields ``b`` at level 2.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module:
                found.append((node.lineno, module, node.level))
            found += [(node.lineno, f"{module}.{alias.name}" if module else alias.name, node.level)
                      for alias in node.names if alias.name != "*"]
    return found


def _sources(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    return files


def test_only_the_runtime_imports_wasmtime() -> None:
    runtime = ROOT / "node" / "runtime"
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for folder in ("node", "providers")
        for path in _sources(folder)
        if not path.is_relative_to(runtime)
        for line, module, level in _imports(path)
        if level == 0 and (module == "wasmtime" or module.startswith("wasmtime."))
    ]
    assert not offenders, "wasmtime imported outside node/runtime/:\n" + "\n".join(offenders)


def test_the_runtime_does_import_wasmtime() -> None:
    # guards the scan above against silently matching nothing
    modules = {module for path in _sources("node/runtime") for _, module, level in _imports(path) if level == 0}
    assert "wasmtime" in modules


def test_providers_do_not_import_the_node() -> None:
    offenders = []
    for path in _sources("providers"):
        for line, module, level in _imports(path):
            absolute = level == 0 and (module in ("drupelet.node", "node") or
                                       module.startswith(("drupelet.node.", "node.")))
            # providers/ is drupelet.providers: `..node` (level 2) is drupelet.node
            relative = level >= 2 and (module == "node" or module.startswith("node."))
            if absolute or relative:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {'.' * level}{module}")
    assert not offenders, "providers must reach the node only through ProviderContext:\n" + "\n".join(offenders)


def test_import_scan_sees_relative_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from ..node import host\nfrom .. import node\nimport wasmtime.component\n"
                      "from drupelet import node as n\n")
    assert sorted(_imports(sample)) == [(1, "node", 2), (1, "node.host", 2), (2, "node", 2),
                                        (3, "wasmtime.component", 0), (4, "drupelet", 0), (4, "drupelet.node", 0)]
