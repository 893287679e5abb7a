"""The HTTP walk-through with the ``drupelet`` command on a real ``drupelet up``: a
componentize-js counter built outside the project, pushed, started and linked, answers
``curl`` on the address its link names, and its count survives a restart of the node."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from drupelet.node.lattice.natsserver import free_port

from test_cli import LATTICE, READY_TIMEOUT_S, Node, run, start_node, stop_node

NODE = "cli-node"


def cli(node: Node, *args: str) -> str:
    result = run("--nats", node.url, "--lattice", LATTICE, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def visit(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for_page(node: Node, url: str) -> tuple[int, str]:
    """The first answer of ``url`` once the node listens there."""
    deadline = time.monotonic() + READY_TIMEOUT_S + 60  # a first start compiles the component
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
        tmp_path: Path, js_http_counter_wasm: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    node = start_node(tmp_path)
    try:
        cli(node, "push", str(js_http_counter_wasm), "--name", "js-counter")
        cli(node, "actor", "start", "js-counter", "--name", "web", "--node", NODE)
        cli(node, "link", "put", "web", "wasi:keyvalue", "local/keyvalue", "--config", "buckets=default")
        cli(node, "link", "put", "web", "wasi:http/incoming-handler", "local/http", "--config", f"address={address}")
        assert wait_for_page(node, f"http://{address}/") == (200, "key=/, count=1\n")
        assert visit(f"http://{address}/") == (200, "key=/, count=2\n")
    finally:
        stop_node(node)
    node = start_node(tmp_path)  # the same data directory: the actor, its links and its bucket come back
    try:
        assert wait_for_page(node, f"http://{address}/") == (200, "key=/, count=3\n")
        assert "web" in cli(node, "actor", "list")
    finally:
        stop_node(node)
