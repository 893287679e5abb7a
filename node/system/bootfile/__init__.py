"""First-boot configuration: the boot partition's ``drupelet.toml``, installed to ``/etc/drupelet``.

``drupelet firstboot`` runs at every boot (``drupelet-firstboot.service``, before the
node and its local nats-server). It reads the one file a person edits on the SD card's
FAT boot partition, validates it (:mod:`.schema`; ``images/drupelet.toml`` is the
documented example), and installs what the rest of the image reads:

| file in ``/etc/drupelet`` | what it is | mode |
|---|---|---|
| ``node.toml`` | the node config (:mod:`drupelet.node.config`): name, lattice, labels, the local NATS server and the hub's JetStream domain, the hardware providers on their real backends; checked with the node's own loader before it is installed | 0644 |
| ``nats-leaf.conf`` | ``systemd/nats-leaf.conf.in`` with the node name, the hub URL, the credentials file and ``<state>/nats`` filled in | 0644 |
| ``leaf.creds`` | the leaf connection's credentials; absent when the boot file has none | 0600, owned by the ``drupelet`` user when it exists (it runs nats-server) |
| ``hub-ca.pem`` | the CA the hub's TLS certificate must be signed by (``[hub] ca``); absent when the boot file has none | 0644 |
| ``trusted-keys`` | the issuer public keys of ``[trust] keys``, one a line | 0644 |

The boot file is the source of truth and stays where it is: editing it and rebooting
applies the change, and these files are rewritten from it (hand edits to them last
until the next boot). Only a file whose content, mode or owner differs is touched
(:mod:`.install`). A file that does not validate changes nothing in ``/etc/drupelet``;
the reason goes to the log, an error file and the display (:mod:`.report`).

The modules, each importing only those before it: :mod:`.nkeys` (credentials and
keys), :mod:`.schema` (the sections and their checks), :mod:`.render` (the files'
texts), :mod:`.install` (plan and apply), :mod:`.report` (the error file and the
display), :mod:`.enroll` (the boot file ``drupelet lattice enroll`` writes for a node). The boot path imports no wasmtime, no
NATS client and no display code unless a display must be drawn.

Exit status: 0 when the file was applied or there is nothing to do (no file at the
default path), 1 when it was not applied (a bad file, ``/etc/drupelet`` could not be
written, or a ``--boot FILE`` named on the command line does not exist).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from drupelet.node.errors import ConfigError

from . import report
from .install import apply, outputs, plan
from .schema import load_boot_file

log = logging.getLogger(__name__)

BOOT_FILE = Path("/boot/firmware/drupelet.toml")
ETC_DIR = Path("/etc/drupelet")
STATE_DIR = Path("/var/lib/drupelet")

VERBS = {"write": "write", "remove": "remove", "metadata": "fix the mode or owner of"}


def firstboot(*, boot: Path = BOOT_FILE, etc: Path = ETC_DIR, state: Path = STATE_DIR, dry_run: bool = False,
              out: TextIO | None = None) -> int:
    """Validate ``boot`` and install it to ``etc`` (see the module docstring). What was
    done (or, for a dry run, would be) goes to ``out`` (default stdout), one line each;
    failures go to the log. Returns the exit status."""
    stream = out if out is not None else sys.stdout
    etc, state = etc.absolute(), state.absolute()
    if not boot.exists():
        stream.write(f"drupelet firstboot: no {boot}, nothing to do\n")
        return 0
    try:
        cfg = load_boot_file(boot)
        changes = plan(outputs(cfg, etc=etc, state=state))
    except ConfigError as exc:
        short = str(exc).removeprefix(f"{exc.path}: ") if exc.path else str(exc)
        return report.report_failure(boot, etc, str(exc), short, dry_run=dry_run)
    except (OSError, ValueError) as exc:
        return report.report_failure(boot, etc, f"cannot prepare the files for {etc}: {exc}", str(exc),
                                     dry_run=dry_run)
    if dry_run:
        for change in changes:
            stream.write(f"would {VERBS[change.action]} {change.output.path}\n")
        stream.write(f"drupelet firstboot: {boot} is valid; " +
                     (f"{len(changes)} change(s) to {etc}\n" if changes else f"{etc} already matches it\n"))
        return 0
    try:
        apply(changes)
    except OSError as exc:
        return report.report_failure(boot, etc, f"cannot install {boot} into {etc}: {exc}", str(exc), dry_run=False)
    report.clear_failure(boot)
    if changes:
        done = "; ".join(f"{VERBS[c.action]} {c.output.path.name}" for c in changes)
        stream.write(f"drupelet firstboot: applied {boot} to {etc}: {done}\n")
    else:
        stream.write(f"drupelet firstboot: {etc} already matches {boot}; nothing written\n")
    return 0


# -- command line ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``drupelet firstboot``."""
    parser.add_argument("--boot", type=Path, default=None, metavar="FILE",
                        help=f"the boot file to apply (default {BOOT_FILE}; a file named here must exist)")
    parser.add_argument("--etc", type=Path, default=ETC_DIR, metavar="DIR",
                        help=f"where node.toml, nats-leaf.conf, leaf.creds and trusted-keys go (default {ETC_DIR})")
    parser.add_argument("--state", type=Path, default=STATE_DIR, metavar="DIR",
                        help=f"the node's state directory; the leaf server's JetStream store is <DIR>/nats "
                             f"(default {STATE_DIR})")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and print what would change, write nothing")


def run(args: argparse.Namespace) -> int:
    """``drupelet firstboot`` after parsing (the CLI's handler)."""
    if args.boot is not None and not args.boot.exists():
        # Only the default boot file may be absent (an image without one): a file named on
        # the command line that is not there is a mistake to report, not "nothing to do".
        print(f"drupelet firstboot: no such file {args.boot}", file=sys.stderr)
        return 1
    return firstboot(boot=args.boot or BOOT_FILE, etc=args.etc, state=args.state, dry_run=args.dry_run)


def main(argv: Sequence[str] | None = None) -> int:
    """``drupelet firstboot [options]`` on its own: parses its options with
    :func:`add_arguments`, sends the log to the journal or stderr, and runs."""
    from drupelet.node.system.logsetup import setup_logging

    parser = argparse.ArgumentParser(prog="drupelet firstboot",
                                     description="validate the boot partition's drupelet.toml and install it to "
                                                 f"{ETC_DIR}")
    add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(logging.WARNING)
    return run(args)


__all__ = ["BOOT_FILE", "ETC_DIR", "STATE_DIR", "add_arguments", "firstboot", "main", "run"]
