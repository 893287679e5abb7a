"""NATS decentralized auth: operator, account and user JWTs (v2), and ``.creds`` files.

The format is nats-io/jwt v2's, as nats-server reads it and nsc writes it: a header
``{"typ":"JWT","alg":"ed25519-nkey"}``, claims with ``jti`` (base32 of the SHA-512/256 of the
standard claims without ``jti``), ``iat``, ``iss``, ``name``, ``sub`` and a ``nats`` object
carrying ``type`` (``operator``, ``account``, ``user``), ``version`` 2 and the type's own
fields, and an Ed25519 signature by the issuer's nkey; every part base64url without
padding. An account JWT is signed by the operator, a user JWT by its account.

What each JWT holds is declared here once:

- **operator**: ``system_account`` (the account nats-server reports on ``$SYS``).
- **account**: ``limits`` (none, and JetStream on for the lattice's account),
  ``revocations`` (user public key → Unix time: users whose JWT was issued at or before
  that time are refused), ``default_permissions``.
- **user**: ``pub``/``sub`` ``allow``/``deny`` subject lists, ``resp`` (how many replies to
  requests it received a user may send, and for how long), ``subs``/``data``/``payload``
  limits (-1: none), and ``tags`` (drupelet writes ``role:<role>`` and ``inbox:<prefix>``).

A ``.creds`` file is the user JWT and the user's seed in the decorated blocks that
nats-py's ``user_credentials`` and the NATS CLI read (:func:`creds_text`,
:func:`read_creds`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import keys
from .errors import BadSignature, SecurityError

__all__ = ["ACCOUNT", "OPERATOR", "USER", "Creds", "Jwt", "Permissions", "account_claims", "creds_text", "decode",
           "encode", "operator_claims", "read_creds", "user_claims"]

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
VERSION = 2
OPERATOR, ACCOUNT, USER = "operator", "account", "user"
NO_LIMIT = -1
EXPECTED_ISSUER = {OPERATOR: ("operator",), ACCOUNT: ("operator",), USER: ("account",)}
"""Which kind of key signs each kind of JWT."""
SUBJECT_ROLE = {OPERATOR: "operator", ACCOUNT: "account", USER: "user"}

ACCOUNT_LIMITS: dict[str, Any] = {
    "subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT, "imports": NO_LIMIT, "exports": NO_LIMIT,
    "wildcards": True, "conn": NO_LIMIT, "leaf": NO_LIMIT,
}
"""An account without limits (nats-io/jwt's ``OperatorLimits``, as NewAccountClaims makes it)."""
JETSTREAM_LIMITS: dict[str, Any] = {"mem_storage": NO_LIMIT, "disk_storage": NO_LIMIT, "streams": NO_LIMIT,
                                    "consumer": NO_LIMIT}
"""JetStream on, without limits: an account whose ``mem_storage`` and ``disk_storage`` are 0 has none."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadSignature("the JWT is not base64url") from None


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _jti(standard: dict[str, Any]) -> str:
    """nats-io/jwt's claim id: base32 (no padding) of the SHA-512/256 of the standard claims
    (``aud exp jti iat iss name nbf sub``, Go's field order, empty ones left out) with no ``jti``."""
    order = ("aud", "exp", "iat", "iss", "name", "nbf", "sub")
    data = {k: standard[k] for k in order if standard.get(k) not in (None, "", 0)}
    digest = hashlib.new("sha512_256", _compact(data)).digest()
    return base64.b32encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class Permissions:
    """A user's subject permissions: what it may publish and subscribe to, and whether it may
    answer requests sent to it (``responses``: replies per request, within ``response_ttl_s``)."""

    pub_allow: tuple[str, ...] = ()
    pub_deny: tuple[str, ...] = ()
    sub_allow: tuple[str, ...] = ()
    sub_deny: tuple[str, ...] = ()
    responses: int = 0
    response_ttl_s: float = 0.0

    def to_claims(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        pub = {k: list(v) for k, v in (("allow", self.pub_allow), ("deny", self.pub_deny)) if v}
        sub = {k: list(v) for k, v in (("allow", self.sub_allow), ("deny", self.sub_deny)) if v}
        if pub:
            out["pub"] = pub
        if sub:
            out["sub"] = sub
        if self.responses:
            out["resp"] = {"max": self.responses, "ttl": int(self.response_ttl_s * 1e9)}
        return out

    @classmethod
    def from_claims(cls, nats: dict[str, Any]) -> Permissions:
        def strings(part: str, kind: str) -> tuple[str, ...]:
            value = (nats.get(part) or {}).get(kind) or []
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise BadSignature(f"the user JWT's {part}.{kind} is not a list of subjects")
            return tuple(value)

        resp = nats.get("resp") or {}
        return cls(strings("pub", "allow"), strings("pub", "deny"), strings("sub", "allow"), strings("sub", "deny"),
                   int(resp.get("max") or 0), float(resp.get("ttl") or 0) / 1e9)


@dataclass(frozen=True)
class Jwt:
    """A decoded JWT: its standard claims and its ``nats`` object (unchecked until :meth:`verify`)."""

    token: str
    claims: dict[str, Any]
    signed: bytes
    signature: bytes

    @property
    def kind(self) -> str:
        return str(self.nats.get("type", ""))

    @property
    def nats(self) -> dict[str, Any]:
        value = self.claims.get("nats")
        return value if isinstance(value, dict) else {}

    @property
    def subject(self) -> str:
        return str(self.claims.get("sub", ""))

    @property
    def issuer(self) -> str:
        return str(self.claims.get("iss", ""))

    @property
    def name(self) -> str:
        return str(self.claims.get("name", ""))

    @property
    def issued_at(self) -> int:
        value = self.claims.get("iat", 0)
        return value if isinstance(value, int) else 0

    @property
    def tags(self) -> tuple[str, ...]:
        value = self.nats.get("tags") or []
        return tuple(str(t) for t in value) if isinstance(value, list) else ()

    def tag(self, key: str) -> str | None:
        """The value of a ``key:value`` tag (nats-io/jwt lowercases tags), or None."""
        prefix = f"{key.lower()}:"
        return next((t[len(prefix):] for t in self.tags if t.startswith(prefix)), None)

    @property
    def permissions(self) -> Permissions:
        return Permissions.from_claims(self.nats)

    def verify(self) -> None:
        """:class:`BadSignature` unless the signature is the issuer's and the issuer is of the right kind."""
        want = EXPECTED_ISSUER.get(self.kind)
        if want is None:
            raise BadSignature(f"not an operator, account or user JWT (type {self.kind!r})")
        try:
            keys.decode_public(self.issuer, roles=want)
            keys.decode_public(self.subject, roles=(SUBJECT_ROLE[self.kind],))
        except SecurityError as exc:
            raise BadSignature(f"the {self.kind} JWT: {exc.message}") from None
        if not keys.verify(self.issuer, self.signed, self.signature):
            raise BadSignature(f"the {self.kind} JWT's signature is not its issuer's ({self.issuer[:8]}…)")


def encode(kind: str, subject: str, name: str, nats: dict[str, Any], issuer: keys.KeyPair, *,
           now: float | None = None, expires: int | None = None) -> str:
    """The JWT of ``kind`` for ``subject`` (a public key), signed by ``issuer``."""
    want = EXPECTED_ISSUER[kind]
    if issuer.role not in want:
        raise SecurityError(f"a {kind} JWT is signed by an {' or '.join(want)} key, not a {issuer.role} key")
    keys.decode_public(subject, roles=(SUBJECT_ROLE[kind],))
    standard: dict[str, Any] = {"iat": int(time.time() if now is None else now), "iss": issuer.public,
                                "name": name, "sub": subject}
    if expires is not None:
        standard["exp"] = expires
    claims: dict[str, Any] = {"jti": _jti(standard), **standard,
                              "nats": {**nats, "type": kind, "version": VERSION}}
    signed = f"{_b64(_compact(HEADER))}.{_b64(_compact(claims))}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


def decode(token: str) -> Jwt:
    """The claims of a NATS JWT; :class:`BadSignature` if it does not parse (not checked: :meth:`Jwt.verify`)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise BadSignature(f"not a JWT (3 segments expected, found {len(parts)})")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadSignature("the JWT's header or claims are not JSON") from None
    if not isinstance(header, dict) or str(header.get("typ", "")).upper() != "JWT" \
            or str(header.get("alg", "")).lower() != HEADER["alg"]:
        raise BadSignature(f"not a NATS v2 JWT (header {json.dumps(HEADER)} expected)")
    if not isinstance(claims, dict):
        raise BadSignature("the JWT's claims are not an object")
    return Jwt(token.strip(), claims, f"{parts[0]}.{parts[1]}".encode(), _unb64(parts[2]))


def operator_claims(system_account: str) -> dict[str, Any]:
    return {"system_account": system_account}


def account_claims(*, jetstream: bool, revocations: dict[str, int] | None = None) -> dict[str, Any]:
    limits = dict(ACCOUNT_LIMITS) | (JETSTREAM_LIMITS if jetstream else {})
    out: dict[str, Any] = {"limits": limits, "default_permissions": {"pub": {}, "sub": {}}}
    if revocations:
        out["revocations"] = dict(sorted(revocations.items()))
    return out


def user_claims(permissions: Permissions, tags: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {**permissions.to_claims(), "subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT}
    if tags:
        out["tags"] = [f"{k}:{v}".lower() for k, v in tags.items()]
    return out


# -- .creds files --------------------------------------------------------------------------

_BLOCK = r"-{3,}[^\n]*BEGIN WHAT[^\n]*-{3,}\r?\n\s*(\S+)\s*\r?\n-{3,}[^\n]*END WHAT[^\n]*-{3,}"
_CREDS_JWT = re.compile(_BLOCK.replace("WHAT", "NATS USER JWT"))
_CREDS_SEED = re.compile(_BLOCK.replace("WHAT", "USER NKEY SEED"))


def creds_text(jwt: str, seed: str) -> str:
    """A ``.creds`` file, as nsc and nats-io/jwt's FormatUserConfig write it."""
    return ("-----BEGIN NATS USER JWT-----\n"
            f"{jwt}\n"
            "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{seed}\n"
            "------END USER NKEY SEED------\n\n"
            "*************************************************************\n")


@dataclass(frozen=True)
class Creds:
    """A ``.creds`` file's user JWT (decoded) and its seed's key pair."""

    jwt: Jwt
    key: keys.KeyPair = field(repr=False)


def parse_creds(text: str, *, where: str = "the credentials") -> Creds:
    """A ``.creds`` file's contents; :class:`BadSignature` says what is wrong with them."""
    jwt, seed = _CREDS_JWT.search(text), _CREDS_SEED.search(text)
    if jwt is None or seed is None:
        raise BadSignature(f"{where}: not a NATS .creds file (no 'BEGIN NATS USER JWT' and 'BEGIN USER NKEY "
                           "SEED' blocks)")
    try:
        pair = keys.load_seed(seed.group(1), role="user")
    except SecurityError as exc:
        raise BadSignature(f"{where}: the seed: {exc.message}") from None
    token = decode(jwt.group(1))
    if token.kind != USER or token.subject != pair.public:
        raise BadSignature(f"{where}: the JWT is not the user JWT of the seed beside it")
    return Creds(token, pair)


def read_creds(path: Path) -> Creds:
    """The ``.creds`` file at ``path``; :class:`BadSignature` if it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadSignature(f"cannot read the credentials {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_creds(text, where=str(path))
