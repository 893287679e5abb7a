"""The last lines each actor logged, kept in memory so ``drupelet logs`` (without ``-f``)
has something to show: bounded per actor and in the number of actors, lost on restart
(the journal keeps the rest)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Any, Final

#: Lines kept per actor.
RECENT_LINES_PER_ACTOR: Final = 300
#: Actors whose lines are kept; the one that logged longest ago is forgotten first.
RECENT_ACTORS: Final = 64


class Logbook:
    """Thread-safe: actors log from worker threads, the control plane reads on the loop."""

    def __init__(self, node: str, *, per_actor: int = RECENT_LINES_PER_ACTOR, actors: int = RECENT_ACTORS) -> None:
        self.node = node
        self._per_actor = per_actor
        self._actors = actors
        self._lines: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, actor: str, level: str, context: str, message: str) -> dict[str, Any]:
        """Record one line; the record (``node``, ``actor``, ``level``, ``context``, ``message``, ``time``)."""
        record = {"node": self.node, "actor": actor, "level": level, "context": context, "message": message,
                  "time": time.time()}
        with self._lock:
            lines = self._lines.pop(actor, None)
            if lines is None:
                lines = deque(maxlen=self._per_actor)
            lines.append(record)
            self._lines[actor] = lines  # most recently logged last
            while len(self._lines) > self._actors:
                self._lines.popitem(last=False)
        return record

    def recent(self, actor: str | None = None, lines: int = RECENT_LINES_PER_ACTOR) -> list[dict[str, Any]]:
        """The last ``lines`` records (of ``actor``, or of every actor), oldest first."""
        with self._lock:
            if actor is not None:
                found = list(self._lines.get(actor, ()))
            else:
                found = sorted((r for q in self._lines.values() for r in q), key=lambda r: float(r["time"]))
        return found[-lines:] if lines > 0 else []
