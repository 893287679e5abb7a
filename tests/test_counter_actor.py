"""The counter example's guest logic, run in-process against componentize-py's stubs.

``componentize-py bindings`` writes the same ``wit_world`` modules a build generates, but
with stub functions; the fakes below replace those stubs so the example's behaviour is
checked in milliseconds, without building or instantiating a component. The built
component itself is covered in test_build.py.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from drupelet.node.tools.build import BuildError, find_componentize_py, generate_bindings
from drupelet.node.tools.build import example_dir

_GUEST_MODULES = ("app", "wit_world", "componentize_py_types", "componentize_py_runtime",
                  "componentize_py_async_support", "poll_loop")


@dataclass
class FakeHost:
    """What the fakes saw and what they hold."""

    config: dict[str, str] = field(default_factory=dict)
    buckets: dict[str, dict[str, int]] = field(default_factory=dict)
    opened: list[str] = field(default_factory=list)
    closed: int = 0
    logs: list[tuple[str, str, str]] = field(default_factory=list)
    published: list[Any] = field(default_factory=list)
    fail: dict[str, Any] = field(default_factory=dict)  # operation -> WIT error value


@dataclass
class Guest:
    app: ModuleType
    store: ModuleType
    config: ModuleType
    msg_type: type
    err_type: type
    host: FakeHost


def _drop_guest_modules() -> None:
    for name in list(sys.modules):
        if name.partition(".")[0] in _GUEST_MODULES:
            del sys.modules[name]


@pytest.fixture(scope="module")
def bindings_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        find_componentize_py()
    except BuildError as e:
        pytest.skip(str(e))
    return generate_bindings(tmp_path_factory.mktemp("bindings"))


@pytest.fixture
def guest(bindings_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Guest]:
    """The counter's ``app`` module imported against stub bindings wired to a FakeHost."""
    _drop_guest_modules()
    monkeypatch.syspath_prepend(str(example_dir("counter")))
    monkeypatch.syspath_prepend(str(bindings_dir))
    import app  # type: ignore[import-not-found]
    from componentize_py_types import Err  # type: ignore[import-not-found]
    from wit_world.imports import atomics, consumer  # type: ignore[import-not-found]
    from wit_world.imports import logging as wasi_logging
    from wit_world.imports import wasi_config_store, wasi_keyvalue_store
    from wit_world.imports.types import BrokerMessage  # type: ignore[import-not-found]

    host = FakeHost()

    def check(operation: str) -> None:
        if operation in host.fail:
            raise Err(host.fail[operation])

    class Bucket(wasi_keyvalue_store.Bucket):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            self.data = host.buckets.setdefault(name, {})

        def delete(self, key: str) -> None:
            check("delete")
            self.data.pop(key, None)

        def __exit__(self, *exc: object) -> None:
            host.closed += 1

    def open_bucket(name: str) -> Bucket:
        check("open")
        host.opened.append(name)
        return Bucket(name)

    def increment(bucket: Bucket, key: str, delta: int) -> int:
        check("increment")
        bucket.data[key] = bucket.data.get(key, 0) + delta
        return bucket.data[key]

    def config_get(key: str) -> str | None:
        check("config")
        return host.config.get(key)

    def log(level: Any, context: str, message: str) -> None:
        host.logs.append((level.name, context, message))

    def publish(msg: Any) -> None:
        check("publish")
        host.published.append(msg)

    monkeypatch.setattr(wasi_keyvalue_store, "open", open_bucket)
    monkeypatch.setattr(atomics, "increment", increment)
    monkeypatch.setattr(wasi_config_store, "get", config_get)
    monkeypatch.setattr(wasi_logging, "log", log)
    monkeypatch.setattr(consumer, "publish", publish)
    yield Guest(app, wasi_keyvalue_store, wasi_config_store, BrokerMessage, Err, host)
    _drop_guest_modules()


def _send(guest: Guest, body: bytes, reply_to: str | None = "_INBOX.1") -> None:
    msg = guest.msg_type(subject="tick", body=body, reply_to=reply_to)
    guest.app.Handler().handle_message(msg)


def _replies(guest: Guest) -> list[tuple[str, bytes]]:
    return [(m.subject, m.body) for m in guest.host.published]


def test_handler_implements_the_export(guest: Guest) -> None:
    from wit_world import exports  # type: ignore[import-not-found]

    assert exports.Handler in guest.app.Handler.__mro__
    assert not getattr(guest.app.Handler, "__abstractmethods__", None)


def test_counts_logs_and_replies(guest: Guest) -> None:
    for _ in range(3):
        _send(guest, b"")
    assert _replies(guest) == [("_INBOX.1", b"count 1"), ("_INBOX.1", b"count 2"),
                               ("_INBOX.1", b"count 3")]
    assert guest.host.buckets == {"": {"count": 3}}
    assert guest.host.logs[-1] == ("INFO", "counter", "count = 3 (tick)")
    assert guest.host.closed == 3  # the bucket handle is dropped after every message


def test_no_reply_without_reply_to(guest: Guest) -> None:
    _send(guest, b"", reply_to=None)
    assert guest.host.published == []
    assert guest.host.buckets[""]["count"] == 1


def test_reset(guest: Guest) -> None:
    _send(guest, b"")
    _send(guest, b"reset")
    _send(guest, b"")
    assert [body for _, body in _replies(guest)] == [b"count 1", b"count 0", b"count 1"]
    assert ("INFO", "counter", "count reset") in guest.host.logs


def test_config_bucket_key_greeting(guest: Guest) -> None:
    guest.host.config.update(bucket="stats", key="hits", greeting="hello")
    _send(guest, b"")
    _send(guest, b"")
    assert guest.host.opened == ["stats", "stats"]
    assert guest.host.buckets == {"stats": {"hits": 2}}
    assert _replies(guest)[-1] == ("_INBOX.1", b"hello 2")


@pytest.mark.parametrize(
    ("operation", "error", "message"),
    [
        ("open", "Error_NoSuchStore", "keyvalue open '': no-such-store"),
        ("increment", "Error_AccessDenied", "keyvalue increment 'count': access-denied"),
        ("increment", ("Error_Other", "disk full"), "keyvalue increment 'count': other: disk full"),
        ("config", ("Error_Upstream", "no link"), "config get 'bucket': upstream: no link"),
        ("publish", "no responders", "messaging publish '_INBOX.1': no responders"),
    ],
)
def test_errors_become_the_handler_error(
    guest: Guest, operation: str, error: str | tuple[str, str], message: str
) -> None:
    if operation == "publish":
        value: Any = error
    else:
        module = guest.config if operation == "config" else guest.store
        if isinstance(error, str):
            value = getattr(module, error)()
        else:
            value = getattr(module, error[0])(error[1])
    guest.host.fail[operation] = value
    with pytest.raises(guest.err_type) as info:
        _send(guest, b"")
    assert info.value.value == message


def test_reset_error(guest: Guest) -> None:
    guest.host.fail["delete"] = guest.store.Error_Other("read-only")
    with pytest.raises(guest.err_type) as info:
        _send(guest, b"reset")
    assert info.value.value == "keyvalue delete 'count': other: read-only"
    assert guest.host.closed == 1  # dropped on the error path too
