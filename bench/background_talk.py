"""Background talk against the level gate, on a mixed recording made on the spot.

A caller speaks a few requests at a normal phone level (-26 dBFS active speech, ITU-T P.56's
nominal) while a TV talks all the time underneath in another voice, ``--tv-db`` below the
caller (a list: one scene per level). Both are espeak-ng (a fresh process per line, so runs
repeat exactly) resampled by sox, mixed, and put through a mu-law round trip as on a phone
line. The mix goes frame by frame through the real VAD and the real Engine under a fake clock,
with an oracle STT (a turn's final is the caller's words if the caller spoke in it, else the
TV's) and instant LLM/TTS/leg answers, so the agent replies and the TV also plays over it.

Counted per scene: turns or barge-in pauses the TV opened alone (must be 0), caller requests
that opened a turn (must be all), and LLM requests made of TV words.

    python bench/background_talk.py --tv-db 30 25 20 15 10 --gate-db 0 15 --json out.json

``--caller-db -10 -20``: the whole caller that much quieter (their first words meet only the
floor). ``--barge-in``: the first request is answered at length and each later one cuts in
about 2 s into the answer (``--cut-in-db``: quieter than the first); per scene the onset delay
(the caller's speech onset to the barge-in pause, on the fake clock: what the gate and VAD
add; the wire adds the transport, bench/barge_in_wire.py).

    python bench/background_talk.py --barge-in --gate-db 0 8 10 12 15 --tv-db none 20 \\
        --cut-in-db 0 -6 -10
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.audio import g711
from bridge.conversation import actions as act
from bridge.conversation.engine import Engine, State
from bridge.conversation.level_gate import FULL_SCALE_DB
from bridge.conversation.vad import create_vad
from bridge.providers.base import Transcript
from bridge.settings import Settings

RATE = 8000
FRAME = 160  # samples in 20 ms
CALLER_DBFS = -26.0  # P.56 nominal active speech level on a digital phone line
CALLER_VOICE = ("en-us+klatt", 165)
TV_VOICE = ("en-gb+f3", 185)  # another voice, a faster newsreader
TV_TEXT = (
    "Good evening and welcome to the news at nine. Heavy rain is expected across the north "
    "tonight, with flooding likely on several major roads. In sport, the home side won again "
    "after a late goal in the second half. Markets closed higher today as oil prices fell. "
    "Now the weather for the weekend, which looks dry and bright in most places."
)
TV_WORDS = "heavy rain is expected across the north tonight"  # what the oracle STT hears from it


@dataclass(frozen=True)
class Request:
    at_s: float  # when the caller starts
    text: str
    gain_db: float = 0.0  # relative to the caller's normal level


# Gaps of 6-9 s: the agent answers (1 s per clause) and the TV talks alone for several seconds.
REQUESTS = (
    Request(5.0, "Hi, I would like to book a table for two tonight."),
    Request(13.0, "Around eight o'clock, if you have one."),
    Request(21.0, "My name is Anna Smith.", gain_db=-6.0),  # a quieter caller is still heard
    Request(28.0, "Do you have parking nearby?"),
    Request(36.0, "Great, thank you very much."),
)
SCENE_S = 44.0
# The "mixed" scene: the TV mostly 25 dB down, louder (15, then 10 dB down) over the 4th and
# 5th requests and the seconds around them.
MIXED = [(0.0, 25.0), (24.0, 15.0), (32.0, 10.0), (40.0, 20.0)]


def speak(text: str, voice: tuple[str, int]) -> np.ndarray:
    """espeak-ng -> sox (-R: no random dither) -> 8 kHz s16 samples, as float."""
    wav = subprocess.run(["espeak-ng", "-v", voice[0], "-s", str(voice[1]), "--stdout", text],
                         check=True, capture_output=True).stdout
    raw = subprocess.run(["sox", "-R", "-t", "wav", "-", "-r", str(RATE), "-c", "1", "-b", "16",
                          "-e", "signed-integer", "-t", "raw", "-"],
                         input=wav, check=True, capture_output=True).stdout
    return np.frombuffer(raw, "<i2").astype(np.float64)


def have_tools() -> bool:
    return bool(shutil.which("espeak-ng") and shutil.which("sox"))


def active_dbfs(x: np.ndarray) -> float:
    """RMS over the 20 ms frames that carry speech (within 35 dB of the loudest): a simple
    stand-in for P.56's active speech level, so pauses do not lower the figure."""
    frames = x[: len(x) // FRAME * FRAME].reshape(-1, FRAME)
    power = np.mean(frames**2, axis=1)
    active = power[power > power.max() * 10 ** (-35 / 10)]
    return 10 * math.log10(float(np.mean(active)) / 32768**2)


def at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return x * 10 ** ((dbfs - active_dbfs(x)) / 20)


@dataclass
class Tracks:
    caller: np.ndarray  # the caller alone, at their level
    tv: np.ndarray  # the TV alone, unit level (scaled per scene)
    spans: list[tuple[int, int]]  # each request's first and last frame
    requests: tuple[Request, ...] = REQUESTS
    onsets: list[int] = field(default_factory=list)  # each request's first frame of speech


def onset_frame(voice: np.ndarray) -> int:
    """The first 20 ms frame within 35 dB of the line's loudest (where its speech starts)."""
    power = np.mean(voice[: len(voice) // FRAME * FRAME].reshape(-1, FRAME) ** 2, axis=1)
    return int(np.argmax(power > power.max() * 10 ** (-35 / 10)))


def make_tracks(requests: tuple[Request, ...] = REQUESTS, scene_s: float = SCENE_S,
                caller_db: float = 0.0) -> Tracks:
    """``caller_db``: the whole caller that much off the nominal level (a quiet phone)."""
    n = int(scene_s * RATE)
    caller = np.zeros(n)
    spans, onsets = [], []
    for req in requests:
        voice = at_level(speak(req.text, CALLER_VOICE), CALLER_DBFS + caller_db + req.gain_db)
        start = int(req.at_s * RATE)
        caller[start : start + len(voice)] += voice[: n - start]
        spans.append((start // FRAME, (start + len(voice)) // FRAME))
        onsets.append(start // FRAME + onset_frame(voice))
    news = at_level(speak(TV_TEXT, TV_VOICE), 0.0)
    tv = np.tile(news, n // len(news) + 1)[:n]  # continuous: the bulletin loops
    return Tracks(caller, tv, spans, requests, onsets)


# Barge-in scenes: the first request is answered at length (6 clauses, 6 s) and each later one
# cuts into the answer to the one before, about 2 s in; ``gain_db`` of the cut-ins per scene.
CUT_IN_TEXTS = ("Wait, what about parking?", "Sorry, and on Sundays?", "Hold on, is that every week?",
                "No, I mean the other shop.", "Right, and the phone number?")
LONG_REPLY = ("Certainly. Let me check that for you. One moment please. I am looking at the diary now. "
              "We have a few options. Here they are.")


def barge_in_requests(cut_in_db: float) -> tuple[Request, ...]:
    first = Request(1.0, "Hi, I would like to book a table for two tonight.")
    return (first, *[Request(5.5 + 5.0 * i, text, cut_in_db) for i, text in enumerate(CUT_IN_TEXTS)])


def mix(tracks: Tracks, tv_db_below: float | list[tuple[float, float]]) -> bytes:
    """The line: caller + TV (``tv_db_below`` the caller's level; or a list of (from_s, dB)
    steps), through G.711 mu-law and back."""
    steps = [(0.0, tv_db_below)] if isinstance(tv_db_below, (int, float)) else tv_db_below
    gain = np.zeros(len(tracks.tv))
    for from_s, below in steps:
        gain[int(from_s * RATE):] = 10 ** ((CALLER_DBFS - below) / 20)
    line = np.clip(tracks.caller + tracks.tv * gain, -32768, 32767).astype("<i2").tobytes()
    return g711.ulaw_to_pcm(g711.pcm_to_ulaw(line))


@dataclass
class Outcome:
    background_openings: list[float] = field(default_factory=list)  # seconds into the scene
    caller_opened: list[bool] = field(default_factory=list)  # per request
    llm_requests: list[str] = field(default_factory=list)  # the user text of each request
    tv_requests: int = 0  # LLM requests made of TV words only
    gate_db: float | None = None  # the caller level the gate learnt
    onset_delays_ms: list[float | None] = field(default_factory=list)  # per request: speech onset
    # to its first opening (turn, or the barge-in pause); None: it opened nothing

    def as_dict(self) -> dict[str, Any]:
        return {
            "background_openings": len(self.background_openings),
            "background_opening_s": [round(s, 2) for s in self.background_openings],
            "caller_requests_opened": f"{sum(self.caller_opened)}/{len(self.caller_opened)}",
            "llm_requests": len(self.llm_requests),
            "llm_requests_of_tv_words": self.tv_requests,
            "learnt_caller_dbfs": None if self.gate_db is None else round(self.gate_db - FULL_SCALE_DB, 1),
            "onset_delay_ms": self.onset_delays_ms,
        }


class _Scene:
    """The Engine's world: a leg that plays what it is given, an oracle STT, instant LLM/TTS."""

    STT_FINAL_S = 0.15

    def __init__(self, settings: Settings, tracks: Tracks, reply: str) -> None:
        self.engine = Engine(settings, system_prompt="You take restaurant bookings.",
                             provider_counts={"stt": 1, "llm": 1, "tts": 1},
                             fallback_audio=bytes(16000))
        self.tracks = tracks
        self.reply = reply
        self.t = 0.0
        self.frame_no = 0
        self.heard: dict[str, int] = {}
        self.queue: list[list[Any]] = []  # [utterance_id, ms available, ended]
        self.paused = False
        self.stt_frames: list[int] = []  # frames sent to the STT since its last final
        self.finals: list[tuple[float, list[int]]] = []  # (when due, the audio it covers)
        self.transcribed: set[int] = set()  # requests already in a final
        self.texts: dict[str, int] = {}  # TtsText count per reply
        self.openings: list[int] = []  # frames where a turn or a barge-in pause began
        self.llm: list[str] = []

    def caller_request(self, frame: int) -> int | None:
        for i, (first, last) in enumerate(self.tracks.spans):
            if first - 10 <= frame <= last + 10:  # 200 ms either side: VAD onset/hangover
                return i
        return None

    def oracle(self, frames: list[int]) -> Transcript:
        """What a good STT makes of that audio: each caller request once (in the first final
        whose audio holds some of it), the TV's words when the audio held no request."""
        said = sorted({self.caller_request(f) for f in frames} - {None})  # type: ignore[type-var]
        new = [i for i in said if i not in self.transcribed]
        self.transcribed.update(new)
        text = " ".join(self.tracks.requests[i].text for i in new) if new else ("" if said else TV_WORDS)
        return Transcript(text, is_final=True, end_of_utterance=True)

    def frame(self, pcm: bytes, is_speech: bool) -> None:
        before = self.engine.state
        self.engine.on_frame(self.t, pcm, is_speech)
        self.engine.on_tick(self.t)
        self.handle(self.engine.take_actions())
        if self.engine.state is State.USER_SPEAKING and before is not State.USER_SPEAKING:
            self.openings.append(self.frame_no)
        while self.finals and self.t >= self.finals[0][0]:
            self.engine.on_transcript(self.t, self.oracle(self.finals.pop(0)[1]))
            self.handle(self.engine.take_actions())
        self.play()
        self.t += FRAME / RATE
        self.frame_no += 1

    def play(self) -> None:
        if not self.queue or self.paused:
            return
        head = self.queue[0]
        uid = head[0]
        if self.heard.get(uid, 0) == 0:
            self.engine.on_playback_started(self.t, uid, self.t)
        self.heard[uid] = min(head[1], self.heard.get(uid, 0) + 20)
        # the leg's reports: the heard position every frame (the engine takes it as input)
        self.engine.on_playback_progress(self.t, uid, self.heard[uid])
        if head[2] and self.heard[uid] >= head[1]:
            self.queue.pop(0)
            self.engine.on_playback_done(self.t, uid, self.heard[uid])
        self.handle(self.engine.take_actions())

    def handle(self, actions: list[act.Action]) -> None:
        for a in actions:
            if isinstance(a, act.SttAudio):
                self.stt_frames.append(self.frame_no)
            elif isinstance(a, act.SttFinalize):
                self.finals.append((self.t + self.STT_FINAL_S, self.stt_frames))
                self.stt_frames = []
            elif isinstance(a, act.StartLlm):
                self.llm.append(str(a.messages[-1].content))
                self.engine.on_llm_text(self.t, a.stream_id, self.reply)
                self.engine.on_llm_done(self.t, a.stream_id)
            elif isinstance(a, act.TtsText):
                index = self.texts.get(a.reply_id, 0)
                self.texts[a.reply_id] = index + 1
                self.engine.on_tts_text_taken(self.t, a.reply_id, index)
                self.engine.on_tts_audio(self.t, a.reply_id, bytes(16000))  # 1 s a clause
            elif isinstance(a, act.EndTts):
                self.engine.on_tts_done(self.t, a.reply_id)
            elif isinstance(a, act.Play):
                self._queued(a.utterance_id)[1] += len(a.pcm) // 16
            elif isinstance(a, act.EndUtterance):
                self._queued(a.utterance_id)[2] = True
            elif isinstance(a, act.ClearPlayback):
                self.queue.clear()
                self.paused = False
            elif isinstance(a, act.PausePlayback):
                self.paused = True
                self.openings.append(self.frame_no)
            elif isinstance(a, act.ResumePlayback):
                self.paused = False
        more = self.engine.take_actions()
        if more:
            self.handle(more)

    def _queued(self, uid: str) -> list[Any]:
        for entry in self.queue:
            if entry[0] == uid:
                return entry
        entry = [uid, 0, False]
        self.queue.append(entry)
        return entry


def settings_for(gate_db: float | None = None, floor_dbfs: float | None = None, **conv: Any) -> Settings:
    """The shipped defaults (offline STT list aside: the oracle plays a Deepgram-like STT)."""
    if gate_db is not None:
        conv["level_gate_db"] = gate_db
    if floor_dbfs is not None:
        conv["level_gate_floor_dbfs"] = floor_dbfs
    return Settings.model_validate({"conversation": conv, "stt": {"providers": ["deepgram"]}})


SHORT_REPLY = "Certainly. Let me check that for you."


def run_scene(tracks: Tracks, tv_db_below: float | list[tuple[float, float]],
              settings: Settings, reply: str = SHORT_REPLY) -> Outcome:
    line = mix(tracks, tv_db_below)
    vad = create_vad(settings.conversation.vad)
    scene = _Scene(settings, tracks, reply)
    scene.engine.start(0.0)
    scene.handle(scene.engine.take_actions())
    for i in range(0, len(line) - 2 * FRAME + 1, 2 * FRAME):
        pcm = line[i : i + 2 * FRAME]
        scene.frame(pcm, vad.is_speech(pcm))
    out = Outcome()
    opened = {scene.caller_request(f) for f in scene.openings}
    out.caller_opened = [i in opened for i in range(len(tracks.spans))]
    for i, onset in enumerate(tracks.onsets):
        mine = [f for f in scene.openings if scene.caller_request(f) == i and f >= onset - 10]
        out.onset_delays_ms.append((min(mine) - onset) * 1000 * FRAME / RATE if mine else None)
    out.background_openings = [f * FRAME / RATE for f in scene.openings if scene.caller_request(f) is None]
    out.llm_requests = scene.llm
    out.tv_requests = sum(1 for text in scene.llm if text == TV_WORDS)
    out.gate_db = scene.engine._gate.caller_db  # the bench reports what the gate learnt
    return out


def _scenes(args: argparse.Namespace) -> list[tuple[dict[str, Any], Tracks, str]]:
    """(labels, tracks, reply) of each scene asked for; the tracks are made once each."""
    if args.barge_in:
        return [({"scene": "barge-in", "caller_db": c, "cut_in_db": cut},
                 make_tracks(barge_in_requests(cut), SCENE_S, c), LONG_REPLY)
                for c in args.caller_db for cut in args.cut_in_db]
    return [({"scene": "requests", "caller_db": c}, make_tracks(caller_db=c), SHORT_REPLY)
            for c in args.caller_db]


def _delays(out: Outcome, first: int) -> dict[str, Any]:
    """Onset delay of the requests from ``first`` on (the cut-ins: 1; every request: 0)."""
    got = [d for d in out.onset_delays_ms[first:] if d is not None]
    if not got:
        return {}
    return {"onset_delay_p50_ms": float(np.percentile(got, 50)),
            "onset_delay_p95_ms": float(np.percentile(got, 95)), "onset_delay_max_ms": max(got)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tv-db", nargs="+", default=["30", "25", "20", "15", "10", "mixed"],
                    help="TV level below the caller's nominal level, dB, 'mixed' (MIXED's steps) "
                         "or 'none'; one scene each")
    ap.add_argument("--hold-db", type=float, default=None, help="conversation.level_gate_hold_db")
    ap.add_argument("--gate-db", type=float, nargs="+", default=[0, 15],
                    help="conversation.level_gate_db values to compare (0 = gate off)")
    ap.add_argument("--floor-dbfs", type=float, nargs="+", default=[None],
                    help="conversation.level_gate_floor_dbfs values (default: the setting's)")
    ap.add_argument("--caller-db", type=float, nargs="+", default=[0.0],
                    help="the whole caller this far off the nominal -26 dBFS (a quiet caller: -10 -20)")
    ap.add_argument("--barge-in", action="store_true",
                    help="barge-in scenes: each request after the first cuts into a 6 s answer")
    ap.add_argument("--cut-in-db", type=float, nargs="+", default=[0.0],
                    help="with --barge-in: the cut-ins this far off the first request's level")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()
    if not have_tools():
        sys.exit("espeak-ng and sox are needed")
    scenes = _scenes(args)
    results = []
    for gate in args.gate_db:
        for floor in args.floor_dbfs:
            for labels, tracks, reply in scenes:
                for below in args.tv_db:
                    settings = settings_for(gate, floor) if args.hold_db is None \
                        else settings_for(gate, floor, level_gate_hold_db=args.hold_db)
                    level: float | list[tuple[float, float]] = \
                        MIXED if below == "mixed" else math.inf if below == "none" else float(below)
                    out = run_scene(tracks, level, settings, reply)
                    res = {"gate_db": gate, "floor_dbfs": settings.conversation.level_gate_floor_dbfs,
                           **labels, "tv_db_below": below, **out.as_dict(),
                           **_delays(out, 1 if args.barge_in else 0)}
                    results.append(res)
                    print(json.dumps(res), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
