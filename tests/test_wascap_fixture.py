"""A module signed by wasmCloud's own tooling verifies here (tests/fixtures/wascap/README.md).

The binary is wasmCloud's, not ours, so it is not kept in this repository: the test reads it
from ``tests/fixtures/wascap/`` (ignored by git) or from ``fixtures/wascap/`` of the shared
directory beside the checkout, and skips, saying where to get it, when it is in neither
(a fresh clone, CI), as the hardware tier does without a Pi.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from drupelet.node.cli.main import main
from drupelet.node.security import claims as wc

ROOT = Path(__file__).resolve().parent.parent
PONGER = "ponger_s.wasm"
PONGER_FILE_SHA256 = "5d8170ea6832c28af260e65760905fdf51c414464761894d4a778e43c6f2a362"
ISSUER = "ACM7TOENKEIO6Q6J66FX53AKXRHH6TH2WZ6K6SZQULNSWLDUIQHSRRSS"
SUBJECT = "MCR3MOPPRNUNV4QQHYWQDIQDXCJAKFBSZAIK564BUEX6ZBGR2OG6CV5G"
HASH = "E05A712039C0D884980E908AF82F30265988899485E97D6F871A01DB54A4A5CD"


@pytest.fixture(scope="module")
def ponger() -> bytes:
    places = [Path(os.environ["DRUPELET_WASCAP_FIXTURES"])] if os.environ.get("DRUPELET_WASCAP_FIXTURES") else []
    places += [ROOT / "tests" / "fixtures" / "wascap", ROOT.parent / "shared" / "fixtures" / "wascap"]
    for place in places:
        if (place / PONGER).is_file():
            data = (place / PONGER).read_bytes()
            assert hashlib.sha256(data).hexdigest() == PONGER_FILE_SHA256, f"{place / PONGER} is not the fixture"
            return data
    pytest.skip(f"wasmCloud's {PONGER} is not carried by this repository; place it (wasmCloud/wasmcloud-otp "
                f"host_core/test/fixtures/actors/{PONGER}, tests/fixtures/wascap/README.md) in one of: "
                f"{', '.join(map(str, places))}")


def test_wasmcloud_signed_module_verifies(ponger: bytes) -> None:
    found = wc.inspect(ponger)
    assert found.valid, found.error
    c = found.claims
    assert c is not None
    assert (c.issuer, c.subject, c.name, c.ver, c.caps, c.hash) == (ISSUER, SUBJECT, "ponger", "0.1.0", (), HASH)
    assert found.hash == HASH and c.call_alias == "wasmcloud/ponger" and c.revision is None


def test_one_changed_code_byte_fails_on_the_hash(ponger: bytes) -> None:
    i = len(ponger) // 3  # inside the code section, far from the claims section at the end
    tampered = ponger[:i] + bytes([ponger[i] ^ 1]) + ponger[i + 1:]
    assert wc.inspect(tampered).reason == "hash-mismatch"


def test_claims_json_on_wasmcloud_module(ponger: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "ponger.wasm"
    good.write_bytes(ponger)
    assert main(["claims", str(good), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["issuer"], out["subject"], out["caps"], out["hash"], out["valid"], out["reason"]) == (
        ISSUER, SUBJECT, [], HASH, True, None)
    bad = tmp_path / "tampered.wasm"
    i = len(ponger) // 3
    bad.write_bytes(ponger[:i] + bytes([ponger[i] ^ 1]) + ponger[i + 1:])
    assert main(["claims", str(bad), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["valid"], out["reason"]) == (False, "hash-mismatch")
