"""``drupelet``: one command line for the laptop and the Pi.

A thin caller of :class:`~drupelet.node.node.Node` (``up``) and of the NATS protocol
(``call``). Global options work before or after the subcommand and fall back to
``DRUPELET_NATS``, ``DRUPELET_LATTICE``, ``DRUPELET_CREDS`` and ``DRUPELET_JSON``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drupelet.node import __version__

log = logging.getLogger("drupelet.cli")

DEFAULT_NATS = "nats://127.0.0.1:4222"


class CliError(Exception):
    """A failure to report as one line and exit status 1."""


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    default: Any = None if top else argparse.SUPPRESS
    g = parser.add_argument_group("global options")
    g.add_argument("--nats", default=default, metavar="URL", help="NATS server URL [env DRUPELET_NATS]")
    g.add_argument("--lattice", default=default, metavar="NAME", help="lattice name [env DRUPELET_LATTICE]")
    g.add_argument("--creds", default=default, metavar="FILE", help="NATS credentials file [env DRUPELET_CREDS]")
    g.add_argument("--json", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="machine-readable output [env DRUPELET_JSON=1]")
    g.add_argument("-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
                   help="more log output: -v for debug (other commands than up: -v info, -vv debug)")


def _selector(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--node", help="node name")
    g.add_argument("--label", action="append", default=[], metavar="K=V", help="every node with these labels")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drupelet", description="A lattice node for Raspberry Pi.")
    parser.add_argument("--version", action="version", version=f"drupelet {__version__}")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _global_options(p, top=False)
        return p

    up = add("up", "run a node (with an embedded nats-server unless --nats or the config names one)")
    up.add_argument("--config", type=Path, metavar="FILE", help="node config (TOML)")
    up.add_argument("--name", help="node name (default: config, then the host name)")
    up.add_argument("--label", action="append", default=[], metavar="K=V", help="add a label (repeatable)")
    up.add_argument("--data-dir", type=Path, metavar="DIR", help="state directory")
    up.add_argument("--demo", action="store_true",
                    help="run the hardware demo instead: this node plus a simulated Pi node (pi-1) on a leaf "
                         "server, the thermometer actor here driving the Pi's sensor, OLED and LED")

    actor = add("actor", "build, start, stop, scale and list actors")
    actor_sub = actor.add_subparsers(dest="actor_command", metavar="ACTION", required=True)

    def actor_add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = actor_sub.add_parser(name, help=help_text, description=help_text)
        _global_options(p, top=False)
        return p

    build = actor_add("build", "build a Python actor directory into a component")
    build.add_argument("dir", type=Path)
    build.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    start = actor_add("start", "start an actor from a pushed artifact on a node, or on every node with the labels")
    start.add_argument("ref", metavar="DIGEST|NAME", help="artifact digest (sha256:… or hex) or the name it was pushed with")
    start.add_argument("--name", required=True, help="actor name")
    start.add_argument("--instances", type=int, default=1)
    start.add_argument("--config", action="append", default=[], metavar="K=V", help="config value (repeatable)")
    _selector(start)
    stop = actor_add("stop", "stop an actor")
    stop.add_argument("name")
    _selector(stop, required=False)
    scale = actor_add("scale", "change how many instances of an actor run")
    scale.add_argument("name")
    scale.add_argument("instances", type=int)
    _selector(scale, required=False)
    actor_add("list", "list the actors of every node")

    push = add("push", "upload a component to the lattice's artifact store and print its digest")
    push.add_argument("file", type=Path)
    push.add_argument("--name", help="a name to start it by (default: the file name without .wasm)")
    push.add_argument("--domain", default=None, help="JetStream domain of the store (a leaf's hub)")

    link = add("link", "put, delete and list the lattice's links")
    link_sub = link.add_subparsers(dest="link_command", metavar="ACTION", required=True)
    lput = link_sub.add_parser("put", help="link an actor's import to a provider (every node follows)")
    _global_options(lput, top=False)
    lput.add_argument("source", help="actor name")
    lput.add_argument("interface", help="an interface (wasi:keyvalue/store) or a package (wasi:keyvalue)")
    lput.add_argument("target", help="local/<provider> or <node>/<provider>")
    lput.add_argument("--config", action="append", default=[], metavar="K=V", help="link config (repeatable)")
    ldel = link_sub.add_parser("del", help="delete a link (or every link of a package)")
    _global_options(ldel, top=False)
    ldel.add_argument("source")
    ldel.add_argument("interface")
    llist = link_sub.add_parser("list", help="list the lattice's links")
    _global_options(llist, top=False)

    add("nodes", "list the nodes of the lattice")
    inventory = add("inventory", "show a node's actors, providers and links (default: every node)")
    inventory.add_argument("node", nargs="?")
    logs = add("logs", "show actor logs from every node")
    logs.add_argument("-f", "--follow", action="store_true", required=True, help="stream until interrupted")
    logs.add_argument("--actor", help="only this actor")
    events = add("events", "show node events (CloudEvents) from every node")
    events.add_argument("-f", "--follow", action="store_true", required=True, help="stream until interrupted")

    display = add("display", "the displays of nodes")
    display_sub = display.add_subparsers(dest="display_command", metavar="ACTION", required=True)
    snap = display_sub.add_parser("snapshot", help="save what a node's display shows as a PNG")
    _global_options(snap, top=False)
    snap.add_argument("node")
    snap.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    snap.add_argument("--provider", default="display", help="the display provider's name")

    gpio = add("gpio", "the GPIO pins of nodes")
    gpio_sub = gpio.add_subparsers(dest="gpio_command", metavar="ACTION", required=True)
    gsim = gpio_sub.add_parser("simulate", help="drive a simulated input pin high or low (a button press is low)")
    _global_options(gsim, top=False)
    gsim.add_argument("node")
    gsim.add_argument("pin", type=int)
    gsim.add_argument("level", choices=["high", "low"])

    call = add("call", "send a message to an actor's handler and print its reply")
    call.add_argument("actor")
    call.add_argument("subject", help="the subject the actor's handler sees")
    call.add_argument("body", nargs="?", default="", help="message body (default: empty; - reads stdin)")
    call.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")

    bench = add("bench", "measure the node against raw wasmtime-py baselines")
    bench.add_argument("--iterations", type=int, default=2000, help="calls per measurement")

    add("config-doc", "print the node config reference (Markdown)")

    from drupelet.node.system.firstboot import add_arguments as firstboot_arguments

    firstboot_arguments(add("firstboot", "validate the boot partition's drupelet.toml and install it to /etc/drupelet"))
    return parser


def _env_defaults(args: argparse.Namespace) -> None:
    args.nats = args.nats or os.environ.get("DRUPELET_NATS") or None
    args.lattice = args.lattice or os.environ.get("DRUPELET_LATTICE") or None
    args.creds = args.creds or os.environ.get("DRUPELET_CREDS") or None
    args.json = bool(args.json or os.environ.get("DRUPELET_JSON", "") not in ("", "0"))


def _setup_logging(verbose: int) -> None:
    from drupelet.node.system.logsetup import setup_logging

    level = logging.DEBUG if verbose >= 1 else logging.INFO if verbose == 0 else logging.WARNING
    setup_logging(level, quiet_nats=verbose < 1)  # journald under systemd, else stderr


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _env_defaults(args)
    if args.command is None:
        parser.print_help()
        return 2
    _setup_logging(args.verbose if args.command == "up" else args.verbose - 1)
    try:
        if args.command == "up":
            return asyncio.run(_up(args))
        if args.command == "actor" and args.actor_command == "build":
            return _actor_build(args)
        if args.command in REMOTE_COMMANDS:
            return asyncio.run(_remote(args))
        if args.command == "call":
            return asyncio.run(_call(args))
        if args.command == "bench":
            from drupelet.node.tools.bench import run_bench

            return run_bench(iterations=args.iterations, as_json=args.json)
        if args.command == "firstboot":
            from drupelet.node.system.firstboot import run as run_firstboot

            return run_firstboot(args)
        if args.command == "config-doc":
            from drupelet.node.config import schema_markdown

            print(schema_markdown())
            return 0
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"drupelet: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from drupelet.node.errors import DrupeletError

        if isinstance(exc, DrupeletError):
            print(f"drupelet: {exc.message}", file=sys.stderr)
            return 1
        raise
    parser.error(f"unknown command {args.command!r}")
    return 2


# -- up ------------------------------------------------------------------------------

def _load_config(args: argparse.Namespace) -> Any:
    from drupelet.node.config import NodeConfig, load

    cfg = load(args.config) if args.config else NodeConfig()
    if args.name:
        cfg.name = args.name
    if args.lattice:
        cfg.lattice = args.lattice
    if args.nats:
        cfg.nats_url = args.nats
    if args.creds:
        cfg.nats_creds = args.creds
    if args.data_dir:
        cfg.data_dir = args.data_dir
    for label in args.label:
        key, sep, value = label.partition("=")
        if not sep:
            raise CliError(f"--label {label!r}: use KEY=VALUE")
        cfg.labels[key] = value
    cfg.check()
    return cfg


async def _up(args: argparse.Namespace) -> int:
    """Run a node until SIGINT or SIGTERM, telling systemd how it goes when under a
    ``Type=notify`` unit (READY=1, STATUS=, WATCHDOG=1, STOPPING=1; see sdnotify)."""
    from drupelet.node.node import Node
    from drupelet.node.system.sdnotify import Notifier

    cfg = _load_config(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.demo:
        from drupelet.node.tools import demo

        return await demo.run(cfg, stop)
    notifier = Notifier()
    notifier.status(f"starting node {cfg.name}")
    host = Node(cfg)
    try:
        started = await _until_stopped(host.start(), stop, on_cancel=host.stop)
    except BaseException:
        notifier.status("failed to start; the journal says why")
        raise
    if not started:
        notifier.stopping("stopped while starting")
        return 0
    # host.start() has restored the node's actors and links, and its NATS connection is
    # up; the lattice state says whether the hub is reachable.
    notifier.ready(host.status_line())
    host.on_event(lambda kind, data: notifier.refresh_status())
    tasks = [t for t in (notifier.run_watchdog(loop, host.health_for_watchdog),
                         notifier.run_status(loop, host.status_line)) if t is not None]
    try:
        url = host.nats.connected_url.geturl() if host.nats and host.nats.connected_url else "(none)"
        log.info("node %s ready (%s); NATS %s; lattice %s. Ctrl-C stops it.", host.name, host.status_line(), url,
                 host.lattice)
        await stop.wait()
        log.info("stopping node %s", host.name)
    finally:
        notifier.stopping()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await host.stop()
    return 0


async def _until_stopped(work: Any, stop: asyncio.Event, on_cancel: Any = None) -> bool:
    """Run ``work`` unless ``stop`` is set first (SIGTERM while starting): then cancel it,
    run ``on_cancel`` and return False. A failure of ``work`` raises here."""
    running = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not running.done():
        log.info("stop requested while starting; stopping")
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        if on_cancel is not None:
            await on_cancel()
        return False
    stopping.cancel()
    running.result()
    return True


# -- remote control ------------------------------------------------------------------

REMOTE_COMMANDS = {"nodes", "inventory", "actor", "logs", "events", "push", "link", "display", "gpio"}


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{what} {item!r}: use KEY=VALUE")
        out[key] = value
    return out


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _emit(args: argparse.Namespace, data: Any, table: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else table)


async def _remote(args: argparse.Namespace) -> int:
    from drupelet.node.lattice.client import LatticeClient

    client = await LatticeClient.connect(args.nats or DEFAULT_NATS, args.lattice or "default", creds=args.creds)
    async with client:
        cmd = {"actor": f"actor {getattr(args, 'actor_command', '')}",
               "link": f"link {getattr(args, 'link_command', '')}"}.get(args.command, args.command)
        if cmd == "nodes":
            nodes = await client.ping()
            rows = [[n["name"], ",".join(f"{k}={v}" for k, v in sorted(n.get("labels", {}).items())),
                     str(n.get("actors", "")), ",".join(n.get("providers", [])), n.get("version", ""),
                     f"{n.get('uptime_s', 0):.0f}s"] for n in nodes]
            _emit(args, nodes, _table(rows, ["node", "labels", "actors", "providers", "version", "uptime"]))
            return 0
        if cmd == "inventory":
            names = [args.node] if args.node else [n["name"] for n in await client.ping()]
            invs = [await client.node(name, "inventory") for name in names]
            _emit(args, invs if not args.node else invs[0], "\n\n".join(_inventory_text(i) for i in invs))
            return 0
        if cmd == "actor list":
            rows, data = [], []
            for n in await client.ping():
                for a in await client.node(n["name"], "actor.list"):
                    data.append(a | {"node": n["name"]})
                    rows.append([n["name"], a["name"], str(a["instances"]), a["digest"][:12], str(a["calls"]),
                                 str(a["traps"])])
            _emit(args, data, _table(rows, ["node", "actor", "instances", "digest", "calls", "traps"]))
            return 0
        if cmd in ("actor start", "actor stop", "actor scale"):
            return await _actor_verb(args, client, cmd.split()[1])
        if cmd in ("logs", "events"):
            return await _follow(args, client)
        if cmd == "push":
            return await _push(args, client)
        if cmd.startswith("link "):
            return await _link(args, client)
        if cmd == "display":
            result = await client.node(args.node, "display.snapshot", {"provider": args.provider})
            png = base64.b64decode(result["png"])
            args.output.write_bytes(png)
            _emit(args, {"node": args.node, "file": str(args.output), "bytes": len(png)},
                  f"wrote {args.output} ({len(png)} bytes) from node {args.node}'s display")
            return 0
        if cmd == "gpio":
            await client.node(args.node, "gpio.simulate", {"pin": args.pin, "level": args.level == "high"})
            _emit(args, {"node": args.node, "pin": args.pin, "level": args.level},
                  f"node {args.node}: simulated pin {args.pin} is {args.level}")
            return 0
    raise CliError(f"unknown command {cmd!r}")


def _inventory_text(inv: dict[str, Any]) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(inv.get("labels", {}).items())) or "-"
    out = [f"node {inv['name']} (lattice {inv['lattice']}, labels {labels}, drupelet {inv['version']}, "
           f"up {inv['uptime_s']:.0f}s, NATS {'connected' if inv['nats']['connected'] else 'DISCONNECTED'})"]
    out.append(_table([[a["name"], str(a["instances"]), a["digest"][:12], str(a["calls"]), str(a["traps"])]
                       for a in inv["actors"]], ["actor", "instances", "digest", "calls", "traps"]))
    out.append(_table([[p["name"], p["health"], ", ".join(p["interfaces"])] for p in inv["providers"]],
                      ["provider", "health", "interfaces"]))
    out.append(_table([[l["source"], l["interface"], l["target"],
                        ",".join(f"{k}={v}" for k, v in sorted(l["config"].items()))] for l in inv["links"]],
                      ["source", "interface", "target", "config"]))
    out.extend(_hardware_text(inv.get("hardware") or {}))
    return "\n\n".join(out)


def _hardware_text(hw: dict[str, Any]) -> list[str]:
    """The inventory's hardware as tables: pins in use, I2C buses, displays."""
    out = []
    gpio = hw.get("gpio")
    if gpio:
        sim = " (simulated)" if gpio.get("simulated") else ""
        rows = [[str(p["pin"]), p["mode"], p["owner"] or "-", str(p["value"])] for p in gpio.get("pins", [])]
        rows += [[str(p["pin"]), "released", "-", str(p["value"])] for p in gpio.get("released", [])]
        out.append(f"GPIO: {gpio.get('backend')}{sim}\n" + _table(rows, ["pin", "mode", "owner", "value"]))
    i2c = hw.get("i2c")
    if i2c:
        sim = " (simulated)" if i2c.get("simulated") else ""
        rows = [[b["name"], b["device"], " ".join(b.get("devices", [])) or "-"] for b in i2c.get("buses", [])]
        out.append(f"I2C: {i2c.get('backend')}{sim}\n" + _table(rows, ["bus", "device", "addresses found"]))
    displays = (hw.get("display") or {}).get("displays", [])
    if displays:
        rows = [[d["name"], d["driver"] + (" (simulated)" if d.get("simulated") else ""),
                 f"{d['width']}x{d['height']}", d["mode"], d.get("owner") or "-"] for d in displays]
        out.append(_table(rows, ["display", "driver", "size", "mode", "owner"]))
    return out


async def _actor_verb(args: argparse.Namespace, client: Any, verb: str) -> int:
    labels = _pairs(args.label, "--label")
    if verb == "start":
        nodes = await client.select(args.node, labels)
        ref = args.ref
        payload: dict[str, Any] = {"name": args.name, "instances": args.instances,
                                   "config": _pairs(args.config, "--config")}
        from drupelet.node.lattice.protocol import DIGEST

        payload["digest" if DIGEST.match(ref) else "reference"] = ref.removeprefix("sha256:")
    else:
        nodes = await client.select(args.node, labels) if (args.node or labels) else [
            n["name"] for n in await client.ping() if args.name in await _actor_names(client, n["name"])]
        if not nodes:
            raise CliError(f"no node runs an actor named {args.name!r}")
        payload = {"name": args.name} | ({"instances": args.instances} if verb == "scale" else {})
    results = []
    for node in nodes:
        result = await client.node(node, f"actor.{verb}", payload, timeout_s=120 if verb == "start" else None)
        results.append({"node": node, "result": result})
        if not args.json:
            detail = f" ({result['instances']} instance(s), {result['digest'][:12]})" if result else ""
            print(f"{verb} {args.name} on {node}: ok{detail}")
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    return 0


async def _link(args: argparse.Namespace, client: Any) -> int:
    if args.link_command == "put":
        links = await client.lattice_request("link.put", {
            "source": args.source, "interface": args.interface, "target": args.target,
            "config": _pairs(args.config, "--config")})
    elif args.link_command == "del":
        links = await client.lattice_request("link.del", {"source": args.source, "interface": args.interface})
    else:
        links = await client.lattice_request("link.list")
    rows = [[l["source"], l["interface"], l["target"], ",".join(f"{k}={v}" for k, v in sorted(l["config"].items()))]
            for l in links]
    verb = {"put": "put ", "del": "deleted "}.get(args.link_command, "")
    table = _table(rows, ["source", "interface", "target", "config"])
    _emit(args, links, (f"{verb}{len(links)} link(s)\n" if verb else "") + table)
    return 0


async def _push(args: argparse.Namespace, client: Any) -> int:
    from drupelet.node.lattice.artifacts import ArtifactStore
    from drupelet.node.runtime import read_component

    try:
        data = read_component(args.file)
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    name = args.name or args.file.name.removesuffix(".wasm").removesuffix(".wat")
    tty = sys.stderr.isatty() and not args.json

    def progress(sent: int, total: int) -> None:
        if tty:
            width = 30
            done = int(width * sent / total) if total else width
            sys.stderr.write(f"\rpushing {args.file.name} [{'#' * done}{' ' * (width - done)}] "
                             f"{sent / 1e6:.1f}/{total / 1e6:.1f} MB")
            sys.stderr.flush()

    store = ArtifactStore(client.nc, client.lattice, _user_cache() / "artifacts", domain=args.domain)
    info = await store.put(data, name=name, progress=progress)
    if tty:
        sys.stderr.write("\n")
    if args.json:
        print(json.dumps(info.to_json(), sort_keys=True))
    else:
        print(f"{info.ref}  {name}  {info.size / 1e6:.1f} MB")
    return 0


def _user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "drupelet"


async def _actor_names(client: Any, node: str) -> list[str]:
    return [a["name"] for a in await client.node(node, "actor.list")]


async def _follow(args: argparse.Namespace, client: Any) -> int:
    from drupelet.node.lattice import subjects

    subject = subjects.logs_all(client.lattice) if args.command == "logs" else subjects.events_all(client.lattice)
    async for msg in client.stream(subject):
        try:
            doc = json.loads(msg.data)
        except ValueError:
            continue
        if args.command == "logs":
            if args.actor and doc.get("actor") != args.actor:
                continue
            line = f"{doc.get('node')}/{doc.get('actor')} {doc.get('level', '').upper():5} " \
                   f"{doc.get('context') + ': ' if doc.get('context') else ''}{doc.get('message')}"
        else:
            data = doc.get("data") or {}
            brief = {k: v for k, v in data.items() if k in ("actor", "provider", "source", "interface", "target",
                                                               "code", "message", "instances")}
            line = f"{doc.get('time', '')} {doc.get('source', '')} {doc.get('type', '').removeprefix('dev.drupelet.')} " \
                   f"{json.dumps(brief, sort_keys=True) if brief else ''}".rstrip()
        print(json.dumps(doc) if args.json else line, flush=True)
    return 0


# -- actor build ---------------------------------------------------------------------

def _actor_build(args: argparse.Namespace) -> int:
    from drupelet.node.tools.build import build_python_actor

    result = build_python_actor(args.dir, args.output)
    if args.json:
        print(json.dumps({"output": str(result.output), "size_bytes": result.size_bytes, "sha256": result.sha256,
                          "seconds": round(result.seconds, 2)}))
    else:
        print(f"built {result.output} ({result.size_bytes / 1e6:.1f} MB, sha256 {result.sha256[:16]}…) "
              f"in {result.seconds:.1f} s")
    return 0


# -- call ----------------------------------------------------------------------------

async def _call(args: argparse.Namespace) -> int:
    import nats
    import nats.errors

    from drupelet.node.lattice import subjects

    body = sys.stdin.buffer.read() if args.body == "-" else args.body.encode()
    url = args.nats or DEFAULT_NATS
    lattice = args.lattice or "default"
    options: dict[str, Any] = {"connect_timeout": 3, "max_reconnect_attempts": 0, "allow_reconnect": False}
    if args.creds:
        options["user_credentials"] = args.creds

    async def _no_errors(exc: Exception) -> None:
        pass

    try:
        # nats-py may retry a first connect that finds no server; bound the whole wait
        nc = await asyncio.wait_for(nats.connect(url, error_cb=_no_errors, **options), 3.0)
    except asyncio.TimeoutError:
        raise CliError(f"cannot connect to NATS at {url}: no answer within 3 s "
                       f"(is `drupelet up` running? set --nats or DRUPELET_NATS)") from None
    except Exception as exc:
        raise CliError(f"cannot connect to NATS at {url}: {exc or type(exc).__name__} "
                       f"(is `drupelet up` running? set --nats or DRUPELET_NATS)") from None
    try:
        try:
            subject = subjects.deliver(lattice, args.actor)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        try:
            reply = await nc.request(subject, body, timeout=args.timeout,
                                     headers={subjects.HEADER_SUBJECT: args.subject})
        except nats.errors.NoRespondersError:
            raise CliError(f"no actor {args.actor!r} is running in lattice {lattice!r}") from None
        except nats.errors.TimeoutError:
            raise CliError(f"actor {args.actor!r} sent no reply within {args.timeout:g} s") from None
    finally:
        await nc.close()
    headers = reply.headers or {}
    if subjects.HEADER_ERROR in headers:
        message = headers.get(subjects.HEADER_MESSAGE, "")
        if args.json:
            print(json.dumps({"ok": False, "error": headers[subjects.HEADER_ERROR], "message": message}))
            return 1
        raise CliError(f"{headers[subjects.HEADER_ERROR]}: {message}")
    if args.json:
        print(json.dumps({"ok": True, "body": reply.data.decode("utf-8", "replace")}))
    else:
        sys.stdout.buffer.write(reply.data + (b"" if reply.data.endswith(b"\n") else b"\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
