"""The messaging provider keeps actors to what their links grant and off the lattice's own
subjects, by NATS's subject rules."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient

from drupelet.node.lattice.connect import synced
from drupelet.providers.base import Denied, Link, Message, ProviderContext, ProviderError, Unavailable, handling
from drupelet.providers.messaging import (PROTECTED_SUBJECTS, MessagingProvider, check_subject, protected_match,
                                          subjects_overlap)
from drupelet.providers.schema import NoKeys, SchemaError

INTERFACE = "wasmcloud:messaging/consumer"
DELIVERY_TIMEOUT_S = 5.0


def link(subscriptions: str | None = None, **grants: str) -> Link:
    """A link of actor ``chatty``: ``grants`` are its ``publish`` and ``request`` config."""
    return Link("chatty", INTERFACE, "local/messaging", ({} if subscriptions is None else
                                                          {"subscriptions": subscriptions}) | grants)


def answering(reply_to: str | None, call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)`` as an instance handling a message whose reply subject is ``reply_to``
    calls it: on one thread (the instance's worker), inside ``handling``."""
    with handling(reply_to):
        return call(*args)


# -- the subject rules ---------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b", "overlap"), [
    ("foo.bar", "foo.bar", True),
    ("foo.bar", "foo.baz", False),
    ("foo.*", "foo.bar", True),
    ("foo.*", "foo.bar.baz", False),  # * is exactly one token
    ("foo.>", "foo.bar.baz", True),  # > is the rest ...
    ("foo.>", "foo", False),  # ... one token or more
    (">", "foo", True),
    ("*", "drupelet.>", False),
    ("*.>", "drupelet.>", True),
    ("*.x", "drupelet.>", True),
    ("drupelet.*", "drupelet.>", True),
    ("drupelet", "drupelet.>", False),
    ("drupelets.x", "drupelet.>", False),
    ("Drupelet.x", "drupelet.>", False),  # subjects are case-sensitive
    ("*.*.c", "a.>", True),
    ("a.*.c", "a.b.d", False),
    ("_INBOX.>", "_INBOX.abc.1", True),
    ("$KV.>", "$KV.links.x", True),
    ("foo*.bar", "foo.bar", False),  # a wildcard only as a whole token
])
def test_subjects_overlap_by_nats_token_rules(a: str, b: str, overlap: bool) -> None:
    assert subjects_overlap(a, b) is overlap
    assert subjects_overlap(b, a) is overlap


@pytest.mark.parametrize("subject", ["", "a..b", ".a", "a.", "a b", "a.>.b", ">.a"])
def test_malformed_subjects_are_refused(subject: str) -> None:
    with pytest.raises(ProviderError, match="is not a valid NATS subject"):
        check_subject(subject)


def test_the_protected_subjects_are_the_lattice_s_own() -> None:
    assert PROTECTED_SUBJECTS == ("drupelet.>", "$JS.>", "$KV.>", "$O.>", "$SYS.>")
    assert protected_match("drupelet.default.ctl.node.pi") == "drupelet.>"
    assert protected_match("$JS.API.STREAM.LIST") == "$JS.>"
    assert protected_match("$SYS.REQ.SERVER.PING") == "$SYS.>"
    assert protected_match("sensors.kitchen") is None


# -- publish and request -------------------------------------------------------------------


@pytest_asyncio.fixture
async def offline(tmp_path: Path) -> AsyncIterator[MessagingProvider]:
    """A provider with no NATS connection: a refusal must come before any network."""
    provider = MessagingProvider()
    await provider.start(ProviderContext(node="n", lattice="default", loop=asyncio.get_running_loop(),
                                         data_dir=tmp_path, config={}))
    try:
        yield provider
    finally:
        await provider.stop()


@pytest.mark.parametrize("subject", ["drupelet.default.ctl.link.put", "$JS.API.STREAM.DELETE.KV_links",
                                     "$KV.drupelet-links.x", "$O.artifacts.x", "$SYS.REQ.SERVER.PING"])
async def test_publish_and_request_on_the_lattice_s_subjects_are_denied(offline: MessagingProvider,
                                                                        subject: str) -> None:
    with pytest.raises(Denied, match=rf"actor 'chatty' may not publish on '{subject.replace('$', '[$]')}'") as err:
        await asyncio.to_thread(offline.publish, link(), subject, b"x", None)
    assert err.value.code == "denied"
    with pytest.raises(Denied, match="may not send a request on"):
        await asyncio.to_thread(offline.request, link(), subject, b"x", 100)


async def test_a_reply_subject_on_the_lattice_s_subjects_is_denied(offline: MessagingProvider) -> None:
    with pytest.raises(Denied, match=r"may not ask for replies on 'drupelet\.default\.x'"):
        await asyncio.to_thread(offline.publish, link(publish="sensors.>"), "sensors.t", b"x", "drupelet.default.x")


async def test_an_actor_reaches_only_what_its_link_grants(offline: MessagingProvider) -> None:
    # no grant: nothing but the reply it is answering
    with pytest.raises(Denied, match=r"may not publish on 'sensors\.t': its link's publish grant \(none\)"):
        await asyncio.to_thread(offline.publish, link(), "sensors.t", b"x", None)
    with pytest.raises(Denied, match=r"may not send a request on 'svc\.time': its link's request grant"):
        await asyncio.to_thread(offline.request, link(publish="svc.>"), "svc.time", b"", 100)
    granted = link(publish="sensors.*, alerts.>", request="svc.time")
    for subject in ("sensors.t", "alerts.kitchen.smoke"):  # granted: on to NATS (which it does not have)
        with pytest.raises(Unavailable, match="not connected"):
            await asyncio.to_thread(offline.publish, granted, subject, b"x", None)
    with pytest.raises(Unavailable, match="not connected"):
        await asyncio.to_thread(offline.request, granted, "svc.time", b"", 100)
    with pytest.raises(Denied, match="publish grant"):
        await asyncio.to_thread(offline.publish, granted, "sensors.t.deeper", b"x", None)


async def test_the_reply_being_answered_is_always_allowed_and_no_other_inbox(offline: MessagingProvider) -> None:
    with pytest.raises(Unavailable, match="not connected"):  # answering: allowed without a grant
        await asyncio.to_thread(answering, "_INBOX.pi-1.abc.1", offline.publish, link(), "_INBOX.pi-1.abc.1", b"ok",
                                None)
    # another inbox, even one a grant names, or the reply of a message it is not handling
    for grants in ({}, {"publish": "_INBOX.>"}, {"publish": ">"}):
        with pytest.raises(Denied, match="a reply inbox that is not the reply of the message it is handling"):
            await asyncio.to_thread(answering, "_INBOX.pi-1.abc.1", offline.publish, link(**grants),
                                    "_INBOX.laptop.xyz.7", b"forged", None)
    with pytest.raises(Denied, match="reply inbox"):
        await asyncio.to_thread(offline.publish, link(), "_INBOX.pi-1.abc.1", b"late", None)


@pytest.mark.parametrize("subject", ["drupelet.default.ctl.link.put", "$KV.drupelet-default-state.link.x",
                                     "$JS.API.STREAM.DELETE.KV_drupelet-default-state"])
async def test_the_lattice_s_subjects_are_refused_even_granted_or_as_the_reply(offline: MessagingProvider,
                                                                             subject: str) -> None:
    """A message whose reply subject was made to point at a control subject: answering it is refused."""
    for grants in ({"publish": ">"}, {"publish": subject}):
        with pytest.raises(Denied, match="one of the lattice's own subjects"):
            await asyncio.to_thread(answering, subject, offline.publish, link(**grants), subject, b"{}", None)
    with pytest.raises(Denied, match="one of the lattice's own subjects"):
        await asyncio.to_thread(offline.request, link(request=">"), subject, b"{}", 100)


async def test_refusals_are_logged_once_per_actor_and_subject_and_counted(
        offline: MessagingProvider, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="drupelet.providers.messaging"):
        for _ in range(12):
            with pytest.raises(Denied):
                await asyncio.to_thread(offline.publish, link(), "sensors.t", b"x", None)
        with pytest.raises(Denied):
            await asyncio.to_thread(offline.publish, link(), "sensors.u", b"x", None)
    lines = [r.getMessage() for r in caplog.records if "may not publish" in r.getMessage()]
    assert [line.rsplit("(", 1)[1] for line in lines] == ["refused 1 time)", "refused 10 times)",
                                                           "refused 1 time)"]
    assert offline.describe()["refused"] == [
        {"actor": "chatty", "grant": "publish", "subject": "sensors.t", "count": 12},
        {"actor": "chatty", "grant": "publish", "subject": "sensors.u", "count": 1}]


async def test_wildcards_are_not_a_place_to_publish(offline: MessagingProvider) -> None:
    for subject in ("*.x", "sensors.>"):
        with pytest.raises(ProviderError, match="wildcards are for subscriptions"):
            await asyncio.to_thread(offline.publish, link(), subject, b"x", None)


async def test_granted_subjects_and_the_reply_pass_the_check(offline: MessagingProvider) -> None:
    # past the subject checks, the call needs NATS, which this provider does not have
    for message in (Message("sensors.kitchen", b"21"), Message("drupelets.x", b"")):
        with pytest.raises(Unavailable, match="not connected"):
            await asyncio.to_thread(offline.publish, link(publish="sensors.>, drupelets.x"), message.subject,
                                    message.body, message.reply_to)
    with pytest.raises(Unavailable, match="not connected"):
        await asyncio.to_thread(answering, "_INBOX.abc.1", offline.publish, link(), "_INBOX.abc.1", b"reply", None)


async def test_it_takes_no_node_config() -> None:
    assert MessagingProvider.config_schema is NoKeys and MessagingProvider.parse_config({}) == NoKeys()
    with pytest.raises(SchemaError, match=r"^providers\.messaging: takes no keys, got subjects$"):
        MessagingProvider.parse_config({"subjects": "x"})


# -- link subscriptions ----------------------------------------------------------------------


@pytest.mark.parametrize("subscriptions", [">", "*.>", "_INBOX.>", "drupelet.*", "$KV.>", "drupelet.default.>",
                                           "sensors.>, >", "*.*.*"])
async def test_subscriptions_that_would_receive_the_lattice_s_messages_are_refused(
        offline: MessagingProvider, subscriptions: str) -> None:
    with pytest.raises(Denied, match=r"link subscription .* would receive .*, the lattice's own messages or replies"):
        await offline.link_added(link(subscriptions))
    assert offline.describe() == {"subscriptions": {}, "refused": []}


async def test_an_allowed_subscription_delivers(tmp_path: Path, nats_client: NatsClient) -> None:
    got: asyncio.Queue[tuple[str, Message]] = asyncio.Queue()

    async def deliver(actor: str, message: Message) -> None:
        got.put_nowait((actor, message))

    provider = MessagingProvider()
    await provider.start(ProviderContext(node="n", lattice="default", loop=asyncio.get_running_loop(),
                                         data_dir=tmp_path, config={}, nats=nats_client,
                                         synced=lambda: synced(nats_client),
                                         deliver=deliver))
    try:
        await provider.link_added(link("sensors.>, *"))
        with pytest.raises(Denied):  # putting the link again with a bad subject keeps the old subscriptions
            await provider.link_added(link("sensors.>, >"))
        assert provider.describe() == {"subscriptions": {"chatty": ["sensors.>", "*"]}, "refused": []}
        await nats_client.publish("sensors.kitchen", b"21")
        actor, message = await asyncio.wait_for(got.get(), DELIVERY_TIMEOUT_S)
        assert (actor, message.subject, message.body) == ("chatty", "sensors.kitchen", b"21")
        await asyncio.to_thread(provider.publish, link(publish="sensors.>"), "sensors.hall", b"19", None)
        actor, message = await asyncio.wait_for(got.get(), DELIVERY_TIMEOUT_S)
        assert (message.subject, message.body) == ("sensors.hall", b"19")
    finally:
        await provider.stop()
