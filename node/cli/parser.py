"""Every ``drupelet`` command and its options: the CLI's reference in one place.

The global options live in one parent parser, given to the top parser and to every
(sub)command, so they work before or after the command. They default to *absent*
(``argparse.SUPPRESS``): a subcommand's parser would otherwise overwrite what was given
before it with its own default. :func:`resolve_globals` then fills them from the
environment (``DRUPELET_NATS``, ``DRUPELET_LATTICE``, ``DRUPELET_CREDS``, ``DRUPELET_LATTICE_DIR``,
``DRUPELET_TLS_CA``, ``DRUPELET_JSON``).

Each command sets ``handler``: a :class:`Command` naming the function that runs it, in
the module of its group. That module is imported only when its command runs, so
``drupelet firstboot`` at boot never imports nats-py, wasmtime or the host.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from drupelet.node import __version__

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """The handler of a command: ``function`` of ``drupelet.node.cli.<module>``, imported when called."""

    module: str
    function: str

    def resolve(self) -> Handler:
        module = importlib.import_module(f"drupelet.node.cli.{self.module}")
        return cast(Handler, getattr(module, self.function))

    def __call__(self, args: argparse.Namespace) -> int:
        return self.resolve()(args)


def global_options() -> argparse.ArgumentParser:
    """The parent parser of every command: ``--nats``, ``--lattice``, ``--creds``, ``--lattice-dir``,
    ``--tls-ca``, ``--json``, ``-v``."""
    parent = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    g = parent.add_argument_group("global options")
    g.add_argument("--nats", metavar="URL", help="NATS server URL [env DRUPELET_NATS]")
    g.add_argument("--lattice", metavar="NAME", help="lattice name [env DRUPELET_LATTICE]")
    g.add_argument("--creds", metavar="FILE", help="NATS credentials file [env DRUPELET_CREDS]")
    g.add_argument("--lattice-dir", type=Path, metavar="DIR",
                   help="a lattice directory (drupelet lattice init): its hub, name, CA and admin credentials "
                        "unless --nats, --lattice, --tls-ca or --creds say otherwise [env DRUPELET_LATTICE_DIR]")
    g.add_argument("--tls-ca", metavar="FILE", help="CA certificate the server's TLS certificate must be signed by "
                                                     "[env DRUPELET_TLS_CA]")
    g.add_argument("--json", action="store_true", help="machine-readable output [env DRUPELET_JSON=1]")
    g.add_argument("-v", "--verbose", action="count",
                   help="more log output: -v for debug (other commands than up: -v info, -vv debug)")
    return parent


def resolve_globals(args: argparse.Namespace) -> None:
    """The global options as given, else from the environment; ``nats``, ``lattice`` and
    ``creds`` stay None when neither names them (``up`` then runs its embedded server)."""
    args.nats = getattr(args, "nats", None) or os.environ.get("DRUPELET_NATS") or None
    args.lattice = getattr(args, "lattice", None) or os.environ.get("DRUPELET_LATTICE") or None
    args.creds = getattr(args, "creds", None) or os.environ.get("DRUPELET_CREDS") or None
    lattice_dir = getattr(args, "lattice_dir", None) or os.environ.get("DRUPELET_LATTICE_DIR") or None
    args.lattice_dir = Path(lattice_dir).expanduser() if lattice_dir else None
    args.tls_ca = getattr(args, "tls_ca", None) or os.environ.get("DRUPELET_TLS_CA") or None
    args.json = bool(getattr(args, "json", False) or os.environ.get("DRUPELET_JSON", "") not in ("", "0"))
    args.verbose = getattr(args, "verbose", 0)


class _Commands:
    """Adds (sub)commands that all take the global options."""

    def __init__(self, parser: argparse.ArgumentParser, parent: argparse.ArgumentParser, dest: str,
                 metavar: str, *, required: bool) -> None:
        self._sub = parser.add_subparsers(dest=dest, metavar=metavar, required=required)
        self._parent = parent

    def add(self, name: str, help_text: str, handler: Command | None = None) -> argparse.ArgumentParser:
        p = self._sub.add_parser(name, help=help_text, description=help_text, parents=[self._parent])
        if handler is not None:
            p.set_defaults(handler=handler)
        return p

    def group(self, name: str, help_text: str, dest: str) -> _Commands:
        """A command whose actions are subcommands (``actor start``)."""
        return _Commands(self.add(name, help_text), self._parent, dest, "ACTION", required=True)


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``low`` to ``high``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not from {low} to {high}")
        return value
    return parse


def _node_pin(p: argparse.ArgumentParser, *, level: bool = False) -> None:
    p.add_argument("node")
    p.add_argument("pin", type=int)
    if level:
        p.add_argument("level", choices=["high", "low"])


def _selector(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--node", help="node name")
    g.add_argument("--label", action="append", default=[], metavar="K=V", help="every node with these labels")


def _config_pairs(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--config", action="append", default=[], metavar="K=V", help=f"{what} (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parent = global_options()
    parser = argparse.ArgumentParser(prog="drupelet", description="A lattice node for Raspberry Pi.", allow_abbrev=False,
                                     parents=[parent])
    parser.add_argument("--version", action="version", version=f"drupelet {__version__}")
    # -v counts from INFO for `up` and from WARNING for every other command
    parser.set_defaults(handler=None, default_verbosity=-1)
    commands = _Commands(parser, parent, "command", "COMMAND", required=False)

    up = commands.add("up", "run a node (with an embedded nats-server unless --nats or the config names one)",
                      Command("up", "up"))
    up.set_defaults(default_verbosity=0)
    up.add_argument("--config", type=Path, metavar="FILE", help="node config (TOML)")
    up.add_argument("--name", help="node name (default: config, then the host name)")
    up.add_argument("--label", action="append", default=[], metavar="K=V", help="add a label (repeatable)")
    up.add_argument("--data-dir", type=Path, metavar="DIR", help="state directory")
    # -- up --hub: the embedded server as a leaf of a hub
    up.add_argument("--hub", metavar="URL",
                    help="run the embedded nats-server as a leaf of the hub at this leafnode URL "
                         "(nats-leaf://127.0.0.1:7422), with the node's name as its JetStream domain")
    up.add_argument("--demo", action="store_true",
                    help="run the hardware demo instead: this node plus a simulated Pi node (pi-1) on a leaf "
                         "server, the thermometer actor here driving the Pi's sensor, OLED and LED")
    # -- up --demo options (issue 12) --
    up.add_argument("--no-auto-press", action="store_true",
                    help="with --demo: do not press the simulated button every few seconds "
                         "(press it yourself with gpio simulate)")
    up.add_argument("--http", metavar="HOST:PORT",
                    help="with --demo: where the thermometer's page listens (default 127.0.0.1:8080)")

    actor = commands.group("actor", "build, start, stop, scale and list actors", "actor_command")
    # -- actor build and actor new
    build = actor.add("build", "build a Python actor directory into a component (kept when its sources did not "
                      "change)", Command("authoring", "build"))
    build.add_argument("dir", type=Path)
    build.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    build.add_argument("--force", action="store_true", help="build even when FILE was built from the same sources")
    new = actor.add("new", "write a Python actor skeleton (app.py, actor.toml, README.md) into a new directory",
                    Command("authoring", "new"))
    new.add_argument("name", help="the actor's name (a-z 0-9 _ -)")
    new.add_argument("--dir", type=Path, default=None, metavar="DIR", help="where to write it (default: ./NAME)")
    start = actor.add("start", "start an actor from a pushed artifact on a node, or on every node with the labels",
                      Command("actors", "start"))
    start.add_argument("ref", metavar="DIGEST|NAME", help="artifact digest (sha256:… or hex) or the name it was pushed with")
    start.add_argument("--name", required=True, help="actor name")
    start.add_argument("--instances", type=int, default=1)
    _config_pairs(start, "config value")
    _selector(start)
    stop = actor.add("stop", "stop an actor", Command("actors", "stop"))
    stop.add_argument("name")
    _selector(stop, required=False)
    scale = actor.add("scale", "change how many instances of an actor run", Command("actors", "scale"))
    scale.add_argument("name")
    scale.add_argument("instances", type=int)
    _selector(scale, required=False)
    actor.add("list", "list the actors of every node", Command("actors", "list_actors"))

    push = commands.add("push", "upload a component to the lattice's artifact store and print its digest",
                        Command("actors", "push"))
    push.add_argument("file", type=Path)
    push.add_argument("--name", help="a name to start it by (default: the file name without .wasm)")
    push.add_argument("--domain", default=None, help="JetStream domain of the store (a leaf's hub)")

    # -- artifacts list|rm
    artifacts = commands.group("artifacts", "list and remove the lattice's stored components", "artifacts_command")
    artifacts.add("list", "list the stored components: digest, name, size, when pushed, which actors run them",
                  Command("artifacts", "list_artifacts")).add_argument(
        "--domain", default=None, help="JetStream domain of the store (a leaf's hub)")
    arm = artifacts.add("rm", "remove a stored component (nodes keep their cached copies)",
                        Command("artifacts", "remove"))
    arm.add_argument("ref", metavar="DIGEST|NAME", help="artifact digest (sha256:… or hex) or the name it was pushed with")
    arm.add_argument("--domain", default=None, help="JetStream domain of the store (a leaf's hub)")

    link = commands.group("link", "put, delete and list the lattice's links", "link_command")
    lput = link.add("put", "link an actor's import to a provider (every node follows)", Command("links", "put"))
    lput.add_argument("source", help="actor name")
    lput.add_argument("interface", help="an interface (wasi:keyvalue/store) or a package (wasi:keyvalue)")
    lput.add_argument("target", help="local/<provider> or <node>/<provider>")
    _config_pairs(lput, "link config")
    ldel = link.add("del", "delete a link (or every link of a package)", Command("links", "delete"))
    ldel.add_argument("source")
    ldel.add_argument("interface")
    link.add("list", "list the lattice's links", Command("links", "list_links"))

    keys = commands.group("keys", "make and show nkey key pairs for signing actors", "keys_command")
    kgen = keys.add("gen", "make a key pair: write its seed (0600) and print its public key",
                    Command("signing", "keys_gen"))
    kgen.add_argument("role", choices=["account", "actor", "operator", "user"])
    kgen.add_argument("-o", "--output", type=Path, metavar="FILE", help="seed file (default: print the seed too)")
    kshow = keys.add("show", "print the role and public key of a seed file", Command("signing", "keys_show"))
    kshow.add_argument("file", type=Path)

    sign = commands.add("sign", "sign an actor (module or component) with claims in wasmCloud's format",
                        Command("signing", "sign"))
    sign.add_argument("file", type=Path)
    sign.add_argument("--issuer", type=Path, required=True, metavar="SEED_FILE", help="account (or operator) seed")
    sign.add_argument("--subject", type=Path, metavar="SEED_FILE",
                      help="actor seed (default: keep the file's subject, else a new actor key)")
    sign.add_argument("--name", required=True, help="the actor's name in its claims")
    sign.add_argument("--ver", help="human-readable version (1.2.0)")
    sign.add_argument("--rev", type=int, help="revision number, increasing")
    sign.add_argument("--cap", action="append", default=[], metavar="INTERFACE",
                      help="a capability: an interface or package (wasi:keyvalue), repeatable")
    sign.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    sign.add_argument("--expires-in", metavar="DURATION", help="valid for this long: 90d, 12h, 30m, 45s")
    sign.add_argument("--not-before", metavar="DURATION", help="valid only after this long from now")
    sign.add_argument("-o", "--output", type=Path, metavar="FILE", help="signed file (default: FILE.signed.wasm)")
    claims = commands.add("claims", "show an actor's claims and whether its signature holds (exit 1 if not)",
                          Command("signing", "claims"))
    claims.add_argument("file", type=Path)

    revoke = commands.add("revoke", "revoke an actor subject (M…) or issuer (A…, O…) key on every node: running "
                          "actors it signed or names stop", Command("signing", "revoke"))
    revoke.add_argument("key", metavar="SUBJECT|ISSUER")
    commands.add("revocations", "list the lattice's revoked keys", Command("signing", "revocations"))

    lattice = commands.group("lattice", "make and run an authenticated lattice: keys, credentials, the hub's "
                             "config", "lattice_command")
    linit = lattice.add("init", "make a lattice directory: operator, account and system keys and JWTs, a CA and "
                        "the hub's certificate, the hub's nats-server config, and admin credentials for this machine",
                        Command("lattice", "init"))
    linit.add_argument("name", help="the lattice's name (subjects are drupelet.NAME.…)")
    linit.add_argument("--hub-url", required=True, metavar="URL",
                       help="the hub's leafnode URL, as Pis reach it: tls://HOST:7422")
    linit.add_argument("--client-url", metavar="URL", help="the hub's client URL (default: tls://HOST:4222)")
    linit.add_argument("--listen", default="0.0.0.0", metavar="ADDRESS",
                       help="the address the hub listens on (default 0.0.0.0: every interface)")
    linit.add_argument("--hub-dir", type=Path, metavar="DIR",
                       help="where the hub's files will be on the machine that runs it (default: DIR/hub)")
    linit.add_argument("--trust", action="append", default=[], metavar="KEY",
                       help="another issuer (A…, O…) whose signed actors enrolled nodes run (repeatable; the "
                            "directory's own issuer.nk is always trusted)")
    linit.add_argument("--hub-cert", type=Path, metavar="FILE",
                       help="bring the hub's TLS certificate (PEM) instead of a CA made here")
    linit.add_argument("--hub-key", type=Path, metavar="FILE", help="with --hub-cert: its private key")
    linit.add_argument("--hub-ca", type=Path, metavar="FILE", help="with --hub-cert: the CA that signed it")
    linit.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="the lattice directory")
    enroll = lattice.add("enroll", "make a node's credentials and the drupelet.toml for its SD card's boot "
                         "partition (and a node.toml for drupelet up --config)", Command("lattice", "enroll"))
    enroll.add_argument("node", help="the node's name")
    enroll.add_argument("--messaging", action="append", default=[], metavar="SUBJECT",
                        help="an application subject its actors may publish and subscribe to across the hub "
                             "(NATS wildcards; repeatable)")
    enroll.add_argument("--label", action="append", default=[], metavar="K=V", help="a label of the node (repeatable)")
    enroll.add_argument("-o", "--output", type=Path, required=True, metavar="DIR")
    luser = lattice.add("user", "make credentials for a person or an application", Command("lattice", "user"))
    luser.add_argument("name")
    luser.add_argument("--role", required=True, choices=["admin", "viewer", "client"],
                       help="admin: everything; viewer: read only; client: an application (drupelet call and its "
                            "--messaging subjects)")
    luser.add_argument("--messaging", action="append", default=[], metavar="SUBJECT",
                       help="for a client: an application subject it may publish and subscribe to (repeatable)")
    luser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="the .creds file")
    lrevoke = lattice.add("revoke", "revoke a user's or a node's credentials, and tell the running hub at once",
                          Command("lattice", "revoke"))
    lrevoke.add_argument("name")
    lattice.add("users", "list the lattice directory's users and nodes", Command("lattice", "users"))

    commands.add("nodes", "list the nodes of the lattice", Command("observe", "nodes"))
    inventory = commands.add("inventory", "show a node's actors, providers and links (default: every node)",
                             Command("observe", "inventory"))
    inventory.add_argument("node", nargs="?")
    logs = commands.add("logs", "show the actors' recent log lines from every node (-f: follow them)",
                        Command("observe", "logs"))
    logs.add_argument("-f", "--follow", action="store_true", help="stream new lines until interrupted")
    logs.add_argument("--actor", help="only this actor")
    logs.add_argument("--node", help="only this node (without -f)")
    logs.add_argument("-n", "--lines", type=_bounded_int(1, 1000), default=50, metavar="N",
                      help="without -f: the newest N lines (1 to 1000, default 50)")
    events = commands.add("events", "show node events (CloudEvents) from every node", Command("observe", "events"))
    events.add_argument("-f", "--follow", action="store_true", required=True, help="stream until interrupted")

    display = commands.group("display", "the displays of nodes", "display_command")
    snap = display.add("snapshot", "save what a node's display shows as a PNG", Command("hardware", "display_snapshot"))
    snap.add_argument("node")
    snap.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    snap.add_argument("--provider", default="display", help="the display provider's name")
    snap.add_argument("--scale", type=_bounded_int(1, 16), default=1, metavar="N",
                      help="each pixel as an N×N square (1 to 16, default 1)")

    gpio = commands.group("gpio", "the GPIO pins of nodes", "gpio_command")
    _node_pin(gpio.add("simulate", "drive a simulated input pin high or low (a button press is low)",
                       Command("hardware", "gpio_simulate")), level=True)
    # -- gpio read, write and pins
    _node_pin(gpio.add("read", "read a pin's level (high or low), whoever holds it", Command("hardware", "gpio_read")))
    _node_pin(gpio.add("write", "drive a pin no actor owns high or low (refused on a pin an actor owns)",
                       Command("hardware", "gpio_write")), level=True)
    gpio.add("pins", "show the node's 40-pin header and what each GPIO pin does",
             Command("hardware", "gpio_pins")).add_argument("node")

    call = commands.add("call", "send a message to an actor's handler and print its reply", Command("call", "call"))
    call.add_argument("actor")
    call.add_argument("subject", help="the subject the actor's handler sees")
    call.add_argument("body", nargs="?", default="", help="message body (default: empty; - reads stdin)")
    call.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")

    bench = commands.add("bench", "measure the node against raw wasmtime-py baselines", Command("misc", "bench"))
    bench.add_argument("--iterations", type=int, default=2000, help="calls per measurement")
    bench.add_argument("--http-counter", type=Path, metavar="FILE",
                       help="a built http-counter example (drupelet actor build actors/examples/http-counter): "
                            "also measure the requests per second it answers")

    # -- completion
    commands.add("completion", "print a bash completion script: source <(drupelet completion bash)",
                 Command("completion", "completion")).add_argument("shell", choices=["bash"])

    commands.add("config-doc", "print the node config reference (Markdown)", Command("misc", "config_doc"))

    from drupelet.node.system.firstboot import add_arguments as firstboot_arguments

    firstboot_arguments(commands.add("firstboot", "validate the boot partition's drupelet.toml and install it "
                                     "to /etc/drupelet", Command("misc", "firstboot")))
    return parser
