"""GPIO edges as messages: their subject and JSON body, and the pin callback that makes them.

Edges reach the actor's ``wasmcloud:messaging/handler`` as subject
``gpio.<pin>.<rising|falling>`` with a JSON body :class:`EdgeEvent`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, Literal, TypedDict

Edge = Literal["rising", "falling"]


class EdgeEvent(TypedDict):
    """The JSON body of an edge message."""

    pin: int
    edge: Edge
    timestamp: float
    """Unix seconds when the provider saw the edge."""
    node: str
    """The node whose pin it is."""


def edge_subject(pin: int, edge: Edge) -> str:
    """The subject an edge is delivered under: ``gpio.17.falling``."""
    return f"gpio.{pin}.{edge}"


def edge_body(pin: int, edge: Edge, timestamp: float, node: str) -> bytes:
    event: EdgeEvent = {"pin": pin, "edge": edge, "timestamp": timestamp, "node": node}
    return json.dumps(event).encode("utf-8")


class EdgeWatcher:
    """A pin's ``when_changed`` callback: level changes become edges for one actor.

    gpiozero calls it on its own thread (on the caller's for the mock). It keeps the last
    level so repeated reports of one level (lgpio's watchdog, bounce) make no edge, and
    takes no provider lock, so closing a device can never wait on it.
    """

    def __init__(self, send: Callable[[str, int, Edge], None], actor: str, pin: int, edges: str,
                 level: bool) -> None:
        self._send = send
        self.actor = actor
        self.pin = pin
        self.edges = edges
        self.active = True
        self._level = level
        self._lock = threading.Lock()

    def __call__(self, ticks: float, state: Any) -> None:
        if not self.active or state not in (0, 1):  # lgpio reports 2 for a watchdog timeout
            return
        level = bool(state)
        with self._lock:
            if level == self._level:
                return
            self._level = level
        edge: Edge = "rising" if level else "falling"
        if self.edges in ("both", edge):
            self._send(self.actor, self.pin, edge)
