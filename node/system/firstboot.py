"""``drupelet.node.system.firstboot``: the boot-file configuration under its earlier name.

The code lives in :mod:`drupelet.node.system.bootfile` (schema, render, install,
report); this module re-exports its public names so ``firstboot.firstboot``,
``firstboot.add_arguments``, ``firstboot.run`` and the rest keep working. Patch a
name where it is defined (``bootfile.report.show_on_display``,
``bootfile.install.SERVICE_USER``), not here.
"""

from __future__ import annotations

from drupelet.node.system.bootfile import BOOT_FILE, ETC_DIR, STATE_DIR, add_arguments, firstboot, main, run
from drupelet.node.system.bootfile.install import (
    LEAF_CONF,
    LEAF_CREDS,
    NODE_TOML,
    PUBLIC_MODE,
    SECRET_MODE,
    SERVICE_USER,
    TRUSTED_KEYS,
    Change,
    Output,
    apply,
    outputs,
    plan,
)
from drupelet.node.system.bootfile.render import (
    LEAF_TEMPLATE,
    LOCAL_NATS_URL,
    TEMPLATE_PACKAGE,
    check_node_toml,
    leaf_template,
    render_leaf_conf,
    render_node_toml,
    render_trusted_keys,
)
from drupelet.node.system.bootfile.report import ERROR_SUFFIX, draw_message, error_file, show_on_display
from drupelet.node.system.bootfile.schema import (
    SECTIONS,
    BootConfig,
    DisplaySpec,
    boot_markdown,
    load_boot_file,
    parse_boot,
    read_toml,
)

__all__ = [
    "BOOT_FILE", "ERROR_SUFFIX", "ETC_DIR", "LEAF_CONF", "LEAF_CREDS", "LEAF_TEMPLATE", "LOCAL_NATS_URL", "NODE_TOML",
    "PUBLIC_MODE", "SECRET_MODE", "SECTIONS", "SERVICE_USER", "STATE_DIR", "TEMPLATE_PACKAGE", "TRUSTED_KEYS",
    "BootConfig", "Change", "DisplaySpec", "Output", "add_arguments", "apply", "boot_markdown", "check_node_toml",
    "draw_message", "error_file", "firstboot", "leaf_template", "load_boot_file", "main", "outputs", "parse_boot",
    "plan", "read_toml", "render_leaf_conf", "render_node_toml", "render_trusted_keys", "run", "show_on_display",
]
