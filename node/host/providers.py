"""Capability providers on one node: found through entry points, validated, started, described."""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Mapping
from typing import Any

from drupelet.providers.base import Provider
from drupelet.providers.schema import SchemaError

from drupelet.node.errors import ConfigError

log = logging.getLogger(__name__)

PROVIDER_GROUP = "drupelet.providers"
"""The entry-point group third-party packages register providers in."""

ENABLED_KEY = "enabled"
"""The node's own key in every ``[providers.<name>]`` table (the rest is the provider's)."""

HARDWARE_PROVIDERS = ("gpio", "i2c", "display")
"""Providers whose ``describe()`` is the node's hardware in the inventory."""


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


def provider_table(tables: Mapping[str, Mapping[str, Any]], name: str) -> dict[str, Any]:
    """A provider's own keys from the node config (without ``enabled``)."""
    table = dict(tables.get(name, {}))
    table.pop(ENABLED_KEY, None)
    return table


def enabled(tables: Mapping[str, Mapping[str, Any]], name: str) -> bool:
    return tables.get(name, {}).get(ENABLED_KEY, True) is not False


def check_provider_tables(tables: Mapping[str, Mapping[str, Any]], *, path: str = "",
                          installed: Mapping[str, type[Provider]] | None = None) -> None:
    """Validate every ``[providers.<name>]`` table against its provider's schema, at load:
    a bad key fails the config, not the provider's first use."""
    classes = discover_providers() if installed is None else installed
    for name, table in tables.items():
        where = f"providers.{name}"
        flag = table.get(ENABLED_KEY, True)
        if not isinstance(flag, bool):
            raise ConfigError("expected true or false", key=f"{where}.{ENABLED_KEY}", path=path)
        cls = classes.get(name)
        if cls is None:
            raise ConfigError(f"no provider {name!r} is installed (installed: {', '.join(sorted(classes)) or 'none'})",
                              key=where, path=path)
        if flag is False:
            continue
        try:
            cls.parse_config(provider_table(tables, name), where=where)
        except SchemaError as exc:
            raise ConfigError(exc.reason, key=exc.key or where, path=path) from exc
        except ValueError as exc:
            raise ConfigError(str(exc), key=where, path=path) from exc


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
