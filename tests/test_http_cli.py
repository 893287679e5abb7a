"""The HTTP walk-through with the ``drupelet`` command on a real ``drupelet up``: a
componentize-js counter built outside the project, pushed, started and linked, answers
``curl`` on the address its link names, and its count survives a restart of the node."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from drupelet.node.lattice.natsserver import free_port

from test_cli import (LATTICE, READY_TIMEOUT_S, Node, drupelet, env, run, stop_node, wait_until_echo_answers,
                      write_config)

NODE = "cli-node"


START_TIMEOUT_S = 150.0
"""``actor start`` compiles the 13 MB component in a child process (~10 s idle, more on a
busy machine); the command itself waits up to 120 s."""


def start_node(directory: Path, cache: Path) -> Node:
    """``drupelet up`` as tests/test_cli.py starts it, with the session's compile cache."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = write_config(directory, port)
    config.write_text(config.read_text(encoding="utf-8") + f'\n[runtime]\ncache_dir = "{cache}"\n', encoding="utf-8")
    log = directory / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "drupelet.node.cli", "up", "--config", str(config)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=directory,
                                env=env())
    node = Node(proc, port, log)
    try:
        wait_until_echo_answers(node)
    except BaseException:
        stop_node(node)
        raise
    return node


def cli(node: Node, *args: str) -> str:
    result = run("--nats", node.url, "--lattice", LATTICE, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def start_actor(node: Node, *args: str) -> None:
    result = subprocess.run([*drupelet(), "--nats", node.url, "--lattice", LATTICE, "actor", "start", *args],
                            capture_output=True, text=True, timeout=START_TIMEOUT_S, env=env())
    assert result.returncode == 0, (args, result.stdout, result.stderr)


def visit(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for_page(node: Node, url: str) -> tuple[int, str]:
    """The first answer of ``url`` once the node listens there."""
    deadline = time.monotonic() + READY_TIMEOUT_S + START_TIMEOUT_S  # a restart may compile again
    while True:
        assert node.proc.poll() is None, node.stderr()
        try:
            return visit(url)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                pytest.fail(f"nothing answered {url}:\n{node.stderr()}")
            time.sleep(0.2)


@pytest.mark.slow
def test_a_componentize_js_counter_answers_curl_and_counts_on_after_a_restart(
        tmp_path: Path, js_http_counter_wasm: Path, shared_compile_cache: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    node = start_node(tmp_path, shared_compile_cache)
    try:
        cli(node, "push", str(js_http_counter_wasm), "--name", "js-counter")
        start_actor(node, "js-counter", "--name", "web", "--node", NODE)
        cli(node, "link", "put", "web", "wasi:keyvalue", "local/keyvalue", "--config", "buckets=default")
        cli(node, "link", "put", "web", "wasi:http/incoming-handler", "local/http", "--config", f"address={address}")
        assert wait_for_page(node, f"http://{address}/") == (200, "key=/, count=1\n")
        assert visit(f"http://{address}/") == (200, "key=/, count=2\n")
    finally:
        stop_node(node)
    node = start_node(tmp_path, shared_compile_cache)  # the same data directory: the actor, its links and its bucket come back
    try:
        assert wait_for_page(node, f"http://{address}/") == (200, "key=/, count=3\n")
        assert "web" in cli(node, "actor", "list")
    finally:
        stop_node(node)
