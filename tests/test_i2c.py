"""The ``i2c`` provider on the simulated bus, and on a real one with ``-m hardware``.

Hardware tests (run with DRUPELET_HARDWARE=1 on a Pi with a TMP102 attached) read:

| variable | meaning | default |
|---|---|---|
| ``DRUPELET_TEST_I2C_BUS`` | the adapter's device path, e.g. ``/dev/i2c-1`` | required |
| ``DRUPELET_TEST_TMP102_ADDR`` | the TMP102's address, e.g. ``0x48`` | required |
| ``DRUPELET_TEST_I2C_EMPTY_ADDR`` | an address nothing answers at | ``0x50`` |
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from drupelet.providers import i2c
from drupelet.providers.base import Denied, Link, Message, NotFound, PayloadTooLarge, ProviderContext, ProviderError
from drupelet.providers.i2c import BACKEND_ENV, I2cBus, I2cError, I2cProvider, error_code_parts
from drupelet.providers.i2c.simulation import SimBus, Ssd1306Sink, Tmp102
from drupelet.providers.schema import SchemaError, key_docs

INTERFACE = "drupelet:hardware/i2c-bus"
TMP102, OLED, EMPTY = 0x48, 0x3C, 0x50


def link(actor: str = "demo", buses: str | None = "i2c1", addresses: str | None = "0x48,0x3c,0x50") -> Link:
    config = {k: v for k, v in (("buses", buses), ("addresses", addresses)) if v is not None}
    return Link(actor, INTERFACE, "local/i2c", config)


async def start(tmp_path: Path, config: Mapping[str, Any]) -> I2cProvider:
    delivered: list[tuple[str, Message]] = []

    async def deliver(actor: str, message: Message) -> None:
        delivered.append((actor, message))

    provider = I2cProvider()
    await provider.start(ProviderContext(node="pi1", lattice="default", loop=asyncio.get_running_loop(),
                                         data_dir=tmp_path, config=config, deliver=deliver))
    return provider


@pytest.fixture(autouse=True)
def no_backend_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)


@pytest_asyncio.fixture
async def provider(tmp_path: Path) -> AsyncIterator[I2cProvider]:
    p = await start(tmp_path, {"backend": "sim"})
    try:
        yield p
    finally:
        await p.stop()


@pytest_asyncio.fixture
async def bus(provider: I2cProvider) -> I2cBus:
    return await asyncio.to_thread(provider.open, link(), "i2c1")


def tmp102_celsius(bus: I2cBus, address: int = TMP102) -> float:
    """A driver written from the TMP102 datasheet: pointer 0x00, two bytes, 12 bits left-justified."""
    raw = bus.write_read(address, b"\x00", 2)
    counts = ((raw[0] << 8) | raw[1]) >> 4
    if counts & 0x800:
        counts -= 1 << 12
    return counts * 0.0625


# -- the TMP102 model through the provider ------------------------------------------------


@pytest.mark.parametrize(("celsius", "raw"), [(21.5, b"\x15\x80"), (-10.25, b"\xf5\xc0"), (0.0, b"\x00\x00")])
async def test_a_datasheet_tmp102_driver_reads_the_set_temperature(provider: I2cProvider, bus: I2cBus,
                                                                  celsius: float, raw: bytes) -> None:
    provider.sim_device("i2c1", TMP102, Tmp102).set_temperature(celsius)
    assert await asyncio.to_thread(tmp102_celsius, bus) == celsius
    assert await asyncio.to_thread(bus.write_read, TMP102, b"\x00", 2) == raw


async def test_tmp102_registers_have_their_power_on_values(bus: I2cBus) -> None:
    for pointer, value in [(0x01, 0x60A0), (0x02, 0x4B00), (0x03, 0x5000)]:
        assert await asyncio.to_thread(bus.write_read, TMP102, bytes([pointer]), 2) == value.to_bytes(2, "big")
    # the pointer stays where it was set: a plain read returns T_HIGH again
    assert await asyncio.to_thread(bus.read, TMP102, 2) == b"\x50\x00"


async def test_tmp102_extended_mode_reads_13_bits(provider: I2cProvider, bus: I2cBus) -> None:
    sensor = provider.sim_device("i2c1", TMP102, Tmp102)
    sensor.set_temperature(130.0)
    assert await asyncio.to_thread(tmp102_celsius, bus) == 127.9375  # 12 bits saturate
    await asyncio.to_thread(bus.write, TMP102, bytes([0x01, 0x60, 0xB0]))  # config with EM set
    raw = await asyncio.to_thread(bus.write_read, TMP102, b"\x00", 2)
    word = int.from_bytes(raw, "big")
    assert word & 1 == 1 and (word >> 3) * 0.0625 == 130.0
    assert await asyncio.to_thread(bus.write_read, TMP102, b"\x01", 2) == b"\x60\xb0"


async def test_tmp102_threshold_writes_and_alert_bit(provider: I2cProvider, bus: I2cBus) -> None:
    sensor = provider.sim_device("i2c1", TMP102, Tmp102)
    await asyncio.to_thread(bus.write, TMP102, bytes([0x03, 0x1E, 0x00]))  # T_HIGH = 30 °C
    await asyncio.to_thread(bus.write, TMP102, bytes([0x02, 0x19, 0x00]))  # T_LOW = 25 °C
    assert await asyncio.to_thread(bus.write_read, TMP102, b"\x03", 2) == b"\x1e\x00"
    sensor.set_temperature(31.0)
    config = await asyncio.to_thread(bus.write_read, TMP102, b"\x01", 2)
    assert config[1] & 0x20 == 0  # AL active low (POL = 0)
    sensor.set_temperature(24.0)
    config = await asyncio.to_thread(bus.write_read, TMP102, b"\x01", 2)
    assert config[1] & 0x20 == 0x20


# -- transfers ------------------------------------------------------------------------------


async def test_transaction_returns_one_entry_per_read(bus: I2cBus) -> None:
    ops: list[Any] = [["write", [0x01]], ["read", 2], ("read", 1), ("write", b"\x00"), ("read", 2)]
    result = await asyncio.to_thread(bus.transaction, TMP102, ops)
    assert result[:2] == [b"\x60\xa0", b"\x60"] and len(result) == 3 and len(result[2]) == 2
    assert await asyncio.to_thread(bus.transaction, TMP102, [("write", b"\x01")]) == []
    assert await asyncio.to_thread(bus.transaction, TMP102, []) == []


async def test_no_device_is_no_acknowledge_of_the_address(bus: I2cBus) -> None:
    with pytest.raises(I2cError) as caught:
        await asyncio.to_thread(bus.read, EMPTY, 1)
    err = caught.value
    assert err.code == "i2c:no-acknowledge:address"
    assert (err.kind, err.source, err.errno, err.address, err.bus) == ("no-acknowledge", "address", errno.ENXIO,
                                                                       EMPTY, "i2c1")
    assert "0x50" in err.message and "'i2c1'" in err.message and "wired" in err.message


async def test_an_injected_fault_fails_one_transfer_and_the_bus_recovers(provider: I2cProvider, bus: I2cBus) -> None:
    provider.sim_bus("i2c1").inject(TMP102, errno.EREMOTEIO)
    with pytest.raises(I2cError) as caught:
        await asyncio.to_thread(tmp102_celsius, bus)
    assert caught.value.code == "i2c:no-acknowledge:unknown"
    health = provider.health()
    assert health.status == "degraded" and "i2c1" in health.message and "0x48" in health.message
    provider.sim_device("i2c1", TMP102, Tmp102).set_temperature(22.0)
    assert await asyncio.to_thread(tmp102_celsius, bus) == 22.0
    assert provider.health().status == "ok"


async def test_a_fault_at_one_address_leaves_the_others_alone(provider: I2cProvider, bus: I2cBus) -> None:
    provider.sim_bus("i2c1").inject(TMP102, errno.EAGAIN, count=2)
    await asyncio.to_thread(bus.write, OLED, b"\x00\xaf")
    for _ in range(2):
        with pytest.raises(I2cError, match="arbitration"):
            await asyncio.to_thread(bus.read, TMP102, 2)
    assert len(await asyncio.to_thread(bus.read, TMP102, 2)) == 2


async def test_concurrent_register_reads_never_mix_pointers(bus: I2cBus) -> None:
    failures: list[str] = []

    def reader(pointer: int, expected: bytes) -> None:
        for _ in range(100):
            got = bus.write_read(TMP102, bytes([pointer]), 2)
            if got != expected:
                failures.append(f"pointer {pointer}: {got!r}")

    threads = [threading.Thread(target=reader, args=(p, v)) for p, v in
               [(1, b"\x60\xa0"), (2, b"\x4b\x00"), (3, b"\x50\x00")] * 2]
    for t in threads:
        t.start()
    for t in threads:
        await asyncio.to_thread(t.join)
    assert failures == []


# -- grants and lookups -------------------------------------------------------------------


async def test_an_address_the_link_does_not_grant_is_denied(bus: I2cBus, provider: I2cProvider) -> None:
    with pytest.raises(Denied, match=r"not granted I2C address 0x49 on bus 'i2c1' \(link grants: 0x3c,0x48,0x50\)"):
        await asyncio.to_thread(bus.read, 0x49, 1)
    stingy = await asyncio.to_thread(provider.open, link("stingy", addresses=None), "i2c1")
    with pytest.raises(Denied, match=r"link grants: none.*`addresses`"):
        await asyncio.to_thread(stingy.read, TMP102, 2)


async def test_a_bus_the_link_does_not_grant_is_denied_and_a_missing_one_not_found(provider: I2cProvider) -> None:
    with pytest.raises(Denied, match=r"not granted I2C bus 'i2c1' \(link grants: i2c0\).*`buses`"):
        await asyncio.to_thread(provider.open, link(buses="i2c0"), "i2c1")
    with pytest.raises(Denied, match="link grants: none"):
        await asyncio.to_thread(provider.open, link(buses=None), "i2c1")
    with pytest.raises(NotFound, match=r"node 'pi1' has no I2C bus 'i2c7' \(its buses: i2c1\)"):
        await asyncio.to_thread(provider.open, link(buses="i2c1,i2c7"), "i2c7")
    assert await asyncio.to_thread(provider.buses, link(buses="i2c1,i2c7")) == ["i2c1"]
    assert await asyncio.to_thread(provider.buses, link(buses=None)) == []


@pytest.mark.parametrize(("call", "match"), [
    (lambda b: b.read(TMP102, 0), "reads 0 bytes; read 1 to 4096"),
    (lambda b: b.read(TMP102, 4097), "reads 4097 bytes"),
    (lambda b: b.read(TMP102, True), "reads True bytes"),
    (lambda b: b.write_read(TMP102, b"\x00", 0), "reads 0 bytes"),
    (lambda b: b.read(0x80, 1), "0x80 is not a 7-bit I2C address"),
    (lambda b: b.read(-1, 1), "is not a 7-bit I2C address"),
    (lambda b: b.transaction(TMP102, [("peek", 1)]), "operation 0 is"),
    (lambda b: b.transaction(TMP102, [("write", [256])]), "list of 0-255 integers"),
    (lambda b: b.transaction(TMP102, [("read", 1)] * 43), "at most 42"),
    (lambda b: b.write(TMP102, bytes(8193)), "write at most 8192"),
])
async def test_bad_arguments_are_clear_errors(bus: I2cBus, call: Any, match: str) -> None:
    with pytest.raises(ProviderError, match=match) as caught:
        await asyncio.to_thread(call, bus)
    assert not isinstance(caught.value, I2cError)  # refused before the bus was touched


async def test_a_transaction_too_large_in_total_is_refused(bus: I2cBus) -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        await asyncio.to_thread(bus.transaction, TMP102, [("read", 4096)] * 5)
    assert (caught.value.size, caught.value.limit) == (20480, 16384)


# -- error codes ----------------------------------------------------------------------------


@pytest.mark.parametrize(("number", "code"), [
    (errno.ENXIO, "i2c:no-acknowledge:address"),
    (errno.EREMOTEIO, "i2c:no-acknowledge:unknown"),
    (errno.EAGAIN, "i2c:arbitration-loss"),
    (errno.ETIMEDOUT, "i2c:bus"),
    (errno.EBUSY, "i2c:bus"),
    (errno.EOVERFLOW, "i2c:overrun"),
    (errno.EPROTO, "i2c:other"),
    (errno.EBADMSG, "i2c:other"),
    (errno.EIO, "i2c:other"),
    (errno.ENOSPC, "i2c:other"),
])
async def test_errno_maps_to_a_wasi_i2c_error_code(provider: I2cProvider, bus: I2cBus, number: int,
                                                   code: str) -> None:
    provider.sim_bus("i2c1").inject(TMP102, number)
    with pytest.raises(I2cError) as caught:
        await asyncio.to_thread(bus.read, TMP102, 2)
    assert caught.value.code == code and caught.value.errno == number
    assert os.strerror(number) in caught.value.message and errno.errorcode[number] in caught.value.message


@pytest.mark.parametrize("code", ["i2c:bus", "i2c:arbitration-loss", "i2c:overrun", "i2c:other",
                                  "i2c:no-acknowledge:address", "i2c:no-acknowledge:data",
                                  "i2c:no-acknowledge:unknown"])
def test_an_error_code_round_trips(code: str) -> None:
    err = I2cError.from_code(code, "remote says no")
    assert err.code == code and err.message == "remote says no" and isinstance(err, OSError)
    parts = error_code_parts(code)
    assert parts is not None and (err.kind, err.source) == parts


def test_codes_that_are_not_i2c_codes_are_refused() -> None:
    for code in ["other", "denied", "i2c:", "i2c:melted", "i2c:bus:address", "i2c:no-acknowledge:maybe"]:
        assert error_code_parts(code) is None
        with pytest.raises(ValueError):
            I2cError.from_code(code, "m")
    assert error_code_parts("i2c:no-acknowledge") == ("no-acknowledge", "unknown")


# -- inventory ------------------------------------------------------------------------------


async def test_describe_lists_what_a_scan_finds(provider: I2cProvider) -> None:
    assert provider.describe() == {"backend": "sim", "simulated": True,
                                   "buses": [{"name": "i2c1", "device": "sim", "devices": ["0x3c", "0x48"]}]}
    assert provider.health().message == "I2C is simulated"


async def test_a_stale_scan_is_refreshed_off_the_event_loop(provider: I2cProvider,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    provider.sim_bus("i2c1").add(Tmp102(0x49))
    assert provider.describe()["buses"][0]["devices"] == ["0x3c", "0x48"]  # cached for 30 s
    monkeypatch.setattr(i2c.provider, "SCAN_CACHE_S", 0.0)
    loop_thread = threading.current_thread()
    scanned_on: list[threading.Thread] = []
    real_scan = SimBus.i2c_rdwr

    def spy(self: SimBus, *msgs: Any) -> None:
        scanned_on.append(threading.current_thread())
        real_scan(self, *msgs)

    monkeypatch.setattr(SimBus, "i2c_rdwr", spy)
    provider.describe()  # on the loop: schedules a scan in a thread
    refresh = provider._refresh
    assert refresh is not None
    await refresh
    assert scanned_on and loop_thread not in scanned_on
    monkeypatch.setattr(i2c.provider, "SCAN_CACHE_S", 30.0)
    assert provider.describe()["buses"][0]["devices"] == ["0x3c", "0x48", "0x49"]


# -- handles and links ----------------------------------------------------------------------


async def test_link_removed_closes_that_actors_handles(provider: I2cProvider) -> None:
    mine = [await asyncio.to_thread(provider.open, link(), "i2c1") for _ in range(2)]
    theirs = await asyncio.to_thread(provider.open, link("other"), "i2c1")
    await provider.link_removed(link())
    for handle in mine:
        assert handle.closed
        with pytest.raises(ProviderError, match="handle on I2C bus 'i2c1' is closed.*open the bus again"):
            await asyncio.to_thread(handle.read, TMP102, 2)
        handle.close()  # idempotent
    assert len(await asyncio.to_thread(theirs.read, TMP102, 2)) == 2


async def test_a_link_put_again_changes_the_open_handles_grants(provider: I2cProvider, bus: I2cBus) -> None:
    await provider.link_added(link(addresses="0x3c"))
    with pytest.raises(Denied, match="0x48"):
        await asyncio.to_thread(bus.read, TMP102, 2)
    await asyncio.to_thread(bus.write, OLED, b"\x00\xaf")
    await provider.link_added(link(buses="i2c0"))
    assert bus.closed


async def test_a_link_with_a_bad_address_grant_is_refused(provider: I2cProvider) -> None:
    with pytest.raises(ProviderError, match="grants I2C address 'zz'"):
        await provider.link_added(link(addresses="0x48,zz"))
    with pytest.raises(ProviderError, match="grants I2C address '0x80'"):
        await provider.link_added(link(addresses="0x80"))


async def test_stop_closes_everything_and_is_idempotent(tmp_path: Path) -> None:
    p = await start(tmp_path, {"backend": "sim"})
    handle = await asyncio.to_thread(p.open, link(), "i2c1")
    sim = p.sim_bus("i2c1")
    await p.stop()
    await p.stop()
    assert handle.closed and sim.closed and p.describe()["buses"] == []
    with pytest.raises(ProviderError, match="closed"):
        await asyncio.to_thread(handle.read, TMP102, 2)


# -- config and backends --------------------------------------------------------------------


@pytest.mark.parametrize(("config", "match"), [
    ({"backend": "floppy"}, r"providers\.i2c\.backend: must be one of auto, smbus, sim, not 'floppy'"),
    ({"backend": "sim", "speed": 400}, r"providers\.i2c\.speed: unknown key \(known: backend, buses, sim_devices\)"),
    ({"backend": "sim", "buses": "i2c1"}, r"providers\.i2c\.buses: expected a table"),
    ({"backend": "sim", "buses": {"i2c1": 1}}, r"providers\.i2c\.buses\.i2c1: expected a string, got an integer 1"),
    ({"backend": "sim", "buses": {"i2c1": ""}}, r"providers\.i2c\.buses\.i2c1: expected a string of length >= 1"),
    ({"backend": "sim", "sim_devices": {"i2c1": "tmp102@0x48"}}, r"providers\.i2c\.sim_devices\.i2c1: expected a list"),
    ({"backend": "sim", "buses": {"my bus": "sim"}}, r"providers\.i2c\.buses: 'my bus' is not a bus name"),
    ({"backend": "sim", "sim_devices": {"i2c9": ["tmp102@0x48"]}}, r"providers\.i2c\.sim_devices\.i2c9: there is no bus"),
    ({"backend": "sim", "sim_devices": {"i2c1": ["lm75@0x48"]}}, r"providers\.i2c\.sim_devices\.i2c1: 'lm75@0x48'"),
    ({"backend": "sim", "sim_devices": {"i2c1": ["tmp102@0x90"]}}, r"providers\.i2c\.sim_devices\.i2c1: .*7-bit"),
    ({"backend": "sim", "sim_devices": {"i2c1": ["tmp102@0x48", "tmp102@72"]}}, r"sim_devices\.i2c1: two devices at 0x48"),
])
async def test_bad_config_names_the_key(tmp_path: Path, config: dict[str, Any], match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        await start(tmp_path, config)
    with pytest.raises(SchemaError, match=match):  # the same check, without starting
        I2cProvider.parse_config(config)


def test_the_schema_checks_a_table_without_looking_at_the_machine(tmp_path: Path) -> None:
    assert I2cProvider.config_schema is i2c.I2cSettings
    settings = I2cProvider.parse_config({"backend": "smbus"})  # no adapter needed to check the table
    assert (settings.backend, settings.buses, settings.sim_devices) == \
        ("smbus", {}, {"i2c1": ["tmp102@0x48", "ssd1306@0x3c"]})
    with pytest.raises(SchemaError,
                       match=r"^providers\.i2c\.sim_devices\.i2c2: there is no bus 'i2c2' \(buses: i2c1\)$"):
        I2cProvider.parse_config({"backend": "sim", "sim_devices": {"i2c2": ["tmp102@0x48"]}})
    # which buses exist is decided at start, from the machine and the environment
    assert i2c.parse_config({"backend": "auto"}, {}, tmp_path) == \
        i2c.I2cConfig(backend="sim", buses={"i2c1": "sim"}, sim_devices={"i2c1": ("tmp102@0x48", "ssd1306@0x3c")},
                      auto=True)
    (tmp_path / "i2c-4").write_bytes(b"")
    assert i2c.parse_config({"backend": "auto", "buses": {}}, {}, tmp_path) == \
        i2c.I2cConfig(backend="smbus", buses={"i2c4": str(tmp_path / "i2c-4")}, sim_devices={}, auto=True)
    assert i2c.parse_config({}, {BACKEND_ENV: "sim"}, tmp_path).backend == "sim"
    cfg = i2c.parse_config({"backend": "sim", "buses": {"left": "sim"}}, {}, tmp_path)
    assert (cfg.buses, cfg.sim_devices) == ({"left": "sim"}, {})  # the default devices are for i2c1 only
    assert all(doc.meaning for doc in key_docs(i2c.I2cSettings))


async def test_a_device_that_is_not_an_adapter_is_refused_at_start(tmp_path: Path) -> None:
    not_an_adapter = tmp_path / "i2c-9"
    not_an_adapter.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"providers\.i2c\.buses\.hw: cannot open {not_an_adapter}: .*not an I2C"):
        await start(tmp_path, {"backend": "smbus", "buses": {"hw": str(not_an_adapter)}})
    with pytest.raises(ValueError, match=r"providers\.i2c\.buses\.hw: cannot open /nonexistent/i2c-1: .*enable I2C"):
        await start(tmp_path, {"backend": "smbus", "buses": {"hw": "/nonexistent/i2c-1"}})


async def test_auto_simulates_with_a_warning_when_there_is_no_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(i2c.config, "DEV_DIR", tmp_path)
    with caplog.at_level(logging.WARNING, logger="drupelet.providers.i2c"):
        p = await start(tmp_path, {})
    try:
        assert p.describe()["simulated"] is True
        assert any("SIMULATED" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    finally:
        await p.stop()


async def test_auto_uses_smbus_when_an_adapter_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "i2c-3").write_bytes(b"")  # not a real adapter: opening it fails, naming the default bus
    monkeypatch.setattr(i2c.config, "DEV_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"providers\.i2c\.buses\.i2c3: cannot open .*i2c-3"):
        await start(tmp_path, {})


async def test_smbus_without_adapters_says_how_to_enable_i2c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(i2c.config, "DEV_DIR", tmp_path)
    with pytest.raises(SchemaError, match=r"providers\.i2c\.backend: is 'smbus' but there is no .*enable I2C"):
        await start(tmp_path, {"backend": "smbus"})


async def test_the_environment_overrides_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "sim")
    p = await start(tmp_path, {"backend": "smbus", "buses": {"i2c1": "/dev/i2c-1"}})
    try:
        assert p.describe() == {"backend": "sim", "simulated": True,
                                "buses": [{"name": "i2c1", "device": "/dev/i2c-1", "devices": ["0x3c", "0x48"]}]}
    finally:
        await p.stop()
    monkeypatch.setenv(BACKEND_ENV, "fake")
    with pytest.raises(SchemaError, match=f"{BACKEND_ENV}: must be one of auto, smbus, sim, not 'fake'"):
        await start(tmp_path, {})


async def test_the_smbus_backend_shares_the_code_path_and_has_no_sim_devices(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    def fake_open(name: str, path: str) -> SimBus:
        opened.append(path)
        return SimBus([Tmp102(TMP102)], name=name)

    monkeypatch.setattr(i2c.backends, "open_smbus", fake_open)
    p = await start(tmp_path, {"backend": "smbus", "buses": {"i2c1": "/dev/i2c-1"}})
    try:
        assert opened == ["/dev/i2c-1"]
        assert p.describe() == {"backend": "smbus", "simulated": False,
                                "buses": [{"name": "i2c1", "device": "/dev/i2c-1", "devices": ["0x48"]}]}
        bus = await asyncio.to_thread(p.open, link(), "i2c1")
        assert await asyncio.to_thread(tmp102_celsius, bus) == 21.0
        with pytest.raises(Denied, match="not simulated"):
            p.sim_device("i2c1", TMP102)
    finally:
        await p.stop()


async def test_sim_devices_config_places_devices(tmp_path: Path) -> None:
    p = await start(tmp_path, {"backend": "sim", "buses": {"i2c1": "sim", "i2c3": "sim"},
                               "sim_devices": {"i2c3": ["tmp102@0x49"]}})
    try:
        assert [b["devices"] for b in p.describe()["buses"]] == [[], ["0x49"]]
        assert isinstance(p.sim_device("i2c3", 0x49), Tmp102)
        with pytest.raises(NotFound, match="no simulated device at 0x48 on i2c3"):
            p.sim_device("i2c3", 0x48)
        with pytest.raises(NotFound, match="is a tmp102, not a ssd1306"):
            p.sim_device("i2c3", 0x49, Ssd1306Sink)
    finally:
        await p.stop()


# -- the SSD1306 sink -----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning")  # luma.oled's own call
async def test_luma_drives_the_simulated_ssd1306(provider: I2cProvider) -> None:
    from luma.core.interface.serial import i2c as luma_i2c
    from luma.oled.device import ssd1306

    sink = provider.sim_device("i2c1", OLED, Ssd1306Sink)
    device = await asyncio.to_thread(ssd1306, luma_i2c(bus=provider.sim_bus("i2c1"), address=OLED))
    device.persist = True  # its exit hook must not touch the closed simulated bus
    assert sink.display_on and sink.contrast == 0xCF and sink.data_bytes == 128 * 64 // 8
    device.hide()
    assert not sink.display_on and sink.last_commands == b"\xae"


async def test_the_ssd1306_status_byte_follows_display_power(bus: I2cBus, provider: I2cProvider) -> None:
    assert await asyncio.to_thread(bus.read, OLED, 1) == b"\x40"  # off at power-on
    await asyncio.to_thread(bus.write, OLED, b"\x00\x81\x10\xaf")
    sink = provider.sim_device("i2c1", OLED, Ssd1306Sink)
    assert (sink.contrast, sink.display_on, sink.command_bytes) == (0x10, True, 3)
    assert await asyncio.to_thread(bus.read, OLED, 1) == b"\x00"
    await asyncio.to_thread(bus.write, OLED, b"\x40" + bytes(16))
    assert sink.data_bytes == 16


# -- real hardware --------------------------------------------------------------------------


def _hardware_env() -> tuple[str, int, int]:
    missing = [v for v in ("DRUPELET_TEST_I2C_BUS", "DRUPELET_TEST_TMP102_ADDR") if not os.environ.get(v)]
    if missing:
        pytest.fail(f"set {', '.join(missing)} (see this module's docstring)")
    return (os.environ["DRUPELET_TEST_I2C_BUS"], int(os.environ["DRUPELET_TEST_TMP102_ADDR"], 0),
            int(os.environ.get("DRUPELET_TEST_I2C_EMPTY_ADDR", "0x50"), 0))


@pytest.mark.hardware
async def test_a_real_tmp102_reads_a_plausible_temperature(tmp_path: Path) -> None:
    path, sensor, _ = _hardware_env()
    p = await start(tmp_path, {"backend": "smbus", "buses": {"hw": path}})
    try:
        assert f"0x{sensor:02x}" in p.describe()["buses"][0]["devices"]
        bus = await asyncio.to_thread(p.open, link(buses="hw", addresses=hex(sensor)), "hw")
        assert -40.0 <= await asyncio.to_thread(tmp102_celsius, bus, sensor) <= 125.0
    finally:
        await p.stop()


@pytest.mark.hardware
async def test_a_real_empty_address_is_no_acknowledge(tmp_path: Path) -> None:
    path, _, empty = _hardware_env()
    p = await start(tmp_path, {"backend": "smbus", "buses": {"hw": path}})
    try:
        bus = await asyncio.to_thread(p.open, link(buses="hw", addresses=hex(empty)), "hw")
        with pytest.raises(I2cError) as caught:
            await asyncio.to_thread(bus.read, empty, 1)
        # i2c-bcm2835 cannot tell address from data NACKs (EREMOTEIO); other adapters say ENXIO
        assert caught.value.code in ("i2c:no-acknowledge:address", "i2c:no-acknowledge:unknown")
    finally:
        await p.stop()
