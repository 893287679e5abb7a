"""The remote-control commands against a real `drupelet up` process."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_cli import LATTICE, Node, drupelet, env, run, start_node, stop_node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    running = start_node(tmp_path_factory.mktemp("remote-node"))
    try:
        yield running
    finally:
        stop_node(running)


def cli(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return run("--nats", node.url, "--lattice", LATTICE, *args)


def test_nodes_table_and_json(node: Node) -> None:
    table = cli(node, "nodes")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:3] == ["NODE", "LABELS", "ACTORS"]
    assert row.split()[0] == "cli-node"
    listed = json.loads(cli(node, "nodes", "--json").stdout)
    assert [(n["id"], n["name"], n["labels"]) for n in listed] == [("cli-node", "cli-node", {})]


def test_inventory(node: Node) -> None:
    text = cli(node, "inventory", "cli-node")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("node cli-node (lattice clitest")
    assert any(line.split()[:2] == ["echo", "1"] for line in text.stdout.splitlines())
    # off a Pi the node's hardware is simulated, and says so
    assert "GPIO: mock (simulated)" in text.stdout and "I2C: sim (simulated)" in text.stdout
    assert any(line.split()[:4] == ["i2c1", "sim", "0x3c", "0x48"] for line in text.stdout.splitlines())
    assert any(line.split()[:4] == ["oled", "dummy", "(simulated)", "128x64"] for line in text.stdout.splitlines())
    inv = json.loads(cli(node, "--json", "inventory", "cli-node").stdout)
    assert inv["links"] == [{"source": "echo", "interface": "wasmcloud:messaging/consumer",
                             "target": "local/messaging", "config": {}}]
    missing = cli(node, "inventory", "pi-404")
    assert (missing.returncode, missing.stderr) == (1, "drupelet: no node named 'pi-404' in lattice 'clitest'\n")


def test_actor_scale_list_and_stop_with_events_and_logs(node: Node) -> None:
    events = subprocess.Popen([*drupelet(), "--nats", node.url, "--lattice", LATTICE, "events", "-f"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    logs = subprocess.Popen([*drupelet(), "--nats", node.url, "--lattice", LATTICE, "logs", "-f", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        time.sleep(1.0)  # both streams are subscribed
        assert cli(node, "call", "echo", "s", "hello logs").returncode == 0
        scaled = cli(node, "actor", "scale", "echo", "2")
        assert (scaled.returncode, scaled.stdout.split(":")[0]) == (0, "scale echo on cli-node"), scaled.stderr
        listed = json.loads(cli(node, "actor", "list", "--json").stdout)
        assert [(a["node"], a["name"], a["instances"]) for a in listed] == [("cli-node", "echo", 2)]
        stopped = cli(node, "actor", "stop", "echo")
        assert stopped.returncode == 0, stopped.stderr
        assert json.loads(cli(node, "actor", "list", "--json").stdout) == []
        again = cli(node, "actor", "stop", "echo")
        assert (again.returncode, again.stderr) == (1, "drupelet: no node runs an actor named 'echo'\n")
        time.sleep(0.5)
    finally:
        events.terminate()
        logs.terminate()
        ev_out, _ = events.communicate(timeout=10)
        log_out, _ = logs.communicate(timeout=10)
    assert any("dev.drupelet" not in line and "actor_stopped" in line and '"actor": "echo"' in line
               for line in ev_out.splitlines()), ev_out
    lines = [json.loads(line) for line in log_out.splitlines()]
    assert {"node": "cli-node", "actor": "echo", "level": "info", "context": "echo",
            "message": "hello logs"}.items() <= lines[0].items()


def test_actor_start_without_a_node_or_label_is_refused(node: Node) -> None:
    result = cli(node, "actor", "start", "a" * 64, "--name", "x")
    assert result.returncode == 2 and "one of the arguments --node --label is required" in result.stderr


def test_push_then_start_by_digest_and_by_name(node: Node, tmp_path: Path) -> None:
    from test_cli import ECHO_WAT

    pushed = cli(node, "push", str(ECHO_WAT), "--json")
    assert pushed.returncode == 0, pushed.stderr
    info = json.loads(pushed.stdout)
    assert len(info["digest"]) == 64 and info["name"] == "echo"
    again = cli(node, "push", str(ECHO_WAT))
    assert again.stdout.split()[:2] == [f"sha256:{info['digest']}", "echo"]
    by_digest = cli(node, "actor", "start", f"sha256:{info['digest']}", "--name", "echo2", "--node", "cli-node")
    assert by_digest.returncode == 0, by_digest.stderr
    assert by_digest.stdout.startswith("start echo2 on cli-node: ok (1 instance(s), ")
    by_name = cli(node, "actor", "start", "echo", "--name", "echo3", "--instances", "2", "--label", "x=y")
    assert by_name.returncode == 1 and "no node in lattice 'clitest' matches labels x=y" in by_name.stderr
    by_name = cli(node, "--json", "actor", "start", "echo", "--name", "echo3", "--instances", "2",
                  "--node", "cli-node")
    assert json.loads(by_name.stdout)[0]["result"]["instances"] == 2
    inv = json.loads(cli(node, "--json", "inventory", "cli-node").stdout)
    assert {a["name"]: a["digest"] for a in inv["actors"]}.items() >= {"echo2": info["digest"],
                                                                       "echo3": info["digest"]}.items()
    unknown = cli(node, "actor", "start", "nothing-pushed", "--name", "x", "--node", "cli-node")
    assert (unknown.returncode, unknown.stderr) == (
        1, "drupelet: no artifact was pushed with the name 'nothing-pushed'\n")
    for name in ("echo2", "echo3"):
        assert cli(node, "actor", "stop", name).returncode == 0


def test_link_put_list_del(node: Node) -> None:
    put = cli(node, "link", "put", "counter", "wasi:keyvalue", "local/keyvalue", "--config", "buckets=hits")
    assert put.returncode == 0, put.stderr
    assert put.stdout.splitlines()[0] == "put 3 link(s)"
    listed = json.loads(cli(node, "--json", "link", "list").stdout)
    assert sorted(l["interface"] for l in listed if l["source"] == "counter") == [
        "wasi:keyvalue/atomics", "wasi:keyvalue/batch", "wasi:keyvalue/store"]
    assert all(l["config"] == {"buckets": "hits"} for l in listed if l["source"] == "counter")
    bad = cli(node, "link", "put", "counter", "wasi:logging/logging", "local/keyvalue")
    assert (bad.returncode, bad.stderr) == (
        1, "drupelet: wasi:logging/logging is served by the node itself and takes no link\n")
    gone = cli(node, "link", "del", "counter", "wasi:keyvalue/batch")
    assert gone.returncode == 0 and gone.stdout.splitlines()[0] == "deleted 1 link(s)"
    assert len([l for l in json.loads(cli(node, "--json", "link", "list").stdout) if l["source"] == "counter"]) == 2
    assert cli(node, "link", "del", "counter", "wasi:keyvalue").returncode == 0
    again = cli(node, "link", "del", "counter", "wasi:keyvalue")
    assert (again.returncode, again.stderr) == (1, "drupelet: no link for actor 'counter' and wasi:keyvalue\n")


def test_events_follow_ends_with_one_line_when_the_server_goes(tmp_path: Path) -> None:
    from test_cli import start_node

    node = start_node(tmp_path / "short-lived")
    follower = subprocess.Popen([*drupelet(), "--nats", node.url, "--lattice", LATTICE, "events", "-f"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        time.sleep(1.0)
        stop_node(node)  # the node and its embedded nats-server go away
        _, err = follower.communicate(timeout=15)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 1
    assert err.splitlines()[-1] == "drupelet: the connection to NATS was lost"


def test_display_snapshot_writes_the_nodes_frame_as_png(node: Node, tmp_path: Path) -> None:
    out = tmp_path / "oled.png"
    done = cli(node, "display", "snapshot", "cli-node", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out} (")
    from PIL import Image

    with Image.open(out) as image:  # off a Pi the node's display is luma's dummy: blank until drawn on
        assert (image.format, image.size, image.mode, image.getbbox()) == ("PNG", (128, 64), "1", None)
    missing = cli(node, "display", "snapshot", "pi-404", "-o", str(tmp_path / "x.png"))
    assert missing.returncode == 1 and not (tmp_path / "x.png").exists()


def test_gpio_simulate_names_what_is_wrong(node: Node) -> None:
    unused = cli(node, "gpio", "simulate", "cli-node", "17", "low")
    assert unused.returncode == 1
    assert unused.stderr.startswith("drupelet: gpio simulate pin 17 on node cli-node: ")
    assert len(unused.stderr.splitlines()) == 1
    bad = cli(node, "gpio", "simulate", "cli-node", "17", "pressed")
    assert bad.returncode == 2 and "invalid choice: 'pressed'" in bad.stderr
