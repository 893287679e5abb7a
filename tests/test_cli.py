"""The ``drupelet`` command line end to end: a real ``drupelet up`` process and real calls."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import child_nats_servers

from drupelet.node.lattice.natsserver import free_port

ROOT = Path(__file__).resolve().parent.parent
ECHO_WAT = ROOT / "actors" / "wat" / "echo.wat"
LATTICE = "clitest"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 30.0
NO_SERVER_TIMEOUT_S = 6.0  # the CLI's own connect timeout is 3 s
CLI_ENV = ("DRUPELET_NATS", "DRUPELET_LATTICE", "DRUPELET_CREDS", "DRUPELET_JSON")


def drupelet() -> list[str]:
    """The installed console script, or the module when the scripts dir has none."""
    script = Path(sys.executable).parent / "drupelet"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "drupelet.node.cli"]


def env(**extra: str) -> dict[str, str]:
    """This environment without the CLI's own variables, plus ``extra``."""
    clean = {k: v for k, v in os.environ.items() if k not in CLI_ENV}
    clean.update(extra)
    return clean


def run(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*drupelet(), *args], capture_output=True, text=True, timeout=CALL_TIMEOUT_S,
                          env=env(**(extra_env or {})))


def write_config(directory: Path, port: int, name: str = "cli-node") -> Path:
    path = directory / "node.toml"
    path.write_text(f"""\
[node]
name = "{name}"
lattice = "{LATTICE}"
data_dir = "{directory / 'data'}"

[nats]
embedded_port = {port}

[[actors]]
name = "echo"
file = "{ECHO_WAT}"

[[links]]
source = "echo"
interface = "wasmcloud:messaging"
target = "local/messaging"
""", encoding="utf-8")
    return path


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2:].split()[0] != "Z"


def port_accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def nats_servers(self) -> set[int]:
        return child_nats_servers(self.proc.pid)


def start_node(directory: Path) -> Node:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = write_config(directory, port)
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


def wait_until_echo_answers(node: Node) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last: subprocess.CompletedProcess[str] | None = None
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            pytest.fail(f"drupelet up exited with {node.proc.returncode}:\n{node.stderr()}")
        last = run("--nats", node.url, "--lattice", LATTICE, "call", "echo", "s", "hello", "--timeout", "2")
        if last.returncode == 0 and last.stdout == "hello\n":
            return
        time.sleep(0.1)
    detail = f"last call: {last.returncode} {last.stdout!r} {last.stderr!r}" if last else "no call ran"
    pytest.fail(f"echo did not answer within {READY_TIMEOUT_S:g} s ({detail})\n{node.stderr()}")


def stop_node(node: Node) -> None:
    """SIGTERM, then SIGKILL; also kills an embedded nats-server a killed node left behind."""
    servers = node.nats_servers() if node.proc.poll() is None else set()
    if node.proc.poll() is None:
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()
    for pid in servers:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One ``drupelet up`` for the calls below; they only read from it."""
    running = start_node(tmp_path_factory.mktemp("cli-node"))
    try:
        yield running
    finally:
        stop_node(running)


# -- the parser and the import graph -------------------------------------------------------

HEAVY = ("wasmtime", "nats", "drupelet.node.host")
"""What ``firstboot`` (every boot of a Pi) and ``config-doc`` must not import."""
LIGHT_CLI = {"drupelet.node.cli", "drupelet.node.cli.main", "drupelet.node.cli.parser", "drupelet.node.cli.common",
             "drupelet.node.cli.output", "drupelet.node.cli.misc"}


def imported_modules(*args: str) -> set[str]:
    """The modules ``python -X importtime -m drupelet.node.cli ARGS`` imports."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "drupelet.node.cli", *args],
                          capture_output=True, text=True, timeout=CALL_TIMEOUT_S, env=env())
    assert proc.returncode == 0, proc.stderr
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [("firstboot", "--help"), ("config-doc",)])
def test_boot_time_commands_import_no_nats_wasmtime_or_host(args: tuple[str, ...]) -> None:
    modules = imported_modules(*args)
    assert "drupelet.node.system.firstboot" in modules or args[0] != "firstboot"
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], f"drupelet {' '.join(args)} imported {heavy}"
    # only the chosen command's module is imported, not every command group's
    assert {m for m in modules if m.startswith("drupelet.node.cli")} <= LIGHT_CLI


def walk_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command parser, by its words (``("actor", "start")``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from walk_commands(sub, (*path, name))


def test_every_command_has_a_handler_and_the_global_options() -> None:
    from drupelet.node.cli.parser import Command, build_parser

    commands = dict(walk_commands(build_parser()))
    leaves = {words for words in commands if not any(other[:-1] == words for other in commands)}
    assert {("up",), ("actor", "start"), ("link", "del"), ("gpio", "simulate"), ("firstboot",)} <= leaves
    for words, sub in commands.items():
        options = {o for a in sub._actions for o in a.option_strings}
        assert {"--nats", "--lattice", "--creds", "--json", "-v"} <= options, words
        handler = sub.get_default("handler")
        if words in leaves:
            assert isinstance(handler, Command), words
            assert callable(handler.resolve()), words
        else:
            assert handler is None, words


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for command in ("up", "actor", "push", "link", "nodes", "inventory", "logs", "events", "display", "gpio",
                    "call", "bench", "config-doc", "firstboot"):
        assert f"\n    {command} " in result.stdout, command


def test_no_command_prints_the_help_and_exits_2() -> None:
    result = run()
    assert result.returncode == 2
    assert result.stdout.startswith("usage: drupelet [-h] [--nats URL]") and "COMMAND" in result.stdout


def test_a_usage_error_exits_2_with_argparse_s_message() -> None:
    result = run("actor", "scale", "echo", "many")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "drupelet actor scale: error: argument instances: invalid int value: 'many'"


def test_a_bad_actor_name_is_one_line_without_a_server() -> None:
    result = run("--nats", f"nats://127.0.0.1:{free_port()}", "call", "no such", "s")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "drupelet: actor 'no such' cannot be a subject token: use A-Z a-z 0-9 _ -\n"


# -- call ---------------------------------------------------------------------------------


def test_call_prints_the_reply(node: Node) -> None:
    result = run("--nats", node.url, "--lattice", LATTICE, "call", "echo", "s", "hello")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello\n", "")


def test_global_options_after_the_subcommand(node: Node) -> None:
    result = run("call", "echo", "s", "hi", "--nats", node.url, "--lattice", LATTICE)
    assert (result.returncode, result.stdout, result.stderr) == (0, "hi\n", "")


def test_global_options_from_the_environment(node: Node) -> None:
    result = run("call", "echo", "s", "from env", extra_env={"DRUPELET_NATS": node.url, "DRUPELET_LATTICE": LATTICE})
    assert (result.returncode, result.stdout, result.stderr) == (0, "from env\n", "")


def test_command_line_wins_over_the_environment(node: Node) -> None:
    result = run("call", "echo", "s", "hi", "--lattice", LATTICE,
                 extra_env={"DRUPELET_NATS": node.url, "DRUPELET_LATTICE": "elsewhere"})
    assert (result.returncode, result.stdout) == (0, "hi\n")


def test_json_output(node: Node) -> None:
    result = run("--json", "--nats", node.url, "--lattice", LATTICE, "call", "echo", "s", "hi")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"ok": True, "body": "hi"}


def test_json_from_the_environment(node: Node) -> None:
    result = run("call", "echo", "s", "hi", extra_env={"DRUPELET_NATS": node.url, "DRUPELET_LATTICE": LATTICE,
                                                       "DRUPELET_JSON": "1"})
    assert json.loads(result.stdout) == {"ok": True, "body": "hi"}


def test_body_from_stdin(node: Node) -> None:
    result = subprocess.run([*drupelet(), "call", "echo", "s", "-", "--nats", node.url, "--lattice", LATTICE],
                            input="piped\n", capture_output=True, text=True, timeout=CALL_TIMEOUT_S, env=env())
    assert (result.returncode, result.stdout) == (0, "piped\n")


def test_unknown_actor_is_one_line(node: Node) -> None:
    result = run("--nats", node.url, "--lattice", LATTICE, "call", "nope", "s", "hi")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"drupelet: no actor 'nope' is running in lattice '{LATTICE}'\n"


def test_other_lattice_sees_no_actor(node: Node) -> None:
    result = run("--nats", node.url, "--lattice", "other", "call", "echo", "s", "hi")
    assert (result.returncode, result.stderr) == (1, "drupelet: no actor 'echo' is running in lattice 'other'\n")


def test_no_server_is_one_line() -> None:
    port = free_port()
    try:
        result = subprocess.run([*drupelet(), "--nats", f"nats://127.0.0.1:{port}", "call", "echo", "s", "hi"],
                                capture_output=True, text=True, timeout=NO_SERVER_TIMEOUT_S, env=env())
    except subprocess.TimeoutExpired:
        pytest.fail(f"drupelet call to a port nobody listens on still runs after {NO_SERVER_TIMEOUT_S:g} s")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"drupelet: cannot connect to NATS at nats://127.0.0.1:{port}")


# -- up -----------------------------------------------------------------------------------


def test_sigterm_stops_the_node_and_its_nats_server(tmp_path: Path) -> None:
    node = start_node(tmp_path)
    try:
        servers = node.nats_servers()
        assert len(servers) == 1, f"expected one embedded nats-server, found {servers}"
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(STOP_TIMEOUT_S) == 0, node.stderr()
        assert not any(alive(pid) for pid in servers), "the embedded nats-server outlived the node"
        assert not port_accepts(node.port)
        assert "Traceback" not in node.stderr()
    finally:
        stop_node(node)


def test_a_killed_node_takes_its_nats_server_along(tmp_path: Path) -> None:
    node = start_node(tmp_path)
    try:
        servers = node.nats_servers()
        assert len(servers) == 1, f"expected one embedded nats-server, found {servers}"
        node.proc.kill()  # SIGKILL: the node cannot stop anything itself
        node.proc.wait(STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(alive(pid) for pid in servers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in servers), "the embedded nats-server outlived a killed node"
        assert not port_accepts(node.port)  # a new node can take the port
    finally:
        stop_node(node)


def test_sigterm_during_start_up_stops_at_once(tmp_path: Path) -> None:
    with socket.socket() as mute:  # accepts connections, never speaks NATS: start-up waits
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        config = tmp_path / "node.toml"
        data_dir = tmp_path / "data"
        config.write_text(f'[node]\nname = "n"\ndata_dir = "{data_dir}"\n'
                          f'[nats]\nurl = "nats://127.0.0.1:{mute.getsockname()[1]}"\nconnect_timeout_s = 6\n')
        proc = subprocess.Popen([sys.executable, "-m", "drupelet.node.cli", "up", "--config", str(config)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                cwd=tmp_path, env=env())
        try:
            mute.settimeout(READY_TIMEOUT_S)
            try:  # connected: the node has its signal handlers and waits for an INFO that never comes
                held, _ = mute.accept()
            except TimeoutError:
                pytest.fail(f"drupelet up did not connect within {READY_TIMEOUT_S:g} s")
            with held:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(3.0)
                except subprocess.TimeoutExpired:
                    pytest.fail("drupelet up ignored SIGTERM while starting")
        finally:
            if proc.poll() is None:
                proc.kill()
            _, stderr = proc.communicate()
    assert "Traceback" not in stderr.decode()


def test_up_with_its_port_taken_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = write_config(tmp_path, port)
        result = subprocess.run([sys.executable, "-m", "drupelet.node.cli", "up", "--config", str(config)],
                                capture_output=True, text=True, timeout=CALL_TIMEOUT_S, cwd=tmp_path, env=env())
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("drupelet: ")]
    assert errors == [f"drupelet: cannot start the embedded nats-server: port {port} on 127.0.0.1 "
                      "is already in use by another process"]
    assert result.stderr.splitlines()[-1] == errors[0]


def complete(script: str, *words: str) -> list[str]:
    """What the generated bash completion offers for ``drupelet WORDS`` (the last word being typed)."""
    line = " ".join(shlex.quote(w) for w in ("drupelet", *words))
    proc = subprocess.run(["bash", "-c", f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words)}; '
                          '_drupelet_complete; printf "%s\\n" "${COMPREPLY[@]}"'],
                          capture_output=True, text=True, timeout=CALL_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    return [w for w in proc.stdout.splitlines() if w]


def test_bash_completion_is_generated_from_the_parser_and_imports_nothing_heavy() -> None:
    made = run("completion", "bash")
    assert made.returncode == 0, made.stderr
    script = made.stdout
    assert complete(script, "gp") == ["gpio"]
    assert complete(script, "gpio", "")[:4] == ["simulate", "read", "write", "pins"]
    assert complete(script, "gpio", "write", "pi-1", "17", "h") == ["high"]
    assert complete(script, "--nats", "nats://x:4222", "actor", "start", "--i") == ["--instances"]
    assert "--hub" in complete(script, "up", "--h")
    modules = imported_modules("completion", "bash")
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], heavy
    assert {m for m in modules if m.startswith("drupelet.node.cli")} <= LIGHT_CLI | {"drupelet.node.cli.completion"}
