"""The drupelet node: runtime, supervisor, links, lattice client, host API and CLI."""

__version__ = "0.1.0"
