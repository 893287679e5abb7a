"""The docs stay true to the code: README.md and docs/*.md are checked, and partly run.

- Every relative link points at a file that exists, and every ``#anchor`` at a heading.
- Every ``drupelet …`` command in the pages' tables, code blocks and inline code is one
  the CLI's own parser knows, with options it knows; examples without placeholders
  parse as a whole. docs/cli.md's command table lists every command and its options.
- docs/config.md is the output of ``drupelet config-doc``; the walk-through's config is
  the example file.
- ``console`` blocks are sessions: each ``$ drupelet …`` line runs against a real node
  (``docnode``, lattice ``default``, an embedded nats-server on a free loopback port, a
  temporary data directory standing for ``/tmp/docnode``, simulated hardware), and the
  lines shown after it must appear in its output, in order (whitespace runs match any
  whitespace, ``…`` matches anything). A command whose shown output starts with
  ``drupelet: `` must exit 1, any other 0. ``<!-- test: restart -->`` before a fenced
  block restarts the node there; ``<!-- test: node log -->`` before one checks its log
  lines (after the logger's name) against the node's log since it last started.
  docs/testing.md describes the convention for writers.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drupelet.node.config import load, schema_markdown
from drupelet.node.lattice.natsserver import free_port

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CLI_PAGE = ROOT / "docs" / "cli.md"

NODE_NAME = "docnode"
DOC_DATA_DIR = "/tmp/docnode"  # what the pages call the session node's data directory
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 60.0
RETRY_S = 10.0  # reads are retried this long until they show what the page shows
POLL_S = 0.2
READS = {("nodes",), ("inventory",), ("actor", "list"), ("link", "list")}
NO_NATS = {"firstboot", "config-doc"}  # commands that run without a node
SHELL_INFOS = {"", "sh", "bash", "shell", "console"}
SIMULATED = {"DRUPELET_GPIO_BACKEND": "mock", "DRUPELET_I2C_BACKEND": "sim", "DRUPELET_DISPLAY_DRIVER": "dummy"}
LOG_PREFIX = re.compile(r"^(?:\d\d:\d\d:\d\d\s+)?(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\S+: ")


# -- reading Markdown ---------------------------------------------------------------------


@dataclass
class Block:
    """A fenced code block: its info string, its lines and the ``<!-- test: … -->``
    markers directly above it."""

    page: Path
    line: int  # of the opening fence, 1-based
    info: str
    lines: list[str]
    markers: set[str] = field(default_factory=set)


@dataclass
class Page:
    path: Path
    blocks: list[Block]
    prose: list[tuple[int, str]]  # lines outside fenced blocks, with their numbers

    @property
    def name(self) -> str:
        return str(self.path.relative_to(ROOT))


MARKER = re.compile(r"^<!--\s*test:\s*(.+?)\s*-->$")
MARKERS = {"restart", "node log"}


def read_page(path: Path) -> Page:
    blocks: list[Block] = []
    prose: list[tuple[int, str]] = []
    markers: set[str] = set()
    current: Block | None = None
    fence = ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if current is not None:
            if stripped == fence:
                blocks.append(current)
                current = None
            else:
                current.lines.append(line)
            continue
        opening = re.match(r"^(`{3,}|~{3,})\s*(\S*)", stripped)
        if opening:
            fence = opening.group(1)
            current = Block(path, number, opening.group(2), [], markers)
            markers = set()
            continue
        marker = MARKER.match(stripped)
        if marker:
            assert marker.group(1) in MARKERS, f"{path.name}:{number}: unknown marker (there are {sorted(MARKERS)})"
            markers = markers | {marker.group(1)}
            continue
        assert not (stripped and markers), f"{path.name}:{number}: a test marker must stand right above a block"
        prose.append((number, line))
    assert current is None, f"{path.name}: the block opened on line {current.line} is never closed"
    return Page(path, blocks, prose)


def all_pages() -> list[Page]:
    return [read_page(path) for path in PAGES]


INLINE_CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for _, line in read_page(path).prose:
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*$", line)
        if heading:
            base = slug(heading.group(1))
            name, n = base, 0
            while name in found:
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


# -- the CLI's parser ---------------------------------------------------------------------


def cli_parser() -> argparse.ArgumentParser:
    """The parser of ``drupelet.node.cli``, built without running anything."""
    for module in ("drupelet.node.cli.parser", "drupelet.node.cli.main"):
        try:
            build = importlib.import_module(module).build_parser
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        except AttributeError:
            continue
        parser = build()
        assert isinstance(parser, argparse.ArgumentParser)
        return parser
    pytest.fail("drupelet.node.cli has no build_parser()")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[
        tuple[str, ...], argparse.ArgumentParser]:
    subs = subcommands(parser)
    if not subs:
        return {path: parser}
    out: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for name, sub in subs.items():
        out.update(leaf_commands(sub, (*path, name)))
    return out


PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*(=[A-Z][A-Z0-9_]*)?")


def is_placeholder(token: str) -> bool:
    return (any(c in token for c in "…<>[]()|{}") or token == "..."
            or PLACEHOLDER.fullmatch(token) is not None)


def split_command(text: str) -> list[str] | None:
    """The arguments after ``drupelet`` in a shell line or an inline code span, or None
    when it does not run drupelet."""
    text = text.replace("\\|", "|").strip()
    text = text.removeprefix("$ ")
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:
        tokens = text.split()
    while tokens and (re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[0]) or tokens[0] == "sudo"):
        tokens = tokens[1:]
    if not tokens or Path(tokens[0]).name != "drupelet":
        return None
    return tokens[1:]


def resolve(parser: argparse.ArgumentParser, args: list[str]) -> tuple[list[argparse.ArgumentParser], list[str]]:
    """Walk ``args`` down the subcommands: the parsers reached (several for ``a|b``) and
    the command path. Raises AssertionError on a command the CLI does not have."""
    current = [parser]
    path: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("-"):
            action = current[0]._option_string_actions.get(token.split("=", 1)[0])
            takes_value = action is not None and action.nargs != 0 and "=" not in token
            i += 2 if takes_value else 1
            continue
        subs = subcommands(current[0])
        if not subs:
            break
        names = token.split("|")
        if all(name in subs for name in names):
            current = [subs[name] for name in names]
            path.append(token)
            i += 1
            continue
        if is_placeholder(token):
            break
        raise AssertionError(f"`drupelet {' '.join([*path, token])}`: no such command "
                             f"(there are {', '.join(sorted(subs))})")
    return current, path


OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def check_options(parsers: list[argparse.ArgumentParser], path: list[str], text: str) -> None:
    for option in OPTION.findall(text.replace("\\|", "|")):
        names = [option] if option.startswith("--") or len(option) == 2 else [f"-{c}" for c in option[1:]]
        for name in names:
            assert all(name in p._option_string_actions for p in parsers), (
                f"`drupelet {' '.join(path)}` has no option {name}")


def check_command(parser: argparse.ArgumentParser, args: list[str], text: str, *, whole: bool) -> None:
    """``whole``: the command is an example, and must parse as it stands (unless it has
    placeholders); otherwise its command path and options must exist."""
    parsers, path = resolve(parser, args)
    if whole and not any(is_placeholder(token) for token in args):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                parser.parse_args(args)
            except SystemExit as exc:
                raise AssertionError(f"`drupelet {shlex.join(args)}` does not parse: "
                                     f"{err.getvalue().strip().splitlines()[-1:]}") from exc
        return
    check_options(parsers, path, text[text.find("drupelet") + len("drupelet"):])


@dataclass
class Mention:
    page: str
    line: int
    text: str
    args: list[str]
    whole: bool  # an example that must parse as it stands
    table: bool


def mentions(page: Page) -> Iterator[Mention]:
    """Every drupelet command the page names: code-block lines, table cells, prose."""
    for block in page.blocks:
        if block.info not in SHELL_INFOS:
            continue
        pending = ""
        for offset, line in enumerate(block.lines, 1):
            if block.info == "console" and not line.startswith("$ "):
                continue  # output
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text, pending = pending + line, ""
            args = split_command(text)
            if args is not None:
                yield Mention(page.name, block.line + offset, text, args, True, False)
    for number, line in page.prose:
        table = line.lstrip().startswith("|")
        # a table cell that is nothing but a command is an example (or a syntax line);
        # commands named inside a sentence need only exist
        pieces = line.replace("\\|", "\x00").strip().strip("|").split("|") if table else [line]
        for piece in pieces:
            whole = table and re.fullmatch(r"\s*`[^`]+`\s*", piece) is not None
            for span in INLINE_CODE.findall(piece):
                span = span.replace("\x00", "|")
                args = split_command(span) if span.startswith("drupelet ") else None
                if args is not None:
                    yield Mention(page.name, number, span, args, whole, table)


# -- static checks ------------------------------------------------------------------------


def test_config_reference_is_the_generated_schema() -> None:
    doc = (ROOT / "docs" / "config.md").read_text()
    generated = subprocess.run([sys.executable, "-m", "drupelet.node.cli", "config-doc"], capture_output=True,
                               text=True, check=True, timeout=60).stdout.strip()
    assert schema_markdown().strip() in generated and "[hardware.gpio]" in generated
    assert generated in doc, "docs/config.md is stale: regenerate it with `drupelet config-doc`"


def test_example_node_config_is_valid() -> None:
    cfg = load(ROOT / "docs" / "examples" / "counter.toml")
    assert [a.name for a in cfg.actors] == ["counter"]
    assert cfg.actors[0].file.resolve() == (ROOT / "counter.wasm").resolve()
    assert {l.target for l in cfg.links} == {"local/keyvalue", "local/messaging"}


def test_walkthrough_config_matches_the_example_file() -> None:
    walkthrough = (ROOT / "docs" / "walkthrough.md").read_text()
    example = (ROOT / "docs" / "examples" / "counter.toml").read_text()
    # every TOML line of the example that sets something appears in the walk-through
    settings = [l for l in example.splitlines() if l.strip() and not l.lstrip().startswith("#")
                and not l.startswith("file")]
    missing = [l for l in settings if l not in walkthrough]
    assert not missing, f"docs/walkthrough.md differs from docs/examples/counter.toml: {missing}"


def test_readme_is_the_front_door() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150, "README.md is the front door: move details to docs/"
    for command in ("bash scripts/up.sh", "bash scripts/test.sh"):
        assert f"```sh\n{command}\n```" in readme, f"README.md lost its command {command!r}"


def test_relative_links_point_at_files_and_headings() -> None:
    broken: list[str] = []
    for page in all_pages():
        for number, line in page.prose:
            for target in LINK.findall(INLINE_CODE.sub("", line)):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    continue  # https:, mailto:
                file_part, _, anchor = target.partition("#")
                resolved = (page.path.parent / file_part).resolve() if file_part else page.path
                where = f"{page.name}:{number}: {target}"
                if not resolved.exists():
                    broken.append(f"{where}: no such file")
                elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                    broken.append(f"{where}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_drupelet_command_in_the_docs_is_real() -> None:
    parser = cli_parser()
    wrong: list[str] = []
    count = 0
    for page in all_pages():
        for mention in mentions(page):
            count += 1
            try:
                check_command(parser, mention.args, mention.text, whole=mention.whole)
            except AssertionError as exc:
                wrong.append(f"{mention.page}:{mention.line}: {exc}")
    assert count > 50, f"found only {count} commands in the docs: is the scan broken?"
    assert not wrong, "commands in the docs that the CLI does not have:\n" + "\n".join(wrong)


def test_cli_page_lists_every_command_and_option() -> None:
    parser = cli_parser()
    global_options = {s for a in parser._actions for s in a.option_strings}
    rows: dict[tuple[str, ...], str] = {}
    for number, line in read_page(CLI_PAGE).prose:
        cells = [c.strip() for c in line.replace("\\|", "\x00").strip().strip("|").split("|")]
        if not line.lstrip().startswith("|") or not cells[0].startswith("`drupelet "):
            continue
        syntax = cells[0].strip("`").replace("\x00", "|")
        args = split_command(syntax)
        assert args is not None, f"docs/cli.md:{number}: {syntax}"
        _, words = resolve(parser, args)
        rows[tuple(words)] = syntax
    leaves = leaf_commands(parser)
    assert sorted(leaves) == sorted(rows), (
        f"docs/cli.md's command table: missing {sorted(set(leaves) - set(rows))}, "
        f"not commands {sorted(set(rows) - set(leaves))}")
    missing: list[str] = []
    documented_options = {path: set(OPTION.findall(text)) for path, text in rows.items()}
    for path, sub in leaves.items():
        for action in sub._actions:
            strings = set(action.option_strings)
            if not strings or isinstance(action, argparse._HelpAction) or strings & global_options:
                continue
            if not strings & documented_options[path]:
                missing.append(f"drupelet {' '.join(path)} {'/'.join(sorted(strings))}")
    assert not missing, "options missing from docs/cli.md's command table:\n" + "\n".join(missing)


# -- running the console blocks -----------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRUPELET_")
           and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "INVOCATION_ID")}
    return env | extra


class DocNode:
    """``drupelet up --name docnode --data-dir …`` with an embedded nats-server on a free
    port, ready when it sends systemd's READY=1 (to a stand-in NOTIFY_SOCKET)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data_dir = directory / "data"
        self.port = free_port()
        self.config = directory / "node.toml"
        self.config.write_text(f"[nats]\nembedded_port = {self.port}\n", encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / f"up-{self.starts}.log"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> None:
        self.starts += 1
        address = f"@drupelet-docs-{uuid.uuid4().hex}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind("\0" + address[1:])
            notify.settimeout(POLL_S)
            with self.log.open("wb") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "drupelet.node.cli", "up", "--name", NODE_NAME,
                     "--data-dir", str(self.data_dir), "--config", str(self.config)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.directory,
                    env=clean_env(NOTIFY_SOCKET=address, **SIMULATED))
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    pytest.fail(f"drupelet up exited with {self.proc.returncode}:\n{self.log_text()}")
                try:
                    message = notify.recv(4096).decode(errors="replace")
                except TimeoutError:
                    continue
                if "READY=1" in message.splitlines():
                    return
        pytest.fail(f"the docs node sent no READY=1 within {READY_TIMEOUT_S:g} s:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # its nats-server goes with it (parent-death signal)
            self.proc.wait()
            pytest.fail(f"the docs node did not stop within {STOP_TIMEOUT_S:g} s:\n{self.log_text()}")

    def restart(self) -> None:
        self.stop()
        self.start()


def line_pattern(expected: str) -> re.Pattern[str]:
    parts = [r"\s+".join(re.escape(word) for word in piece.split()) for piece in expected.strip().split("…")]
    return re.compile(".*".join(parts))


def missing_lines(expected: list[str], actual: list[str]) -> list[str]:
    """The expected lines (``…`` anything, whitespace any whitespace) that do not appear
    in ``actual`` in order; blank lines and lines of just ``…`` stand for lines left out."""
    wanted = [line for line in expected if line.strip() not in ("", "…")]
    at = 0
    for n, line in enumerate(wanted):
        pattern = line_pattern(line)
        while at < len(actual) and not pattern.fullmatch(actual[at].strip()):
            at += 1
        if at == len(actual):
            return wanted[n:]
        at += 1
    return []


@dataclass
class Command:
    line: int
    args: list[str]
    expected: list[str]


def console_commands(block: Block) -> list[Command]:
    commands: list[Command] = []
    for offset, line in enumerate(block.lines, 1):
        if line.startswith("$ "):
            args = split_command(line)
            assert args is not None, f"{block.page.relative_to(ROOT)}:{block.line + offset}: a console block runs drupelet only"
            commands.append(Command(block.line + offset, args, []))
        else:
            assert commands, f"{block.page.relative_to(ROOT)}:{block.line + offset}: output before the first command"
            commands[-1].expected.append(line)
    return commands


class Session:
    def __init__(self, directory: Path) -> None:
        self.work = directory / "work"
        self.work.mkdir()
        for name in ("actors", "images"):  # the pages' relative paths, from a scratch directory
            (self.work / name).symlink_to(ROOT / name)
        self.cache = directory / "cache"
        self.node = DocNode(directory)

    def close(self) -> None:
        self.node.stop()

    def ensure_node(self) -> None:
        if self.node.starts == 0:
            self.node.start()

    def restart(self) -> None:
        if self.node.starts == 0:
            self.node.start()
        else:
            self.node.restart()

    def run(self, page: Page, command: Command) -> None:
        needs_node = not command.args or command.args[0] not in NO_NATS
        if needs_node:
            self.ensure_node()
        argv = [sys.executable, "-m", "drupelet.node.cli", *(["--nats", self.node.url] if needs_node else []),
                *command.args]
        expected = [line.replace(DOC_DATA_DIR, str(self.node.data_dir)) for line in command.expected]
        shown = [line for line in expected if line.strip()]
        status = 1 if shown and shown[0].lstrip().startswith("drupelet: ") else 0
        retry = tuple(command.args[:1]) in READS or tuple(command.args[:2]) in READS
        deadline = time.monotonic() + (RETRY_S if retry else 0.0)
        while True:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, cwd=self.work,
                                  env=clean_env(XDG_CACHE_HOME=str(self.cache)))
            output = (done.stdout + done.stderr).splitlines()
            missing = missing_lines(expected, output)
            if (done.returncode == status and not missing) or time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        where = f"{page.name}:{command.line}: `drupelet {shlex.join(command.args)}`"
        assert done.returncode == status, (
            f"{where} exited {done.returncode}, the page says {status}:\n{done.stdout}{done.stderr}"
            f"\n--- node log ---\n{self.node.log_text()[-3000:]}")
        assert not missing, (f"{where}: the page shows lines the output lacks, from {missing[0]!r}:\n"
                             f"{done.stdout}{done.stderr}")

    def check_log(self, block: Block) -> None:
        self.ensure_node()
        expected = [LOG_PREFIX.sub("", line).replace(DOC_DATA_DIR, str(self.node.data_dir)) for line in block.lines]
        actual = [LOG_PREFIX.sub("", line) for line in self.node.log_text().splitlines()]
        missing = missing_lines(expected, actual)
        assert not missing, (f"{block.page.relative_to(ROOT)}:{block.line}: the node's log lacks {missing[0]!r}:\n"
                             f"{self.node.log_text()}")


RUNNABLE = [page for page in all_pages()
            if any(b.info == "console" or b.markers & {"restart", "node log"} for b in page.blocks)]


def test_there_are_sessions_to_run() -> None:
    assert CLI_PAGE in [page.path for page in RUNNABLE]


@pytest.mark.parametrize("page", RUNNABLE, ids=[page.name for page in RUNNABLE])
def test_console_blocks_run_against_a_node(page: Page, tmp_path: Path) -> None:
    session = Session(tmp_path)
    try:
        for block in page.blocks:
            if "restart" in block.markers:
                session.restart()
            if "node log" in block.markers:
                session.check_log(block)
            if block.info == "console":
                for command in console_commands(block):
                    session.run(page, command)
    finally:
        session.close()
