"""One node without NATS: the host API, actors, links, providers and inventory.

Imports: ``drupelet.node.runtime``, ``drupelet.node.config``, ``drupelet.node.errors`` and
``drupelet.providers``; never ``drupelet.node.lattice`` or anything above it.
"""
