"""A newcomer's first hour: one line on every expected failure, ``--json`` errors, a
``link put`` that checks what it links, ``up --demo`` beside a server already running, and
``up --demo``'s own authenticated lattice.

Real ``drupelet`` processes against real nats-servers on free loopback ports.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli import CALL_TIMEOUT_S, LATTICE, Node, drupelet, env, node, run  # noqa: F401  (node: the fixture)
from waiting import wait_for

from drupelet.node.lattice.natsserver import free_port
from drupelet.node.tools import demo


ROOT = Path(__file__).resolve().parent.parent
DEMO_READY_TIMEOUT_S = 180.0  # the first run builds both examples (~10 s each), then starts two nodes


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- one line, or one JSON object ---------------------------------------------------------


def test_nats_down_fails_at_once_with_connection_refused() -> None:
    port = free_port()
    result = subprocess.run([*drupelet(), "--nats", f"nats://127.0.0.1:{port}", "link", "list"],
                            capture_output=True, text=True, timeout=2.5, env=env())
    line = one_error_line(result)
    assert line.startswith(f"drupelet: cannot connect to NATS at nats://127.0.0.1:{port}: connection refused")


def test_a_web_url_for_nats_is_refused_with_the_reason() -> None:
    line = one_error_line(run("--nats", "http://127.0.0.1:8222", "nodes"))
    assert "http://127.0.0.1:8222" in line and "nats://" in line and "monitoring" in line


def test_json_errors_are_one_object_on_stdout() -> None:
    port = free_port()
    for command in (["call", "echo", "s", "hi"], ["link", "list"], ["nodes"]):
        result = run("--json", "--nats", f"nats://127.0.0.1:{port}", *command)
        assert result.returncode == 1 and result.stderr == "", result.stderr
        error = json.loads(result.stdout)
        assert set(error) == {"error", "message"} and error["error"], error
        assert "connection refused" in error["message"]


def test_a_closed_pipe_ends_config_doc_quietly() -> None:
    proc = subprocess.Popen([*drupelet(), "config-doc"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    proc.wait(timeout=CALL_TIMEOUT_S)
    assert stderr == ""


# -- link put -------------------------------------------------------------------------------


def test_link_put_to_a_provider_no_node_has_is_refused(node: Node) -> None:
    line = one_error_line(run("--nats", node.url, "--lattice", LATTICE, "link", "put", "echo",
                              "wasi:keyvalue", "local/nosuchprovider"))
    assert line.startswith("drupelet: no node has a provider named 'nosuchprovider' (providers: ")
    assert "cli-node/keyvalue" in line and "cli-node/messaging" in line
    listed = run("--nats", node.url, "--lattice", LATTICE, "--json", "link", "list")
    assert all(link["target"] != "local/nosuchprovider" for link in json.loads(listed.stdout))


def test_link_put_json_refusal_has_a_code(node: Node) -> None:
    result = run("--json", "--nats", node.url, "--lattice", LATTICE, "link", "put", "echo", "wasi:keyvalue",
                 "cli-node/kv")
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == "no-provider"


def test_link_put_warns_for_an_unknown_node_and_actor_and_says_what_it_replaced(node: Node) -> None:
    base = ("--nats", node.url, "--lattice", LATTICE, "link", "put")
    first = run(*base, "nosuchactor", "wasi:keyvalue/store", "local/keyvalue")
    assert first.returncode == 0, first.stderr
    assert "warning: no node runs an actor named 'nosuchactor'" in first.stderr
    assert first.stdout.startswith("put 1 link(s)\n")
    second = run(*base, "nosuchactor", "wasi:keyvalue/store", "pi-9/keyvalue")
    assert second.returncode == 0, second.stderr
    assert "warning: no node named 'pi-9' answered" in second.stderr
    assert second.stdout.startswith("put 1 link(s), replacing 1: wasi:keyvalue/store")
    assert "was local/keyvalue" in second.stdout.splitlines()[0]
    gone = run("--nats", node.url, "--lattice", LATTICE, "link", "del", "nosuchactor", "wasi:keyvalue")
    assert gone.returncode == 0, gone.stderr


# -- up --demo ------------------------------------------------------------------------------


def demo_config(directory: Path, port: int) -> Path:
    config = directory / "demo.toml"
    config.write_text(f'[node]\nname = "laptop"\nlattice = "{LATTICE}"\n[nats]\nembedded_port = {port}\n')
    return config


def test_up_demo_with_its_port_taken_is_one_line_suggesting_nats(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run([*drupelet(), "up", "--demo", "--config", str(demo_config(tmp_path, port)),
                                 "--data-dir", str(tmp_path / "data")],
                                capture_output=True, text=True, timeout=CALL_TIMEOUT_S, env=env())
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"drupelet: cannot start the demo's nats-server: port {port} on 127.0.0.1 is already in use by another "
        f"process; to join the server there instead: drupelet up --demo --nats nats://127.0.0.1:{port}"]
    assert not (tmp_path / "data" / "demo").exists()  # it failed before building anything


class Output:
    """A process's merged output, read on a thread as it comes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)

    def join(self) -> None:
        self._thread.join(timeout=CALL_TIMEOUT_S)


@pytest.fixture
def external_nats(tmp_path: Path) -> Iterator[str]:
    """A JetStream nats-server that is not the demo's (as `wash up` would run one)."""
    port = free_port()
    config = tmp_path / "server.toml"
    config.write_text(f'[node]\nname = "server"\nlattice = "other"\ndata_dir = "{tmp_path / "server"}"\n'
                      f'[nats]\nembedded_port = {port}\n')
    proc = subprocess.Popen([sys.executable, "-m", "drupelet.node.cli", "up", "--config", str(config)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env())
    out = Output(proc)
    try:
        wait_for(lambda: "ready" in out.text() or proc.poll() is not None, 30.0, "the server node's ready line")
        assert proc.poll() is None, out.text()
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=CALL_TIMEOUT_S)
        out.join()


@pytest.mark.slow
def test_up_demo_joins_a_server_given_with_nats(tmp_path: Path, external_nats: str) -> None:
    data = tmp_path / "data"
    page = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen([*drupelet(), "up", "--demo", "--no-auto-press", "--name", "laptop", "--lattice",
                             LATTICE, "--nats", external_nats, "--data-dir", str(data), "--http", page],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env(COLUMNS="80"))
    out = Output(proc)
    try:
        wait_for(lambda: "OLED shows" in out.text() or proc.poll() is not None, DEMO_READY_TIMEOUT_S,
                 "the demo's first OLED frame")
        assert proc.poll() is None, out.text()
        nodes = run("--nats", external_nats, "--lattice", LATTICE, "--json", "nodes")
        assert sorted(n["name"] for n in json.loads(nodes.stdout)) == ["laptop", demo.PI_NODE]
        reading = run("--nats", external_nats, "--lattice", LATTICE, "call", "thermometer", "now", "read")
        assert reading.returncode == 0 and " C" in reading.stdout, reading.stderr
        # the thermometer's page on the laptop node shows the Pi's reading now
        with urllib.request.urlopen(f"http://{page}/", timeout=CALL_TIMEOUT_S) as answer:
            assert re.fullmatch(r"temperature -?\d+\.\d C\n", answer.read().decode()), answer
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=CALL_TIMEOUT_S)
        out.join()
    text = out.text()
    assert proc.returncode == 0 and "Traceback" not in text, text
    assert f"--nats {external_nats} nodes" in text  # the hints name the server the demo joined
    assert f"curl http://{page}/" in text
    assert "pressing the button" not in text  # --no-auto-press
    # two nodes, one log: each node's lines say which node wrote them
    assert "drupelet.node.node: [pi-1] node pi-1 is up" in text
    assert "drupelet.node.node: [laptop] node laptop is up" in text
    assert "drupelet.actor: [laptop] [thermometer]" in text
    # the README's demo log lines, but for the automatic press that --no-auto-press turned off
    from test_docs import read_page
    from test_docs_walkthrough import shape

    readme = next(b for b in read_page(ROOT / "README.md").blocks
                  if b.info == "text" and "drupelet.demo" in "".join(b.lines))
    shown = [l for l in readme.lines if not l.startswith(("┌", "│", "└")) and "button" not in l and "led " not in l]
    seen = {shape(line) for line in text.splitlines()}
    assert len(shown) == 2 and all(shape(line) in seen for line in shown), (shown, text)
    frame = [line for line in text.splitlines() if line.startswith(("┌", "│", "└"))]
    assert frame and max(len(line) for line in frame) <= 80  # half size in 80 columns
    # the demo's nodes keep their state under <data_dir>/demo, not in <data_dir> itself
    assert sorted(p.name for p in data.iterdir()) == ["demo"]
    assert {"laptop", demo.PI_NODE} <= {p.name for p in (data / "demo").iterdir()}


@pytest.mark.slow
def test_up_demo_runs_an_authenticated_lattice_of_its_own(tmp_path: Path, thermometer_wasm: Path,
                                                          counter_wasm: Path) -> None:
    import shutil

    from drupelet.node.tools.build import example_dir, source_key

    data, port = tmp_path / "data", free_port()
    for name, built in (("thermometer", thermometer_wasm), ("counter", counter_wasm)):  # built once per session
        target = data / "demo" / f"{name}-{source_key(example_dir(name))[:16]}.wasm"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, target)
    proc = subprocess.Popen([*drupelet(), "up", "--demo", "--no-auto-press", "--name", "laptop", "--config",
                             str(demo_config(tmp_path, port)), "--data-dir", str(data)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env())
    out = Output(proc)
    lattice = data / "demo" / "lattice"
    try:
        wait_for(lambda: "OLED shows" in out.text() or proc.poll() is not None, DEMO_READY_TIMEOUT_S,
                 "the demo's first OLED frame")
        assert proc.poll() is None, out.text()
        # the lattice directory the demo made: its admin sees both nodes and calls the actors
        nodes = run("--lattice-dir", str(lattice), "--json", "nodes")
        assert sorted(n["name"] for n in json.loads(nodes.stdout)) == ["laptop", demo.PI_NODE], nodes.stderr
        reading = run("--lattice-dir", str(lattice), "call", "thermometer", "now", "read")
        assert reading.returncode == 0 and " C" in reading.stdout, reading.stderr
        # a client without the lattice's credentials is refused, and one without its CA too
        hub = f"tls://127.0.0.1:{port}"
        assert "Authorization Violation" in one_error_line(run("--nats", hub, "--tls-ca", str(lattice / "ca.pem"),
                                                               "nodes"))
        assert "requires TLS" in one_error_line(run("--nats", f"nats://127.0.0.1:{port}", "--creds",
                                                    str(lattice / "admin.creds"), "nodes"))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=CALL_TIMEOUT_S)
        out.join()
    text = out.text()
    assert proc.returncode == 0 and "Traceback" not in text, text
    assert f"--lattice-dir {lattice} nodes" in text  # the hints use the demo's lattice directory
    assert "the lattice is open" not in text


def test_the_oled_frame_fits_the_terminal() -> None:
    from PIL import Image

    image = Image.new("1", (128, 64))
    image.paste(1, (10, 10, 100, 40))
    png = _png(image)
    wide = demo.ascii_frame(png, columns=200).splitlines()
    narrow = demo.ascii_frame(png, columns=80).splitlines()
    assert len(wide[0]) == 130 and len(wide) == 34
    assert len(narrow[0]) == 66 and len(narrow) == 18 and any("█" in line for line in narrow)
    assert demo.blank(_png(Image.new("1", (128, 64))))
    assert not demo.blank(png)


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# -- no terminal library where it is not wanted ------------------------------------------

TERMINAL_LIBRARIES = ("rich", "colorama", "curses", "blessed", "prompt_toolkit", "termcolor", "click")


@pytest.mark.parametrize("code", [
    "from drupelet.node.cli.main import main; import sys; main(['firstboot', '--boot', sys.argv[1], '--dry-run'])",
    "import drupelet.node.node, drupelet.node.cli.up",
])
def test_the_node_and_firstboot_import_no_terminal_library(code: str, tmp_path: Path) -> None:
    check = f"{code}\nimport sys\nprint(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
    check += f"{TERMINAL_LIBRARIES!r})))"
    result = subprocess.run([sys.executable, "-c", check, str(tmp_path / "drupelet.toml")], capture_output=True,
                            text=True, timeout=CALL_TIMEOUT_S, env=env())
    assert result.stdout.strip().splitlines()[-1:] in ([], [""]), result.stdout + result.stderr


# -- scripts/up.sh and scripts/test.sh: install only when needed ----------------------------


def ensure_installed(venv: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", f'repo="{ROOT}"; VENV="{venv}"; source "$repo/scripts/_venv.sh"; '
                                         "ensure_installed build"],
                          capture_output=True, text=True, timeout=CALL_TIMEOUT_S, env=env())


def test_the_scripts_install_only_when_the_venv_is_out_of_date(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    pip_ran = tmp_path / "pip-ran"
    # a python whose pip records that it ran and succeeds; the drupelet script it "installs"
    (venv / "bin" / "python").write_text(f'#!/bin/sh\necho "$@" >> "{pip_ran}"\n'
                                         f'printf "#!/bin/sh\\n" > "{venv}/bin/drupelet"; '
                                         f'chmod +x "{venv}/bin/drupelet"\necho pip chatter\n')
    (venv / "bin" / "python").chmod(0o755)
    first = ensure_installed(venv)
    assert first.returncode == 0, first.stderr
    assert "pip chatter" not in first.stdout + first.stderr  # pip's output goes to the log
    assert pip_ran.read_text().count("install") == 1
    second = ensure_installed(venv)
    assert (second.returncode, second.stdout, second.stderr) == (0, "", "")
    assert pip_ran.read_text().count("install") == 1  # up to date: pip did not run
    stamp = venv / ".drupelet-installed-build"
    stamp.write_text("another pyproject\n")
    assert ensure_installed(venv).returncode == 0
    assert pip_ran.read_text().count("install") == 2


# -- styles on a terminal, plain text in a pipe ---------------------------------------------


def run_on_a_terminal(*args: str, extra_env: dict[str, str] | None = None) -> str:
    """``drupelet ARGS`` with its stdout on a pseudo-terminal; what it printed there."""
    import pty

    main_fd, sub_fd = pty.openpty()
    try:
        proc = subprocess.Popen([*drupelet(), *args], stdout=sub_fd, stderr=subprocess.PIPE,
                                env=env(TERM="xterm", **(extra_env or {})))
        os.close(sub_fd)
        chunks = []
        while True:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=CALL_TIMEOUT_S)
        assert proc.stderr is not None
        proc.stderr.close()
        assert proc.returncode == 0
        return b"".join(chunks).decode()
    finally:
        os.close(main_fd)


def test_tables_are_bold_on_a_terminal_and_plain_in_a_pipe(node: Node) -> None:
    where = ("--nats", node.url, "--lattice", LATTICE)
    on_terminal = run_on_a_terminal(*where, "link", "list")
    assert on_terminal.startswith("\x1b[1mSOURCE") and "\x1b[0m" in on_terminal
    piped = run(*where, "link", "list")
    assert piped.returncode == 0 and piped.stdout.startswith("SOURCE") and "\x1b[" not in piped.stdout
    no_color = run_on_a_terminal(*where, "link", "list", extra_env={"NO_COLOR": "1"})
    assert no_color.startswith("SOURCE") and "\x1b[" not in no_color
