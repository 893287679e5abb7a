"""``drupelet lattice init|enroll|user|revoke|users``: an authenticated lattice in a few commands.

A thin CLI over :mod:`drupelet.node.lattice.latticedir` (keys, JWTs, the hub's config) and
:mod:`drupelet.node.system.bootfile.enroll` (a node's boot file). ``revoke`` also tells the
running hub, through its system account, so the credentials stop working at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from drupelet.node.cli.common import CliError, pairs
from drupelet.node.cli.output import emit, table
from drupelet.node.lattice.latticedir import LatticeDir, init as init_dir, push_account


def _lattice(args: argparse.Namespace) -> LatticeDir:
    path: Path | None = args.lattice_dir
    if path is None:
        raise CliError("which lattice? give --lattice-dir DIR (made by `drupelet lattice init`) or set "
                       "DRUPELET_LATTICE_DIR", code="no-lattice-dir")
    return LatticeDir.open(path)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, mode)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


def init(args: argparse.Namespace) -> int:
    from drupelet.node.security.keys import load_seed

    lattice = init_dir(args.output, args.name, hub_url=args.hub_url, client_url=args.client_url, listen=args.listen,
                       hub_dir=args.hub_dir, trust=args.trust, tls_cert=args.hub_cert, tls_key=args.hub_key,
                       tls_ca=args.hub_ca)
    d = lattice.path
    issuer = load_seed((d / "issuer.nk").read_text()).public
    lines = [
        f"made lattice {lattice.name!r} in {d}",
        f"  hub config     {lattice.hub_config}: run it with  nats-server -c {lattice.hub_config}",
        f"                 clients {lattice.client_url}, leaf nodes {lattice.hub_url}, TLS and credentials on both",
        f"  admin          {lattice.admin_creds} (this machine: drupelet --lattice-dir {d} nodes)",
        f"  CA             {lattice.ca}",
        f"  actor issuer   {d / 'issuer.nk'} ({issuer}): drupelet sign FILE --issuer {d / 'issuer.nk'} …",
        f"  keep {d / 'operator.nk'} and {d / 'account.nk'} secret: they make credentials",
        f"next: drupelet lattice enroll pi-1 --lattice-dir {d} -o pi-1/",
    ]
    emit(args, {"lattice": lattice.name, "directory": str(d), "hub_config": str(lattice.hub_config),
                "client_url": lattice.client_url, "hub_url": lattice.hub_url, "admin_creds": str(lattice.admin_creds),
                "ca": str(lattice.ca), "issuer": issuer}, "\n".join(lines))
    return 0


def enroll(args: argparse.Namespace) -> int:
    from drupelet.node.system.bootfile.enroll import boot_file

    lattice = _lattice(args)
    labels = pairs(args.label, "--label")
    out: Path = args.output
    made = lattice.add_user(args.node, "node", messaging=args.messaging)
    try:
        out.mkdir(parents=True, exist_ok=True)
        ca = lattice.ca.read_text(encoding="ascii")
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    creds = out / f"{args.node}.creds"
    _write(creds, made.creds, 0o600)
    _write(out / "ca.pem", ca)
    _write(out / "drupelet.toml", boot_file(
        name=args.node, lattice=lattice.name, labels=labels, hub_url=lattice.hub_url,
        jetstream_domain=lattice.jetstream_domain, credentials=made.creds, ca=ca, trust=lattice.trust), 0o600)
    _write(out / "node.toml", _node_toml(lattice, args.node, labels, creds.name))
    lines = [f"enrolled node {args.node!r} in lattice {lattice.name!r} ({made.user.key})",
             f"  {out / 'drupelet.toml'}: copy it onto the Pi's SD card (boot partition) and boot it",
             f"  {out / 'node.toml'}: or run the node on any machine: drupelet up --config {out / 'node.toml'}",
             f"  {creds}: its credentials (0600); revoke them with: drupelet lattice revoke {args.node}"]
    emit(args, {"node": args.node, "key": made.user.key, "directory": str(out)}, "\n".join(lines))
    return 0


def _node_toml(lattice: LatticeDir, node: str, labels: dict[str, str], creds: str) -> str:
    """A node config that joins the hub as this node through the embedded server (paths
    relative to the file, as the config loader reads them)."""
    import tomli_w

    doc = {"node": {"name": node, "lattice": lattice.name, "labels": labels},
           "nats": {"hub_url": lattice.hub_url, "hub_creds": creds, "hub_ca": "ca.pem",
                    "jetstream_domain": lattice.jetstream_domain, "authenticated": True},
           "trust": {"keys": lattice.trust, "allow_unsigned": False}}
    return (f"# node {node} of lattice {lattice.name}, made by `drupelet lattice enroll`:\n"
            f"#   drupelet up --config node.toml\n" + tomli_w.dumps(doc))


def user(args: argparse.Namespace) -> int:
    lattice = _lattice(args)
    made = lattice.add_user(args.name, args.role, messaging=args.messaging)
    _write(args.output, made.creds, 0o600)
    emit(args, {"user": args.name, "role": args.role, "key": made.user.key, "creds": str(args.output)},
         f"made {args.role} {args.name!r} ({made.user.key}): {args.output}\n"
         f"  use it with: drupelet --nats {lattice.client_url} --lattice {lattice.name} --tls-ca {lattice.ca} "
         f"--creds {args.output} nodes")
    return 0


def revoke(args: argparse.Namespace) -> int:
    lattice = _lattice(args)
    gone = lattice.revoke(args.name)
    try:
        asyncio.run(push_account(lattice))
    except Exception as exc:
        why = getattr(exc, "message", None) or str(exc)
        raise CliError(f"revoked {gone.role} {args.name!r} in {lattice.path} (account.jwt and {lattice.hub_config}), "
                       f"but the hub was not told: {why}; run `drupelet lattice revoke {args.name}` again when it is "
                       f"up, or restart it with {lattice.hub_config}", code="hub-not-told") from None
    emit(args, {"revoked": args.name, "role": gone.role, "key": gone.key, "at": gone.revoked_at},
         f"revoked {gone.role} {args.name!r} ({gone.key}): the hub at {lattice.client_url} refuses it from now on")
    return 0


def users(args: argparse.Namespace) -> int:
    lattice = _lattice(args)
    rows, data = [], []
    for name, u in sorted(lattice.users().items()):
        data.append({"name": name, **u.to_json()})
        rows.append([name, u.role, u.key[:12] + "…", _when(u.issued_at), _when(u.revoked_at) if u.revoked_at else "",
                     ", ".join(u.messaging)])
    emit(args, data, table(rows, ["name", "role", "key", "issued", "revoked", "messaging"]))
    return 0


def _when(stamp: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else ""
