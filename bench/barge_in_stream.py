"""Barge-in on the Plivo stream path: how long after the caller starts talking over the agent
does clearAudio go out (the bridge's send) and reach Plivo (the simulator, after its network)?

One process: the stream server runs the conversation engine (the real VAD and level gate) on
the test fakes (tests/conversation/fakes.py: no provider latency is in this figure), and
bridge.simulator.plivo's stream client is Plivo, ``--latency-ms`` each way (no jitter, so
messages keep their order). Each call: a first request, then ``--cut-ins`` times a long answer
the caller cuts into about 2 s in (levelled espeak lines, as bench/barge_in_wire.py plays).
The onset is the cut-in's first 20 ms frame louder than 1000 RMS (the wire bench's onset):
  bridge: clearAudio handed to the socket - the onset's media message received by the bridge
  Plivo:  clearAudio received by the simulator - the onset's media message sent by it
          (two network legs included; minus 2 x latency it is the bridge's own share again)

    python bench/barge_in_stream.py --calls 2 --cut-ins 5 --latency-ms 50

Needs espeak-ng and sox. Prints one JSON line per call and a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.callmodel import CallInfo
from bridge.conversation import run_conversation
from bridge.conversation.transcript import TranscriptWriter
from bridge.leg import AudioLeg
from bridge.providers.factory import ProviderSet
from bridge.settings import Secrets, Settings
from bridge.simulator.plivo.network import NetworkProfile
from bridge.simulator.plivo.stream_client import PlivoStreamClient, StreamCallResult
from bridge.stream import protocol
from bridge.stream.leg import StreamLeg
from bridge.stream.server import StreamServer
from tests.cloud_call.calls import CUT_INS, FIRST_REQUEST, ONSET_RMS, caller_line, cut_in_script
from tests.conversation.fakes import FakeLLM, FakeSTT, FakeTTS, last_user
from tests.conversation.harness import FALLBACK
from tests.stream.support import AUTH_TOKEN, SECRET, headers_for, supervisor
from tests.support.audio import have_speech_tools

LONG = (
    "We open at nine in the morning and close at six in the evening on weekdays. "
    "On Saturdays we open at ten and close at four. On Sundays and public holidays we are closed."
)
INTO_ANSWER_S = 2.5  # after the caller's line ends (as bench/barge_in_wire.py)


class _Stamps:
    """Times (loop clock) of what the bench watches, on both sides of the simulated network."""

    def __init__(self) -> None:
        self.sent: dict[int, float] = {}  # simulator: tick -> its media message sent
        self.received: list[float] = []  # bridge: media messages received, in order (= ticks)
        self.clear_sent: list[float] = []  # bridge: clearAudio handed to the socket
        self.clear_received: list[float] = []  # simulator: clearAudio received


class _Plivo(PlivoStreamClient):
    stamps: _Stamps

    async def _handle(self, raw: str, result: StreamCallResult) -> None:
        if '"clearAudio"' in raw:
            self.stamps.clear_received.append(asyncio.get_running_loop().time())
        await super()._handle(raw, result)


def _onset_frame(pcm: bytes) -> int:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    for i in range(len(x) // 160):
        if np.sqrt(np.mean(x[i * 160 : (i + 1) * 160] ** 2)) > ONSET_RMS:
            return i
    raise ValueError("no speech in the line")


async def one_call(n: int, lines: dict[str, bytes], args: argparse.Namespace, folder: Path,
                   stamps: _Stamps) -> dict[str, Any]:
    cut_ins, latency_ms = args.cut_ins, args.latency_ms
    barge_in = {} if args.pause_after_ms is None else {"pause_after_ms": args.pause_after_ms}
    texts = cut_in_script(cut_ins)
    settings = Settings.model_validate({
        "daemon": {"stream_listen": "127.0.0.1:0"},
        "plivo": {"nonce_db": ":memory:"},
        "conversation": {"greeting": "Hello.", "transcripts_dir": str(folder / "t"),
                         "system_prompt_file": "config/agent-prompt.txt", "preemptive_generation": False,
                         "barge_in": barge_in},
    })
    providers = ProviderSet([FakeSTT([t.lower() for t in texts])],
                            [FakeLLM(lambda messages: [LONG] if last_user(messages) else None)], [FakeTTS()])

    async def converse(leg: AudioLeg, info: CallInfo) -> None:
        writer = TranscriptWriter.for_call(settings, info)
        try:
            await run_conversation(leg, providers, settings, transcript=writer, call_info=info,
                                   fallback_audio=FALLBACK)
        finally:
            writer.close()

    # the caller's audio and the tick of each cut-in's onset
    pcm = bytearray(bytes(16000 * 2))  # 2 s before the first request: the greeting plays out
    onset_ticks: list[int] = []
    for i, text in enumerate(texts):
        if i:
            onset_ticks.append(len(pcm) // 320 + _onset_frame(lines[text]))
        pcm += lines[text] + bytes(int(INTO_ANSWER_S * 8000) * 2)
    pcm += bytes(16000)

    secrets = Secrets(stream_secret=SecretStr(SECRET), plivo_auth_token=SecretStr(AUTH_TOKEN))
    server = StreamServer(settings, secrets, supervisor(converse))
    await server.start()
    loop = asyncio.get_running_loop()
    try:
        uuid = f"barge-{n}"
        client = _Plivo(f"ws://127.0.0.1:{server.bound_port}/stream", call_uuid=uuid,
                        extra_headers=headers_for(uuid), auth_token=AUTH_TOKEN,
                        network=NetworkProfile(latency_ms, latency_ms, 0.0, seed=n + 1))
        client.stamps = stamps

        def on_tick(_client: PlivoStreamClient, tick: int) -> None:
            stamps.sent[tick] = loop.time()  # its media message goes out right after this

        await client.run(bytes(pcm), tail_s=0.0, max_s=len(pcm) / 16000 + 5, on_tick=on_tick)
    finally:
        await server.stop(drain_timeout_s=5.0)

    bridge_ms: list[float] = []
    plivo_ms: list[float] = []
    missed = 0
    for tick in onset_ticks:
        got = stamps.received[tick] if tick < len(stamps.received) else math.inf
        sent = [t for t in stamps.clear_sent if got <= t < got + 1.0]
        heard = [t for t in stamps.clear_received if stamps.sent[tick] <= t < stamps.sent[tick] + 1.5]
        if not sent or not heard:
            missed += 1  # the agent was not speaking at the onset (or never paused)
            continue
        bridge_ms.append((sent[0] - got) * 1000)
        plivo_ms.append((heard[0] - stamps.sent[tick]) * 1000)
    return {"bridge_ms": bridge_ms, "plivo_ms": plivo_ms, "missed": missed}


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    stamps = _Stamps()
    clear_audio = protocol.clear_audio
    on_message = StreamLeg.on_message

    def stamped_clear(stream_id: str) -> str:
        stamps.clear_sent.append(asyncio.get_running_loop().time())  # the leg sends it at once
        return clear_audio(stream_id)

    def stamped_message(leg: StreamLeg, msg: protocol.Message) -> None:
        if isinstance(msg, protocol.Media):
            stamps.received.append(asyncio.get_running_loop().time())
        on_message(leg, msg)

    protocol.clear_audio = stamped_clear  # type: ignore[assignment]
    StreamLeg.on_message = stamped_message  # type: ignore[method-assign,assignment]
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="barge-in-stream-") as tmp_name:
            tmp = Path(tmp_name)
            lines = {t: caller_line(t, tmp, f"line{i}") for i, t in enumerate([FIRST_REQUEST, *CUT_INS])}
            for n in range(args.calls):
                stamps.__init__()  # type: ignore[misc]
                res = await one_call(n, lines, args, tmp / f"call{n}", stamps)
                res.update(load=os.getloadavg()[0], at=time.strftime("%H:%M:%S", time.gmtime()))
                print(json.dumps({k: [round(v) for v in x] if isinstance(x, list) else x
                                  for k, x in res.items()}), flush=True)
                results.append(res)
    finally:
        protocol.clear_audio = clear_audio  # type: ignore[assignment]
        StreamLeg.on_message = on_message  # type: ignore[method-assign]
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--cut-ins", type=int, default=5, help="cut-ins per call")
    ap.add_argument("--latency-ms", type=float, default=50.0, help="simulated network, each way")
    ap.add_argument("--pause-after-ms", type=int,
                    help="conversation.barge_in.pause_after_ms (default: the setting's)")
    args = ap.parse_args()
    if not have_speech_tools():
        sys.exit("needs espeak-ng and sox")
    results = asyncio.run(run(args))
    bridge = [v for r in results for v in r["bridge_ms"]]
    plivo = [v for r in results for v in r["plivo_ms"]]
    missed = sum(r["missed"] for r in results)

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    print(f"\nonset -> clearAudio, {len(bridge)} cut-ins ({missed} missed), "
          f"network {args.latency_ms:g} ms each way")
    print(f"bridge (received onset -> clearAudio sent): p50 {f(pct(bridge, 50))} p95 {f(pct(bridge, 95))} "
          f"max {f(max(bridge) if bridge else None)} ms")
    print(f"at Plivo (onset sent -> clearAudio received): p50 {f(pct(plivo, 50))} p95 {f(pct(plivo, 95))} "
          f"max {f(max(plivo) if plivo else None)} ms")


if __name__ == "__main__":
    main()
