"""``drupelet``: one command line for the laptop and the Pi.

:func:`main` parses (:mod:`drupelet.node.cli.parser`), sets up logging and runs the
chosen command's handler. It is the one place that turns an expected failure into one
line on stderr and exit status 1 (:class:`~drupelet.node.cli.common.CliError`, any
:class:`~drupelet.node.errors.DrupeletError`, an ``OSError``), and Ctrl-C into 130; usage
errors exit 2, as argparse does. Under ``--json`` that line is a JSON object on stdout,
``{"error": CODE, "message": TEXT}``, still with exit status 1. A reader that closes the
pipe early (``drupelet config-doc | head``) ends the command quietly.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from drupelet.node.cli.common import CliError
from drupelet.node.cli.output import to_json
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
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _pipe_closed()
    except CliError as exc:
        return fail(args, exc.code, str(exc))
    except DrupeletError as exc:
        return fail(args, exc.code, exc.message)
    except OSError as exc:  # a file to read or write, a socket: the reason is the message
        where = f": {exc.filename}" if exc.filename else ""
        return fail(args, "os-error", f"{exc.strerror or exc}{where}")
    return status


def fail(args: object, code: str, message: str) -> int:
    """Report an expected failure: one line on stderr, or under ``--json`` one JSON object
    ``{"error": code, "message": message}`` on stdout. The exit status, 1."""
    if getattr(args, "json", False):
        print(to_json({"error": code, "message": message}, one_line=True), flush=True)
    else:
        print(f"drupelet: {message}", file=sys.stderr)
    return 1


def _pipe_closed() -> int:
    """stdout's reader has gone: point stdout at /dev/null so the interpreter's own flush
    at exit raises nothing, and end as a program killed by SIGPIPE would report."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


if __name__ == "__main__":
    sys.exit(main())
