"""The SD image's scripts, checked without building anything.

``images/build.sh`` (tens of minutes, root, network) and ``images/boot-test.sh`` (a
QEMU boot) have their own commands; here: the scripts parse, ``--help`` works for any
user on a machine without the tools, bad options are refused with a message before
anything is installed or built, and the image's own unit passes ``systemd-analyze
verify`` beside the node's units.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
SCRIPTS = [IMAGES / "build.sh", IMAGES / "boot-test.sh", IMAGES / "overlay/usr/local/sbin/drupelet-image-setup"]
SETUP_UNIT = IMAGES / "overlay/etc/systemd/system/drupelet-image-setup.service"
NOBODY = 65534
TIMEOUT_S = 10


@pytest.fixture
def bare_copy() -> Iterator[Path]:
    """The two scripts alone in a world-readable directory (no repository around them),
    with a PATH holding only bash and the few coreutils ``--help`` may touch."""
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        top.chmod(0o755)
        (top / "images").mkdir(mode=0o755)
        for name in ("build.sh", "boot-test.sh"):
            shutil.copy2(IMAGES / name, top / "images" / name)
        tools = top / "bin"
        tools.mkdir(mode=0o755)
        for name in ("bash", "cat", "dirname", "id"):
            (tools / name).symlink_to(tool(name))
        yield top


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} not found on PATH"
    return found


def run(script: Path, *args: str, path: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as an unprivileged user (nobody, when the tests run as root)."""
    cmd = [tool("bash"), str(script), *args]
    if os.geteuid() == 0:
        cmd = [tool("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
    env = {"PATH": path, "LC_ALL": "C"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert os.access(script, os.X_OK), f"{script} is not executable"


@pytest.mark.parametrize("name, options", [
    ("build.sh", ["--out DIR", "--size SIZE", "--hostname NAME", "--no-cache"]),
    ("boot-test.sh", ["--image FILE", "--timeout MIN", "--node NAME"]),
])
def test_help_needs_no_root_and_no_tools(bare_copy: Path, name: str, options: list[str]) -> None:
    path = str(bare_copy / "bin")
    result = run(bare_copy / "images" / name, "--help", path=path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: images/{name}")
    for option in options:
        assert option in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("name, args, message", [
    ("build.sh", ["--frobnicate"], "unknown option: --frobnicate"),
    ("build.sh", ["--hostname", "Bad_Name"], "--hostname 'Bad_Name' is not a valid host name"),
    ("build.sh", ["--size", "big"], "--size 'big' is not a size such as 2G"),
    ("build.sh", [], "run as root"),
    ("boot-test.sh", ["--timeout", "soon"], "--timeout 'soon' is not a number of minutes"),
    ("boot-test.sh", ["--node", "-x"], "--node '-x' is not a node name"),
    ("boot-test.sh", ["--image"], "--image needs a file"),
])
def test_bad_input_is_refused_before_any_work(bare_copy: Path, name: str, args: list[str], message: str) -> None:
    result = run(bare_copy / "images" / name, *args, path=f"{bare_copy / 'bin'}:/usr/bin:/bin")
    assert result.returncode != 0
    assert message in result.stderr


def test_boot_test_without_root_names_the_missing_tools(bare_copy: Path) -> None:
    """On a machine without QEMU, a user who is not root is told what to install."""
    result = run(bare_copy / "images" / "boot-test.sh", "--no-build", path=str(bare_copy / "bin"))
    assert result.returncode == 1
    assert "qemu-system-arm" in result.stderr and "run as root to install them" in result.stderr


def test_image_setup_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """drupelet-image-setup.service, in a root with the host's units and the node's."""
    host_units = Path("/usr/lib/systemd/system")
    assert host_units.is_dir(), "install systemd (apt-get install systemd)"
    root = tmp_path / "root"
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for unit in [SETUP_UNIT, *sorted((ROOT / "systemd").glob("*.service"))]:
        shutil.copy2(unit, etc / unit.name)
    for program in ["usr/local/sbin/drupelet-image-setup", "opt/drupelet/venv/bin/drupelet",
                    "opt/drupelet/venv/bin/nats-server"]:
        stand_in = root / program
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("#!/bin/sh\nexit 0\n")
        stand_in.chmod(0o755)
    result = subprocess.run(["systemd-analyze", f"--root={root}", "verify", "--man=no", "--generators=no",
                             SETUP_UNIT.name], capture_output=True, text=True, timeout=30)
    # it exits 0 even for an unknown key: any output is a problem
    assert (result.stdout + result.stderr).strip() == "" and result.returncode == 0
