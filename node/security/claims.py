"""Actor claims in wascap's format: an Ed25519 JWT signed by the issuer (account) key.

Fields as wascap (wasmCloud ``crates/wascap/src/jwt.rs``) writes them, in its order:
``exp``, ``jti``, ``iat``, ``iss`` (account ``A…``), ``sub`` (actor ``M…``), ``nbf``,
``wascap`` (``name``, ``hash``, ``tags``, ``caps``, ``rev``, ``ver``, ``call_alias``,
``prov``) and ``wascap_revision`` (3); absent optional fields are left out. ``caps`` is
wascap 0.x's (its ``Actor``); wascap 1.x's ``Component`` (wasmCloud v1.9.2) has no
``caps`` and ignores the field when it reads ours. The header is
``{"typ":"jwt","alg":"Ed25519"}``, segments are base64url without padding.

:func:`inspect` checks what a binary says about itself (signature, hash, validity dates);
whom to trust is :mod:`.policy`'s business.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from . import keys, wasm
from .errors import BadSignature, Expired, HashMismatch, NotYetValid, SecurityError, Unsigned

__all__ = ["WASCAP_REVISION", "Claims", "Inspection", "decode", "encode", "inspect", "read_claims", "sign"]

WASCAP_REVISION = 3
HEADER = {"typ": "jwt", "alg": "Ed25519"}
_NUID_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Claims:
    """An actor's claims; times are seconds since the epoch."""

    issuer: str
    subject: str
    hash: str = ""
    name: str | None = None
    caps: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    rev: int | None = None
    ver: str | None = None
    call_alias: str | None = None
    provider: bool = False
    id: str = ""
    issued_at: int = 0
    expires: int | None = None
    not_before: int | None = None
    revision: int | None = WASCAP_REVISION
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_jwt_claims(self) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        if self.name is not None:
            meta["name"] = self.name
        meta["hash"] = self.hash
        meta["tags"] = list(self.tags)
        meta["caps"] = list(self.caps)
        if self.rev is not None:
            meta["rev"] = self.rev
        if self.ver is not None:
            meta["ver"] = self.ver
        if self.call_alias is not None:
            meta["call_alias"] = self.call_alias
        meta["prov"] = self.provider
        out: dict[str, Any] = {}
        if self.expires is not None:
            out["exp"] = self.expires
        out.update(jti=self.id, iat=self.issued_at, iss=self.issuer, sub=self.subject)
        if self.not_before is not None:
            out["nbf"] = self.not_before
        out["wascap"] = meta
        if self.revision is not None:
            out["wascap_revision"] = self.revision
        return out


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadSignature("the JWT is not base64url") from None


def new_id() -> str:
    """A 22-character random id, as wascap's ``nuid`` makes for ``jti``."""
    return "".join(_NUID_CHARS[b % 62] for b in os.urandom(22))


def encode(claims: Claims, issuer: keys.KeyPair) -> str:
    """The signed JWT of ``claims`` (``claims.issuer`` must be ``issuer``'s public key)."""
    head = _b64(json.dumps(HEADER, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims.to_jwt_claims(), separators=(",", ":")).encode())
    signed = f"{head}.{body}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


def _opt_int(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadSignature(f"the claims' {what} is not a number")
    return value


def decode(jwt: str) -> tuple[Claims, bytes, bytes]:
    """``(claims, signed bytes, signature)`` of a JWT; :class:`BadSignature` if it does not parse."""
    parts = jwt.strip().split(".")
    if len(parts) != 3:
        raise BadSignature(f"the claims are not a JWT (3 segments expected, found {len(parts)})")
    try:
        header = json.loads(_unb64(parts[0]))
        body = json.loads(_unb64(parts[1]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadSignature("the JWT's header or claims are not JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "Ed25519" or header.get("typ") != "jwt":
        raise BadSignature(f"the JWT header is not {json.dumps(HEADER)}")
    if not isinstance(body, dict) or not isinstance(body.get("wascap"), dict):
        raise BadSignature("the JWT has no 'wascap' claims")
    meta = body["wascap"]
    try:
        claims = Claims(
            issuer=str(body["iss"]), subject=str(body["sub"]), hash=str(meta.get("hash", "")),
            name=meta.get("name"), caps=tuple(meta.get("caps") or ()), tags=tuple(meta.get("tags") or ()),
            rev=_opt_int(meta.get("rev"), "rev"), ver=meta.get("ver"), call_alias=meta.get("call_alias"),
            provider=bool(meta.get("prov", False)), id=str(body.get("jti", "")),
            issued_at=_opt_int(body.get("iat"), "iat") or 0, expires=_opt_int(body.get("exp"), "exp"),
            not_before=_opt_int(body.get("nbf"), "nbf"),
            revision=_opt_int(body.get("wascap_revision"), "wascap_revision"),
            extra={k: v for k, v in meta.items() if k not in
                   ("name", "hash", "tags", "caps", "rev", "ver", "call_alias", "prov")})
    except KeyError as exc:
        raise BadSignature(f"the claims have no {exc.args[0]!r}") from None
    return claims, f"{parts[0]}.{parts[1]}".encode(), _unb64(parts[2])


def read_claims(data: bytes) -> Claims | None:
    """The claims embedded in a binary, unchecked, or None if it has none."""
    jwt = wasm.find_jwt(data)
    return None if jwt is None else decode(jwt)[0]


def sign(data: bytes, issuer: keys.KeyPair, *, name: str | None = None, subject: str | None = None,
         caps: tuple[str, ...] = (), tags: tuple[str, ...] = (), ver: str | None = None, rev: int | None = None,
         call_alias: str | None = None, expires_in_s: int | None = None, not_before_in_s: int | None = None,
         now: float | None = None) -> tuple[bytes, Claims]:
    """``data`` signed by ``issuer``: any existing signature replaced, its subject kept unless
    ``subject`` is given, else a new actor key."""
    if issuer.role not in keys.ISSUER_ROLES:
        raise SecurityError(f"actors are signed by an account or operator key, not a {issuer.role} key")
    if subject is None:
        old = read_claims(data) if wasm.find_jwt(data) is not None else None
        subject = old.subject if old is not None else keys.generate("actor").public
    else:
        keys.decode_public(subject, roles=("actor",))
    t = int(time.time() if now is None else now)
    claims = Claims(
        issuer=issuer.public, subject=subject, hash=wasm.content_hash(data), name=name, caps=tuple(caps),
        tags=tuple(tags), rev=rev, ver=ver, call_alias=call_alias, id=new_id(), issued_at=t,
        expires=None if expires_in_s is None else t + expires_in_s,
        not_before=None if not_before_in_s is None else t + not_before_in_s)
    return wasm.embed(data, encode(claims, issuer)), claims


@dataclass(frozen=True)
class Inspection:
    """What a binary's own claims say: ``error`` is None when signature, hash and dates hold."""

    claims: Claims | None
    hash: str
    error: SecurityError | None

    @property
    def valid(self) -> bool:
        return self.error is None

    @property
    def reason(self) -> str | None:
        return None if self.error is None else self.error.code


def _check(data: bytes, actor: str, now: float, skew_s: float) -> tuple[Claims | None, str, SecurityError | None]:
    digest = wasm.content_hash(data)
    jwt = wasm.find_jwt(data)
    if jwt is None:
        return None, digest, Unsigned(f"{actor}: unsigned (no {wasm.SECTION} section)", actor=actor)
    try:
        claims, signed, signature = decode(jwt)
    except BadSignature as exc:
        return None, digest, BadSignature(f"{actor}: {exc.message}", actor=actor)
    try:
        good = keys.verify(claims.issuer, signed, signature)
    except SecurityError as exc:
        return claims, digest, BadSignature(f"{actor}: the issuer {claims.issuer[:8]}… is not a public key: "
                                            f"{exc.message}", actor=actor)
    if not good:
        return claims, digest, BadSignature(f"{actor}: the signature is not {claims.issuer[:8]}…'s", actor=actor)
    if claims.hash != digest:
        return claims, digest, HashMismatch(f"{actor}: the bytes changed after signing (hash {digest[:12]}…, "
                                            f"signed {claims.hash[:12]}…)", actor=actor)
    if claims.expires is not None and claims.expires + skew_s < now:
        return claims, digest, Expired(f"{actor}: the claims expired at {_when(claims.expires)}", actor=actor)
    if claims.not_before is not None and claims.not_before - skew_s > now:
        return claims, digest, NotYetValid(f"{actor}: the claims are not valid before "
                                           f"{_when(claims.not_before)}", actor=actor)
    return claims, digest, None


def _when(stamp: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def inspect(data: bytes, *, actor: str = "actor", now: float | None = None, skew_s: float = 0) -> Inspection:
    """Signature, hash and validity dates of ``data``'s claims, never raising for a refusal."""
    claims, digest, error = _check(data, actor, time.time() if now is None else now, skew_s)
    return Inspection(claims, digest, error)
