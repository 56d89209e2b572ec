"""llm.warmup_on_call: the first LLM's connection is opened as the call is offered, with
``GET {base_url}/models`` on the client that sends the chat requests, best effort. Against the
real client path (openai_wire on aiohttp, or the SDK with retries) and the fake API on loopback:
the fake journals each request with the client's TCP port, so the same port on the warm-up and
the first chat request means no new TCP (in production: TLS) connection for that request."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import pytest

from bridge.providers.llm import warm
from bridge.providers.llm.openai_chat import OpenAIChat
from devkit.fakes import FakeCloud
from devkit.fakes.server import OPENAI_KEY

from .test_openai import HISTORY


async def _settled() -> None:
    await asyncio.gather(*list(warm._running))  # the warm-ups started so far


def _chat(cloud: FakeCloud, *, key: str = OPENAI_KEY, retries: int = 0, url: str = "") -> OpenAIChat:
    base_url = url or f"{cloud.http_url}/v1"
    return OpenAIChat(api_key=key, model="gpt-4o", base_url=base_url, max_retries=retries)


async def _reply(llm: OpenAIChat) -> str:
    async with asyncio.timeout(10), contextlib.aclosing(llm.stream(HISTORY, [])) as events:
        return "".join([getattr(e, "text", "") async for e in events])


def _peers(cloud: FakeCloud) -> list[int]:
    """The client port of every request the fake saw (warm-ups, chats, refusals), in order."""
    return [e.data["peer"] for e in cloud.openai.journal.events if "peer" in e.data]


async def test_fake_lists_models_as_documented_and_refuses_a_bad_key(cloud: FakeCloud) -> None:
    async with aiohttp.ClientSession() as http:
        ok = await http.get(f"{cloud.http_url}/v1/models", headers={"Authorization": f"Bearer {OPENAI_KEY}"})
        body = await ok.json()
        bad = await http.get(f"{cloud.http_url}/v1/models", headers={"Authorization": "Bearer sk-wrong"})
        refusal = await bad.json()
    assert ok.status == 200 and body["object"] == "list" and body["data"]
    for model in body["data"]:
        assert set(model) == {"id", "object", "created", "owned_by"} and model["object"] == "model"
    assert bad.status == 401 and refusal["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("retries", [0, 1])  # openai_wire on aiohttp (the default), the SDK
async def test_the_first_chat_request_reuses_the_warmed_connection(cloud: FakeCloud, retries: int) -> None:
    first, second = _chat(cloud, retries=retries), _chat(cloud, retries=retries)
    try:
        warm.warm_on_call([first, second], enabled=True)
        await asyncio.wait_for(_settled(), 10)
        assert cloud.openai.journal.count("models") == 1  # the first provider only, key accepted
        cloud.openai.script.append("Hello there.")
        assert await _reply(first) == "Hello there."
    finally:
        await first.aclose()
        await second.aclose()
    assert cloud.openai.journal.count("request") == 1
    assert len(_peers(cloud)) == 2 and len(set(_peers(cloud))) == 1  # one TCP connection for both


async def test_without_the_warm_up_the_first_request_opens_its_own_connection(cloud: FakeCloud) -> None:
    """The control for the test above: the journal does tell connections apart."""
    llm = _chat(cloud)
    try:
        await llm.warmup()
        await llm.aclose()  # the warmed pool is gone
        llm = _chat(cloud)
        await _reply(llm)
    finally:
        await llm.aclose()
    assert len(set(_peers(cloud))) == 2


async def test_the_warm_up_is_skipped_when_disabled_or_for_an_offline_engine(cloud: FakeCloud) -> None:
    llm = _chat(cloud)
    try:
        warm.warm_on_call([llm], enabled=False)
        warm.warm_on_call([object()], enabled=True)  # no warmup() (the scripted engine): nothing to do
        warm.warm_on_call([], enabled=True)
        await asyncio.wait_for(_settled(), 10)
    finally:
        await llm.aclose()
    assert cloud.openai.journal.events == []


async def test_a_warm_up_right_after_a_reply_sends_nothing(cloud: FakeCloud) -> None:
    """Its GET would hold the connection the reply left idle, and a request asked for
    meanwhile would open a cold one."""
    llm = _chat(cloud)
    try:
        await _reply(llm)
        await llm.warmup()
    finally:
        await llm.aclose()
    assert cloud.openai.journal.count("models") == 0


@pytest.mark.parametrize("fault", ["503", "bad key", "refused"])
async def test_a_failed_warm_up_is_only_logged_and_the_call_goes_on(
    cloud: FakeCloud, refused_url: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.providers.llm.warm")
    if fault == "503":
        cloud.openai.models_status = 503
    key = "sk-wrong-key-0123456789" if fault == "bad key" else OPENAI_KEY
    failing = _chat(cloud, key=key, url=f"{refused_url}/v1" if fault == "refused" else "")
    try:
        warm.warm_on_call([failing], enabled=True)
        await asyncio.wait_for(_settled(), 10)  # no exception escapes the task
    finally:
        await failing.aclose()
    assert "llm warm-up failed" in caplog.text
    assert key not in caplog.text and OPENAI_KEY not in caplog.text
    assert cloud.openai.journal.count("models") == 0
    llm = _chat(cloud)
    try:
        cloud.openai.script.append("Still here.")
        assert await _reply(llm) == "Still here."
    finally:
        await llm.aclose()
