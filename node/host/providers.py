"""Capability providers on one node: found through entry points, described, their health read."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from drupelet.providers.base import Provider
from drupelet.providers.registry import PROVIDER_GROUP, discover_providers

from drupelet.node.config import ENABLED_KEY, provider_table

__all__ = ["HARDWARE_PROVIDERS", "PROVIDER_GROUP", "describe", "discover_providers", "enabled", "health_of",
           "provider_table"]

log = logging.getLogger(__name__)

HARDWARE_PROVIDERS = ("gpio", "i2c", "display")
"""Providers whose ``describe()`` is the node's hardware in the inventory."""


def enabled(tables: Mapping[str, Mapping[str, Any]], name: str) -> bool:
    return tables.get(name, {}).get(ENABLED_KEY, True) is not False


def describe(name: str, provider: Provider) -> dict[str, Any]:
    """A provider as the inventory lists it: interfaces, health and what it says of itself."""
    try:
        health = provider.health()
        status, message = health.status, health.message
    except Exception as exc:  # a provider's bug must not take the inventory down
        log.exception("provider %s: health() failed", name)
        status, message = "failed", f"health unknown ({type(exc).__name__})"
    try:
        details = provider.describe()
    except Exception:
        log.exception("provider %s: describe() failed", name)
        details = {}
    return {"name": name, "interfaces": list(provider.interfaces), "health": status,
            "health_message": message, **details}


def health_of(name: str, provider: Provider) -> tuple[str, str]:
    """(status, message) of a provider; a failing ``health()`` is reported, not raised."""
    try:
        health = provider.health()
    except Exception as exc:
        log.exception("provider %s: health() failed", name)
        return "failed", f"health unknown ({type(exc).__name__})"
    return health.status, health.message
