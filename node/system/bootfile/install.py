"""Installing a validated boot file: the files ``/etc/drupelet`` must hold, and the fewest
changes that make it hold them.

Each file is compared with what is installed; only one whose content, mode or owner
differs is touched, content always through :func:`~drupelet.providers.base.atomic_write`
(a crash leaves the old file or the new one), so a boot with an unchanged boot file
writes nothing to the card.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from drupelet.providers.base import atomic_write

from .render import check_node_toml, leaf_template, render_leaf_conf, render_node_toml, render_trusted_keys
from .schema import UNSAFE_CHARS, BootConfig

NODE_TOML = "node.toml"
LEAF_CONF = "nats-leaf.conf"
LEAF_CREDS = "leaf.creds"
HUB_CA = "hub-ca.pem"
TRUSTED_KEYS = "trusted-keys"
SERVICE_USER = "drupelet"
"""The user the image runs the node and nats-server as; it owns ``leaf.creds``."""
PUBLIC_MODE = 0o644
SECRET_MODE = 0o600


@dataclass(frozen=True)
class Output:
    """One file in the config directory: its bytes (None: it must not exist), mode and owner."""

    path: Path
    data: bytes | None
    mode: int = PUBLIC_MODE
    owner: tuple[int, int] | None = None
    """(uid, gid), or None to leave it to whoever writes it."""


@dataclass(frozen=True)
class Change:
    output: Output
    action: Literal["write", "remove", "metadata"]


def service_owner() -> tuple[int, int] | None:
    """(uid, gid) of :data:`SERVICE_USER` when we run as root and it exists."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def outputs(cfg: BootConfig, *, etc: Path, state: Path) -> list[Output]:
    """What ``etc`` must hold for ``cfg``, in the order it is written. The node config is
    checked (:func:`~.render.check_node_toml`) before anything is planned."""
    for what, directory in (("--etc", etc), ("--state", state)):
        if UNSAFE_CHARS.search(str(directory)):
            raise ValueError(f"{what} {str(directory)!r}: a directory path without spaces, quotes or brackets, please")
    creds = etc / LEAF_CREDS
    ca = etc / HUB_CA
    node_toml = render_node_toml(cfg)
    check_node_toml(node_toml, cfg, etc / NODE_TOML)
    leaf = render_leaf_conf(leaf_template(), cfg, creds=creds if cfg.credentials else None,
                            store_dir=state / "nats", ca=ca if cfg.hub_ca else None)
    return [
        Output(creds, cfg.credentials.encode() if cfg.credentials else None, SECRET_MODE, service_owner()),
        Output(ca, cfg.hub_ca.encode() if cfg.hub_ca else None),
        Output(etc / TRUSTED_KEYS, render_trusted_keys(cfg).encode()),
        Output(etc / LEAF_CONF, leaf.encode()),
        Output(etc / NODE_TOML, node_toml.encode()),
    ]


def plan(wanted: Iterable[Output]) -> list[Change]:
    """The changes that make the files match ``wanted``: nothing for a file that already does."""
    changes: list[Change] = []
    for out in wanted:
        try:
            st = out.path.stat()
            current = out.path.read_bytes()
        except FileNotFoundError:
            if out.data is not None:
                changes.append(Change(out, "write"))
            continue
        if out.data is None:
            changes.append(Change(out, "remove"))
        elif current != out.data:
            changes.append(Change(out, "write"))
        elif (st.st_mode & 0o7777) != out.mode or (out.owner and (st.st_uid, st.st_gid) != out.owner):
            changes.append(Change(out, "metadata"))
    return changes


def apply(changes: Iterable[Change]) -> None:
    """Write, fix and remove files; removals last (the config that named them is rewritten first)."""
    ordered = sorted(changes, key=lambda c: c.action == "remove")
    for change in ordered:
        out = change.output
        if change.action == "remove":
            out.path.unlink(missing_ok=True)
            fsync_dir(out.path.parent)
            continue
        if change.action == "write":
            assert out.data is not None
            atomic_write(out.path, out.data)  # created 0600: never readable by others before its chmod
        if out.owner:
            os.chown(out.path, *out.owner)
        os.chmod(out.path, out.mode)


def write_if_changed(path: Path, data: bytes) -> None:
    """:func:`atomic_write` unless ``path`` already holds ``data``."""
    if not (path.is_file() and path.read_bytes() == data):
        atomic_write(path, data)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
