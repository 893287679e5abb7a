"""Long calls yield the CPU: an actor call that has used ``LONG_CALL_MS`` of CPU time and
has made no import call for as long goes on at the kernel's idle priority (``SCHED_IDLE``)
until it returns. A call that keeps calling imports (waiting on a provider, another node)
keeps the normal priority: it computes in short bursts.

An actor that spins until its deadline (or just computes for a long time) would otherwise
take a core from everything else on a small board: the event loop, NATS, the other actors'
short calls. At idle priority it only runs on CPU time nobody else wants; when its call
returns, its worker thread goes back to the normal policy.

Going back needs the right to raise a thread's priority (root, ``CAP_SYS_NICE``, or a
``RLIMIT_NICE`` that allows nice 0): :func:`can_demote` tries it once on a thread of its
own, and without that right long calls keep the normal policy (the node says so at debug).
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)

LONG_CALL_MS = 20.0
"""CPU time a call uses, and time computing since its last import call returned, before it yields."""

_local = threading.local()
IN_IMPORT = float("inf")
"""The box's value while the call is inside an import: waiting there is not computing."""


def import_box() -> list[float] | None:
    """The calling worker thread's box: set it to IN_IMPORT while an import runs, and to
    ``time.monotonic()`` when it returns. None outside an actor call (or when disabled)."""
    box: list[float] | None = getattr(_local, "box", None)
    return box


def _set_policy(tid: int, policy: int) -> None:
    os.sched_setscheduler(tid, policy, os.sched_param(0))


def can_demote() -> bool:
    """Whether a thread here may go to SCHED_IDLE and come back (tried on a throwaway thread)."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            _set_policy(0, os.SCHED_IDLE)
            _set_policy(0, os.SCHED_OTHER)
            result.append(True)
        except OSError as exc:
            log.debug("long actor calls keep the normal priority: %s", exc.strerror)
            result.append(False)

    thread = threading.Thread(target=probe, name="drupelet-sched-probe")
    thread.start()
    thread.join()
    return bool(result and result[0])


class LongCalls:
    """The calls running now, by worker thread; :meth:`sweep` (from the epoch ticker)
    demotes those past :data:`LONG_CALL_MS`."""

    def __init__(self, enabled: bool, long_call_ms: float = LONG_CALL_MS, spare_s: float = 0.03) -> None:
        self.enabled = enabled
        self.long_call_s = long_call_ms / 1000.0
        self.spare_s = spare_s
        """A demoted call gets its priority back this long before its deadline: the trap that
        ends it takes the GIL, and a thread holding the GIL at idle priority would keep the
        event loop waiting while other processes have the CPU."""
        self._running: dict[int, tuple[float, int, float, list[float]]] = {}
        """Per worker thread: its call's deadline, its CPU clock, its CPU time at the start,
        and (in a box its thread updates) when it last returned from an import."""
        self._demoted: set[int] = set()
        self._spared: set[int] = set()
        self._lock = threading.Lock()
        self.demotions = 0

    def started(self, deadline_s: float) -> int:
        """A call starts on this thread; it will be interrupted ``deadline_s`` from now."""
        tid = threading.get_native_id()
        if self.enabled:
            clock = time.pthread_getcpuclockid(threading.get_ident())
            now = time.monotonic()
            box = _local.box = [now]
            with self._lock:
                self._running[tid] = (now + deadline_s, clock, time.clock_gettime(clock), box)
        return tid

    def ended(self, tid: int) -> None:
        if not self.enabled:
            return
        _local.box = None
        with self._lock:
            self._running.pop(tid, None)
            demoted = tid in self._demoted
            self._demoted.discard(tid)
            self._spared.discard(tid)
        if demoted:
            try:
                _set_policy(0, os.SCHED_OTHER)
            except OSError as exc:  # the right to come back was there at start; keep going
                log.warning("an actor worker thread stays at idle priority: %s", exc.strerror)

    def sweep(self) -> None:
        if not self.enabled or not self._running:
            return
        now = time.monotonic()
        with self._lock:
            late, spare = [], []
            for tid, (deadline, clock, cpu_then, box) in self._running.items():
                if deadline - now <= self.spare_s:
                    if tid not in self._spared:
                        spare.append(tid)
                    continue
                if tid in self._demoted or box[0] == IN_IMPORT or now - box[0] < self.long_call_s:
                    continue
                try:
                    cpu = time.clock_gettime(clock) - cpu_then
                except OSError:  # the thread has just ended
                    continue
                if cpu >= self.long_call_s:
                    late.append(tid)
            for tid in late:
                try:
                    _set_policy(tid, os.SCHED_IDLE)
                except OSError:  # the thread has just ended
                    continue
                self._demoted.add(tid)
                self.demotions += 1
            for tid in spare:
                self._spared.add(tid)
                if tid in self._demoted:
                    try:
                        _set_policy(tid, os.SCHED_OTHER)
                    except OSError:
                        continue
                    self._demoted.discard(tid)


__all__ = ["IN_IMPORT", "LONG_CALL_MS", "LongCalls", "can_demote", "import_box"]
