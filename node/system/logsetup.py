"""Where the node's log goes: journald under systemd, stderr everywhere else.

Only the entry point calls :func:`setup_logging`. It picks one handler for the root
logger, by what stderr is:

- **journal**: stderr is the journal stream systemd set up for the unit (``JOURNAL_STREAM``
  names stderr's device and inode, as systemd.exec(5) says to check) and systemd-python
  is installed. Records go through ``systemd.journal.JournalHandler`` with
  ``SYSLOG_IDENTIFIER=drupelet``, and actor log lines carry ``ACTOR=<name>`` (and
  ``ACTOR_CONTEXT=`` when the actor gave one), so ``journalctl -u drupelet ACTOR=counter``
  shows one actor.
- **journal-stream**: the same, without systemd-python: plain lines on stderr with a
  ``<priority>`` prefix journald turns into the entry's priority, and no timestamp
  (journald adds its own).
- **plain**: anything else (a terminal, a pipe, a file, a shell that merely inherited
  ``JOURNAL_STREAM``): ``HH:MM:SS LEVEL logger: message`` on stderr.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, Literal, TextIO

SYSLOG_IDENTIFIER = "drupelet"
PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
PLAIN_DATEFMT = "%H:%M:%S"
JOURNAL_FORMAT = "%(message)s"

Mode = Literal["journal", "journal-stream", "plain"]

# syslog priorities (sd-daemon.h's SD_* prefixes) by logging level, highest first
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


class ActorFields(logging.Filter):
    """Copies the actor of an actor log record (``extra={"actor": ..., "actor_context":
    ...}``, see ``Host._actor_log``) into upper-case journal fields ``ACTOR`` and
    ``ACTOR_CONTEXT``; JournalHandler sends upper-case record attributes as fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        actor = getattr(record, "actor", None)
        if isinstance(actor, str) and actor:
            record.ACTOR = actor
            context = getattr(record, "actor_context", None)
            if isinstance(context, str) and context:
                record.ACTOR_CONTEXT = context
        return True


class PriorityFormatter(logging.Formatter):
    """``<N>logger: message``: journald reads the ``<N>`` prefix as the syslog priority."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in _PRIORITIES if record.levelno >= level), 7)
        text = super().format(record)
        # a multi-line record (a traceback) stays one priority on every line
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines() or [""])


def stderr_is_journal(environ: Mapping[str, str], stream: TextIO) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (``JOURNAL_STREAM`` is
    ``<device>:<inode>`` of that stream)."""
    expected = environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def _journal_module() -> Any:
    """``systemd.journal`` if systemd-python is installed, else None."""
    try:
        # imported by name: a checkout's systemd/ folder of unit files is no such module
        return importlib.import_module("systemd.journal")
    except ImportError:
        return None


def make_handler(environ: Mapping[str, str] | None = None, stream: TextIO | None = None) -> tuple[logging.Handler, Mode]:
    """The handler for this process's log, and which mode it is (see the module doc)."""
    env = os.environ if environ is None else environ
    out = sys.stderr if stream is None else stream
    if stderr_is_journal(env, out):
        journal = _journal_module()
        if journal is not None:
            handler: logging.Handler = journal.JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
            handler.setFormatter(logging.Formatter(JOURNAL_FORMAT))
            handler.addFilter(ActorFields())
            return handler, "journal"
        handler = logging.StreamHandler(out)
        handler.setFormatter(PriorityFormatter())
        return handler, "journal-stream"
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT, datefmt=PLAIN_DATEFMT))
    return handler, "plain"


def setup_logging(level: int, *, quiet_nats: bool = True, environ: Mapping[str, str] | None = None,
                  stream: TextIO | None = None) -> Mode:
    """Configure the root logger at ``level`` (once: a no-op if it has handlers already,
    like :func:`logging.basicConfig`). ``quiet_nats``: nats-py's own logger at WARNING."""
    handler, mode = make_handler(environ, stream)
    logging.basicConfig(level=level, handlers=[handler])
    if quiet_nats:
        logging.getLogger("nats").setLevel(logging.WARNING)
    logging.getLogger("asyncio").addFilter(_tls_close_noise)
    return mode


def _tls_close_noise(record: logging.LogRecord) -> bool:
    """asyncio warns at every close of a TLS connection to a NATS server that nats-py's protocol
    asked to keep the transport open at EOF, which TLS cannot: nothing to act on."""
    return "eof_received() has no effect when using ssl" not in record.getMessage()


__all__ = ["ActorFields", "PriorityFormatter", "make_handler", "setup_logging", "stderr_is_journal"]
