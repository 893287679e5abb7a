"""A lattice directory: the keys, JWTs, certificates and hub config of one authenticated lattice.

``drupelet lattice init NAME --hub-url URL -o DIR`` makes one; ``enroll``, ``user`` and
``revoke`` change it; the laptop's CLI reads it (``--lattice-dir``) for the lattice's name,
the hub's client URL, the CA and the admin credentials. Everything is NATS's own
decentralized auth (:mod:`drupelet.node.security.natsjwt`): an operator signs the lattice's
account and a system account; the account signs one user per person and per node, with the
permissions of its role (:mod:`drupelet.node.lattice.roles`).

=====================  ====================================================================
file                   what
=====================  ====================================================================
``lattice.toml``       name, hub leafnode URL, hub client URL, JetStream domain, trusted
                       actor issuers
``operator.nk``        the operator's seed (0600): signs the accounts; keep it offline
``account.nk``         the lattice account's seed (0600): signs users and revocations
``system.nk``          the system account's seed (0600)
``account.jwt``        the lattice account's JWT, revocations included
``system.creds``       a system-account user (0600): tells a running hub of a new account JWT
``admin.creds``        this laptop's admin user (0600)
``issuer.nk``          an account seed (0600) for signing actors, trusted by enrolled nodes
``users.json``         every user and node: role, public key, when issued, when revoked
``ca.pem``, ``ca.key`` the lattice's CA (the key 0600); or a copy of the user's CA
``hub/``               ``hub.conf`` for nats-server, the hub's certificate and key, its
                       account JWT store (``jwt/``) and JetStream storage (``jetstream/``)
=====================  ====================================================================

The directory, the hub config it renders and the registry of users change together: a
revocation rewrites the account JWT, the hub config's preload and the registry at once.
"""

from __future__ import annotations

import json
import logging
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from drupelet.node.lattice import roles, subjects
from drupelet.node.lattice.errors import AuthError
from drupelet.node.lattice.natsserver import EmbeddedNatsServer
from drupelet.node.security import keys, natsjwt, tls
from drupelet.node.security.errors import SecurityError

log = logging.getLogger(__name__)

__all__ = ["ENV", "LatticeDir", "Enrolled", "init"]

ENV: Final = "DRUPELET_LATTICE_DIR"
CONFIG: Final = "lattice.toml"
HUB_DOMAIN: Final = "hub"
CLIENT_PORT: Final = 4222
LEAF_PORT: Final = 7422
MAX_CONTROL_LINE: Final = 16384
"""The hub's protocol line limit: a node's user JWT travels in its CONNECT line and, with its
permissions, is larger than nats-server's default 4 KB allows."""
MAX_MESSAGING: Final = 32
SECRET: Final = 0o600
ADMIN: Final = "admin"
SYSTEM_USER: Final = "system"


@dataclass
class User:
    """One entry of ``users.json``."""

    name: str
    role: str
    key: str
    issued_at: int
    messaging: list[str] = field(default_factory=list)
    revoked_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "key": self.key, "issued_at": self.issued_at, "messaging": self.messaging,
                "revoked_at": self.revoked_at}


@dataclass(frozen=True)
class Enrolled:
    """What ``enroll`` and ``user`` hand out: the user's ``.creds`` text and its entry."""

    creds: str
    user: User


def _write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write ``path`` whole (a temporary file renamed over it), with ``mode`` from the start."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _conf_str(value: str | Path) -> str:
    return json.dumps(str(value))


def _host_port(url: str, what: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("tls", "nats", "nats-leaf") or not parts.hostname:
        raise AuthError(f"{what} {url!r}: write tls://<host>:<port> (the hub's {what.split()[0]} port)")
    try:
        port = parts.port or default_port
    except ValueError:
        raise AuthError(f"{what} {url!r}: the port is not a number") from None
    return parts.hostname, port


def init(directory: Path, name: str, *, hub_url: str, client_url: str | None = None, listen: str = "0.0.0.0",
         hub_dir: Path | None = None, trust: list[str] | None = None, tls_cert: Path | None = None,
         tls_key: Path | None = None, tls_ca: Path | None = None) -> LatticeDir:
    """Make a lattice directory at ``directory`` (which must not hold one yet)."""
    subjects.token(name, "lattice")
    if (directory / CONFIG).exists():
        raise AuthError(f"{directory} already holds a lattice ({CONFIG}); choose another directory")
    hub_host, leaf_port = _host_port(hub_url, "leafnode URL", LEAF_PORT)
    if urlsplit(hub_url).scheme != "tls":
        raise AuthError(f"--hub-url {hub_url!r}: a lattice's hub is reached over TLS: write tls://{hub_host}:"
                        f"{leaf_port}")
    client = client_url or f"tls://{hub_host}:{CLIENT_PORT}"
    client_host, client_port = _host_port(client, "client URL", CLIENT_PORT)
    if urlsplit(client).scheme != "tls":
        raise AuthError(f"--client-url {client!r}: clients reach the hub over TLS: write tls://{client_host}:"
                        f"{client_port}")
    brought = [p for p in (tls_cert, tls_key, tls_ca) if p is not None]
    if brought and len(brought) != 3:
        raise AuthError("bring all of --tls-cert, --tls-key and --tls-ca, or none (then init makes a CA)")
    for issuer in trust or []:
        keys.decode_public(issuer, roles=keys.ISSUER_ROLES)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hub").mkdir(exist_ok=True)
    operator, system, account, issuer_key = (keys.generate(r) for r in ("operator", "account", "account", "account"))
    _write(directory / "operator.nk", operator.seed + "\n", SECRET)
    _write(directory / "system.nk", system.seed + "\n", SECRET)
    _write(directory / "account.nk", account.seed + "\n", SECRET)
    _write(directory / "issuer.nk", issuer_key.seed + "\n", SECRET)
    if tls_cert is not None and tls_key is not None and tls_ca is not None:
        for path, what in ((tls_cert, "--tls-cert"), (tls_ca, "--tls-ca")):
            tls.check_pem_certificate(path, what)
        _write(directory / "ca.pem", tls_ca.read_bytes())
        _write(directory / "hub" / "hub.pem", tls_cert.read_bytes())
        _write(directory / "hub" / "hub.key", tls_key.read_bytes(), SECRET)
    else:
        ca = tls.make_ca(name)
        server = tls.make_server_cert(ca, [hub_host, client_host, "localhost", "127.0.0.1", "::1"])
        _write(directory / "ca.pem", ca.cert_pem)
        _write(directory / "ca.key", ca.key_pem, SECRET)
        _write(directory / "hub" / "hub.pem", server.cert_pem)
        _write(directory / "hub" / "hub.key", server.key_pem, SECRET)
    import tomli_w

    doc = {"name": name, "hub_url": hub_url, "client_url": client, "listen": listen,
           "leaf_port": leaf_port, "client_port": client_port, "jetstream_domain": HUB_DOMAIN,
           "hub_dir": str((hub_dir or directory / "hub").absolute()),
           "trust": [issuer_key.public, *(trust or [])]}
    _write(directory / CONFIG, "# made by `drupelet lattice init`\n" + tomli_w.dumps(doc))
    _write(directory / "users.json", json.dumps({"users": {}}, indent=1) + "\n")
    lattice = LatticeDir.open(directory)
    _write(directory / "operator.jwt", lattice._operator_jwt() + "\n")
    _write(directory / "system.jwt", natsjwt.encode(natsjwt.ACCOUNT, system.public, "SYS",
                                                    natsjwt.account_claims(jetstream=False), operator) + "\n")
    sys_user = keys.generate("user")
    sys_jwt = natsjwt.encode(natsjwt.USER, sys_user.public, SYSTEM_USER,
                             natsjwt.user_claims(natsjwt.Permissions()), system)
    _write(directory / "system.creds", natsjwt.creds_text(sys_jwt, sys_user.seed), SECRET)
    lattice.write_account()
    admin = lattice.add_user(ADMIN, roles.ADMIN)
    _write(directory / "admin.creds", admin.creds, SECRET)
    return lattice


class LatticeDir:
    """An existing lattice directory. :meth:`open` checks that it is one."""

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        self.doc = doc

    @classmethod
    def open(cls, path: Path) -> LatticeDir:
        config = path / CONFIG
        try:
            doc = tomllib.loads(config.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AuthError(f"{path} is not a lattice directory (no {CONFIG}; make one with `drupelet lattice "
                            "init`)") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise AuthError(f"cannot read {config}: {exc}") from None
        for key in ("name", "hub_url", "client_url", "jetstream_domain"):
            if not isinstance(doc.get(key), str):
                raise AuthError(f"{config}: {key} is missing")
        return cls(path, doc)

    # -- what clients read ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.doc["name"])

    @property
    def hub_url(self) -> str:
        return str(self.doc["hub_url"])

    @property
    def client_url(self) -> str:
        return str(self.doc["client_url"])

    @property
    def jetstream_domain(self) -> str:
        return str(self.doc["jetstream_domain"])

    @property
    def trust(self) -> list[str]:
        return [str(k) for k in self.doc.get("trust", [])]

    @property
    def ca(self) -> Path:
        return self.path / "ca.pem"

    @property
    def admin_creds(self) -> Path:
        return self.path / "admin.creds"

    @property
    def system_creds(self) -> Path:
        return self.path / "system.creds"

    @property
    def hub_config(self) -> Path:
        return self.path / "hub" / "hub.conf"

    def _seed(self, name: str, role: str) -> keys.KeyPair:
        path = self.path / name
        try:
            return keys.load_seed(path.read_text(encoding="ascii"), role=role)
        except FileNotFoundError:
            raise AuthError(f"{path} is missing: this lattice directory cannot sign {role} JWTs") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthError(f"cannot read {path}: {exc}") from None

    # -- users ------------------------------------------------------------------------------

    def users(self) -> dict[str, User]:
        path = self.path / "users.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))["users"]
            return {name: User(name=name, role=str(u["role"]), key=str(u["key"]), issued_at=int(u["issued_at"]),
                               messaging=[str(m) for m in u.get("messaging", [])],
                               revoked_at=None if u.get("revoked_at") is None else int(u["revoked_at"]))
                    for name, u in raw.items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AuthError(f"cannot read {path}: {exc}") from None

    def _save_users(self, users: dict[str, User]) -> None:
        doc = {"users": {name: u.to_json() for name, u in sorted(users.items())}}
        _write(self.path / "users.json", json.dumps(doc, indent=1) + "\n")

    def add_user(self, name: str, role: str, *, messaging: list[str] | None = None) -> Enrolled:
        """A new user ``name`` of ``role``: its key pair and JWT, recorded in ``users.json``."""
        try:
            subjects.token(name, "user")
        except ValueError:
            raise AuthError(f"{name!r} is not a valid user or node name: use A-Z a-z 0-9 _ -") from None
        if role not in roles.ROLES:
            raise AuthError(f"unknown role {role!r}: one of {', '.join(roles.ROLES)}")
        if messaging and role not in (roles.NODE, roles.CLIENT):
            raise AuthError(f"--messaging is for a node or a client, not a {role}")
        if len(messaging or []) > MAX_MESSAGING:
            raise AuthError(f"at most {MAX_MESSAGING} --messaging subjects")
        users = self.users()
        old = users.get(name)
        if old is not None and old.revoked_at is None:
            raise AuthError(f"{name!r} already has credentials (a {old.role}); revoke them first "
                            f"(drupelet lattice revoke {name}) to issue new ones")
        permissions = roles.permissions(role, self.name, name, messaging=messaging or [])
        pair = keys.generate("user")
        now = int(time.time())
        if old is not None and old.revoked_at is not None and now <= old.revoked_at:
            now = old.revoked_at + 1  # not that it matters: the revocation names the old key only
        tags = {"role": role, "lattice": self.name}
        token = natsjwt.encode(natsjwt.USER, pair.public, name, natsjwt.user_claims(permissions, tags),
                               self._seed("account.nk", "account"), now=now)
        user = User(name=name, role=role, key=pair.public, issued_at=now, messaging=list(messaging or []))
        users[name] = user
        self._save_users(users)
        return Enrolled(natsjwt.creds_text(token, pair.seed), user)

    def revoke(self, name: str) -> User:
        """Revoke ``name``'s credentials in the account JWT (and the hub config's copy of it)."""
        users = self.users()
        user = users.get(name)
        if user is None:
            known = ", ".join(sorted(users)) or "none"
            raise AuthError(f"no user or node named {name!r} in {self.path} (known: {known})")
        if user.revoked_at is None:
            user.revoked_at = int(time.time())
            self._save_users(users)
        self.write_account()
        return user

    # -- JWTs and the hub config -----------------------------------------------------------

    def _operator_jwt(self) -> str:
        operator = self._seed("operator.nk", "operator")
        system = self._seed("system.nk", "account")
        return natsjwt.encode(natsjwt.OPERATOR, operator.public, self.name, natsjwt.operator_claims(system.public),
                              operator)

    def account_jwt(self) -> str:
        """The lattice account's JWT: JetStream on, every revoked user's key with its time."""
        account = self._seed("account.nk", "account")
        revocations = {u.key: u.revoked_at for u in self.users().values() if u.revoked_at is not None}
        return natsjwt.encode(natsjwt.ACCOUNT, account.public, self.name,
                              natsjwt.account_claims(jetstream=True, revocations=revocations),
                              self._seed("operator.nk", "operator"))

    def write_account(self) -> str:
        token = self.account_jwt()
        _write(self.path / "account.jwt", token + "\n")
        _write(self.hub_config, self.render_hub_config(token))
        return token

    def render_hub_config(self, account_jwt: str) -> str:
        hub = Path(str(self.doc.get("hub_dir") or self.path / "hub"))
        system = self._seed("system.nk", "account")
        account = self._seed("account.nk", "account")
        system_jwt = (self.path / "system.jwt").read_text(encoding="ascii").strip()
        listen = str(self.doc.get("listen", "0.0.0.0"))
        tls_block = (f"{{ cert_file: {_conf_str(hub / 'hub.pem')}, key_file: {_conf_str(hub / 'hub.key')}, "
                     "timeout: 2 }")
        return "\n".join([
            f"# The hub of drupelet lattice {self.name!r}, made by `drupelet lattice init` (nats-server 2.10 or newer).",
            f"#   nats-server -c {hub / 'hub.conf'}",
            "# Every client and leaf node authenticates with a user JWT of the lattice's account and talks",
            "# TLS; `drupelet lattice revoke` rewrites the account JWT below and tells a running hub.",
            "# Paths are those of --hub-dir (default: the lattice directory's hub/).",
            "",
            'server_name: "hub"',
            f"host: {_conf_str(listen)}",
            f"port: {int(self.doc.get('client_port', CLIENT_PORT))}",
            f"max_control_line: {MAX_CONTROL_LINE}",
            "",
            f"operator: {_conf_str(self._operator_jwt())}",
            f"system_account: {system.public}",
            "resolver {",
            "  type: full",
            f"  dir: {_conf_str(hub / 'jwt')}",
            "  allow_delete: false",
            '  interval: "2m"',
            '  timeout: "1.9s"',
            "}",
            "resolver_preload {",
            f"  {system.public}: {_conf_str(system_jwt)}",
            f"  {account.public}: {_conf_str(account_jwt)}",
            "}",
            "",
            "jetstream {",
            f"  store_dir: {_conf_str(hub / 'jetstream')}",
            f"  domain: {_conf_str(self.jetstream_domain)}",
            "}",
            "",
            f"tls {tls_block}",
            "",
            "leafnodes {",
            f"  host: {_conf_str(listen)}",
            f"  port: {int(self.doc.get('leaf_port', LEAF_PORT))}",
            f"  tls {tls_block}",
            "}",
            "",
        ])


def hub_server(lattice: LatticeDir, run_dir: Path) -> EmbeddedNatsServer:
    """The lattice's hub, its ``hub.conf`` as it is, run by this process (the demo, the tests);
    its own config copy and log go to ``run_dir``."""
    from drupelet.node.lattice.natsserver import EmbeddedNatsServer, NatsServerConfig

    return EmbeddedNatsServer(NatsServerConfig(
        host=str(lattice.doc.get("listen", "127.0.0.1")), port=int(lattice.doc.get("client_port", CLIENT_PORT)),
        leafnode_listen_port=int(lattice.doc.get("leaf_port", LEAF_PORT)), store_dir=run_dir,
        config_text=lattice.hub_config.read_text(encoding="utf-8")))


async def push_account(lattice: LatticeDir, *, url: str | None = None, timeout_s: float = 5.0) -> None:
    """Tell the running hub of the lattice account's current JWT (its revocations apply at
    once: revoked users are disconnected). :class:`AuthError` if the hub does not take it."""
    from drupelet.node.lattice.connect import close_quietly, connect, tls_context

    target = url or lattice.client_url
    nc = await connect(target, name="drupelet-lattice", creds=str(lattice.system_creds),
                       tls=tls_context(str(lattice.ca)), timeout_s=timeout_s)
    try:
        import nats.errors

        try:
            msg = await nc.request("$SYS.REQ.CLAIMS.UPDATE", lattice.account_jwt().encode(), timeout=timeout_s)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise AuthError(f"the hub at {target} did not take the account JWT ({type(exc).__name__}): is it run "
                            f"from {lattice.hub_config} (a full account resolver)?") from None
        try:
            reply = json.loads(msg.data)
        except ValueError:
            reply = {}
        data = reply.get("data") if isinstance(reply, dict) else None
        error = reply.get("error") if isinstance(reply, dict) else None
        if error or not isinstance(data, dict) or data.get("code") != 200:
            why = (error or {}).get("description") if isinstance(error, dict) else None
            raise AuthError(f"the hub at {target} refused the account JWT: {why or msg.data[:200]!r}")
    finally:
        await close_quietly(nc)


def creds_grant(path: Path) -> roles.Grant:
    """What the credentials at ``path`` allow, from their user JWT (no signature check: the
    server does that; this only lets a client refuse at once what the server would)."""
    try:
        creds = natsjwt.read_creds(path)
    except SecurityError as exc:
        raise AuthError(exc.message) from None
    return roles.Grant(name=creds.jwt.name, role=creds.jwt.tag("role") or "user",
                       permissions=creds.jwt.permissions)
