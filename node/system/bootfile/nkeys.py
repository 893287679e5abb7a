"""The boot file's NATS secrets and keys: a ``.creds`` file pasted into ``hub.credentials``
and the issuer public keys of ``trust.keys``, checked as nkeys are made (base32, a
prefix byte that says what the key is, a CRC-16 checksum), so a typo or a pasted seed
is caught on the card instead of at the hub.
"""

from __future__ import annotations

import base64
import binascii
import re

from drupelet.node.errors import ConfigError

# nkeys: base32 of a prefix byte, a 32-byte Ed25519 key and a CRC-16 (XMODEM), little-endian.
NKEY_PUBLIC_CHARS = 56
NKEY_ISSUERS = {0 << 3: "account", 14 << 3: "operator"}
NKEY_KINDS = {0 << 3: "an account key", 14 << 3: "an operator key", 20 << 3: "a user key", 13 << 3: "a server key",
              2 << 3: "a cluster key", 18 << 3: "a private seed", 15 << 3: "a private key"}
NKEY_USER_SEED = re.compile(r"^SU[A-Z2-7]{56}$")
JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
CREDS_BLOCK = r"-{3,}[^\n]*BEGIN WHAT[^\n]*-{3,}\n\s*(\S+)\s*\n-{3,}[^\n]*END WHAT[^\n]*-{3,}"
CREDS_JWT = re.compile(CREDS_BLOCK.replace("WHAT", "NATS USER JWT"))
CREDS_SEED = re.compile(CREDS_BLOCK.replace("WHAT", "USER NKEY SEED"))


def check_credentials(text: str, path: str) -> str:
    """``hub.credentials`` normalised (LF line ends, one final newline), or "" for none."""
    key = "hub.credentials"
    text = text.replace("\r\n", "\n").strip()
    if not text:
        return ""
    how = ("paste the whole .creds file between ''' and ''' (from '-----BEGIN NATS USER JWT-----' to "
           "'------END USER NKEY SEED------')")
    jwt, seed = CREDS_JWT.search(text), CREDS_SEED.search(text)
    if jwt is None:
        raise ConfigError(f"not a NATS .creds file: no 'BEGIN NATS USER JWT' block; {how}", key=key, path=path)
    if seed is None:
        raise ConfigError(f"not a NATS .creds file: no 'BEGIN USER NKEY SEED' block; {how}", key=key, path=path)
    if not JWT.match(jwt.group(1)):
        raise ConfigError(f"the user JWT is not a JWT (three base64url parts joined by dots); {how}", key=key,
                          path=path)
    if not NKEY_USER_SEED.match(seed.group(1)) or _nkey_crc_error(seed.group(1)):
        raise ConfigError(f"the user nkey seed is not a user seed (SU followed by 56 base32 characters with a "
                          f"valid checksum); {how}", key=key, path=path)
    return text + "\n"


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the nkeys checksum."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _nkey_crc_error(key: str) -> str | None:
    """Why ``key`` is not a well-formed nkey (base32, checksum), or None."""
    try:
        raw = base64.b32decode(key + "=" * (-len(key) % 8))
    except (binascii.Error, ValueError):
        return "it is not base32 (A-Z and 2-7)"
    if len(raw) < 3 or _crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
        return "its checksum does not match (a typo, or a character lost when copying)"
    return None


def check_trusted_keys(keys: list[str], path: str) -> tuple[str, ...]:
    """``trust.keys`` without duplicates, each an account or operator public key."""
    out: list[str] = []
    for i, key in enumerate(keys):
        where = f"trust.keys[{i}]"
        key = key.strip()
        if len(key) != NKEY_PUBLIC_CHARS or not re.fullmatch(r"[A-Z2-7]+", key):
            what = "a private seed: never put a seed here, only its public key" if key.startswith("S") else \
                f"a public nkey is {NKEY_PUBLIC_CHARS} characters of A-Z and 2-7, got {len(key)}"
            raise ConfigError(f"{key[:4]}…: not an issuer public key ({what})", key=where, path=path)
        problem = _nkey_crc_error(key)
        if problem:
            raise ConfigError(f"{key[:8]}… is not a valid public key: {problem}", key=where, path=path)
        prefix = base64.b32decode(key)[0]
        if prefix not in NKEY_ISSUERS:
            kind = NKEY_KINDS.get(prefix, "not an issuer key")
            raise ConfigError(f"{key[:8]}… is {kind}: actors are signed by an account (A…) or operator (O…) key",
                              key=where, path=path)
        if key not in out:
            out.append(key)
    return tuple(out)
