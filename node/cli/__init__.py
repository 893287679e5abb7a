"""``drupelet``: the command line, a thin caller of the node and of the lattice client.

:mod:`~drupelet.node.cli.parser` declares every command; :func:`main` runs one. Each
group of commands has its module (``up``, ``actors``, ``links``, ``observe``,
``hardware``, ``call``, ``misc``), imported only when one of its commands runs;
:mod:`~drupelet.node.cli.output` prints tables and JSON.
"""

from drupelet.node.cli.main import main

__all__ = ["main"]
