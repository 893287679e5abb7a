"""``drupelet``: one command line for the laptop and the Pi.

:func:`main` parses (:mod:`drupelet.node.cli.parser`), sets up logging and runs the
chosen command's handler. It is the one place that turns an expected failure into one
line on stderr and exit status 1 (:class:`~drupelet.node.cli.common.CliError`, any
:class:`~drupelet.node.errors.DrupeletError`), and Ctrl-C into 130; usage errors exit
2, as argparse does.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from drupelet.node.cli.common import CliError
from drupelet.node.cli.parser import build_parser, resolve_globals
from drupelet.node.errors import DrupeletError

__all__ = ["build_parser", "main"]


def _setup_logging(verbosity: int) -> None:
    from drupelet.node.system.logsetup import setup_logging

    level = logging.DEBUG if verbosity >= 1 else logging.INFO if verbosity == 0 else logging.WARNING
    setup_logging(level, quiet_nats=verbosity < 1)  # journald under systemd, else stderr


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_globals(args)
    if args.handler is None:
        parser.print_help()
        return 2
    _setup_logging(args.default_verbosity + args.verbose)
    try:
        status: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"drupelet: {exc}", file=sys.stderr)
        return 1
    except DrupeletError as exc:
        print(f"drupelet: {exc.message}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
