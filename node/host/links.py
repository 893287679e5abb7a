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

from drupelet.providers.base import Link, Provider

from drupelet.node.runtime import HTTP_INCOMING, NODE_SERVED, SERVED_VERSIONS

from drupelet.node.host.errors import LinkError

__all__ = ["HTTP_INCOMING", "LinkDef", "LinkTable", "check_target", "link_interfaces", "package_matches",
           "parse_interface"]

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


NODE_PACKAGES = frozenset({n.split("/")[0] for n in NODE_SERVED} -
                           {n.split("/")[0] for n in SERVED_VERSIONS if n not in NODE_SERVED})
"""Packages whose every interface the node serves itself (``wasi:logging``, ``wasi:config``)."""


def link_interfaces(interface: str, target: str, provider: Provider | None) -> list[str]:
    """The interfaces a link put for ``interface`` (one, or a whole package) covers.

    ``provider`` is the target when it runs on this node: then the link covers what it
    serves, and naming an interface it does not serve is a :class:`LinkError`. For
    another node's provider (None) it covers every interface of the package that the node
    links; the target node checks them.
    """
    check_target(target)
    package, iface = parse_interface(interface)
    if f"{package}/{iface}" in NODE_SERVED or (iface is None and package in NODE_PACKAGES):
        raise LinkError(f"{interface} is served by the node itself and takes no link", interface=interface)
    if provider is None:
        if iface is not None:
            return [f"{package}/{iface}"]
        known = [i for i in SERVED_VERSIONS if i.startswith(package + "/") and i not in NODE_SERVED]
        if not known:
            raise LinkError(f"no linkable interface in package {package}", interface=interface, target=target)
        return known
    if iface is not None:
        wanted = f"{package}/{iface}"
        if wanted not in provider.interfaces:
            raise LinkError(f"provider {target!r} does not serve {wanted} (it serves {', '.join(provider.interfaces)})",
                            interface=wanted, target=target)
        return [wanted]
    served = [i for i in provider.interfaces if i.startswith(package + "/")]
    if not served:
        raise LinkError(f"provider {target!r} serves no interface of {package} (it serves "
                        f"{', '.join(provider.interfaces)})", interface=package, target=target)
    return served


def package_matches(interface: str, wanted: str) -> bool:
    """Whether ``interface`` (``wasi:keyvalue/store``) is ``wanted`` or in package ``wanted``."""
    package, iface = parse_interface(wanted)
    return interface == f"{package}/{iface}" if iface else interface.startswith(package + "/")


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
