"""``drupelet keys``, ``sign`` and ``claims`` as a person runs them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from drupelet.node.cli.main import main
from drupelet.node.runtime import read_component

ECHO_WAT = Path(__file__).resolve().parent.parent / "actors" / "wat" / "echo.wat"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_keys_gen_writes_a_0600_seed_and_prints_the_public_key(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    seed = tmp_path / "me.nk"
    status, out, _ = run(capsys, "keys", "gen", "account", "-o", str(seed))
    assert status == 0 and out.strip().startswith("A") and len(out.strip()) == 56
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600 and seed.read_text().startswith("SA")
    assert run(capsys, "keys", "show", str(seed))[1].strip() == f"account {out.strip()}"
    status, _, err = run(capsys, "keys", "gen", "account", "-o", str(seed))
    assert status == 1 and "exists" in err and err.count("\n") == 1
    for role, letter in (("actor", "M"), ("operator", "O"), ("user", "U")):
        status, out, _ = run(capsys, "--json", "keys", "gen", role)
        assert status == 0 and json.loads(out)["public_key"][0] == letter


def test_sign_then_claims_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed = tmp_path / "me.nk"
    issuer = run(capsys, "keys", "gen", "account", "-o", str(seed))[1].strip()
    src = tmp_path / "counter.wasm"
    src.write_bytes(read_component(ECHO_WAT))
    out_file = tmp_path / "counter.signed.wasm"
    status, _, err = run(capsys, "sign", str(src), "--issuer", str(seed), "--name", "counter", "--ver", "1.2.0",
                         "--cap", "wasi:keyvalue", "--cap", "wasmcloud:messaging", "--expires-in", "90d",
                         "-o", str(out_file))
    assert status == 0, err
    status, out, _ = run(capsys, "claims", str(out_file), "--json")
    got = json.loads(out)
    assert status == 0
    assert {k: got[k] for k in ("issuer", "name", "version", "caps", "valid", "reason")} == {
        "issuer": issuer, "name": "counter", "version": "1.2.0", "caps": ["wasi:keyvalue", "wasmcloud:messaging"],
        "valid": True, "reason": None}
    assert got["subject"].startswith("M") and len(got["hash"]) == 64
    assert got["issued_at"] and got["expires"] and got["not_before"] is None and "revision" in got
    status, out, _ = run(capsys, "claims", str(src), "--json")
    assert status == 1 and (json.loads(out)["valid"], json.loads(out)["reason"]) == (False, "unsigned")


def test_sign_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "a.wasm"
    src.write_bytes(read_component(ECHO_WAT))
    user = tmp_path / "u.nk"
    run(capsys, "keys", "gen", "user", "-o", str(user))
    status, _, err = run(capsys, "sign", str(src), "--issuer", str(user), "--name", "a")
    assert status == 1 and "account or operator" in err and err.count("\n") == 1
    status, _, err = run(capsys, "sign", str(src), "--issuer", str(src), "--name", "a")
    assert status == 1 and "not an nkey seed" in err and err.count("\n") == 1
    status, _, err = run(capsys, "claims", str(user))
    assert status == 1 and "not a WebAssembly" in err and err.count("\n") == 1
