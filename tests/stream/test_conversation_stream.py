"""The conversation engine, unchanged, on the Plivo stream leg: the simulator (Plivo's side)
plays real espeak caller speech over the WebSocket; the agent answers; the caller barges in;
clearAudio goes out and the history keeps only what playedStream confirmed was heard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.callmodel import CallInfo
from bridge.conversation import run_conversation
from bridge.conversation.transcript import TranscriptWriter
from bridge.leg import AudioLeg
from bridge.providers.factory import ProviderSet
from bridge.settings import Secrets, Settings
from bridge.simulator.plivo.network import NetworkProfile
from bridge.simulator.plivo.stream_client import PlivoStreamClient
from bridge.stream.server import StreamServer
from tests.conversation.fakes import MS_PER_CHAR, FakeLLM, FakeSTT, FakeTTS, last_user
from tests.conversation.harness import FALLBACK
from tests.stream.support import AUTH_TOKEN, SECRET, headers_for, supervisor
from tests.support.audio import have_speech_tools, read_wav_pcm, speech_wav

ANSWER = "We are open from nine to one on Saturday, and closed on Sunday. Anything else?"
GREETING = "Hello."
CHUNK_MS = 60


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    if not have_speech_tools():
        pytest.skip("espeak-ng and sox are needed to make caller speech")
    folder = tmp_path_factory.mktemp("speech")
    lines = {"open": "When are you open on Saturday?", "wait": "Wait, what about Sunday?"}
    return {key: read_wav_pcm(speech_wav(text, folder / f"{key}.wav")) for key, text in lines.items()}


def silence(s: float) -> bytes:
    return bytes(int(16000 * s) & ~1)


async def test_barge_in_over_the_stream_truncates_history_to_what_was_played(
    tmp_path: Path, speech: dict[str, bytes]
) -> None:
    settings = Settings.model_validate({
        "daemon": {"stream_listen": "127.0.0.1:0"},
        "plivo": {"stream_chunk_ms": CHUNK_MS, "stream_lead_ms": 200, "nonce_db": ":memory:"},
        "conversation": {"greeting": GREETING, "transcripts_dir": str(tmp_path / "t"),
                         "system_prompt_file": "config/agent-prompt.txt",
                         "barge_in": {"min_speech_ms": 200}},
    })
    llm = FakeLLM(lambda messages: [ANSWER] if last_user(messages) else None)
    providers = ProviderSet([FakeSTT(["when are you open", "wait what about sunday"])], [llm], [FakeTTS()])
    transcript_paths: list[Path] = []

    async def converse(leg: AudioLeg, info: CallInfo) -> None:
        writer = TranscriptWriter.for_call(settings, info)
        try:
            await run_conversation(leg, providers, settings, transcript=writer, call_info=info,
                                   fallback_audio=FALLBACK)
        finally:
            writer.close()
            if writer.path is not None:
                transcript_paths.append(writer.path)

    server = StreamServer(settings, Secrets(stream_secret=SECRET, plivo_auth_token=AUTH_TOKEN),
                          supervisor(converse))
    await server.start()
    try:
        client = PlivoStreamClient(f"ws://127.0.0.1:{server.bound_port}/stream",
                                   auth_token=AUTH_TOKEN, call_uuid="conv-1",
                                   extra_headers=headers_for("conv-1"))
        # 2 s before speaking: the greeting has played out even after the network's delays
        caller = silence(2.0) + speech["open"] + silence(2.0) + speech["wait"] + silence(1.5)
        result = await client.run(caller, tail_s=0.0)
    finally:
        await server.stop(drain_timeout_s=5.0)

    assert result.clears >= 1 and result.received["clearAudio"] >= 1
    lines = [json.loads(x) for x in transcript_paths[0].read_text().splitlines()]
    agent = [e for e in lines if e["event"] == "agent"]
    cut = [e for e in agent if e.get("interrupted")]
    assert cut, lines
    heard_ms = cut[0]["heard_ms"]
    greeting_ms = len(GREETING) * MS_PER_CHAR
    # what the simulated caller heard of it: the last clearAudio is the one that ended it (an
    # earlier one may be a pause on the onset that was resumed as a false interruption)
    reply_played = result.clear_audio_ms[-1] - greeting_ms
    assert 0 < heard_ms < len(ANSWER) * MS_PER_CHAR
    # heard = the last playedStream before the barge-in: never more than was played, and at
    # most one checkpoint chunk plus the network's round trip (playedStream up, clearAudio down,
    # each with up to 20 ms jitter) behind it
    lag = CHUNK_MS + result.network_rtt_ms + 40 + 60
    assert result.network_rtt_ms > 0
    assert reply_played - lag <= heard_ms <= reply_played, (heard_ms, reply_played, result.clear_audio_ms)
    history = llm.calls[-1]
    assert history[-1].content == "wait what about sunday", lines
    kept = history[-2]
    assert kept.role == "assistant" and ANSWER.startswith(kept.content) and kept.content != ANSWER


async def test_false_interruption_over_the_stream_resumes_without_losing_or_repeating_audio(
    tmp_path: Path, speech: dict[str, bytes]
) -> None:
    """A short "ah" over the answer: clearAudio goes out at once (pause), then the unplayed
    remainder is sent again and the simulated caller hears the whole answer exactly once."""
    settings = Settings.model_validate({
        "daemon": {"stream_listen": "127.0.0.1:0"},
        "plivo": {"stream_chunk_ms": CHUNK_MS, "stream_lead_ms": 200, "nonce_db": ":memory:"},
        "conversation": {"greeting": GREETING, "transcripts_dir": str(tmp_path / "t"),
                         "system_prompt_file": "config/agent-prompt.txt", "preemptive_generation": False,
                         "barge_in": {"min_speech_ms": 250}},
    })
    llm = FakeLLM(lambda messages: [ANSWER] if last_user(messages) else None)
    tts = FakeTTS()
    providers = ProviderSet([FakeSTT(["when are you open", "ah"])], [llm], [tts])
    transcript_paths: list[Path] = []

    async def converse(leg: AudioLeg, info: CallInfo) -> None:
        writer = TranscriptWriter.for_call(settings, info)
        try:
            await run_conversation(leg, providers, settings, transcript=writer, call_info=info,
                                   fallback_audio=FALLBACK)
        finally:
            writer.close()
            if writer.path is not None:
                transcript_paths.append(writer.path)

    voiced = [i for i in range(0, len(speech["wait"]) - 320, 320)
              if max(abs(int.from_bytes(speech["wait"][j:j + 2], "little", signed=True))
                     for j in range(i, i + 320, 2)) > 3000]
    ah = speech["wait"][voiced[0]: voiced[0] + 16 * 140]  # 140 ms of voice: not a barge-in
    server = StreamServer(settings, Secrets(stream_secret=SECRET, plivo_auth_token=AUTH_TOKEN),
                          supervisor(converse))
    await server.start()
    try:
        client = PlivoStreamClient(f"ws://127.0.0.1:{server.bound_port}/stream", call_uuid="conv-2",
                                   extra_headers=headers_for("conv-2"), auth_token=AUTH_TOKEN)
        caller = silence(2.0) + speech["open"] + silence(2.0) + ah + silence(6.0)
        result = await client.run(caller, tail_s=0.0)
    finally:
        await server.stop(drain_timeout_s=5.0)

    lines = [json.loads(x) for x in transcript_paths[0].read_text().splitlines()]
    assert [e for e in lines if e["event"] == "false_interruption"], lines
    answer = [e for e in lines if e["event"] == "agent" and e["purpose"] == "answer"]
    assert answer and answer[0]["interrupted"] is False, lines
    assert result.clears >= 1  # the pause cleared Plivo's buffer
    full = len(GREETING) * MS_PER_CHAR + sum(len(c) for c in tts.clauses[1:]) * MS_PER_CHAR
    # the caller heard it all, once: the resume re-sends from the pause position, which the
    # pacer takes one frame on the safe side of its clock estimate, and that estimate is itself
    # within a frame of the playback: at most two frames (40 ms) heard twice, never a word
    # (measured 2026-12-02: 21-38 ms, also on the code before that session)
    assert abs(result.agent_audio_ms - full) <= 40, (result.agent_audio_ms, full)


def _onset_frame(pcm: bytes, level: int = 1000) -> int:
    """Index of the first 20 ms frame of ``pcm`` with a sample louder than ``level``."""
    samples = [int.from_bytes(pcm[j:j + 2], "little", signed=True) for j in range(0, len(pcm) - 1, 2)]
    for i in range(0, len(samples) - 160, 160):
        if max(abs(x) for x in samples[i:i + 160]) > level:
            return i // 160
    raise AssertionError("no speech")


async def test_barge_in_clear_audio_within_150_ms_over_a_50_ms_network(
    tmp_path: Path, speech: dict[str, bytes]
) -> None:
    """The simulator delays every message 50 ms each way: the bridge's clearAudio leaves on the
    onset of the caller's speech (pause), not after the 400 ms that confirm a barge-in. The
    measured figure (120 ms here; target 150) is printed; the bound only tells pause from
    confirmation, so a loaded machine does not make it flaky."""
    latency = 0.05
    settings = Settings.model_validate({
        "daemon": {"stream_listen": "127.0.0.1:0"},
        "plivo": {"stream_chunk_ms": CHUNK_MS, "stream_lead_ms": 200, "nonce_db": ":memory:"},
        "conversation": {"greeting": GREETING, "transcripts_dir": str(tmp_path / "t"),
                         "system_prompt_file": "config/agent-prompt.txt", "preemptive_generation": False,
                         "barge_in": {"min_speech_ms": 400}},
    })
    llm = FakeLLM(lambda messages: [ANSWER] if last_user(messages) else None)
    providers = ProviderSet([FakeSTT(["when are you open", "wait what about sunday"])], [llm], [FakeTTS()])

    async def converse(leg: AudioLeg, info: CallInfo) -> None:
        writer = TranscriptWriter.for_call(settings, info)
        try:
            await run_conversation(leg, providers, settings, transcript=writer, call_info=info,
                                   fallback_audio=FALLBACK)
        finally:
            writer.close()

    server = StreamServer(settings, Secrets(stream_secret=SECRET, plivo_auth_token=AUTH_TOKEN),
                          supervisor(converse))
    await server.start()
    try:
        client = PlivoStreamClient(f"ws://127.0.0.1:{server.bound_port}/stream", call_uuid="conv-3",
                                   extra_headers=headers_for("conv-3"), auth_token=AUTH_TOKEN,
                                   network=NetworkProfile(latency * 1000, latency * 1000, 0.0))
        lead = silence(2.0) + speech["open"] + silence(2.5)
        caller = lead + speech["wait"] + silence(1.5)
        result = await client.run(caller, tail_s=0.0)
    finally:
        await server.stop(drain_timeout_s=5.0)

    onset_tick = len(lead) // 320 + _onset_frame(speech["wait"])
    later = [t for t in result.clear_ticks if t >= onset_tick]
    assert later, (result.clear_ticks, onset_tick)
    # tick of the clear at the caller, less the two network legs = the bridge's own reaction
    reaction_ms = (later[0] - onset_tick) * 20 - 2 * latency * 1000
    assert reaction_ms < 300, reaction_ms
    print(f"stream clearAudio {reaction_ms:.0f} ms after the onset reached the bridge")
