"""The node's place in the operating system: systemd notify (:mod:`.sdnotify`), logging
setup (:mod:`.logsetup`), the data-directory lock (:mod:`.datalock`), and the boot-file
configuration (:mod:`.bootfile`; :mod:`.firstboot` keeps its earlier name importable).

Imports: ``drupelet.node.config``, ``drupelet.node.errors`` and ``drupelet.providers``
(the boot file's display report); never the host, the lattice or the CLI.
"""
