"""A `drupelet up` node whose policy trusts only key A and refuses unsigned actors, driven by the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from drupelet.node.lattice.natsserver import free_port
from drupelet.node.security import claims as wc
from drupelet.node.security import keys
from waiting import wait_for
from test_cli import ECHO_WAT, LATTICE, Node, env, run, stop_node, wait_until_echo_answers

from drupelet.node.runtime import read_component

A = keys.generate("account")
B = keys.generate("account")


def sign_echo(path: Path, by: keys.KeyPair) -> Path:
    path.write_bytes(wc.sign(read_component(ECHO_WAT), by, name="echo", ver="2.0.0",
                             caps=("wasmcloud:messaging",))[0])
    return path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    directory = tmp_path_factory.mktemp("trust-node")
    port = free_port()
    config = directory / "node.toml"
    config.write_text(f"""\
[node]
name = "pi-1"
lattice = "{LATTICE}"
data_dir = "{directory / 'data'}"

[nats]
embedded_port = {port}

[trust]
keys = ["{A.public}"]
allow_unsigned = false

[[actors]]
name = "echo"
file = "{sign_echo(directory / 'echo.signed.wasm', A)}"

[[links]]
source = "echo"
interface = "wasmcloud:messaging"
target = "local/messaging"
""", encoding="utf-8")
    log = directory / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "drupelet.node.cli", "up", "--config", str(config)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=directory,
                                env=env())
    running = Node(proc, port, log)
    try:
        wait_until_echo_answers(running)
        yield running
    finally:
        stop_node(running)


def cli(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return run("--nats", node.url, "--lattice", LATTICE, *args)


def test_signed_by_a_runs_and_actor_list_shows_its_claims(node: Node) -> None:
    listed = json.loads(cli(node, "--json", "actor", "list").stdout)
    echo = next(a for a in listed if a["name"] == "echo")
    assert (echo["signed"], echo["issuer"], echo["version"]) == (True, A.public, "2.0.0")
    table = cli(node, "actor", "list").stdout
    assert "signed" in table and A.public[:8] in table


def test_unsigned_and_b_signed_are_refused_with_their_reasons(node: Node, tmp_path: Path) -> None:
    unsigned = tmp_path / "plain.wasm"
    unsigned.write_bytes(read_component(ECHO_WAT))
    for file, name, reason in ((unsigned, "plain", "unsigned"),
                               (sign_echo(tmp_path / "bee.wasm", B), "bee", "which this node does not trust")):
        assert cli(node, "push", str(file)).returncode == 0
        started = cli(node, "actor", "start", name, "--name", name, "--node", "pi-1")
        assert started.returncode == 1 and reason in started.stderr, started.stderr
        assert started.stderr.count("\n") == 1
        assert reason in node.stderr()
    names = [a["name"] for a in json.loads(cli(node, "--json", "actor", "list").stdout)]
    assert "plain" not in names and "bee" not in names


def test_link_outside_the_caps_is_refused(node: Node) -> None:
    put = cli(node, "link", "put", "echo", "wasi:keyvalue", "local/keyvalue")
    assert put.returncode == 1, put.stdout
    assert "which its claims do not allow (they allow: wasmcloud:messaging)" in put.stderr
    assert put.stderr.count("\n") == 1
    assert "wasi:keyvalue" not in cli(node, "link", "list").stdout


def test_revoke_stops_the_actor_and_revocations_lists_it(node: Node) -> None:
    listed = json.loads(cli(node, "--json", "actor", "list").stdout)
    subject = next(a for a in listed if a["name"] == "echo")["subject"]
    bad = cli(node, "revoke", "SAXXX")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    done = cli(node, "revoke", subject)
    assert (done.returncode, done.stdout) == (0, f"revoked {subject}\n"), done.stderr
    assert subject in cli(node, "revocations").stdout
    wait_for(lambda: all(a["name"] != "echo" for a in json.loads(cli(node, "--json", "actor", "list").stdout)),
             10, "the revoked actor to stop")
    assert "is revoked" in node.stderr()


def test_link_put_checks_the_caps_of_the_source_on_every_node_that_runs_it() -> None:
    from drupelet.node.cli.common import CliError
    from drupelet.node.cli.links import check_caps

    signed = {"name": "echo", "signed": True, "caps": ["wasi:keyvalue/store", "wasmcloud:keyvalue"]}
    check_caps("pi-2", signed, "wasi:keyvalue/store@0.2.0-draft")  # an interface its caps name
    check_caps("pi-2", signed, "wasi:keyvalue")  # a package: the node checks each interface it gives
    check_caps("pi-2", {"name": "echo", "signed": False, "caps": None}, "wasi:i2c")  # unsigned: nothing to hold
    with pytest.raises(CliError) as refused:
        check_caps("pi-2", signed, "wasi:i2c")
    assert refused.value.code == "caps"
    assert str(refused.value) == ("echo on node pi-2: a link would give it wasi:i2c, which its claims do not allow "
                                  "(they allow: wasi:keyvalue/store, wasmcloud:keyvalue)")
