"""``drupelet``: the command line, a thin caller of the node and of the lattice client."""

from drupelet.node.cli.main import main

__all__ = ["main"]
