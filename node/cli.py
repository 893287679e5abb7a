"""``drupelet``: one command line for the laptop and the Pi.

A thin caller of :class:`~drupelet.node.host.Host` (``up``) and of the NATS protocol
(``call``). Global options work before or after the subcommand and fall back to
``DRUPELET_NATS``, ``DRUPELET_LATTICE``, ``DRUPELET_CREDS`` and ``DRUPELET_JSON``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__

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
                    help="also run the counter example: build it if needed, link it, and call it every few seconds")

    actor = add("actor", "build actors")
    actor_sub = actor.add_subparsers(dest="actor_command", metavar="ACTION", required=True)
    build = actor_sub.add_parser("build", help="build a Python actor directory into a component")
    _global_options(build, top=False)
    build.add_argument("dir", type=Path)
    build.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")

    call = add("call", "send a message to an actor's handler and print its reply")
    call.add_argument("actor")
    call.add_argument("subject", help="the subject the actor's handler sees")
    call.add_argument("body", nargs="?", default="", help="message body (default: empty; - reads stdin)")
    call.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")

    bench = add("bench", "measure the node against raw wasmtime-py baselines")
    bench.add_argument("--iterations", type=int, default=2000, help="calls per measurement")

    add("config-doc", "print the node config reference (Markdown)")
    return parser


def _env_defaults(args: argparse.Namespace) -> None:
    args.nats = args.nats or os.environ.get("DRUPELET_NATS") or None
    args.lattice = args.lattice or os.environ.get("DRUPELET_LATTICE") or None
    args.creds = args.creds or os.environ.get("DRUPELET_CREDS") or None
    args.json = bool(args.json or os.environ.get("DRUPELET_JSON", "") not in ("", "0"))


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose >= 1 else logging.INFO if verbose == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if verbose < 1:
        logging.getLogger("nats").setLevel(logging.WARNING)


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
        if args.command == "actor":
            return _actor_build(args)
        if args.command == "call":
            return asyncio.run(_call(args))
        if args.command == "bench":
            from .bench import run_bench

            return run_bench(iterations=args.iterations, as_json=args.json)
        if args.command == "config-doc":
            from .config import schema_markdown

            print(schema_markdown())
            return 0
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"drupelet: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from .errors import DrupeletError

        if isinstance(exc, DrupeletError):
            print(f"drupelet: {exc.message}", file=sys.stderr)
            return 1
        raise
    parser.error(f"unknown command {args.command!r}")
    return 2


# -- up ------------------------------------------------------------------------------

def _load_config(args: argparse.Namespace) -> Any:
    from .config import NodeConfig, load

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
    from .host import Host

    cfg = _load_config(args)
    demo_task: asyncio.Task[None] | None = None
    if args.demo:
        _add_demo(cfg)
    host = Host(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(host.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        log.info("stop requested while starting; stopping")
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await host.stop()
        return 0
    stopping.cancel()
    starting.result()  # a failed start raises here (Host.start has already cleaned up)
    try:
        url = host.nats.connected_url.geturl() if host.nats and host.nats.connected_url else "(none)"
        log.info("node %s ready; NATS %s; lattice %s. Ctrl-C stops it.", host.name, url, host.lattice)
        if args.demo:
            demo_task = asyncio.create_task(_demo_loop(host, stop))
        await stop.wait()
    finally:
        if demo_task is not None:
            demo_task.cancel()
            await asyncio.gather(demo_task, return_exceptions=True)
        await host.stop()
    return 0


DEMO_SUBJECT = "demo.counter"


def _add_demo(cfg: Any) -> None:
    """Add the counter example (built on first use) and its links to ``cfg``."""
    from .build import build_python_actor, example_dir, source_key
    from .config import ActorSpec, LinkSpec

    src = example_dir("counter")
    out = cfg.data_dir / "demo" / f"counter-{source_key(src)[:16]}.wasm"
    if not out.exists():
        log.info("building the counter example with componentize-py (first run only; tens of seconds) ...")
        result = build_python_actor(src, out)
        log.info("built %s (%.1f MB) in %.0f s", out.name, result.size_bytes / 1e6, result.seconds)
    cfg.actors.append(ActorSpec(name="counter", file=out, instances=1, config={"greeting": "count"}))
    cfg.links.append(LinkSpec(source="counter", interface="wasi:keyvalue", target="local/keyvalue"))
    cfg.links.append(LinkSpec(source="counter", interface="wasmcloud:messaging", target="local/messaging",
                              config={"subscriptions": DEMO_SUBJECT}))


async def _demo_loop(host: Any, stop: asyncio.Event) -> None:
    from .errors import DrupeletError

    url = host.nats.connected_url.geturl() if host.nats and host.nats.connected_url else DEFAULT_NATS
    log.info("demo: calling the counter every 3 s; from another shell try:  drupelet --nats %s call counter %s hi",
             url, DEMO_SUBJECT)
    while not stop.is_set():
        try:
            reply = await host.call("counter", DEMO_SUBJECT, b"tick")
            log.info("demo: counter replied %r", reply.decode("utf-8", "replace"))
        except DrupeletError as exc:
            log.warning("demo: %s", exc.message)
        try:
            await asyncio.wait_for(stop.wait(), 3.0)
        except asyncio.TimeoutError:
            pass


# -- actor build ---------------------------------------------------------------------

def _actor_build(args: argparse.Namespace) -> int:
    from .build import build_python_actor

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

    from . import subjects

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
