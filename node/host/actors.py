"""Actors: named sets of instances of one component, each on its own worker thread.

All instances of an actor pull from one bounded queue, so each instance handles one
message at a time and idle instances share the load. Guest code never runs on the event
loop: a delivery is a :class:`concurrent.futures.Future` the loop awaits.

A trap fails that call only. The trapped instance is replaced; if an instance keeps
trapping, each replacement waits longer (exponential back-off) and a log line says so.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drupelet.providers.base import Busy, HttpExchange, Link, NotLinked, Provider, handling

from drupelet.node.host.budgets import ByteBudget, ByteRate, LogLimiter
from drupelet.node.host.errors import ActorStopped, Overloaded, PayloadTooLarge
from drupelet.node.runtime.errors import CallFailed, StartRefused, Trapped
from drupelet.node.runtime import ActorInstance, Limits, LoadedComponent, Runtime
from drupelet.node.security.policy import Identity

log = logging.getLogger(__name__)

LEVELS = {
    "trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
    "warn": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL,
}


@dataclass(frozen=True)
class Delivery:
    subject: str
    body: bytes
    reply_to: str | None
    deadline_ms: int | None = None


_STOP = object()
LOG_DROP_PAUSE_S = 0.001
"""How long an instance waits after each log line it had dropped."""
LOG_DROP_REPORT_S = 5.0
"""How often at most the node's log says how many of an actor's lines were dropped."""
RETIRE_POLL_S = 0.5
"""How soon an idle worker that was retired notices (another worker may take its token)."""

Resolver = Callable[[str, str], tuple[Provider, Link]]
"""(actor, interface) → (provider, link); raises NotLinked."""

LogSink = Callable[[str, str, str, str], None]
"""(actor, level, context, message) → None."""


class ActorImports:
    """What every instance of one actor asks of the host through its imports
    (:class:`~drupelet.node.runtime.Imports`): logs, config, the links."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor.name
        self.max_payload_bytes = actor.limits.max_payload_bytes
        self._actor = actor

    def log(self, level: str, context: str, message: str) -> None:
        self._actor.log(level, context, message)

    def config_get(self, key: str) -> str | None:
        return self._actor.config_values().get(key)

    def config_all(self) -> list[tuple[str, str]]:
        return sorted(self._actor.config_values().items())

    def outbound(self, size: int) -> None:
        rate = self._actor.send_rate
        if not rate.spend(size):
            raise Busy(f"actor {self.actor!r} sends more than limits.publish_bytes_per_s ({rate.per_s:.0f} bytes "
                       f"a second); this message of {size} bytes would wait more than {rate.max_wait_s:g} s")

    def resolve(self, interface: str) -> tuple[Provider, Link]:
        return self._actor.resolver(self.actor, interface)


class Actor:
    def __init__(self, name: str, loaded: LoadedComponent, runtime: Runtime, limits: Limits, *,
                 config: dict[str, str], resolver: Resolver, link_config: Callable[[str], dict[str, str]],
                 log_sink: LogSink, max_queue: int, backoff_base_ms: int, backoff_max_ms: int,
                 source: str = "", identity: Identity | None = None, budget: ByteBudget | None = None,
                 logs: LogLimiter | None = None, send_rate: ByteRate | None = None) -> None:
        self.name = name
        self.loaded = loaded
        self.runtime = runtime
        self.limits = limits
        self.config = dict(config)
        self.resolver = resolver
        self.link_config = link_config
        self.log_sink = log_sink
        self.source = source
        self.identity = identity or Identity(None, "")
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.budget = budget or ByteBudget(1 << 62)
        """Message bytes queued or being handled (``limits.actor_queue_bytes``; its parent is the node's)."""
        self.logs = logs or LogLimiter(1 << 20, 1e9, 1 << 30)
        self.send_rate = send_rate or ByteRate(1e12, 1 << 40)
        self._logs_reported_at = 0.0
        self.imports = ActorImports(self)
        self.backoff_base_ms = backoff_base_ms
        self.backoff_max_ms = backoff_max_ms
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._scale_lock = threading.Lock()  # one scale or stop at a time: counts never race
        self._serial = 0
        self.started_at = time.time()
        self.calls = 0
        self.traps = 0
        self.stopping = False
        self.abandoned: list[_Worker] = []
        """Workers still busy when :meth:`stop` gave up on them (each ends with its call)."""

    def config_values(self) -> dict[str, str]:
        merged = dict(self.link_config(self.name))
        merged.update(self.config)
        return merged

    @property
    def instances(self) -> int:
        with self._lock:
            return len(self._workers)

    def log(self, level: str, context: str, message: str) -> None:
        """One log line of the actor, through its limits: cut to ``log_line_bytes``, dropped
        (and counted) past ``log_lines_per_s``; how many were dropped is logged every few seconds."""
        admitted = self.logs.admit()
        if self.logs.unreported and time.monotonic() - self._logs_reported_at >= LOG_DROP_REPORT_S:
            self._logs_reported_at = time.monotonic()
            gone = self.logs.take_unreported()
            log.warning("actor %s: %d log line(s) dropped (limits.log_lines_per_s = %g, log_burst_lines = %d); "
                        "%d since it started", self.name, gone, self.logs.per_s, self.logs.burst, self.logs.dropped)
        if admitted:
            self.log_sink(self.name, level, context, self.logs.cut(message))
        else:  # the actor is logging past its rate: it waits a little (others get the CPU and the GIL)
            time.sleep(LOG_DROP_PAUSE_S)

    def _stdout(self, stream: str) -> Callable[[bytes], None]:
        buffer = bytearray()
        level = "info" if stream == "stdout" else "warn"

        def write(data: bytes) -> None:
            buffer.extend(data)
            if b"\n" in data:
                *lines, rest = bytes(buffer).split(b"\n")
                buffer[:] = rest
                for line in lines:
                    self.log(level, stream, line.decode("utf-8", "replace"))
            if len(buffer) > self.logs.line_bytes:
                self.log(level, stream, bytes(buffer).decode("utf-8", "replace"))
                buffer.clear()

        return write

    def new_instance(self) -> ActorInstance:
        return self.runtime.instantiate(self.loaded, self.imports, self.limits, self._stdout("stdout"),
                                        self._stdout("stderr"))

    def scale(self, instances: int) -> None:
        """Start or stop workers until ``instances`` run. Raises StartRefused if none can start.

        Scales run one at a time: two callers asking for 4 get 4, not 7."""
        if instances < 0:
            raise ValueError("instances must be 0 or more")
        with self._scale_lock:
            if self.stopping:
                raise ActorStopped(f"actor {self.name!r} is stopping", actor=self.name)
            with self._lock:
                current = len(self._workers)
                to_start = instances - current
                leaving = self._workers[instances:] if instances < current else []
                self._workers = self._workers[:instances] if instances < current else self._workers
            for worker in leaving:
                worker.retire()
            started: list[_Worker] = []
            for _ in range(max(0, to_start)):
                self._serial += 1
                worker = _Worker(self, self._serial)
                ready = worker.start_and_wait()
                if ready is not None:
                    for w in started:
                        w.retire()
                    raise ready
                started.append(worker)
            with self._lock:
                self._workers.extend(started)

    def submit(self, delivery: Delivery) -> concurrent.futures.Future[Any]:
        """Queue a message for the actor's handler; the future's result is None or the handler's error."""
        def handle(inst: ActorInstance) -> Any:
            with handling(delivery.reply_to):  # the actor may always answer it (providers.base.current_reply)
                return inst.handle_message(delivery.subject, delivery.body, delivery.reply_to, delivery.deadline_ms)

        return self._enqueue(handle, len(delivery.body))

    def submit_http(self, exchange: HttpExchange, deadline_ms: int | None = None) -> concurrent.futures.Future[Any]:
        """Queue an HTTP request for the actor's ``wasi:http/incoming-handler``; the future
        ends when the handler returns (the exchange has its response by then). Unless the
        exchange allows reuse, the instance that answers is replaced by a new one after it."""
        work = _HttpWork(exchange, deadline_ms)
        return self._enqueue(work, 0)

    def invoke(self, export: str, args: tuple[Any, ...], deadline_ms: int | None = None) -> concurrent.futures.Future[Any]:
        """Queue a call of a top-level exported function (tests, benchmarks)."""
        return self._enqueue(lambda inst: inst.call(export, *args, deadline_ms=deadline_ms), 0)

    def _enqueue(self, work: Callable[[ActorInstance], Any], size: int) -> concurrent.futures.Future[Any]:
        if self.stopping:
            raise ActorStopped(f"actor {self.name!r} is stopping", actor=self.name)
        if size > self.limits.max_payload_bytes:
            raise PayloadTooLarge(
                f"message of {size} bytes exceeds actor {self.name!r}'s limit of "
                f"{self.limits.max_payload_bytes} bytes", actor=self.name, size=size,
                limit=self.limits.max_payload_bytes)
        if self.instances == 0:
            raise ActorStopped(f"actor {self.name!r} has no running instance", actor=self.name)
        full = self.budget.take(size)
        if full is not None:
            which = "its limits.actor_queue_bytes" if full is self.budget else "the node's limits.node_queue_bytes"
            raise Overloaded(f"actor {self.name!r}: a message of {size} bytes does not fit {which} "
                             f"({full.used} of {full.limit} bytes wait); try again later", actor=self.name)
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            self.queue.put_nowait((work, fut))
        except queue.Full:
            self.budget.give(size)
            raise Overloaded(f"actor {self.name!r} has {self.queue.qsize()} messages waiting; try again later",
                             actor=self.name) from None
        if size:
            fut.add_done_callback(lambda _: self.budget.give(size))
        return fut

    def stop(self, timeout_s: float) -> None:
        """Stop taking messages; let in-flight and queued calls finish for up to
        ``timeout_s``, then fail what is still queued. Returns within ``timeout_s`` (plus a
        moment) even when the queue is full or an instance is stuck in a call."""
        deadline = time.monotonic() + timeout_s
        self.stopping = True
        with self._scale_lock:  # a scale in progress finishes first; none starts after
            with self._lock:
                workers, self._workers = self._workers, []
        for _ in workers:  # wake idle workers; busy ones see `stopping` once the queue is empty
            try:
                self.queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                break
        for worker in workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        self._fail_queued()
        late = [w for w in workers if w.thread.is_alive()]
        if late:
            for worker in late:
                worker.retired.set()
            log.warning("actor %s: %d instance(s) still busy after %.1f s; abandoning them", self.name,
                        len(late), timeout_s)
        self.abandoned = late

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                item[1].set_exception(ActorStopped(f"actor {self.name!r} stopped", actor=self.name))

    def dead_workers(self) -> int:
        """Workers this actor counts as running whose thread has ended: none, unless
        something outside the stop and scale paths killed one."""
        with self._lock:
            return sum(1 for w in self._workers if not w.thread.is_alive())

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.loaded.digest,
            "source": self.source,
            "instances": self.instances,
            "imports": self.loaded.imports,
            "exports": self.loaded.exports,
            "config": self.config,
            "calls": self.calls,
            "traps": self.traps,
            "queued": self.queue.qsize(),
            "queued_bytes": self.budget.used,
            "logs_dropped": self.logs.dropped,
            "started_at": self.started_at,
            **self.identity.describe(),
        }


class _HttpWork:
    """An HTTP request as a queued call; ``fresh``: its instance is used for it alone."""

    def __init__(self, exchange: HttpExchange, deadline_ms: int | None) -> None:
        self.exchange = exchange
        self.deadline_ms = deadline_ms
        self.fresh = not exchange.reuse_instance

    def __call__(self, instance: ActorInstance) -> None:
        instance.handle_http(self.exchange, self.deadline_ms)


class _Worker:
    """One instance and the thread that drives it."""

    def __init__(self, actor: Actor, serial: int) -> None:
        self.actor = actor
        self.serial = serial
        self.retired = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"actor-{actor.name}-{serial}", daemon=True)
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.consecutive_traps = 0

    def start_and_wait(self) -> StartRefused | None:
        self.thread.start()
        try:
            self._ready.result()
        except StartRefused as exc:
            return exc
        return None

    def retire(self) -> None:
        """Ask this worker (not any other) to finish: it sees the flag before its next
        message, or within RETIRE_POLL_S when idle. The token only wakes a waiting worker."""
        self.retired.set()
        self.actor.queue.put(_STOP)

    def _run(self) -> None:
        actor = self.actor
        try:
            instance = actor.new_instance()
        except StartRefused as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            while True:
                if self.retired.is_set():
                    return
                try:
                    item = actor.queue.get(timeout=RETIRE_POLL_S)
                except queue.Empty:
                    if actor.stopping:
                        return  # the queue is drained and the actor is stopping
                    continue
                if item is _STOP:
                    if self.retired.is_set() or actor.stopping:
                        return
                    continue  # another worker's retire token: that worker sees its own flag
                work, fut = item
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    result = work(instance)
                    actor.calls += 1
                    self.consecutive_traps = 0
                    fut.set_result(result)
                    if getattr(work, "fresh", False):  # the next request gets an instance nobody used
                        instance.close()
                        renewed = self._renew()
                        if renewed is None:
                            return
                        instance = renewed
                except Trapped as exc:
                    actor.calls += 1
                    actor.traps += 1
                    fut.set_exception(exc)
                    instance.close()
                    replaced = self._replace(exc)
                    if replaced is None:
                        return
                    instance = replaced
                except (CallFailed, LookupError) as exc:
                    fut.set_exception(exc)
                except BaseException as exc:  # a host bug must not kill the worker silently
                    log.exception("actor %s: unexpected error in a call", actor.name)
                    fut.set_exception(exc)
        finally:
            try:
                instance.close()
            except Exception:
                log.debug("closing instance of %s failed", actor.name, exc_info=True)

    def _renew(self) -> ActorInstance | None:
        """A new instance in place of one that trapped or answered its single request;
        None if the worker is retired meanwhile."""
        actor = self.actor
        while True:
            try:
                return actor.new_instance()
            except StartRefused as err:
                log.error("actor %s: cannot replace instance %d: %s", actor.name, self.serial, err)
                if self.retired.wait(actor.backoff_max_ms / 1000.0) or actor.stopping:
                    return None

    def _replace(self, exc: Trapped) -> ActorInstance | None:
        actor = self.actor
        self.consecutive_traps += 1
        if self.consecutive_traps > 1:
            delay_ms = min(actor.backoff_max_ms, actor.backoff_base_ms * 2 ** (self.consecutive_traps - 2))
            log.warning("actor %s instance %d trapped %d times in a row (last: %s); replacing it in %d ms",
                        actor.name, self.serial, self.consecutive_traps, exc.message, delay_ms)
            if self.retired.wait(delay_ms / 1000.0) or actor.stopping:
                return None
        else:
            log.info("actor %s instance %d trapped (%s); replacing it", actor.name, self.serial, exc.message)
        return self._renew()


__all__ = ["Actor", "ActorImports", "Delivery", "NotLinked"]
