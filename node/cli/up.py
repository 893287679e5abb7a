"""``drupelet up``: run a node until SIGINT or SIGTERM.

:func:`serve` is the whole life of the node process: build the node, start it, tell
systemd, wait for a signal, stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from drupelet.node.cli.common import CliError
from drupelet.node.config import NodeConfig, load

# Not __name__: the node's own lines are "drupelet.cli: node … ready", as the README shows
# and the systemd tests read; the name says which program speaks, not which module.
log = logging.getLogger("drupelet.cli")


def up(args: argparse.Namespace) -> int:
    return asyncio.run(_up(args))


def load_config(args: argparse.Namespace) -> NodeConfig:
    """The node config: ``--config`` (or the defaults) with the command line's overrides."""
    cfg = load(args.config) if args.config else NodeConfig()
    if args.name:
        cfg.name = args.name
    if args.lattice:
        cfg.lattice = args.lattice
    if args.nats:
        cfg.nats_url = args.nats
    if args.creds:
        cfg.nats_creds = args.creds
    if args.tls_ca:
        cfg.nats_ca = args.tls_ca
    if args.hub:
        cfg.nats_hub_url = args.hub
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
    cfg = load_config(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.demo and cfg.nats_hub_url:
        raise CliError("--demo runs its own hub and leaf servers; leave out --hub (or nats.hub_url)")
    if args.http and not args.demo:
        raise CliError("--http is where the demo's thermometer page listens; it goes with --demo")
    if args.demo:
        from drupelet.node.tools import demo

        status: int = await demo.run(cfg, stop, auto_press=not args.no_auto_press,
                                     http_address=args.http or demo.HTTP_ADDRESS)
        return status
    return await serve(cfg, stop)


async def serve(cfg: NodeConfig, stop: asyncio.Event) -> int:
    """Run a node until ``stop`` is set, telling systemd how it goes when under a
    ``Type=notify`` unit (READY=1, STATUS=, WATCHDOG=1, STOPPING=1; see sdnotify)."""
    from drupelet.node.node import Node
    from drupelet.node.system.sdnotify import Notifier

    loop = asyncio.get_running_loop()
    notifier = Notifier()
    notifier.status(f"starting node {cfg.name}")
    node = Node(cfg)
    try:
        started = await until_stopped(node.start(), stop, on_cancel=node.stop)
    except BaseException:
        notifier.status("failed to start; the journal says why")
        raise
    if not started:
        notifier.stopping("stopped while starting")
        return 0
    # node.start() has restored the node's actors and links, and its NATS connection is
    # up; the lattice state says whether the hub is reachable.
    notifier.ready(node.status_line())
    node.on_event(lambda kind, data: notifier.refresh_status())
    tasks = [t for t in (notifier.run_watchdog(loop, node.health_for_watchdog),
                         notifier.run_status(loop, node.status_line)) if t is not None]
    try:
        url = node.nats.connected_url.geturl() if node.nats and node.nats.connected_url else "(none)"
        log.info("node %s ready (%s); NATS %s; lattice %s. Ctrl-C stops it.", node.name, node.status_line(), url,
                 node.lattice)
        await stop.wait()
        log.info("stopping node %s", node.name)
    finally:
        notifier.stopping()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await node.stop()
    return 0


async def until_stopped(work: Coroutine[Any, Any, Any], stop: asyncio.Event,
                        on_cancel: Callable[[], Awaitable[Any]] | None = None) -> bool:
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
    await asyncio.gather(stopping, return_exceptions=True)
    running.result()
    return True
