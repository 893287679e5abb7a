"""The boot file's NATS secrets and keys: a ``.creds`` file pasted into ``hub.credentials``,
the hub's CA in ``hub.ca``, and the issuer public keys of ``trust.keys``, checked by :mod:`drupelet.node.security.keys`
(base32, a prefix byte that says what the key is, the nkeys CRC-16), so a typo or a
pasted seed is caught on the card instead of at the hub.
"""

from __future__ import annotations

import re

from drupelet.node.errors import ConfigError

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


PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")


def check_ca(text: str, path: str) -> str:
    """``hub.ca`` normalised (LF line ends, one final newline), or "" for none: one or more PEM
    certificates (checked by their markers and base64; the TLS library checks the rest)."""
    text = text.replace("\r\n", "\n").strip()
    if not text:
        return ""
    if not PEM_CERT.search(text) or PEM_CERT.sub("", text).strip():
        raise ConfigError("not a PEM certificate: paste the whole ca.pem, from '-----BEGIN CERTIFICATE-----' to "
                          "'-----END CERTIFICATE-----', between three single quotes on each side",
                          key="hub.ca", path=path)
    return text + "\n"


def _nkey_crc_error(key: str) -> str | None:
    """Why ``key`` is not a well-formed nkey (base32, checksum), or None."""
    from drupelet.node.security.keys import BadKey, check_encoding

    try:
        check_encoding(key)
    except BadKey as exc:
        return exc.message
    return None


def check_trusted_keys(keys: list[str], path: str) -> tuple[str, ...]:
    """``trust.keys`` without duplicates, each an account or operator public key."""
    from drupelet.node.config import check_issuer_keys

    stripped = [key.strip() for key in keys]
    check_issuer_keys(stripped, "trust.keys", path)
    return tuple(dict.fromkeys(stripped))
