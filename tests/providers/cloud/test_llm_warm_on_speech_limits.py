"""llm.warmup_on_speech's limits (second reader's guards): the onset warm-up must not cost a
request per onset against a provider that fails it, and must not make the turn's own request
open a second connection when the two meet. Against the real client path (openai_wire on
aiohttp) and the fake API on loopback, which journals each request with the client's TCP port
(a new port: a new TCP, in production TCP + TLS, connection)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from bridge.providers.llm import openai_chat, openai_wire, warm
from devkit.fakes import FakeCloud

from .test_llm_warm import _chat, _reply, _settled

BAD_KEY = "sk-wrong-key-0123456789"


async def test_a_provider_that_fails_the_warm_up_is_not_asked_again_on_every_onset(
    cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revoked key (or the API down): every warm-up fails. The caller's onsets (a talkative
    caller, a noisy line; the client is shared by every call of the process) must not each send
    a GET /models that fails again and logs a warning: a failed warm-up spaces the next one."""
    now = [1000.0]
    monkeypatch.setattr(openai_chat, "time", SimpleNamespace(monotonic=lambda: now[0]))
    llm = _chat(cloud, key=BAD_KEY)
    try:
        for _ in range(5):  # five onsets within a second of each other
            warm.warm_on_speech([llm], 0, enabled=True)
            await asyncio.wait_for(_settled(), 10)
            now[0] += 0.2
        assert cloud.openai.journal.count("rejected") == 1
        now[0] += 60.0  # a minute on: worth trying again (the key may have been fixed)
        warm.warm_on_speech([llm], 0, enabled=True)
        await asyncio.wait_for(_settled(), 10)
        assert cloud.openai.journal.count("rejected") == 2
    finally:
        await llm.aclose()


async def test_a_request_that_meets_the_onset_warm_up_reuses_its_connection(
    cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool holds a live connection idle past FRESH_S; the caller's onset starts a warm-up
    and the turn's request goes before the GET is back (the caller resumed speaking as the
    previous utterance's final ended the turn). The GET holds the pooled connection: the
    request must not open a second, cold one (without the onset warm-up it would have found
    the pooled connection free)."""
    monkeypatch.setattr(openai_wire, "KEEPALIVE_S", 30.0)  # the connection stays pooled
    monkeypatch.setattr(openai_chat, "FRESH_S", 0.05)
    llm = _chat(cloud)
    try:
        cloud.openai.script.append("Hello.")
        await _reply(llm)
        await asyncio.sleep(0.2)  # idle past FRESH_S: a warm-up is due
        assert llm.warmup_due()
        warm.warm_on_speech([llm], 0, enabled=True)  # the onset: its task runs first
        cloud.openai.script.append("We open at nine.")
        assert await asyncio.create_task(_reply(llm)) == "We open at nine."  # the turn's request
        await asyncio.wait_for(_settled(), 10)
    finally:
        await llm.aclose()
    first, second = [e.data["peer"] for e in cloud.openai.journal.of("request")]
    (onset,) = [e.data["peer"] for e in cloud.openai.journal.of("models")]
    assert onset == first  # the warm-up refreshed the pooled connection
    assert second == first  # and the request went out on it, not on a new one


async def test_a_request_beside_a_warm_up_that_opens_its_own_connection_does_not_wait(
    cloud: FakeCloud,
) -> None:
    """A cold pool (the process's first call, its greeting made by the LLM right after the
    offer's warm-up): the GET is setting up a connection of its own, which takes as long as the
    request's would, so the request does not wait behind it (a bounded wait that ran out would
    only add to the greeting's time): it goes on a connection of its own at once."""
    llm = _chat(cloud)
    try:
        warm.warm_on_call([llm], enabled=True)  # the offer: its task runs first
        cloud.openai.script.append("Hello, how can I help?")
        assert await asyncio.create_task(_reply(llm)) == "Hello, how can I help?"
        await asyncio.wait_for(_settled(), 10)
    finally:
        await llm.aclose()
    (offer,) = [e.data["peer"] for e in cloud.openai.journal.of("models")]
    (greeting,) = [e.data["peer"] for e in cloud.openai.journal.of("request")]
    assert greeting != offer
