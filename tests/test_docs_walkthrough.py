"""docs/walkthrough.md, run as a newcomer would: build the counter, write its config,
run the node, call it; each command's output has the shape the page prints.

"Shape": the page's lines with what changes from run to run made neutral — the log's
time and level, paths, hashes, decimals (sizes, seconds) and ports — while counts
(actors, providers, links, the count the counter replies) must match exactly.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import CALL_TIMEOUT_S, drupelet, env
from test_cli_first_hour import Output
from test_docs import LOG_PREFIX, ROOT, Block, read_page
from waiting import wait_for

from drupelet.node.lattice.natsserver import free_port

PAGE = ROOT / "docs" / "walkthrough.md"
VENV_DRUPELET = ".venv/bin/drupelet"
BUILD_TIMEOUT_S = 180.0
UP_TIMEOUT_S = 90.0  # the first start compiles the component


def shape(line: str) -> str:
    line = LOG_PREFIX.sub("", line.strip())
    line = re.sub(r"(?<![\w.])…?/\S*/", "/…/", line)  # a path up to its last slash ("…/" too)
    line = re.sub(r"\b[0-9a-f]{12,}\b…?", "HASH", line)
    line = re.sub(r"\d+\.\d+", "9.9", line)
    return re.sub(r":\d{2,5}\b", ":PORT", line)


def commands_and_outputs(blocks: list[Block]) -> list[tuple[list[str], list[str]]]:
    """Each ``.venv/bin/drupelet …`` line of a ``sh`` block, with the ``text`` block that follows it."""
    pairs = []
    for i, block in enumerate(blocks):
        if block.info != "sh":
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) and blocks[i + 1].info == "text" else None
        for line in block.lines:
            if line.startswith(VENV_DRUPELET + " "):
                pairs.append((shlex.split(line.split("#")[0])[1:], following.lines if following else []))
    return pairs


@pytest.mark.slow
def test_the_walkthrough_runs_as_the_page_shows(tmp_path: Path) -> None:
    page = read_page(PAGE)
    steps = commands_and_outputs(page.blocks)
    assert [args[:2] for args, _ in steps] == [["actor", "build"], ["up", "--config"], ["call", "counter"]]
    (tmp_path / "actors").symlink_to(ROOT / "actors")  # the page runs from the repository root
    config = next(b for b in page.blocks if b.info == "toml")
    port = free_port()
    # the page's config as it is, on a free port instead of 4222 (other nodes may run here)
    (tmp_path / "counter.toml").write_text("\n".join(config.lines) + f"\n\n[nats]\nembedded_port = {port}\n")

    (build_args, build_shown), (up_args, up_shown), (call_args, call_shown) = steps
    built = subprocess.run([*drupelet(), *build_args], capture_output=True, text=True, cwd=tmp_path,
                           timeout=BUILD_TIMEOUT_S, env=env())
    assert built.returncode == 0, built.stderr
    assert [shape(l) for l in built.stdout.splitlines()] == [shape(l) for l in build_shown]

    proc = subprocess.Popen([sys.executable, "-m", "drupelet.node.cli", *up_args, "--name", "laptop",
                             "--data-dir", str(tmp_path / "data")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=tmp_path, env=env())
    out = Output(proc)
    try:
        wait_for(lambda: "drupelet.cli: node laptop ready" in out.text() or proc.poll() is not None,
                 UP_TIMEOUT_S, "the node's ready line")
        assert proc.poll() is None, out.text()
        seen = {shape(l) for l in out.lines}
        missing = [l for l in up_shown if shape(l) not in seen]
        assert not missing, f"docs/walkthrough.md shows {missing[0]!r}; the node logged:\n{out.text()}"
        url = f"nats://127.0.0.1:{port}"
        called = subprocess.run([*drupelet(), "--nats", url, *call_args], capture_output=True, text=True,
                                cwd=tmp_path, timeout=CALL_TIMEOUT_S, env=env())
        assert called.returncode == 0, called.stderr
        assert called.stdout.splitlines() == call_shown
        # "`--json` prints {"ok": true, "body": "count 2"}"
        as_json = subprocess.run([*drupelet(), "--nats", url, "--json", *call_args], capture_output=True, text=True,
                                 cwd=tmp_path, timeout=CALL_TIMEOUT_S, env=env())
        assert json.loads(as_json.stdout) == {"ok": True, "body": "count 2"}
        assert '`--json` prints `{"ok": true, "body": "count 2"}`' in PAGE.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=CALL_TIMEOUT_S)
        out.join()
    assert proc.returncode == 0, out.text()
