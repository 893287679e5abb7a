"""What one actor may cost its node: bytes waiting, log lines, memory, disk.

Each budget here is a ``[limits]`` or ``[runtime]`` key of the node config (the README's
"Limits" section says what happens when each is hit):

* :class:`ByteBudget`: message bytes waiting for actors (queued or being handled), per
  actor (``actor_queue_bytes``) and for the whole node (``node_queue_bytes``). A delivery
  that does not fit is refused at once with ``overloaded``: shedding load early keeps the
  node reading from NATS, so the server never cuts it off as a slow consumer.
* :class:`ByteRate`: the bytes an actor publishes or sends as requests, per second
  (``publish_bytes_per_s``); past the rate its call waits, then is refused.
* :class:`LogLimiter`: an actor's log lines, cut at ``log_line_bytes`` and rate-limited
  (``log_lines_per_s``, bursts of ``log_burst_lines``); the lines dropped are counted.
* :func:`memory_budget` and :func:`admit`: at most ``max_instances`` per actor, and
  instances × ``max_memory_bytes`` of every actor against ``memory_budget_bytes``, at start
  and scale.
* :func:`prune_caches`: the compile and artifact caches against ``cache_budget_bytes``,
  least recently used first, never what a running actor uses.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


class ByteBudget:
    """Bytes taken and not yet given back, against a limit. Thread-safe."""

    def __init__(self, limit: int, parent: ByteBudget | None = None) -> None:
        self.limit = limit
        self.parent = parent
        self.used = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> ByteBudget | None:
        """Take ``size`` bytes here and in the parent; None if taken, else the budget
        (this one or the parent) that has no room."""
        with self._lock:
            if self.used + size > self.limit:
                return self
            self.used += size
        if self.parent is not None:
            full = self.parent.take(size)
            if full is not None:
                with self._lock:
                    self.used -= size
                return full
        return None

    def give(self, size: int) -> None:
        with self._lock:
            self.used -= size
        if self.parent is not None:
            self.parent.give(size)


class LogLimiter:
    """One actor's log lines: cut to ``line_bytes``, at most ``per_s`` a second on average
    with bursts of ``burst`` (a token bucket). Thread-safe: instances log from their threads."""

    def __init__(self, line_bytes: int, per_s: float, burst: int) -> None:
        self.line_bytes = line_bytes
        self.per_s = per_s
        self.burst = burst
        self.dropped = 0
        """Lines dropped since the actor started (``actor list``: ``logs_dropped``)."""
        self.unreported = 0
        """Lines dropped since the last line that said so."""
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def admit(self) -> bool:
        """Whether a line may go out now; if not, it is counted as dropped."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.per_s)
            self._at = now
            if self._tokens < 1.0:
                self.dropped += 1
                self.unreported += 1
                return False
            self._tokens -= 1.0
            return True

    def take_unreported(self) -> int:
        """Lines dropped since the last call (for the line that says so)."""
        with self._lock:
            gone, self.unreported = self.unreported, 0
            return gone

    def cut(self, message: str) -> str:
        """``message`` cut to the line limit (in UTF-8 bytes), saying how much was cut."""
        if len(message) * 4 <= self.line_bytes:  # no string of that many characters can be longer
            return message
        raw = message.encode("utf-8", "replace")
        if len(raw) <= self.line_bytes:
            return message
        kept = raw[:self.line_bytes].decode("utf-8", "ignore")
        return f"{kept}… [{len(raw) - len(kept.encode())} bytes cut: limits.log_line_bytes]"


class ByteRate:
    """Bytes an actor may send per second (a token bucket holding ``burst`` bytes): a
    message past the rate waits for it, at most ``max_wait_s``. Thread-safe."""

    def __init__(self, per_s: float, burst: int, max_wait_s: float = 1.0) -> None:
        self.per_s = per_s
        self.burst = burst
        self.max_wait_s = max_wait_s
        self.waited_s = 0.0
        """Time the actor's messages waited for the rate, in all."""
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def spend(self, size: int) -> bool:
        """Take ``size`` bytes, waiting (in this thread) until the rate allows them; False
        if that would take longer than ``max_wait_s`` (nothing is taken then)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.per_s) - size
            self._at = now
            wait = max(0.0, -self._tokens / self.per_s)  # until the bytes this message owes have come
            if wait > self.max_wait_s:
                self._tokens += size
                return False
        if wait > 0:
            self.waited_s += wait
            time.sleep(wait)
        return True


def physical_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return 1 << 30


def memory_budget(configured: int) -> int:
    """The node's memory budget for actors: ``configured``, or (0) three quarters of the machine's memory."""
    return configured if configured > 0 else physical_memory_bytes() * 3 // 4


def mib(size: int) -> str:
    return f"{size / (1 << 20):,.0f} MiB"


def admit(instances: int, others: int, *, cap: int, per_instance: int, budget: int) -> str | None:
    """Why ``instances`` of an actor may not run beside ``others`` instances of the node's
    other actors: over the per-actor ``cap``, or instances × ``per_instance`` bytes of
    memory over ``budget``; None if they may."""
    if instances > cap:
        return f"{instances} instances asked for; at most {cap} run per actor (limits.max_instances)"
    need, taken = instances * per_instance, others * per_instance
    if need + taken <= budget:
        return None
    return (f"{instances} instance(s) × {mib(per_instance)} (limits.max_memory_bytes) = {mib(need)}, with the "
            f"{mib(taken)} the node's other actors may take, exceeds the node's memory budget of {mib(budget)} "
            "(limits.memory_budget_bytes)")


_HEX = frozenset("0123456789abcdef")


def _digest_of(path: Path) -> str | None:
    """The digest a cache file is named after (``<hex>.wasm``, ``<hex>-wasmtime….cwasm``);
    None for anything else (a compile's temporary source, a write in progress)."""
    head = path.name.split("-", 1)[0].split(".", 1)[0]
    return head if len(head) == 64 and set(head) <= _HEX else None


def prune_caches(dirs: Iterable[Path], budget: int, in_use: set[str]) -> list[Path]:
    """Delete files of ``dirs`` (named after a component's digest) until they take at most
    ``budget`` bytes together: least recently used (modified) first, never a file of a
    digest in ``in_use``. Returns what was deleted. ``budget`` 0: no limit."""
    if budget <= 0:
        return []
    files: list[tuple[float, int, Path]] = []
    for folder in dirs:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and _digest_of(Path(entry.path)) is not None:
                    stat = entry.stat(follow_symlinks=False)
                    files.append((stat.st_mtime, stat.st_size, Path(entry.path)))
            except OSError:
                continue
    total = sum(size for _, size, _ in files)
    gone: list[Path] = []
    for _, size, path in sorted(files):
        if total <= budget:
            break
        if _digest_of(path) in in_use:
            continue
        try:
            path.unlink()
        except OSError as exc:
            log.warning("cannot delete %s to keep the caches within cache_budget_bytes: %s", path, exc.strerror)
            continue
        total -= size
        gone.append(path)
    if gone:
        log.info("deleted %d cached file(s) no running actor uses: the caches take %s of the %s allowed "
                 "([runtime] cache_budget_bytes)", len(gone), mib(total), mib(budget))
    if total > budget:
        log.warning("the compile and artifact caches take %s, past [runtime] cache_budget_bytes (%s), all of "
                    "it used by running actors", mib(total), mib(budget))
    return gone


__all__ = ["ByteBudget", "ByteRate", "LogLimiter", "admit", "memory_budget", "physical_memory_bytes", "prune_caches"]
