"""``drupelet up --demo``: the hardware demo on simulated hardware, across two nodes.

This process runs two nodes, each on its own nats-server, joined as hub and leaf the way
a laptop and a Raspberry Pi are, in an authenticated lattice it makes for each run (TLS and
credentials on the hub, the actors started and linked by the lattice's admin):

- ``<name>`` (the laptop): the hub server (JetStream domain ``hub``, the lattice's
  state and artifacts; its config made by ``drupelet lattice init`` in
  ``<data_dir>/demo/lattice``) and the thermometer actor, plus the counter example.
- ``pi-1``: a leaf server of the hub with its own JetStream domain, and the hardware
  providers on simulated backends: gpiozero's MockFactory, a simulated I2C bus with a
  TMP102 at 0x48, and luma's dummy OLED (128x64).

The thermometer's links point at pi-1's providers, put through the lattice like any
``drupelet link put``. Every few seconds the laptop's clock ticks, the actor reads the
Pi's sensor over I2C and draws it on the Pi's OLED; the demo presses the Pi's simulated
button now and then, and the actor toggles the Pi's LED. The OLED is printed to the
log and saved as ``<data_dir>/demo/oled.png``.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import io
import logging
import math
import time
from pathlib import Path
from typing import Any

from drupelet.node.config import ActorSpec, LinkSpec, NodeConfig
from drupelet.node.errors import DrupeletError

log = logging.getLogger("drupelet.demo")

PI_NODE = "pi-1"
BUTTON_PIN = 17
LED_PIN = 27
SENSOR_ADDRESS = 0x48
READING_PERIOD_MS = 5000
PRESS_EVERY_S = 7.0
COUNTER_SUBJECT = "demo.counter"
HTTP_ADDRESS = "127.0.0.1:8080"
"""Where the thermometer's page listens on the laptop node (``up --demo --http``)."""
CLI_DEFAULT_NATS = "nats://127.0.0.1:4222"
"""The server a ``drupelet`` command talks to without ``--nats`` (``cli.common.DEFAULT_NATS``:
the tools do not import the CLI)."""


def built_example(name: str, data_dir: Path) -> Path:
    """The example actor ``name`` built with componentize-py (once per source change)."""
    from drupelet.node.tools.build import build_python_actor, example_dir, source_key

    src = example_dir(name)
    out = data_dir / "demo" / f"{name}-{source_key(src)[:16]}.wasm"
    if not out.exists():
        log.info("building the %s example with componentize-py (first run only; tens of seconds) ...", name)
        result = build_python_actor(src, out)
        log.info("built %s (%.1f MB) in %.0f s", out.name, result.size_bytes / 1e6, result.seconds)
    return out


DEMO_CAPS = {
    "thermometer": ("drupelet:hardware/i2c-bus", "drupelet:hardware/display", "drupelet:hardware/gpio",
                    "wasmcloud:messaging", "wasi:keyvalue",  # its world imports wasi:keyvalue too
                    "wasi:http"),  # its page (and its world's outgoing-handler)
    "counter": ("wasi:keyvalue", "wasmcloud:messaging"),
}
"""What each demo actor's claims allow: the interfaces its links give it."""


def signed_example(name: str, built: Path, issuer: Any) -> Path:
    """``built`` signed by the demo's issuer key, with :data:`DEMO_CAPS`, beside it."""
    from drupelet.node.security.claims import sign

    signed, _ = sign(built.read_bytes(), issuer, name=name, ver="demo", caps=DEMO_CAPS[name])
    out = built.with_name(f"{name}.signed.wasm")
    out.write_bytes(signed)
    return out


def demo_links(actor: str = "thermometer", pi: str = PI_NODE, http_address: str = HTTP_ADDRESS) -> list[dict[str, Any]]:
    """The thermometer's lattice links: hardware on the Pi, the clock, messaging and its
    page (on ``http_address``) here."""
    return [
        {"source": actor, "interface": "drupelet:hardware/i2c-bus", "target": f"{pi}/i2c",
         "config": {"buses": "i2c1", "addresses": f"{SENSOR_ADDRESS:#04x}"}},
        {"source": actor, "interface": "drupelet:hardware/display", "target": f"{pi}/display"},
        {"source": actor, "interface": "drupelet:hardware/gpio", "target": f"{pi}/gpio",
         "config": {"pins": f"{BUTTON_PIN},{LED_PIN}", "events": f"{BUTTON_PIN}:falling"}},
        {"source": actor, "interface": "wasmcloud:messaging/handler", "target": "local/clock",
         "config": {"timers": f"reading={READING_PERIOD_MS}"}},
        {"source": actor, "interface": "wasmcloud:messaging/consumer", "target": "local/messaging"},
        {"source": actor, "interface": "wasi:http/incoming-handler", "target": "local/http",
         "config": {"address": http_address, "instances": "reuse"}},
    ]


def counter_links() -> list[dict[str, Any]]:
    """The counter's links: a bucket here, and the messaging subject it answers on."""
    return [{"source": "counter", "interface": "wasi:keyvalue", "target": "local/keyvalue", "config": {}},
            {"source": "counter", "interface": "wasmcloud:messaging", "target": "local/messaging",
             "config": {"subscriptions": COUNTER_SUBJECT}}]


def pi_providers() -> dict[str, dict[str, Any]]:
    """Simulated backends for the Pi node, whatever the environment says."""
    return {"gpio": {"backend": "mock"}, "i2c": {"backend": "sim"}, "display": {"driver": "dummy"}}


def ascii_frame(png: bytes, columns: int | None = None) -> str:
    """A one-bit frame as text, two pixel rows per line (▀ ▄ █), fitted to ``columns``
    (default: the terminal's width): at half size (each character 2x4 pixels) when the
    full frame and its border do not fit."""
    import shutil

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("1")
    cols = columns if columns is not None else shutil.get_terminal_size().columns
    if image.size[0] + 2 > cols:
        image = image.resize((max(1, image.size[0] // 2), max(1, image.size[1] // 2)), Image.Resampling.BOX)
        image = image.point(lambda v: 255 if v >= 64 else 0).convert("1")
    width, height = image.size
    px = image.load()
    assert px is not None
    lines = ["┌" + "─" * width + "┐"]
    for y in range(0, height, 2):
        row = []
        for x in range(width):
            top = bool(px[x, y])
            bottom = bool(px[x, y + 1]) if y + 1 < height else False
            row.append("█" if top and bottom else "▀" if top else "▄" if bottom else " ")
        lines.append("│" + "".join(row) + "│")
    lines.append("└" + "─" * width + "┘")
    return "\n".join(lines)


def blank(png: bytes) -> bool:
    """True for a frame with no pixel lit (the OLED before the first reading)."""
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("1").getbbox() is None


def cli_command(url: str | None, *, lattice_dir: Path | None = None) -> str:
    """The ``drupelet`` command as it can be typed in another shell here: the bare name
    when it is on PATH, else this environment's script; ``--lattice-dir DIR`` for the demo's
    own lattice, else ``--nats URL`` unless the default."""
    import shutil
    import sys

    script = Path(sys.executable).parent / "drupelet"
    on_path = shutil.which("drupelet")
    if on_path and script.is_file() and Path(on_path).resolve() == script.resolve():
        command = "drupelet"
    elif script.is_file():
        command = str(script)
    else:
        command = f"{sys.executable} -m drupelet.node.cli"
    if lattice_dir is not None:
        return f"{command} --lattice-dir {lattice_dir}"
    return command if url in (None, CLI_DEFAULT_NATS) else f"{command} --nats {url}"


def hints(pi: str, cmd: str, http_address: str = HTTP_ADDRESS) -> list[str]:
    """What to try from another shell while the demo runs (``cmd``: :func:`cli_command`)."""
    return [f"curl http://{http_address}/     (the thermometer's page: the Pi's reading now)",
            f"{cmd} nodes",
            f"{cmd} inventory {pi}",
            f"{cmd} display snapshot {pi} -o oled.png",
            f"{cmd} gpio simulate {pi} {BUTTON_PIN} low     (press the button: the LED toggles)",
            f"{cmd} call thermometer now read",
            f"{cmd} call counter {COUNTER_SUBJECT} hi"]


def check_can_start(cfg: NodeConfig) -> None:
    """Fail at once, before the builds, when the hub server's port is taken: the error
    says how to join the server that holds it instead."""
    from drupelet.node.lattice.errors import NatsServerError
    from drupelet.node.lattice.natsserver import check_port_free

    if cfg.nats_url:
        return
    try:
        check_port_free(cfg.nats_embedded_host, cfg.nats_embedded_port)
    except NatsServerError as exc:
        url = f"nats://{cfg.nats_embedded_host}:{cfg.nats_embedded_port}"
        raise NatsServerError(f"cannot start the demo's nats-server: {exc.summary}; to join the server "
                              f"there instead: drupelet up --demo --nats {url}") from None


_NODE: contextvars.ContextVar[str | None] = contextvars.ContextVar("drupelet_demo_node", default=None)
"""The demo node whose work this is: set in the context each node starts and stops in,
and so in every task it spawns."""


class NodeTag(logging.Filter):
    """Starts each log line with ``[node]``: the two demo nodes share one process and one
    log. An actor's worker thread (``actor-<name>-<n>``) is its node's by ``actor_nodes``."""

    def __init__(self, actor_nodes: dict[str, str]) -> None:
        super().__init__()
        self.actor_nodes = actor_nodes

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "demo_node", None) is not None:
            return True
        node = _NODE.get()
        thread = record.threadName or ""
        if node is None and thread.startswith("actor-"):
            node = self.actor_nodes.get(thread.removeprefix("actor-").rsplit("-", 1)[0])
        record.demo_node = node or ""
        if node:
            record.msg = f"[{node}] {record.msg}"
        return True


def node_context(name: str) -> contextvars.Context:
    ctx = contextvars.copy_context()
    ctx.run(_NODE.set, name)
    return ctx


def show_hints(tips: list[str]) -> None:
    log.info("demo: from another shell (Ctrl-C here stops the demo):")
    for tip in tips:
        log.info("demo:   %s", tip)


async def run(cfg: NodeConfig, stop: asyncio.Event, *, auto_press: bool = True,
              http_address: str = HTTP_ADDRESS) -> int:
    """Run both nodes and the demo until ``stop`` is set.

    Without ``nats_url`` the demo runs an authenticated lattice of its own: a lattice
    directory made afresh in ``<data_dir>/demo/lattice`` (``drupelet lattice init``), its hub
    on the embedded server's address with TLS and credentials, the laptop node joining it
    with its node credentials, pi-1 on a leaf server joining as its own node, and the
    actors pushed, started and linked by the lattice's admin. With ``nats_url`` (``--nats``, a
    server already running, say ``wash up``'s) both nodes join that server as it is, open.
    """
    from drupelet.node.security.keys import generate

    check_can_start(cfg)
    demo_dir = cfg.data_dir / "demo"
    issuer = generate("account") if cfg.nats_url else None  # a secured demo signs with its lattice's issuer
    tag = NodeTag({"thermometer": cfg.name, "counter": cfg.name})
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(tag)
    try:
        if cfg.nats_url:
            assert issuer is not None
            await _run_open(cfg, stop, demo_dir, issuer, auto_press=auto_press, http_address=http_address)
        else:
            await _run_secured(cfg, stop, demo_dir, auto_press=auto_press, http_address=http_address)
    finally:
        for handler in handlers:
            handler.removeFilter(tag)
    return 0


async def _run_open(cfg: NodeConfig, stop: asyncio.Event, demo_dir: Path, issuer: Any, *, auto_press: bool,
                    http_address: str) -> None:
    """Both nodes on the server ``cfg.nats_url`` names, as it is."""
    from drupelet.node.lattice.client import LatticeClient
    from drupelet.node.node import Node

    log.info("demo: actors signed by the demo issuer %s", issuer.public)
    thermometer = signed_example("thermometer", built_example("thermometer", cfg.data_dir), issuer)
    counter = signed_example("counter", built_example("counter", cfg.data_dir), issuer)
    hosts: list[tuple[Node, contextvars.Context]] = []
    try:
        # The demo's nodes keep their state under <data_dir>/demo, apart from a node that
        # `drupelet up` runs on the default data directory (the walk-through's).
        laptop_cfg = dataclasses.replace(
            cfg, trust_keys=[*cfg.trust_keys, issuer.public], data_dir=demo_dir / cfg.name,
            actors=[*cfg.actors, ActorSpec(name="thermometer", file=thermometer),
                    ActorSpec(name="counter", file=counter)],
            links=[*cfg.links, *(LinkSpec(**link) for link in counter_links())])
        pi_cfg = NodeConfig(name=PI_NODE, lattice=cfg.lattice, labels={"board": "simulated-pi"},
                            data_dir=demo_dir / PI_NODE, nats_url=cfg.nats_url,
                            nats_jetstream_domain=cfg.nats_jetstream_domain, providers=pi_providers(),
                            compile_in_subprocess=cfg.compile_in_subprocess, trust_keys=[issuer.public],
                            trust_allow_unsigned=False)
        for node_cfg in (pi_cfg, laptop_cfg):
            node = Node(node_cfg)
            hosts.append((node, node_context(node.name)))
            await asyncio.create_task(node.start(), context=hosts[-1][1])
        async with await LatticeClient.connect(cfg.nats_url, cfg.lattice) as client:
            for link in demo_links(http_address=http_address):
                await client.lattice_request("link.put", link)
        log.info("demo: node %s runs the thermometer actor; node %s serves its I2C sensor, OLED and GPIO "
                 "(simulated).", cfg.name, PI_NODE)
        tips = hints(PI_NODE, cli_command(cfg.nats_url), http_address)
        show_hints(tips)
        await _drive(hosts[0][0].host, demo_dir, stop, tips, auto_press=auto_press)
    finally:
        for host, ctx in reversed(hosts):
            await asyncio.create_task(host.stop(), context=ctx)


async def _run_secured(cfg: NodeConfig, stop: asyncio.Event, demo_dir: Path, *, auto_press: bool,
                       http_address: str) -> None:
    """The demo's own authenticated lattice: see :func:`run`."""
    from drupelet.node.lattice import latticedir
    from drupelet.node.lattice.client import LatticeClient
    from drupelet.node.lattice.natsserver import free_port
    from drupelet.node.node import Node
    from drupelet.node.security.keys import load_seed

    built = {name: built_example(name, cfg.data_dir) for name in ("thermometer", "counter")}
    lattice = _fresh_lattice(cfg, demo_dir, free_port(cfg.nats_embedded_host))
    issuer = load_seed((lattice.path / "issuer.nk").read_text())
    log.info("demo: an authenticated lattice in %s: TLS and credentials on the hub, actors signed by its issuer %s",
             lattice.path, issuer.public)
    hub = latticedir.hub_server(lattice, demo_dir / "hub")
    hosts: list[tuple[Node, contextvars.Context]] = []
    try:
        await hub.start()
        laptop_creds = _enroll(lattice, cfg.name, demo_dir, messaging=[COUNTER_SUBJECT])
        pi_creds = _enroll(lattice, PI_NODE, demo_dir)
        laptop_cfg = dataclasses.replace(
            cfg, nats_url=lattice.client_url, nats_creds=str(laptop_creds), nats_ca=str(lattice.ca),
            nats_jetstream_domain=lattice.jetstream_domain, nats_authenticated=True,
            trust_keys=[*cfg.trust_keys, *lattice.trust], data_dir=demo_dir / cfg.name)
        pi_cfg = NodeConfig(name=PI_NODE, lattice=cfg.lattice, labels={"board": "simulated-pi"},
                            data_dir=demo_dir / PI_NODE, nats_embedded_port=0, nats_hub_url=lattice.hub_url,
                            nats_hub_creds=str(pi_creds), nats_hub_ca=str(lattice.ca),
                            nats_jetstream_domain=lattice.jetstream_domain, nats_authenticated=True,
                            providers=pi_providers(), compile_in_subprocess=cfg.compile_in_subprocess,
                            trust_keys=lattice.trust, trust_allow_unsigned=False)
        async with await LatticeClient.connect(lattice.client_url, lattice.name, creds=str(lattice.admin_creds),
                                               tls_ca=str(lattice.ca), timeout_s=120.0) as admin:
            await admin.writer.ensure()  # the admin makes the lattice state; the nodes only read it
            for node_cfg in (pi_cfg, laptop_cfg):
                node = Node(node_cfg)
                hosts.append((node, node_context(node.name)))
                await asyncio.create_task(node.start(), context=hosts[-1][1])
            await _place_actors(admin, built, issuer, demo_dir, cfg.name, http_address)
        log.info("demo: node %s runs the thermometer actor; node %s serves its I2C sensor, OLED and GPIO "
                 "(simulated).", cfg.name, PI_NODE)
        tips = hints(PI_NODE, cli_command(None, lattice_dir=lattice.path), http_address)
        show_hints(tips)
        await _drive(hosts[0][0].host, demo_dir, stop, tips, auto_press=auto_press)
    finally:
        for host, ctx in reversed(hosts):
            await asyncio.create_task(host.stop(), context=ctx)
        await hub.stop()


def _fresh_lattice(cfg: NodeConfig, demo_dir: Path, leaf_port: int) -> Any:
    """A lattice directory made afresh for this run (the hub's storage with it), and the demo
    nodes' copies of the last run's state forgotten: every run starts from a clean lattice."""
    import shutil

    from drupelet.node.lattice import latticedir

    for old in (demo_dir / "lattice", demo_dir / "hub", *(demo_dir / n / "state.json" for n in (cfg.name, PI_NODE))):
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink(missing_ok=True)
    host = cfg.nats_embedded_host
    return latticedir.init(demo_dir / "lattice", cfg.lattice, hub_url=f"tls://{host}:{leaf_port}",
                           client_url=f"tls://{host}:{cfg.nats_embedded_port}", listen=host)


def _enroll(lattice: Any, node: str, demo_dir: Path, *, messaging: list[str] | None = None) -> Path:
    """A node's credentials file, as ``drupelet lattice enroll`` makes them."""
    made = lattice.add_user(node, "node", messaging=messaging or [])
    path = demo_dir / "lattice" / f"{node}.creds"
    path.write_text(made.creds)
    path.chmod(0o600)
    return Path(path)


async def _place_actors(admin: Any, built: dict[str, Path], issuer: Any, demo_dir: Path, laptop: str,
                        http_address: str) -> None:
    """Push the signed examples, start them on the laptop node and link them, as the admin."""
    from drupelet.node.lattice.artifacts import ArtifactStore

    store = ArtifactStore(admin.nc, admin.lattice, demo_dir / "push-cache")
    for name, path in built.items():
        digest = (await store.put(signed_example(name, path, issuer).read_bytes(), name=name)).digest
        await admin.start_actor(laptop, {"name": name, "digest": digest})
    for link in [*demo_links(http_address=http_address), *counter_links()]:
        await admin.lattice_request("link.put", link)


HINTS_EVERY_S = 60.0
"""How often the demo prints its hints again, so they do not scroll away."""


async def _drive(pi: Any, demo_dir: Path, stop: asyncio.Event, tips: list[str], *, auto_press: bool) -> None:
    """Warm the simulated sensor slowly, press the button now and then (unless
    ``auto_press`` is off), show the OLED when its frame changes, repeat the hints."""
    sensor = pi.providers["i2c"].sim_device("i2c1", SENSOR_ADDRESS)
    started = time.monotonic()
    next_press = started + PRESS_EVERY_S
    next_hints = started + HINTS_EVERY_S
    last_frame = b""
    while not stop.is_set():
        elapsed = time.monotonic() - started
        sensor.set_temperature(round(21.0 + 2.5 * math.sin(elapsed / 40.0), 2))
        if auto_press and time.monotonic() >= next_press:
            next_press += PRESS_EVERY_S
            log.info("demo: pressing the button on %s pin %d (up --demo --no-auto-press turns this off)",
                     pi.name, BUTTON_PIN)
            try:
                await pi.gpio_simulate(BUTTON_PIN, False)
                await asyncio.sleep(0.1)
                await pi.gpio_simulate(BUTTON_PIN, True)
            except DrupeletError as exc:
                log.warning("demo: %s", exc.message)
        try:
            frame = await pi.display_snapshot()
        except DrupeletError as exc:
            log.warning("demo: %s", exc.message)
            frame = last_frame
        if frame != last_frame and not (not last_frame and blank(frame)):
            last_frame = frame
            (demo_dir / "oled.png").write_bytes(frame)
            log.info("demo: %s's OLED shows (saved to %s):\n%s", pi.name, demo_dir / "oled.png", ascii_frame(frame))
        if time.monotonic() >= next_hints:
            next_hints += HINTS_EVERY_S
            show_hints(tips)
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
