"""The remote-control commands against a real `drupelet up` process."""

from __future__ import annotations

import asyncio
import io
import json
import re
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from drupelet.node.lattice import subjects
from test_cli import LATTICE, READY_TIMEOUT_S, Node, drupelet, env, run, start_node, stop_node
from waiting import wait_for, wait_for_async

PROBE = "harness-probe"  # the node and actor name of the messages that show a follower is subscribed


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    running = start_node(tmp_path_factory.mktemp("remote-node"))
    try:
        yield running
    finally:
        stop_node(running)


def cli(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return run("--nats", node.url, "--lattice", LATTICE, *args)


class Follower:
    """A ``drupelet events|logs -f`` process whose output is read as it arrives; leaving
    the ``with`` block terminates it and keeps its whole output in ``out`` and ``err``."""

    def __init__(self, node: Node, *args: str) -> None:
        self.node = node
        self.proc = subprocess.Popen([*drupelet(), "--nats", node.url, "--lattice", LATTICE, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._out = bytearray()
        self.out = self.err = ""

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.stdout is None or self.proc.stdout.closed:
            return  # communicate() has run
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.communicate(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.communicate(10)

    def text(self) -> str:
        """Everything the follower has printed so far."""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._out.extend(chunk)
        return self._out.decode(errors="replace")

    def communicate(self, timeout_s: float) -> tuple[str, str]:
        """Wait for the process to end; its whole stdout and stderr."""
        before = self.text()
        os.set_blocking(self._fd, True)
        out, err = self.proc.communicate(timeout=timeout_s)
        self.out, self.err = before + out.decode(errors="replace"), err.decode(errors="replace")
        return self.out, self.err

    def wait_subscribed(self, subject: str, probe: dict[str, Any]) -> None:
        """Publish ``probe`` on ``subject`` until the follower prints it: then it is subscribed."""
        async def until_shown() -> None:
            nc = await nats.connect(self.node.url, connect_timeout=5, max_reconnect_attempts=0, allow_reconnect=False)

            async def shown() -> bool:
                if PROBE in self.text():
                    return True
                await nc.publish(subject, json.dumps(probe).encode())
                await nc.flush()
                return False

            try:
                await wait_for_async(shown, READY_TIMEOUT_S, f"{self.proc.args[-2:]} to subscribe", interval_s=0.1)
            finally:
                await nc.close()

        try:
            asyncio.run(until_shown())
        except BaseException:
            self.__exit__()
            raise


def follow_events(node: Node) -> Follower:
    follower = Follower(node, "events", "-f")
    follower.wait_subscribed(subjects.events(LATTICE, PROBE, "probe"),
                             {"type": "dev.drupelet.probe", "source": f"drupelet/{LATTICE}/{PROBE}", "data": {}})
    return follower


def follow_logs(node: Node) -> Follower:
    follower = Follower(node, "logs", "-f", "--json")
    follower.wait_subscribed(subjects.logs(LATTICE, PROBE, PROBE),
                             {"node": PROBE, "actor": PROBE, "level": "info", "message": "probe"})
    return follower


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


def stopped_event(line: str) -> bool:
    return "dev.drupelet" not in line and "actor_stopped" in line and '"actor": "echo"' in line


def test_logs_without_follow_prints_the_recent_lines_with_their_time(node: Node) -> None:
    for body in ("recent one", "recent two"):
        assert cli(node, "call", "echo", "s", body).returncode == 0
    shown = cli(node, "logs", "--actor", "echo")
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if "recent " in line]
    assert [line.split()[-1] for line in lines[-2:]] == ["one", "two"], shown.stdout
    assert re.match(r"^\d\d:\d\d:\d\d cli-node/echo INFO  echo: recent two$", lines[-1]), lines[-1]
    newest = json.loads(cli(node, "logs", "--actor", "echo", "-n", "1", "--json").stdout)
    assert [(d["node"], d["actor"], d["message"]) for d in newest] == [("cli-node", "echo", "recent two")]
    assert abs(newest[0]["time"] - time.time()) < 60
    none = cli(node, "logs", "--actor", "nobody")
    assert (none.returncode, none.stdout) == (0, "no log lines kept on any node for actor nobody\n")
    bad = cli(node, "logs", "-n", "0")
    assert bad.returncode == 2 and "0 is not from 1 to 1000" in bad.stderr, bad.stderr


def test_gpio_write_read_and_pins_through_the_gpio_provider(node: Node) -> None:
    wrote = cli(node, "gpio", "write", "cli-node", "22", "high")
    assert (wrote.returncode, wrote.stdout) == (0, "node cli-node: pin 22 is driven high\n"), wrote.stderr
    read = cli(node, "gpio", "read", "cli-node", "22")
    assert read.stdout == "node cli-node: pin 22 is high (output, held by the provider)\n", read.stderr
    assert json.loads(cli(node, "gpio", "read", "cli-node", "22", "--json").stdout)["level"] == "high"
    assert cli(node, "gpio", "write", "cli-node", "22", "low").returncode == 0
    assert cli(node, "gpio", "read", "cli-node", "22").stdout.split()[5] == "low"
    # a pin an actor owns (its link's events make it an input) is read, and refused for writes
    put = cli(node, "link", "put", "echo", "drupelet:hardware/gpio", "local/gpio", "--config", "pins=23",
              "--config", "events=23")
    assert put.returncode == 0, put.stderr
    try:
        wait_for(lambda: "(input, echo)" in cli(node, "gpio", "read", "cli-node", "23").stdout, 10.0,
                 "pin 23 to be the echo actor's input")
        refused = cli(node, "gpio", "write", "cli-node", "23", "low")
        assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert "GPIO pin 23 is in use by actor 'echo' (as input)" in refused.stderr
        pins = cli(node, "gpio", "pins", "cli-node")
        assert pins.returncode == 0, pins.stderr
        rows = pins.stdout.splitlines()
        assert "held low GPIO22 (15) (16) GPIO23 input echo high" in [r.strip() for r in rows], pins.stdout
        assert rows[2].split() == ["3V3", "(", "1)", "(", "2)", "5V"] and "(39) (40) GPIO21" in rows[-1]
        assert "·GPIO0 (27) (28) ·GPIO1" in pins.stdout  # outside providers.gpio.pins
        inventory = cli(node, "inventory", "cli-node").stdout
        assert re.search(r"^23\s+input\s+echo\s+high$", inventory, re.M), inventory
        assert re.search(r"^22\s+released\s+-\s+low$", inventory, re.M), inventory
    finally:
        assert cli(node, "link", "del", "echo", "drupelet:hardware/gpio").returncode == 0
    outside = cli(node, "gpio", "read", "cli-node", "40")
    assert outside.returncode == 1 and "providers.gpio.pins allows 2-27" in outside.stderr, outside.stderr


def test_the_logbook_keeps_a_bounded_number_of_lines_and_actors() -> None:
    from drupelet.node.host.logbook import Logbook

    book = Logbook("n", per_actor=3, actors=2)
    for i in range(5):
        book.add("a", "info", "", f"a{i}")
    book.add("b", "info", "", "b0")
    assert [r["message"] for r in book.recent("a")] == ["a2", "a3", "a4"]
    book.add("c", "info", "", "c0")  # a logged longest ago: forgotten
    assert book.recent("a") == [] and [r["message"] for r in book.recent()] == ["b0", "c0"]
    assert [r["message"] for r in book.recent(lines=1)] == ["c0"]


def test_actor_scale_list_and_stop_with_events_and_logs(node: Node) -> None:
    with follow_events(node) as events, follow_logs(node) as logs:
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
        wait_for(lambda: any(stopped_event(line) for line in events.text().splitlines()), 10.0,
                 "the actor_stopped event to be printed")
        wait_for(lambda: "hello logs" in logs.text(), 10.0, "the actor's log line to be printed")
    assert any(stopped_event(line) for line in events.out.splitlines()), events.out
    lines = [doc for doc in map(json.loads, logs.out.splitlines()) if doc.get("node") != PROBE]
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


def test_artifacts_list_and_rm(node: Node) -> None:
    noop = Path(__file__).resolve().parent.parent / "actors" / "wat" / "noop.wat"
    pushed = json.loads(cli(node, "push", str(noop), "--name", "noop-art", "--json").stdout)
    digest = pushed["digest"]
    assert cli(node, "actor", "start", "noop-art", "--name", "noop1", "--node", "cli-node").returncode == 0
    try:
        listed = cli(node, "artifacts", "list")
        assert listed.returncode == 0, listed.stderr
        row = next(line for line in listed.stdout.splitlines() if line.startswith(f"sha256:{digest[:12]}"))
        assert row.split()[1:3] == ["noop-art", "0.0"] and row.rstrip().endswith("cli-node/noop1"), listed.stdout
        docs = json.loads(cli(node, "artifacts", "list", "--json").stdout)
        assert {"digest": digest, "name": "noop-art", "running": ["cli-node/noop1"]}.items() <= \
            next(d for d in docs if d["digest"] == digest).items()
        removed = cli(node, "artifacts", "rm", "noop-art")
        assert removed.returncode == 0, removed.stderr
        assert removed.stdout.startswith(f"removed sha256:{digest}; still running as cli-node/noop1 "), removed.stdout
        assert digest not in cli(node, "artifacts", "list").stdout
        again = cli(node, "artifacts", "rm", f"sha256:{digest}")
        assert again.returncode == 1 and len(again.stderr.splitlines()) == 1 and "Traceback" not in again.stderr
        unknown = cli(node, "artifacts", "rm", "never-pushed")
        assert unknown.returncode == 1 and "no artifact was pushed with the name 'never-pushed'" in unknown.stderr
    finally:
        assert cli(node, "actor", "stop", "noop1").returncode == 0


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
    with follow_events(node) as follower:
        stop_node(node)  # the node and its embedded nats-server go away
        _, err = follower.communicate(15)
    assert follower.proc.returncode == 1
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


def test_display_snapshot_scale_draws_each_pixel_as_a_square(node: Node, tmp_path: Path) -> None:
    from PIL import Image

    from drupelet.node.cli.hardware import _scaled

    out = tmp_path / "big.png"
    done = cli(node, "display", "snapshot", "cli-node", "-o", str(out), "--scale", "4")
    assert done.returncode == 0, done.stderr
    with Image.open(out) as image:
        assert (image.format, image.size, image.mode) == ("PNG", (512, 256), "1")
    frame = Image.new("1", (128, 64))
    frame.putpixel((3, 2), 1)
    with io.BytesIO() as raw:
        frame.save(raw, format="PNG")
        with Image.open(io.BytesIO(_scaled(raw.getvalue(), 4))) as big:
            assert big.getbbox() == (12, 8, 16, 12)  # pixel (3, 2) became the 4x4 square at (12, 8)
    bad = cli(node, "display", "snapshot", "cli-node", "-o", str(out), "--scale", "0")
    assert bad.returncode == 2 and "0 is not from 1 to 16" in bad.stderr, bad.stderr


def test_gpio_simulate_names_what_is_wrong(node: Node) -> None:
    unused = cli(node, "gpio", "simulate", "cli-node", "17", "low")
    assert unused.returncode == 1
    assert unused.stderr.startswith("drupelet: gpio simulate pin 17 on node cli-node: ")
    assert len(unused.stderr.splitlines()) == 1
    bad = cli(node, "gpio", "simulate", "cli-node", "17", "pressed")
    assert bad.returncode == 2 and "invalid choice: 'pressed'" in bad.stderr


def test_a_laptop_node_runs_its_unsigned_actor_with_a_warning_naming_it(node: Node) -> None:
    """`drupelet up` without [trust]: unsigned actors run (allow_unsigned defaults to true), each named."""
    assert "WARNING drupelet.node.security.policy: actor echo is unsigned" in node.stderr()
