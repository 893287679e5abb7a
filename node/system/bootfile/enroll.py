"""The boot file ``drupelet lattice enroll`` writes for a node: ready to copy onto its SD card.

It holds what the node needs to join its lattice securely (the hub's leafnode URL, the
node's credentials, the lattice's CA, the issuers whose actors it trusts) and leaves every
hardware key at its default; :func:`boot_file` checks it with the boot file's own schema
before it is written, so a file enroll makes is a file firstboot installs.
"""

from __future__ import annotations

from collections.abc import Mapping

import tomli_w

from .schema import parse_boot

HEADER = """\
# drupelet.toml for node {name} of lattice {lattice}, made by `drupelet lattice enroll`.
# Copy it onto the SD card's boot partition (RASPIFIRM) and boot the Pi: it joins the hub
# with the credentials below, over TLS signed by the lattice's CA, and runs only actors
# signed by the trusted issuers. It holds the node's secret: keep the card like a key.
# Every other key (the board's GPIO, I2C and display) takes its default: images/drupelet.toml
# and docs/pi.md describe them all.

"""


def boot_file(*, name: str, lattice: str, labels: Mapping[str, str], hub_url: str, jetstream_domain: str,
              credentials: str, ca: str, trust: list[str]) -> str:
    """The text of a node's boot file; :class:`~drupelet.node.errors.ConfigError` if the
    schema refuses it (a bug of the caller)."""
    doc = {
        "node": {"name": name, "lattice": lattice, "labels": dict(labels)},
        "hub": {"url": hub_url, "jetstream_domain": jetstream_domain, "credentials": credentials, "ca": ca},
        "trust": {"keys": list(trust), "allow_unsigned": False},
    }
    text = HEADER.format(name=name, lattice=lattice) + tomli_w.dumps(doc, multiline_strings=True)
    import tomllib

    parse_boot(tomllib.loads(text), path=f"the boot file for {name}")
    return text
