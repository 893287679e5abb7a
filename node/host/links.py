"""The link table: (actor, interface) → provider, with config.

A link's target is ``local/<provider>`` (the node the instance runs on) or
``<node>/<provider>``. Interfaces are stored without a version
(``wasi:keyvalue/store``); a link put for a package (``wasi:keyvalue``) expands to every
interface of that package the provider serves.
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from drupelet.providers.base import Link

from drupelet.node.errors import LinkError

INTERFACE = re.compile(r"^[a-z][a-z0-9-]*:[a-z][a-z0-9-]*(/[a-z][a-z0-9-]*)?$")
TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}/[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class LinkDef:
    source: str
    interface: str
    target: str
    config: dict[str, str] = field(default_factory=dict)

    @property
    def target_node(self) -> str:
        return self.target.split("/", 1)[0]

    @property
    def provider(self) -> str:
        return self.target.split("/", 1)[1]

    def as_link(self) -> Link:
        return Link(source=self.source, interface=self.interface, target=self.target, config=dict(self.config))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_interface(text: str) -> tuple[str, str | None]:
    """``wasi:keyvalue/store@0.2.0-draft`` → (``wasi:keyvalue``, ``store``); version dropped."""
    base = text.strip().split("@", 1)[0]
    if not INTERFACE.match(base):
        raise LinkError(f"{text!r} is not an interface (like wasi:keyvalue/store) or package (like wasi:keyvalue)",
                        interface=text)
    package, _, name = base.partition("/")
    return package, (name or None)


def check_target(target: str) -> None:
    if not TARGET.match(target):
        raise LinkError(f"{target!r} is not a link target: use local/<provider> or <node>/<provider>", target=target)


class LinkTable:
    def __init__(self) -> None:
        self._links: dict[tuple[str, str], LinkDef] = {}
        self._lock = threading.Lock()

    def put(self, link: LinkDef) -> LinkDef | None:
        with self._lock:
            previous = self._links.get((link.source, link.interface))
            self._links[(link.source, link.interface)] = link
            return previous

    def delete(self, source: str, interface: str) -> LinkDef | None:
        with self._lock:
            return self._links.pop((source, interface), None)

    def get(self, source: str, interface: str) -> LinkDef | None:
        return self._links.get((source, interface))

    def for_source(self, source: str) -> list[LinkDef]:
        with self._lock:
            return [link for (s, _), link in sorted(self._links.items()) if s == source]

    def all(self) -> list[LinkDef]:
        with self._lock:
            return [link for _, link in sorted(self._links.items())]
