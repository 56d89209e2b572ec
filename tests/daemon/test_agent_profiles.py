"""Per-route agents: [agents.NAME] profiles, chosen per call by the Agent call fact the XML
server sends with the call (plivo.routes[].agent)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from bridge.callmodel import CallInfo
from bridge.daemon.agents import build_agent
from bridge.daemon.preflight import preflight
from bridge.daemon.profiles import profile_settings
from bridge.settings import Secrets, Settings
from devkit.memory_leg import MemoryLeg

TOOLS = [{"name": "lookup", "url": "http://127.0.0.1:9/x"}, {"name": "book", "url": "http://127.0.0.1:9/y"}]


def _settings(tmp_path: Path) -> Settings:
    return Settings.model_validate({
        "daemon": {"agent": "echo", "data_dir": str(tmp_path)},
        "stt": {"pocketsphinx_idle_decoders": 0},
        "conversation": {"transcripts_dir": str(tmp_path / "t"), "http_tools": TOOLS},
        "agents": {"sales": {"greeting": "Sales desk.", "voice": "en-us", "tools": ["book"],
                             "llm": ["scripted"], "model": "m-1"}},
    })


def test_a_profile_changes_only_what_it_sets(tmp_path: Path) -> None:
    base = _settings(tmp_path)
    sales = profile_settings(base, "sales")
    assert sales.conversation.greeting == "Sales desk."
    assert sales.tts.espeak_voice == "en-us" and sales.tts.voice_id == base.tts.voice_id  # espeak only
    assert [t.name for t in sales.conversation.http_tools] == ["book"]
    assert sales.llm.model == "m-1"
    assert sales.conversation.endpointing_ms == base.conversation.endpointing_ms
    assert profile_settings(base, "echo") is base


def test_profiles_are_validated() -> None:
    with pytest.raises(ValueError, match="built-in agent"):
        Settings.model_validate({"agents": {"echo": {}}})
    with pytest.raises(ValueError, match=r"not in conversation\.http_tools"):
        Settings.model_validate({"agents": {"x": {"tools": ["nope"]}}})


def test_a_routes_agent_must_exist_and_a_profiles_voice_is_checked(tmp_path: Path) -> None:
    data = _settings(tmp_path).model_dump()
    data["plivo"]["routes"] = [{"to": "+14155550100", "agent": "sales"},
                               {"to": "+14155550101", "agent": "sale"}]
    data["agents"]["sales"]["voice"] = "xx-nope"
    found = dict(preflight(Settings.model_validate(data), Secrets()))
    assert "did you mean 'sales'" in found["plivo.routes.1.agent"]
    assert "xx-nope" in found["agents.sales.voice"]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
async def test_the_call_gets_the_agent_its_route_names(tmp_path: Path) -> None:
    run = await build_agent(_settings(tmp_path), Secrets())

    async def call(headers: dict[str, str]) -> MemoryLeg:
        leg = MemoryLeg("c1")
        info = CallInfo("c1", "sip:+14155550123@plivo", "sip:agent@bridge", ("127.0.0.1", 5060),
                        plivo_headers=headers)
        task = asyncio.create_task(run(leg, info))
        leg.start_realtime()
        for _ in range(500):  # bounded: the greeting (sales) or nothing (echo) within ~10 s
            if leg.sent or task.done():
                break
            await asyncio.sleep(0.02)
        await leg.remote_hangup("bye")
        await asyncio.wait_for(task, 10)
        await leg.aclose()
        return leg

    sales = await call({"Agent": "sales"})
    transcript = next((tmp_path / "t").rglob("*.jsonl")).read_text()
    assert sales.sent and sales.sent[0].utterance_id != "echo" and "Sales desk." in transcript
    echo = await call({})  # no Agent: daemon.agent, the echo agent, plays back what it hears
    assert echo.sent and {f.utterance_id for f in echo.sent} == {"echo"}
    unknown = await call({"Agent": "support"})  # not configured here: daemon.agent, with a warning
    assert unknown.sent and {f.utterance_id for f in unknown.sent} == {"echo"}
