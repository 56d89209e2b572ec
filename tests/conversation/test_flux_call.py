"""A Flux turn answered end to end: run_conversation on the in-memory leg in real time, the real
deepgram-sdk listen.v2 client against the fake Flux (EagerEndOfTurn, then EndOfTurn), the real
OpenAI and ElevenLabs clients against their fakes. The reply starts on EagerEndOfTurn, is held,
and plays once EndOfTurn confirms it; no ForceEndTurn is needed."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.callmodel import CallInfo
from bridge.conversation import run_conversation
from bridge.conversation.transcript import TranscriptWriter
from bridge.providers.factory import build_providers
from bridge.settings import Secrets, Settings
from devkit.fakes import FakeCloud
from devkit.fakes.server import DEEPGRAM_KEY, ELEVENLABS_KEY, OPENAI_KEY
from devkit.memory_leg import MemoryLeg

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the Deepgram SDK's websockets.legacy

INFO = CallInfo("flux-1", "sip:caller@test", "sip:agent@test", ("127.0.0.1", 5060))
ANSWER = "Yes, we are open from nine to one on Saturday."


def _settings(url: str, folder: Path) -> Settings:
    return Settings.model_validate({
        "conversation": {"greeting": "Hello.", "transcripts_dir": str(folder),
                         "preemptive_generation": True},
        "stt": {"providers": ["deepgram-flux"], "deepgram_url": url, "flux_eager_eot_threshold": 0.5},
        "llm": {"providers": ["openai"], "base_url": f"{url}/v1", "model": "gpt-4o"},
        "tts": {"providers": ["elevenlabs"], "elevenlabs_url": url},
    })


async def _until(cond: Callable[[], bool], limit_s: float) -> None:
    for _ in range(round(limit_s / 0.02)):  # bounded: the leg has no event to wait on
        if cond():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("the call did not get there")


def _lines(folder: Path) -> list[dict[str, Any]]:
    files = list(folder.glob("*.jsonl"))
    assert len(files) == 1
    return [json.loads(x) for x in files[0].read_text().splitlines()]


async def test_flux_turn_is_answered_from_the_eager_end_of_turn(
        speech: dict[str, bytes], tmp_path: Path) -> None:
    secrets = Secrets.from_env(
        {"DEEPGRAM_API_KEY": DEEPGRAM_KEY, "OPENAI_API_KEY": OPENAI_KEY, "ELEVENLABS_API_KEY": ELEVENLABS_KEY}
    )
    async with FakeCloud() as cloud:
        cloud.flux.script.append("When are you open on Saturday?")
        cloud.openai.script.append(ANSWER)
        settings = _settings(cloud.http_url, tmp_path)
        providers = build_providers(settings, secrets)
        writer = TranscriptWriter.for_call(settings, INFO)
        leg = MemoryLeg("flux-1")
        task = asyncio.create_task(run_conversation(leg, providers, settings, transcript=writer,
                                                    call_info=INFO, fallback_audio=b""))
        leg.start_realtime()
        try:
            await _until(lambda: bool(leg.sent), 10)  # the greeting plays
            await asyncio.sleep(1.5)
            answered = cloud.openai.journal.count("request")
            leg.say(speech["open"])
            await _until(lambda: cloud.openai.journal.count("request") > answered, 15)
            start = len(leg.sent)
            await _until(lambda: len(leg.sent) > start + 25, 15)  # the answer is heard
            await asyncio.sleep(0.5)
        finally:
            await leg.remote_hangup("bye")
            await asyncio.wait_for(task, 10)
            await leg.aclose()
            writer.close()
            for group in (providers.stt, providers.llm, providers.tts):
                for p in group:
                    aclose = getattr(p, "aclose", None)
                    if aclose is not None:
                        await aclose()
    sent = [(e.data["event"], e.data["text"]) for e in cloud.flux.journal.of("sent")
            if e.data["type"] == "TurnInfo" and e.data["event"] in ("EagerEndOfTurn", "EndOfTurn")]
    said = "When are you open on Saturday?"
    assert sent == [("EagerEndOfTurn", said), ("EndOfTurn", said)]
    assert not [e for e in cloud.flux.journal.of("control") if e.data["type"] == "ForceEndTurn"]
    assert cloud.openai.journal.count("request") == answered + 1  # started once, on the eager event
    lines = _lines(tmp_path)
    assert [x["text"] for x in lines if x["event"] == "user"] == [said]
    latency = [x for x in lines if x["event"] == "latency"]
    assert latency and latency[-1].get("preempted") == 1
    assert leg.agent_audio()  # the answer reached the caller
