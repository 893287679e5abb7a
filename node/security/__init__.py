"""Signed actors: nkeys, the claims section of a wasm binary, wascap claims and the trust policy.

=====================  ==========================================================
module                 what
=====================  ==========================================================
:mod:`.errors`         :class:`SecurityError` and one class per refusal reason
:mod:`.keys`           nkeys key pairs (``nkeys``, Ed25519 through PyNaCl)
:mod:`.wasm`           find, strip and embed the ``wasmcloud_jwt`` custom section
:mod:`.claims`         wascap claims: encode, decode, sign, inspect
:mod:`.policy`         trusted issuers, unsigned actors, revocations, caps
=====================  ==========================================================

No wasmtime, no NATS: the host calls :func:`~.policy.admit` where an actor enters.
"""
