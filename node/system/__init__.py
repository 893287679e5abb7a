"""The node's place in the operating system: systemd notify, logging setup, the data
directory lock, and the boot-file configuration.

Imports: ``drupelet.node.config``, ``drupelet.node.errors`` and ``drupelet.providers``
(the boot file's display report); never the host, the lattice or the CLI.
"""
