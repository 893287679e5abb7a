"""``drupelet keys``, ``sign``, ``claims``, ``revoke`` and ``revocations``: a thin CLI over :mod:`drupelet.node.security`.

``keys``, ``sign`` and ``claims`` need no lattice and import neither nats-py nor wasmtime;
``revoke`` and ``revocations`` write and read the lattice state's revoked keys.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drupelet.node.cli.common import CliError, run_remote
from drupelet.node.cli.output import emit, table

if TYPE_CHECKING:
    from drupelet.node.lattice.client import LatticeClient

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, option: str) -> int:
    """Seconds of ``90d``, ``12h``, ``30m``, ``45s`` or a bare number of seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text)
    if m is None:
        raise CliError(f"{option} {text!r}: a duration is a number with s, m, h, d or w (90d, 12h)")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def _seed(path: Path, role: str | None = None) -> Any:
    from drupelet.node.security import keys
    from drupelet.node.security.errors import BadKey

    try:
        return keys.load_seed(_read(path, "seed file").decode("ascii", "replace"), role=role)
    except BadKey as exc:
        raise CliError(f"{path}: {exc.message}") from exc


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from exc


def keys_gen(args: argparse.Namespace) -> int:
    from drupelet.node.security import keys

    pair = keys.generate(args.role)
    if args.output is not None:
        if args.output.exists():
            raise CliError(f"{args.output} exists: a seed is never overwritten (remove it first)")
        _write(args.output, pair.seed.encode() + b"\n", 0o600)
    data = {"role": pair.role, "public_key": pair.public, "seed_file": str(args.output) if args.output else None}
    if args.output is None:
        data["seed"] = pair.seed
    emit(args, data, pair.public if args.output else f"{pair.public}\n{pair.seed}")
    return 0


def keys_show(args: argparse.Namespace) -> int:
    pair = _seed(args.file)
    emit(args, {"role": pair.role, "public_key": pair.public}, f"{pair.role} {pair.public}")
    return 0


def sign(args: argparse.Namespace) -> int:
    from drupelet.node.security import claims as wc
    from drupelet.node.security.policy import normalize_cap

    data = _read(args.file, "actor")
    issuer = _seed(args.issuer)
    subject = _seed(args.subject, "actor").public if args.subject else None
    caps = tuple(dict.fromkeys(normalize_cap(c) for c in args.cap if c.strip()))
    signed, made = wc.sign(
        data, issuer, name=args.name, subject=subject, caps=caps, tags=tuple(args.tag), ver=args.ver, rev=args.rev,
        expires_in_s=parse_duration(args.expires_in, "--expires-in") if args.expires_in else None,
        not_before_in_s=parse_duration(args.not_before, "--not-before") if args.not_before else None)
    out = args.output or args.file.with_name(args.file.name.removesuffix(".wasm") + ".signed.wasm")
    _write(out, signed)
    emit(args, claims_json(wc.inspect(signed)) | {"file": str(out)}, f"{out}: signed by {made.issuer}, "
         f"subject {made.subject}")
    return 0


def _stamp(value: int | None) -> str | None:
    return None if value is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


def claims_json(found: Any) -> dict[str, Any]:
    """``drupelet claims --json``: the claims' fields, ``valid`` and ``reason`` (None when valid)."""
    c = found.claims
    return {
        "issuer": c.issuer if c else None, "subject": c.subject if c else None, "name": c.name if c else None,
        "version": c.ver if c else None, "revision": c.rev if c else None, "caps": list(c.caps) if c else [],
        "tags": list(c.tags) if c else [], "hash": c.hash if c else found.hash, "file_hash": found.hash,
        "issued_at": _stamp(c.issued_at) if c else None, "expires": _stamp(c.expires) if c else None,
        "not_before": _stamp(c.not_before) if c else None, "wascap_revision": c.revision if c else None,
        "valid": found.valid, "reason": found.reason,
        "detail": found.error.message if found.error is not None else None,
    }


def claims(args: argparse.Namespace) -> int:
    from drupelet.node.security import claims as wc
    from drupelet.node.security.errors import BadWasm

    try:
        found = wc.inspect(_read(args.file, "actor"), actor=str(args.file))
    except BadWasm as exc:
        raise CliError(f"{args.file}: {exc.message}") from exc
    data = claims_json(found)
    shown = {k: (", ".join(v) if isinstance(v, list) else v) for k, v in data.items() if v not in (None, [])}
    shown["valid"] = "yes" if found.valid else f"no: {found.error.message if found.error else ''}"
    emit(args, data, table([(k, str(v)) for k, v in shown.items()]))
    return 0 if found.valid else 1


def _revocation_rows(values: list[dict[str, Any]]) -> str:
    return table([[v["key"], _stamp(int(v["revoked_at"])) or ""] for v in values], ["key", "revoked at"])


def revoke(args: argparse.Namespace) -> int:
    async def work(client: LatticeClient) -> int:
        value = await client.lattice_request("revocation.put", {"key": args.key.strip()})
        emit(args, value, f"revoked {value['key']}", one_line=True)
        return 0

    return run_remote(args, work)


def revocations(args: argparse.Namespace) -> int:
    async def work(client: LatticeClient) -> int:
        values = await client.lattice_request("revocation.list", {})
        emit(args, values, _revocation_rows(values))
        return 0

    return run_remote(args, work)
