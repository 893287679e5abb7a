"""Where providers come from: the ``drupelet.providers`` entry-point group.

A package that registers a :class:`~drupelet.providers.base.Provider` subclass there
(``[project.entry-points."drupelet.providers"] name = "module:Class"``) adds a provider to
every node it is installed on; nothing lists providers by hand.
"""

from __future__ import annotations

import importlib.metadata
import logging

from .base import Provider

log = logging.getLogger(__name__)

PROVIDER_GROUP = "drupelet.providers"


def discover_providers() -> dict[str, type[Provider]]:
    """Provider classes registered in the ``drupelet.providers`` entry-point group."""
    found: dict[str, type[Provider]] = {}
    for ep in importlib.metadata.entry_points(group=PROVIDER_GROUP):
        try:
            cls = ep.load()
        except Exception:
            log.exception("provider entry point %s (%s) failed to load; skipping it", ep.name, ep.value)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            log.error("provider entry point %s is not a Provider subclass; skipping it", ep.name)
            continue
        found[ep.name] = cls
    return found
