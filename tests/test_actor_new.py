"""``drupelet actor new`` writes a skeleton that builds and runs; ``actor build`` says what it does
and keeps a component whose sources did not change, so its digest stays the same."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drupelet.node.lattice.natsserver import free_port
from test_cli import LATTICE, Node, env, run, stop_node

READY_TIMEOUT_S = 90.0
"""The node compiles an 18 MB componentize-py component before it answers (about 11 s on an idle
machine, several times that on a loaded one): waited on as a condition, so only a failure waits it out."""

FIRST_COMPILE_S = 90.0
"""The node's first start compiles the 18 MB component: ~11 s on an idle 2-core machine,
past 20 s with other work beside it."""


def build(src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "drupelet.node.cli", "actor", "build", str(src), "-o", str(out),
                           *extra], capture_output=True, text=True, timeout=600, env=env())
    assert proc.returncode == 0, proc.stderr
    return proc


def start_node_with(directory: Path, name: str, wasm: Path) -> Node:
    port = free_port()
    config = directory / "node.toml"
    config.write_text(f'[node]\nname = "new-node"\nlattice = "{LATTICE}"\ndata_dir = "{directory / "data"}"\n\n'
                      f"[nats]\nembedded_port = {port}\n\n"
                      f'[[actors]]\nname = "{name}"\nfile = "{wasm}"\n\n'
                      f'[[links]]\nsource = "{name}"\ninterface = "wasmcloud:messaging"\ntarget = "local/messaging"\n',
                      encoding="utf-8")
    log = directory / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "drupelet.node.cli", "up", "--config", str(config)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env())
    return Node(proc, port, log)


@pytest.mark.slow
def test_a_new_actor_builds_once_runs_and_answers(tmp_path: Path) -> None:
    made = run("actor", "new", "hello", "--dir", str(tmp_path / "hello"))
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in (tmp_path / "hello").iterdir()) == ["README.md", "actor.toml", "app.py"]
    assert "drupelet actor build" in (tmp_path / "hello" / "README.md").read_text()

    wasm = tmp_path / "hello.wasm"
    first = build(tmp_path / "hello", wasm, "--json")
    built = json.loads(first.stdout)
    assert built["up_to_date"] is False and built["size_bytes"] == wasm.stat().st_size
    # the same sources again: the component is kept, so its digest (the artifact) stays the same
    again = build(tmp_path / "hello", wasm)
    assert again.stdout.startswith(f"{wasm} is up to date with ") and "building" not in again.stderr
    assert json.loads(build(tmp_path / "hello", wasm, "--json").stdout)["sha256"] == built["sha256"]

    node = start_node_with(tmp_path, "hello", wasm)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S + FIRST_COMPILE_S
        answer = None
        while time.monotonic() < deadline:
            assert node.proc.poll() is None, node.stderr()
            answer = run("--nats", node.url, "--lattice", LATTICE, "call", "hello", "greet", "hi there",
                         "--timeout", "2")
            if answer.returncode == 0:
                break
            time.sleep(0.2)
        assert answer is not None and (answer.returncode, answer.stdout) == (0, "hello got hi there\n"), answer
        logs = run("--nats", node.url, "--lattice", LATTICE, "logs", "--actor", "hello")
        assert "new-node/hello INFO  hello: got 'hi there' on greet" in logs.stdout, logs.stdout
    finally:
        stop_node(node)

    # a changed source is built again, and says so while it runs
    (tmp_path / "hello" / "app.py").write_text((tmp_path / "hello" / "app.py").read_text() + "\n# changed\n")
    rebuilt = build(tmp_path / "hello", wasm)
    assert rebuilt.stderr.startswith(f"building {tmp_path / 'hello'} (module app, world actor) with componentize-py")
    assert rebuilt.stdout.startswith(f"built {wasm} (")


def test_actor_new_refuses_a_bad_name_and_a_directory_in_use(tmp_path: Path) -> None:
    bad = run("actor", "new", "Hello World", "--dir", str(tmp_path / "x"))
    assert bad.returncode == 1 and bad.stderr == ("drupelet: 'Hello World' is not a name for a new actor: use 1-63 "
                                                  "of a-z 0-9 _ -, starting with a letter\n")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "app.py").write_text("# mine\n")
    taken = run("actor", "new", "used", "--dir", str(tmp_path / "used"))
    assert taken.returncode == 1 and "already exists and is not an empty directory" in taken.stderr
    assert (tmp_path / "used" / "app.py").read_text() == "# mine\n"
    assert not (tmp_path / "x").exists()
