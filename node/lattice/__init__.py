"""Everything that speaks NATS: subjects, protocol, connect, the control plane, remote
calls, the provider server, state, artifacts, the client and the embedded server.

Imports: ``drupelet.node.host`` (through its ``HostApi`` Protocol), the runtime's pure
helpers, ``drupelet.node.config``, ``drupelet.node.errors``; never ``drupelet.node.node``
or the CLI.
"""
