"""nkeys key pairs: generate, load a seed, decode a public key, verify a signature.

Seeds and signing come from the ``nkeys`` package (Ed25519 through PyNaCl). nkeys 0.2 does
not know the module (``M…``) role wasmCloud gives actors, nor decoding a public key on its
own, so :data:`ROLES` adds the role and :func:`decode_public` checks a public key with the
package's own CRC-16. ``nkeys`` and ``nacl`` are imported when a key is used, not when this
module is (they cost ~10 ms, and the boot path only checks public keys).
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import BadKey

if TYPE_CHECKING:
    import nacl.signing

__all__ = ["ISSUER_ROLES", "ROLES", "BadKey", "KeyPair", "check_encoding", "decode_public", "generate", "load_seed", "verify"]

# role name -> nkeys prefix byte (its first base32 character is the role's letter)
ROLES = {"account": 0, "operator": 14 << 3, "user": 20 << 3, "server": 13 << 3, "cluster": 2 << 3,
         "actor": 12 << 3}
ROLE_OF_PREFIX = {prefix: role for role, prefix in ROLES.items()}
ISSUER_ROLES = ("account", "operator")
_SEED_PREFIX = 18 << 3
PUBLIC_CHARS = 56
SEED_CHARS = 58


def _crc(data: bytes) -> bytes:
    from nkeys import crc16_checksum

    return bytes(crc16_checksum(data))


def _b32decode(key: str) -> bytes:
    try:
        return base64.b32decode(key + "=" * (-len(key) % 8))
    except (binascii.Error, ValueError):
        raise BadKey("it is not base32 (A-Z and 2-7)") from None


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class KeyPair:
    """A seed (``S…``, secret) and its public key; ``role`` is one of :data:`ROLES`."""

    role: str
    seed: str
    public: str
    _signing: nacl.signing.SigningKey

    def sign(self, data: bytes) -> bytes:
        return bytes(self._signing.sign(data).signature)


def _from_raw(role: str, raw_seed: bytes) -> KeyPair:
    import nacl.signing

    prefix = ROLES[role]
    head = bytes([_SEED_PREFIX | prefix >> 5, (31 & prefix) << 3])
    seed = _b32(head + raw_seed + _crc(head + raw_seed))
    signing = nacl.signing.SigningKey(raw_seed)
    pub = bytes([prefix]) + bytes(signing.verify_key)
    return KeyPair(role, seed, _b32(pub + _crc(pub)), signing)


def generate(role: str) -> KeyPair:
    """A new key pair of ``role`` (``account``, ``actor``, ``operator``, ``user``, …)."""
    if role not in ROLES:
        raise BadKey(f"unknown key role {role!r}: one of {', '.join(ROLES)}")
    return _from_raw(role, os.urandom(32))


def load_seed(text: str, *, role: str | None = None) -> KeyPair:
    """The key pair of a seed (``S…``, as ``keys gen`` writes it), optionally of one role."""
    seed = text.strip()
    if not seed.startswith("S") or len(seed) != SEED_CHARS:
        what = "a public key, not a seed" if len(seed) == PUBLIC_CHARS else f"{len(seed)} characters"
        raise BadKey(f"not an nkey seed (S… of {SEED_CHARS} characters): got {what}")
    raw = _b32decode(seed)
    if _crc(raw[:-2]) != raw[-2:]:
        raise BadKey("the seed's checksum does not match (a typo, or a character lost when copying)")
    prefix = (raw[0] & 7) << 5 | (raw[1] & 248) >> 3
    got = ROLE_OF_PREFIX.get(prefix)
    if got is None:
        raise BadKey("the seed has an unknown role byte")
    if role is not None and got != role:
        raise BadKey(f"this is {got} seed (S{seed[1]}…), an {role} seed is needed")
    pair = _from_raw(got, raw[2:34])
    return pair


def check_encoding(key: str) -> bytes:
    """The raw bytes of an nkey (seed or public) whose base32 and checksum hold."""
    raw = _b32decode(key)
    if len(raw) < 3 or _crc(raw[:-2]) != raw[-2:]:
        raise BadKey("its checksum does not match (a typo, or a character lost when copying)")
    return raw


def decode_public(key: str, *, roles: tuple[str, ...] | None = None) -> tuple[str, bytes]:
    """``(role, 32-byte Ed25519 key)`` of a public nkey; :class:`BadKey` says what is wrong."""
    key = key.strip()
    if key.startswith("S"):
        raise BadKey("a private seed: never put a seed here, only its public key")
    if len(key) != PUBLIC_CHARS:
        raise BadKey(f"a public nkey is {PUBLIC_CHARS} characters of A-Z and 2-7, got {len(key)}")
    raw = check_encoding(key)
    role = ROLE_OF_PREFIX.get(raw[0])
    if role is None:
        raise BadKey("its first character names no nkey role")
    if roles is not None and role not in roles:
        raise BadKey(f"it is {'an' if role in ('account', 'actor', 'operator') else 'a'} {role} key ({key[0]}…), "
                     f"{' or '.join(roles)} key needed")
    return role, raw[1:33]


def verify(public: str, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public``'s Ed25519 signature of ``data``."""
    import nacl.exceptions
    import nacl.signing

    _, raw = decode_public(public)
    try:
        nacl.signing.VerifyKey(raw).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, ValueError):
        return False
    return True
