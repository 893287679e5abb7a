"""``drupelet bench``, ``config-doc`` and ``firstboot``: commands that need no running lattice.

``config-doc`` and ``firstboot`` import neither nats-py nor wasmtime: ``firstboot`` runs at
every boot of a Pi.
"""

from __future__ import annotations

import argparse

from drupelet.node.cli.common import CliError
from drupelet.node.cli.output import emit, table


def bench(args: argparse.Namespace) -> int:
    from drupelet.node.tools.bench import report_rows, run_bench

    if args.http_counter is not None and not args.http_counter.is_file():
        raise CliError(f"--http-counter {args.http_counter}: no such file (build it with: drupelet actor build "
                       "actors/examples/http-counter -o http-counter.wasm)")
    results = run_bench(iterations=args.iterations, http_counter=args.http_counter)
    over = results["missed"]
    summary = (f"\n{len(over)} figure(s) missed their target: {', '.join(over)}" if over
               else "\nevery figure met its target")
    emit(args, results, table(report_rows(results)) + summary)
    return 0


BOOT_FILE_HEADING = "## The boot file (drupelet.toml on the SD card)"


def config_doc(args: argparse.Namespace) -> int:
    """The node config reference, then the boot file's, both from their declarations."""
    from drupelet.node.config import schema_markdown
    from drupelet.node.system.bootfile.schema import boot_markdown

    print(schema_markdown().rstrip())
    print()
    print(BOOT_FILE_HEADING)
    print()
    print("`drupelet firstboot` validates this file at every boot and writes the node config from it.")
    print()
    print(boot_markdown().rstrip())
    return 0


def firstboot(args: argparse.Namespace) -> int:
    from drupelet.node.system.firstboot import run

    return run(args)
