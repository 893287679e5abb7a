"""First boot: the boot partition's drupelet.toml is validated and installed to /etc/drupelet.

Everything runs against temporary directories standing in for /boot/firmware, /etc/drupelet
and /var/lib/drupelet, through the real command line (``drupelet firstboot``).
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shlex
import io
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest

from drupelet.node.system import firstboot
from drupelet.node.system.bootfile import install, report
from drupelet.node.cli.main import build_parser
from drupelet.node.cli.main import main as cli_main
from drupelet.node.config import load
from drupelet.node.lattice.natsserver import free_port
from drupelet.providers.display import DisplayBackend, SimulatedBackend

from test_templates import across, connect, server as nats_server  # the helpers the template test uses

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "images" / "drupelet.toml"
UNIT = ROOT / "systemd" / "drupelet-firstboot.service"

# Throwaway test keys (made with nkeys for these tests; they sign nothing anywhere).
ACCOUNT_KEY = "AB25NX2SKUSAIWGRJ2L3DE3Z6RLLH7ZI5EDICIQO6GEQQ6DJKTJY3T32"
OPERATOR_KEY = "ODGH5U4O7NGV3OKDCURS3ZJZVCDJICTWJMWZLAI442BUYYIJMQX6PSYL"
USER_KEY = "UA3STVH3HQZWU3BMYG2FWERQLCD22GKPAVKI6DUTMOENFTOL3LTK6UIF"
USER_SEED = "SUANO4ET72ONZ2PLBFMBU73JK6VCNRQLQB7NRAZ6KEOEWPBUAT3O2QGUOQ"
USER_JWT = ("eyJ0eXAiOiAiSldUIiwgImFsZyI6ICJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiAiVUEzU1RWSDNIUVpXVTNCTVlHMkZXRVJRTENEMjJH"
            "S1BBVktJNkRVVE1PRU5GVE9MM0xUSzZVSUYiLCAiaXNzIjogIkFCMjVOWDJTS1VTQUlXR1JKMkwzREUzWjZSTExIN1pJNUVESUNJUU82"
            "R0VRUTZESktUSlkzVDMyIiwgIm5hbWUiOiAicGktMSIsICJuYXRzIjogeyJ0eXBlIjogInVzZXIiLCAidmVyc2lvbiI6IDJ9fQ.y-Yn"
            "7YR3p5YzuTXMCn8ndDTNLWcH9dtVsYzEgIlx0Xs0n3lfeP1vmgGrN0fRPoZVzEOV1VdGvbHh_qQSd2uyCA")
CA_PEM = """-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUS5dQm5QnnCd9Wq0vVqg0hRAaN6QwCgYIKoZIzj0EAwIw
-----END CERTIFICATE-----
"""
"""A PEM block as firstboot checks it (markers and base64); nats-server reads the certificate."""
CREDS = f"""-----BEGIN NATS USER JWT-----
{USER_JWT}
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
{USER_SEED}
------END USER NKEY SEED------

*************************************************************
"""

GOOD = f"""\
[node]
name = "pi-7"
labels = {{ room = "lab" }}

[hub]
url = "nats-leaf://127.0.0.1:7422"
jetstream_domain = "hub"
credentials = '''
{CREDS}'''
open = true

[trust]
keys = ["{ACCOUNT_KEY}", "{OPERATOR_KEY}"]

[hardware.gpio]
pins = [17, 27]
safe_state = {{ "27" = "high" }}

[hardware.i2c]
buses = {{ i2c1 = "/dev/i2c-1" }}

[hardware.display]
driver = "ssd1306"
address = 0x3D
"""


class Boot:
    """A boot partition, /etc/drupelet and /var/lib/drupelet under one temporary directory."""

    def __init__(self, root: Path) -> None:
        self.file = root / "boot" / "drupelet.toml"
        self.etc = root / "etc" / "drupelet"
        self.state = root / "var" / "lib" / "drupelet"
        self.file.parent.mkdir(parents=True)

    @property
    def error_file(self) -> Path:
        return self.file.with_name("drupelet.toml.error")

    def write(self, text: str | bytes) -> Boot:
        self.file.write_bytes(text.encode() if isinstance(text, str) else text)
        return self

    def run(self, *extra: str) -> int:
        return cli_main(["firstboot", "--boot", str(self.file), "--etc", str(self.etc), "--state", str(self.state),
                         *extra])

    def installed(self) -> dict[str, tuple[bytes, int, int, int]]:
        """Every file in etc: (content, mtime_ns, inode, mode)."""
        if not self.etc.exists():
            return {}
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino, p.stat().st_mode & 0o7777)
                for p in sorted(self.etc.iterdir())}


@pytest.fixture
def boot(tmp_path: Path) -> Boot:
    return Boot(tmp_path)


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, DisplayBackend | None]]:
    """What firstboot put on a display: (title, detail, the backend it used or None)."""
    calls: list[tuple[str, str, DisplayBackend | None]] = []
    real = report.show_on_display

    def spy(config: dict[str, object], title: str, detail: str) -> DisplayBackend | None:
        backend = real(config, title, detail)
        calls.append((title, detail, backend))
        return backend

    monkeypatch.setattr(report, "show_on_display", spy)
    return calls


# -- the example file --------------------------------------------------------------------


def secure_example() -> str:
    """The example with what `drupelet lattice enroll` fills in: the node's credentials and the lattice's CA."""
    text = EXAMPLE.read_text()
    assert text.count('\ncredentials = ""\n') == 1 and text.count('\nca = ""\n') == 1
    return (text.replace('\ncredentials = ""\n', f"\ncredentials = '''\n{CREDS}'''\n")
            .replace('\nca = ""\n', f"\nca = '''\n{CA_PEM}'''\n"))


def test_the_example_as_shipped_is_refused_until_it_has_the_credentials_and_the_ca(boot: Boot) -> None:
    def error() -> str:
        return " ".join(boot.error_file.read_text().split())  # the error file wraps its lines

    assert boot.write(EXAMPLE.read_bytes()).run() == 1
    assert f"{boot.file}: hub.credentials: required: the node's .creds file" in error()
    assert boot.write(EXAMPLE.read_text().replace('\ncredentials = ""\n',
                                                  f"\ncredentials = '''\n{CREDS}'''\n")).run() == 1
    assert f"{boot.file}: hub.ca: required: the lattice's CA" in error()
    plain = secure_example().replace('"tls://hub.example.net:7422"', '"nats-leaf://hub.example.net:7422"')
    assert boot.write(plain).run() == 1
    assert f"{boot.file}: hub.url: 'nats-leaf://hub.example.net:7422' is not encrypted" in error()
    assert not boot.etc.exists() or not any(boot.etc.iterdir())


def test_example_installs_a_node_config_the_node_loads(boot: Boot) -> None:
    assert boot.write(secure_example()).run() == 0
    assert sorted(boot.installed()) == ["hub-ca.pem", "leaf.creds", "nats-leaf.conf", "node.toml", "trusted-keys"]
    cfg = load(boot.etc / "node.toml")
    assert (cfg.name, cfg.lattice, cfg.labels) == ("pi-1", "default", {"board": "pi4", "room": "lab"})
    assert (cfg.nats_url, cfg.nats_jetstream_domain) == ("nats://127.0.0.1:4222", "hub")
    assert cfg.authenticated is True  # an authenticated lattice: calls only for actors placed on their node
    assert (boot.etc / "hub-ca.pem").read_text() == CA_PEM
    assert cfg.providers == {
        "gpio": {"backend": "lgpio", "pins": list(range(4, 28)), "safe_state": {}},
        "i2c": {"backend": "smbus", "buses": {"i2c1": "/dev/i2c-1"}},
        "display": {"enabled": False},
    }
    leaf = (boot.etc / "nats-leaf.conf").read_text()
    assert 'urls: ["tls://hub.example.net:7422"]' in leaf
    assert f'store_dir: "{boot.state}/nats"' in leaf
    assert f'credentials: "{boot.etc / "leaf.creds"}"' in leaf
    assert f'tls: {{ ca_file: "{boot.etc / "hub-ca.pem"}" }}' in leaf
    assert {name: mode for name, (_, _, _, mode) in boot.installed().items()} == {
        "hub-ca.pem": 0o644, "leaf.creds": 0o600, "nats-leaf.conf": 0o644, "node.toml": 0o644, "trusted-keys": 0o644}


def test_an_open_hub_is_joined_without_credentials_or_ca_when_the_file_says_so(boot: Boot) -> None:
    text = EXAMPLE.read_text().replace("\nopen = false\n", "\nopen = true\n")
    assert boot.write(text).run() == 0
    assert sorted(boot.installed()) == ["nats-leaf.conf", "node.toml", "trusted-keys"]
    leaf = (boot.etc / "nats-leaf.conf").read_text().split("leafnodes")[1]
    assert "credentials" not in leaf and "ca_file" not in leaf  # the lines are left out, not left empty
    assert load(boot.etc / "node.toml").authenticated is False


def test_every_key_is_in_the_example_with_its_default() -> None:
    """The example documents the whole schema, and what it shows is what leaving a key out gives."""
    doc = tomllib.loads(EXAMPLE.read_text())
    examples_not_defaults = {("node", "labels")}
    for section, cls in firstboot.SECTIONS.items():
        table = doc
        for part in section.split("."):
            table = table[part]
        fields = msgspec.structs.fields(cls)
        assert set(table) == {f.encode_name for f in fields}, section
        for f in fields:
            default = f.default_factory() if f.default_factory is not msgspec.NODEFAULT else f.default
            if default is not msgspec.NODEFAULT and (section, f.encode_name) not in examples_not_defaults:
                assert table[f.encode_name] == default, f"{section}.{f.encode_name}"


def test_a_full_file_installs_credentials_keys_and_hardware(boot: Boot) -> None:
    assert boot.write(GOOD).run() == 0
    cfg = load(boot.etc / "node.toml")
    assert cfg.providers == {
        "gpio": {"backend": "lgpio", "pins": [17, 27], "safe_state": {"27": "high"}},
        "i2c": {"backend": "smbus", "buses": {"i2c1": "/dev/i2c-1"}},
        "display": {"driver": "ssd1306", "interface": "i2c", "port": 1, "address": 0x3D, "width": 128,
                    "height": 64, "rotate": 0},
    }
    creds = boot.etc / "leaf.creds"
    assert creds.read_text() == CREDS
    assert creds.stat().st_mode & 0o7777 == 0o600
    assert f'credentials: "{creds}"' in (boot.etc / "nats-leaf.conf").read_text()
    keys = [line for line in (boot.etc / "trusted-keys").read_text().splitlines() if not line.startswith("#")]
    assert keys == [ACCOUNT_KEY, OPERATOR_KEY]
    # the node enforces them: only these issuers, no unsigned actors (the boot file's default)
    assert (cfg.trust_keys, cfg.trust_allow_unsigned, cfg.trust_clock_skew_s) == ([ACCOUNT_KEY, OPERATOR_KEY],
                                                                                 False, 300.0)


def test_a_file_saved_by_a_windows_editor_installs_the_same(boot: Boot, tmp_path: Path) -> None:
    """A UTF-8 byte order mark and CRLF line ends, as Notepad writes them."""
    assert boot.write(GOOD).run() == 0
    unix = boot.installed()
    other = Boot(tmp_path / "windows")
    other.etc = boot.etc.parent / "windows-etc"
    assert other.write(b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode()).run() == 0
    windows = other.installed()
    assert {k: v[0] for k, v in windows.items()} == {
        k: v[0].replace(str(boot.etc).encode(), str(other.etc).encode())
        .replace(str(boot.file).encode(), str(other.file).encode())
        .replace(str(boot.state).encode(), str(other.state).encode()) for k, v in unix.items()}


# -- the leaf server it configures ---------------------------------------------------------


async def test_the_installed_leaf_config_joins_the_hub(boot: Boot, tmp_path: Path) -> None:
    hub_port, hub_leaf_port, leaf_port = free_port(), free_port(), free_port()
    text = EXAMPLE.read_text().replace('"tls://hub.example.net:7422"', f'"nats-leaf://127.0.0.1:{hub_leaf_port}"')
    text = text.replace("\nopen = false\n", "\nopen = true\n")  # this hub asks for nothing
    assert boot.write(text).run() == 0
    node = load(boot.etc / "node.toml")
    leaf = (boot.etc / "nats-leaf.conf").read_text()
    assert '\nhost: "127.0.0.1"\nport: 4222\n' in leaf  # the Pi's server listens on loopback only
    leaf = leaf.replace("\nport: 4222\n", f"\nport: {leaf_port}\n")  # a free port, nothing else changed
    hub = (f'server_name: "hub"\nhost: "127.0.0.1"\nport: {hub_port}\n'
           f'jetstream {{\n  store_dir: "{tmp_path / "hub"}"\n  domain: "hub"\n}}\n'
           f'leafnodes {{\n  host: "127.0.0.1"\n  port: {hub_leaf_port}\n}}\n')
    with nats_server(tmp_path / "hub.conf", hub), nats_server(tmp_path / "leaf.conf", leaf):
        on_hub, on_leaf = await connect(hub_port), await connect(leaf_port)
        try:
            assert await across(on_leaf, on_hub, b"from pi-1") == b"from pi-1"
            assert (await on_leaf.jetstream().account_info()).domain == node.name
            through_leaf = on_leaf.jetstream(domain=node.nats_jetstream_domain)
            assert (await through_leaf.account_info()).domain == "hub"
        finally:
            await on_hub.close()
            await on_leaf.close()


# -- bad files ------------------------------------------------------------------------------

BAD = [
    # (what, change to GOOD as (old, new) or a whole text, the key named in the error)
    ("unknown key", ('name = "pi-7"', 'name = "pi-7"\ncolour = "red"'), "node.colour"),
    ("unknown section", ("[hardware.i2c]", "[hardware.spi]"), "hardware.spi"),
    ("unknown top-level section", ("[trust]", "[trusts]"), "trusts"),
    ("bad name", ('name = "pi-7"', 'name = "pi 7"'), "node.name"),
    ("name missing", ('name = "pi-7"', ""), "node.name"),
    ("bad label", ('room = "lab"', '"a b" = "lab"'), "node.labels"),
    ("URL without a port", ('"nats-leaf://127.0.0.1:7422"', '"tls://hub.example.net"'), "hub.url"),
    ("URL with a web scheme", ('"nats-leaf://127.0.0.1:7422"', '"https://hub.example.net:7422"'), "hub.url"),
    ("URL with a bad port", ('"nats-leaf://127.0.0.1:7422"', '"tls://hub.example.net:74220"'), "hub.url"),
    ("URL that breaks out of the quotes",
     ('"nats-leaf://127.0.0.1:7422"', '"tls://hub:7422\\"]\\n  x: [\\""'), "hub.url"),
    ("hub domain is the node's", ('jetstream_domain = "hub"', 'jetstream_domain = "pi-7"'), "hub.jetstream_domain"),
    ("credentials not a creds file", (f"credentials = '''\n{CREDS}'''", 'credentials = "my password"'),
     "hub.credentials"),
    ("trusted key with a typo", (ACCOUNT_KEY, ACCOUNT_KEY[:-1] + "A"), "trust.keys[0]"),
    ("trusted key is a user key", (ACCOUNT_KEY, USER_KEY), "trust.keys[0]"),
    ("trusted key is a seed", (ACCOUNT_KEY, USER_SEED), "trust.keys[0]"),
    ("display address out of range", ("address = 0x3D", "address = 0x90"), "hardware.display.address"),
    ("display address not a number", ("address = 0x3D", 'address = "3c"'), "hardware.display.address"),
    ("display driver unknown", ('driver = "ssd1306"', 'driver = "ili9341"'), "hardware.display.driver"),
    ("pin not on the header", ("pins = [17, 27]", "pins = [17, 40]"), "hardware.gpio.pins"),
    ("pin of I2C bus 1", ("pins = [17, 27]", "pins = [2, 17, 27]"), "hardware.gpio.pins"),
    ("safe state of a pin not granted", ('"27" = "high"', '"22" = "high"'), "hardware.gpio.safe_state.22"),
    ("safe state unknown", ('"27" = "high"', '"27" = "on"'), "hardware.gpio.safe_state.27"),
    ("I2C bus not a device", ('i2c1 = "/dev/i2c-1"', 'i2c1 = "/dev/sda"'), "hardware.i2c.buses.i2c1"),
    ("wrong type: string for a list", ("pins = [17, 27]", 'pins = "17, 27"'), "hardware.gpio.pins"),
    ("wrong type: boolean for an integer", ("address = 0x3D", "width = true"), "hardware.display.width"),
    ("wrong type: table for a string", ('name = "pi-7"', 'name = { first = "pi" }'), "node.name"),
]


def bad_text(change: tuple[str, str]) -> str:
    old, new = change
    assert old in GOOD
    return GOOD.replace(old, new, 1)


@pytest.mark.parametrize("what, change, key", BAD, ids=[b[0] for b in BAD])
def test_a_bad_file_names_the_key_and_leaves_the_install_as_it_was(
        boot: Boot, caplog: pytest.LogCaptureFixture, what: str, change: tuple[str, str], key: str) -> None:
    assert boot.write(GOOD).run() == 0
    before = boot.installed()
    caplog.clear()
    assert boot.write(bad_text(change)).run() == 1
    assert boot.installed() == before  # byte for byte, not even rewritten
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith(f"{boot.file}: {key}: "), errors[0]
    assert "keeps its previous configuration" in errors[0]
    assert f"{boot.file}: {key}: " in boot.error_file.read_text()


def test_not_toml_names_the_file_and_the_line(boot: Boot, caplog: pytest.LogCaptureFixture) -> None:
    assert boot.write(GOOD).run() == 0
    before = boot.installed()
    assert boot.write('[node]\nname = "pi-7\n').run() == 1
    assert boot.installed() == before
    error = boot.error_file.read_text()
    assert f"{boot.file}: not valid TOML" in error and "line 2" in error
    assert any(f"{boot.file}: not valid TOML" in r.getMessage() for r in caplog.records)


def test_a_bad_file_on_the_first_boot_installs_nothing_and_says_so(boot: Boot) -> None:
    assert boot.write(bad_text(BAD[0][1])).run() == 1
    assert not boot.etc.exists() or not any(boot.etc.iterdir())
    assert "node cannot start until the file is fixed" in boot.error_file.read_text()


def test_the_error_file_goes_once_the_file_is_fixed(boot: Boot) -> None:
    assert boot.write(bad_text(BAD[0][1])).run() == 1
    first = boot.error_file.stat()
    assert boot.run() == 1  # the same mistake again: the error file is not rewritten
    assert boot.error_file.stat().st_mtime_ns == first.st_mtime_ns
    assert boot.write(GOOD).run() == 0
    assert not boot.error_file.exists()
    assert load(boot.etc / "node.toml").name == "pi-7"


# -- changes, reruns, dry runs ----------------------------------------------------------------


def test_a_rerun_with_the_same_file_writes_nothing(boot: Boot, capsys: pytest.CaptureFixture[str]) -> None:
    assert boot.write(GOOD).run() == 0
    before = boot.installed()
    capsys.readouterr()
    assert boot.run() == 0
    assert boot.installed() == before  # same content, mtimes and inodes
    assert "nothing written" in capsys.readouterr().out
    assert not boot.error_file.exists()


def test_an_edit_rewrites_only_what_it_changes(boot: Boot) -> None:
    assert boot.write(GOOD).run() == 0
    before = boot.installed()
    assert boot.write(GOOD.replace('room = "lab"', 'room = "attic"')).run() == 0
    after = boot.installed()
    assert load(boot.etc / "node.toml").labels == {"room": "attic"}
    assert [name for name in after if after[name] != before[name]] == ["node.toml"]


def test_removing_the_credentials_removes_the_creds_file_and_its_line(boot: Boot) -> None:
    assert boot.write(GOOD).run() == 0
    assert (boot.etc / "leaf.creds").exists()
    assert boot.write(bad_text((f"credentials = '''\n{CREDS}'''", 'credentials = ""'))).run() == 0
    assert not (boot.etc / "leaf.creds").exists()
    assert "credentials" not in (boot.etc / "nats-leaf.conf").read_text().split("leafnodes")[1]


def test_a_changed_mode_is_put_back_without_rewriting(boot: Boot) -> None:
    assert boot.write(GOOD).run() == 0
    creds = boot.etc / "leaf.creds"
    creds.chmod(0o644)
    inode, mtime = creds.stat().st_ino, creds.stat().st_mtime_ns
    assert boot.run() == 0
    assert (creds.stat().st_mode & 0o7777, creds.stat().st_ino, creds.stat().st_mtime_ns) == (0o600, inode, mtime)


def test_the_creds_file_belongs_to_the_user_that_runs_nats_server(boot: Boot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install, "SERVICE_USER", "nobody")  # the image's user is drupelet
    assert boot.write(GOOD).run() == 0
    creds = (boot.etc / "leaf.creds").stat()
    nobody = pwd.getpwnam("nobody")
    # only root can give a file away; anyone else keeps it
    owner = (nobody.pw_uid, nobody.pw_gid) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    assert ((creds.st_uid, creds.st_gid), creds.st_mode & 0o7777) == (owner, 0o600)
    before = boot.installed()
    assert boot.run() == 0  # read back (as root, another user's 0600 file) and found unchanged
    assert boot.installed() == before


def test_dry_run_writes_nothing(boot: Boot, capsys: pytest.CaptureFixture[str]) -> None:
    assert boot.write(GOOD).run("--dry-run") == 0
    assert not boot.etc.exists()
    out = capsys.readouterr().out
    assert f"would write {boot.etc / 'node.toml'}" in out and f"would write {boot.etc / 'leaf.creds'}" in out
    assert boot.write(bad_text(BAD[0][1])).run("--dry-run") == 1
    assert not boot.error_file.exists() and not boot.etc.exists()


def test_an_etc_that_cannot_be_written_is_reported_not_raised(boot: Boot, caplog: pytest.LogCaptureFixture) -> None:
    boot.etc.parent.mkdir(parents=True)
    boot.etc.write_text("a file where the directory should be")
    assert boot.write(GOOD).run() == 1
    assert boot.etc.read_text() == "a file where the directory should be"
    assert f"cannot prepare the files for {boot.etc}" in boot.error_file.read_text()
    assert [r.levelno for r in caplog.records if r.levelno >= logging.ERROR] == [logging.ERROR]


def test_no_boot_file_at_the_default_path_is_nothing_to_do(boot: Boot) -> None:
    """An image without a drupelet.toml boots as it is: the unit runs firstboot without --boot."""
    out = io.StringIO()
    assert firstboot.firstboot(boot=boot.file, etc=boot.etc, state=boot.state, out=out) == 0
    assert "nothing to do" in out.getvalue()
    assert not boot.etc.exists() and not boot.error_file.exists()


def test_a_named_boot_file_that_does_not_exist_is_an_error(boot: Boot, capsys: pytest.CaptureFixture[str]) -> None:
    assert boot.run("--dry-run") == 1
    captured = capsys.readouterr()
    assert captured.err == f"drupelet firstboot: no such file {boot.file}\n"
    assert "nothing to do" not in captured.out
    assert not boot.etc.exists()


# -- the display ----------------------------------------------------------------------------


def test_the_reason_is_drawn_on_the_new_files_display(
        boot: Boot, shown: list[tuple[str, str, DisplayBackend | None]]) -> None:
    text = GOOD.replace('driver = "ssd1306"', 'driver = "dummy"').replace("nats-leaf://127.0.0.1:7422",
                                                                          "http://hub:7422")
    assert boot.write(text).run() == 1
    [(title, detail, backend)] = shown
    assert title == "drupelet.toml error" and detail.startswith("hub.url: ")
    assert isinstance(backend, SimulatedBackend)
    assert backend.shown is not None and backend.shown.getbbox() is not None  # lit pixels, still there after close


def test_the_reason_is_drawn_on_the_installed_configs_display(
        boot: Boot, shown: list[tuple[str, str, DisplayBackend | None]]) -> None:
    assert boot.write(GOOD.replace('driver = "ssd1306"', 'driver = "dummy"')).run() == 0
    assert shown == []  # a good file shows nothing
    assert boot.write("this is not toml").run() == 1
    [(_title, detail, backend)] = shown
    assert detail.startswith("not valid TOML")
    assert isinstance(backend, SimulatedBackend) and backend.shown is not None
    assert backend.shown.getbbox() is not None


def test_a_display_that_cannot_be_opened_is_skipped(
        boot: Boot, shown: list[tuple[str, str, DisplayBackend | None]]) -> None:
    text = GOOD.replace("address = 0x3D", "address = 0x3D\nport = 250").replace('name = "pi-7"', 'name = "-"')
    assert boot.write(text).run() == 1  # no /dev/i2c-250 here: reported everywhere else, no crash
    assert [backend for _, _, backend in shown] == [None]
    assert "node.name" in boot.error_file.read_text()


def test_no_display_configured_draws_nothing(boot: Boot, shown: list[tuple[str, str, DisplayBackend | None]]) -> None:
    assert boot.write(bad_text(("[hardware.display]", "[hardware.display]\nport = -1"))).run() == 1
    assert shown == []


def test_long_reasons_are_cut_to_the_panel() -> None:
    image = firstboot.draw_message((128, 32), "1", "drupelet.toml error", "x " * 400)
    assert image.size == (128, 32) and image.getbbox() is not None


# -- the unit ------------------------------------------------------------------------------------


def test_the_units_command_line_is_one_the_cli_takes() -> None:
    [exec_start] = [line.split("=", 1)[1] for line in UNIT.read_text().splitlines()
                    if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/drupelet/venv/bin/drupelet"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.boot, args.etc, args.state, args.dry_run) == (
        "firstboot", firstboot.BOOT_FILE, firstboot.ETC_DIR, firstboot.STATE_DIR, False)
    assert f"ConditionPathExists={firstboot.BOOT_FILE}" in UNIT.read_text()


# -- the boot path and the reference ---------------------------------------------------------------

IMPORT_CHECK = """
import json, os, sys
from drupelet.node.system import firstboot
status = firstboot.main(sys.argv[1:])
loaded = set(sys.modules)
heavy = [name for name in loaded if name.split(".")[0] in os.environ["HEAVY"].split(",")]
node = [name for name in loaded if name.startswith("drupelet.node.") and
        name.split(".")[2] in ("cli", "host", "lattice", "runtime", "tools")]
print(json.dumps([status, sorted(heavy), sorted(node)]))
"""


def firstboot_in_a_child(boot: Boot, heavy: tuple[str, ...]) -> tuple[int, set[str], set[str]]:
    """Run ``firstboot.main`` in a fresh interpreter: (exit status, heavy modules it loaded,
    node modules beyond config, errors and system it loaded)."""
    result = subprocess.run([sys.executable, "-c", IMPORT_CHECK, "--boot", str(boot.file), "--etc", str(boot.etc),
                             "--state", str(boot.state)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "HEAVY": ",".join(heavy)})
    assert result.returncode == 0, result.stderr
    status, heavy_loaded, node = json.loads(result.stdout.splitlines()[-1])
    return status, set(heavy_loaded), set(node)


def test_firstboot_on_its_own_imports_no_cli_runtime_nats_or_display(boot: Boot) -> None:
    """It runs at every boot: no wasmtime, no NATS client, no terminal library, not the CLI;
    with no display configured, no display code either."""
    boot.write(secure_example())
    status, heavy, node = firstboot_in_a_child(boot, ("wasmtime", "nats", "rich", "PIL", "luma", "cryptography"))
    assert status == 0 and (boot.etc / "node.toml").exists()
    assert heavy == set() and node == set()


def test_firstboot_on_its_own_reports_a_bad_file(boot: Boot) -> None:
    boot.write(bad_text(BAD[0][1]))
    status, heavy, node = firstboot_in_a_child(boot, ("wasmtime", "nats"))
    assert status == 1 and heavy == set() and node == set()
    assert f"{boot.file}: node.colour: " in boot.error_file.read_text()


def test_the_boot_file_reference_has_every_key_of_every_section() -> None:
    text = firstboot.boot_markdown()
    for section, cls in firstboot.SECTIONS.items():
        head, _, body = text.partition(f"### [{section}]\n")
        assert body, section
        table = body.split("### ")[0]
        for f in msgspec.structs.fields(cls):
            assert f"| `{f.encode_name}` |" in table, f"{section}.{f.encode_name}"
    assert "| `name` | a string | required |" in text
    assert "| `rotate` | an integer ≥ 0, ≤ 3 | `0` |" in text
