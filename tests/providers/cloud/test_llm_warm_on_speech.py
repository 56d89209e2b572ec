"""llm.warmup_on_speech: when the caller starts speaking and the LLM client's pool has sat idle
(``warmup_due``), the connection is opened or refreshed again, so a first question asked
after the pool dropped the call-offer warm-up's connection (KEEPALIVE_S) still finds one
open. Against the real client path (openai_wire on aiohttp) and the fake API on loopback,
which journals each request with the client's TCP port. The keep-alive is shortened here
(1 s instead of 5 s) so "later than the keep-alive" takes 2 s; FRESH_S
(the idle time below which no warm-up is due) is shortened with it."""

from __future__ import annotations

import asyncio

import pytest

from bridge.providers.llm import openai_chat, openai_wire, warm
from devkit.fakes import FakeCloud

from .test_llm_warm import _chat, _reply, _settled
from .test_openai import HISTORY

# margins for a busy box: the request follows the onset GET well within KEEPALIVE_S, and aiohttp
# refuses a pooled connection idle longer than it (checked when one is taken: no timer involved)
KEEPALIVE_S = 1.0
PAST_KEEPALIVE_S = 2.0  # the pool has dropped the idle connection by then


@pytest.fixture(autouse=True)
def short_keepalive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_wire, "KEEPALIVE_S", KEEPALIVE_S)
    monkeypatch.setattr(openai_chat, "FRESH_S", KEEPALIVE_S / 2)


def _ports(cloud: FakeCloud, kind: str) -> list[int]:
    return [e.data["peer"] for e in cloud.openai.journal.of(kind)]


@pytest.mark.parametrize("onset_warm_up", [True, False])  # False: the control, the gap itself
async def test_a_late_first_question_reuses_the_connection_warmed_at_speech_onset(
    cloud: FakeCloud, onset_warm_up: bool
) -> None:
    llm = _chat(cloud)
    try:
        warm.warm_on_call([llm], enabled=True)  # the offer
        await asyncio.wait_for(_settled(), 10)
        await asyncio.sleep(PAST_KEEPALIVE_S)  # a long greeting: the offer's connection is dropped
        warm.warm_on_speech([llm], 0, enabled=onset_warm_up)  # the caller starts speaking
        await asyncio.wait_for(_settled(), 10)
        cloud.openai.script.append("We open at nine.")
        assert await _reply(llm) == "We open at nine."  # the question, once the turn ended
    finally:
        await llm.aclose()
    offer, *onset = _ports(cloud, "models")
    (chat,) = _ports(cloud, "request")
    assert chat != offer  # the offer's connection did not outlive the keep-alive
    if onset_warm_up:
        assert onset == [chat]  # the chat request went out on the connection the onset opened
    else:
        assert onset == []


async def test_no_onset_warm_up_while_the_pool_is_fresh_or_busy(cloud: FakeCloud) -> None:
    """Right after a reply the pooled connection is alive (a GET would only hold it); while a
    reply streams the pool is busy; a warm-up already under way is not doubled. Only the
    failover's current LLM is warmed, and an index past the list or an engine without a
    network connection (no warmup_due) does nothing."""
    first, second = _chat(cloud), _chat(cloud)
    try:
        cloud.openai.script.append("Hello.")
        await _reply(first)
        warm.warm_on_speech([first, second], 0, enabled=True)  # fresh: nothing
        await asyncio.wait_for(_settled(), 10)
        assert cloud.openai.journal.count("models") == 0

        await asyncio.sleep(KEEPALIVE_S)  # idle past FRESH_S: due again
        assert first.warmup_due()
        warm.warm_on_speech([first, second], 0, enabled=True)
        warm.warm_on_speech([first, second], 0, enabled=True)  # a second onset meanwhile
        await asyncio.wait_for(_settled(), 10)
        assert cloud.openai.journal.count("models") == 1
        assert not first.warmup_due()  # that warm-up left its connection fresh

        warm.warm_on_speech([first, second], 1, enabled=True)  # failed over: the second one
        warm.warm_on_speech([first, second], 2, enabled=True)
        warm.warm_on_speech([object()], 0, enabled=True)  # the scripted engine: no warmup_due
        await asyncio.wait_for(_settled(), 10)
        assert cloud.openai.journal.count("models") == 2

        cloud.openai.script.append("A long answer that is still streaming.")
        await asyncio.sleep(KEEPALIVE_S)
        events = first.stream(HISTORY, [])
        await anext(events)  # the reply is under way: the pool is busy
        assert not first.warmup_due()
        warm.warm_on_speech([first], 0, enabled=True)
        await asyncio.wait_for(_settled(), 10)
        await events.aclose()
        assert cloud.openai.journal.count("models") == 2
    finally:
        await first.aclose()
        await second.aclose()
