"""Barge-in on the wire, per level-gate setting: how long after a caller starts talking over
the agent do the agent's RTP packets stop?

The daemon runs the conversation agent on the real cloud SDKs against the fakes (as
tests/cloud_call does, whose helpers this reuses); SIPp is the caller, tcpdump captures the
agent's RTP. Each call: a first request (the gate learns the caller's level from it), then
``--cut-ins`` times a long answer that the caller cuts into about 2 s in, the last answer
the caller hangs up. A stop time is the end of the agent's burst that covered the cut-in's
onset (its last packet's capture time + its 20 ms) minus that onset: the capture time of the
caller's first packet louder than 1000 RMS (scaled with --caller-db/--cut-in-db, so a quieter
line keeps the same onset) at the cut-in (tests/cloud_call/calls.py, CallResult.onset_on_wire;
tests/cloud_call/test_barge_in_wire.py measures the same way). Both ends are on the wire, so
SIPp's own send timing is not in the figure. ``--caller-db`` makes the whole caller
quieter (their first words are judged by the floor only), ``--cut-in-db`` makes the cut-ins
quieter than the first request the gate learnt from. One daemon per gate value, runs back to back.

    python bench/barge_in_wire.py --gate-db 0 8 10 12 15 --calls 2 --cut-ins 4
    python bench/barge_in_wire.py --gate-db 15 --calls 2 --cut-ins 5 --cut-in-db 0 -6

``--keep DIR`` keeps the captures and transcripts; ``--config-extra`` appends TOML to the
daemon's config (A/B of a setting).

Needs root (tcpdump), sipp, espeak-ng, sox. Prints one JSON line per (gate, caller-db,
cut-in-db) and a summary table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.simulator.procs import run_daemon
from bridge.simulator.sipp import have_sipp
from devkit.fakes import FakeCloud
from devkit.fakes.server import DEEPGRAM_KEY, ELEVENLABS_KEY, OPENAI_KEY
from tests.cloud_call.calls import (
    CUT_INS,
    FIRST_REQUEST,
    ONSET_RMS,
    caller_line,
    cut_in_script,
    onset_s,
    place_call,
    timeline,
)
from tests.cloud_call.cloud_thread import CloudThread
from tests.cloud_call.conftest import daemon_config
from tests.support.audio import have_speech_tools

LONG = (
    "We open at nine in the morning and close at six in the evening on weekdays. "
    "On Saturdays we open at ten and close at four. On Sundays and public holidays we are closed. "
    "During the summer months we stay open one hour longer on Thursdays and Fridays."
)
INTO_ANSWER_S = 2.5  # after the caller's line ends: ~1 s until the answer starts, then ~1.5 s of it


def scaled(pcm: bytes, gain_db: float) -> bytes:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64) * 10 ** (gain_db / 20)
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


def active_dbfs(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    power = np.mean(x[: len(x) // 160 * 160].reshape(-1, 160) ** 2, axis=1)
    active = power[power > power.max() * 10 ** (-3.5)]
    return 10 * math.log10(float(np.mean(active)) / 32768**2)


def one_call(cloud: CloudThread, daemon: Any, transcripts: Path, work: Path, lines: dict[str, bytes],
             cut_ins: int, caller_db: float, cut_in_db: float) -> dict[str, Any]:
    texts = cut_in_script(cut_ins)

    def script(fakes: FakeCloud) -> None:
        fakes.deepgram.script.extend(texts)
        # spare long answers: an extra LLM request (a merged or restarted turn) must not reach
        # the end of the script early; the caller hangs up
        fakes.openai.script.extend([LONG] * (2 * cut_ins + 2))

    cloud.reset()
    cloud.do(script)
    placed: list[tuple[float, bytes]] = []
    onsets: list[float] = []  # where each cut-in's speech starts in the played line (s)
    at = 2.0
    for i, text in enumerate(texts):
        pcm = scaled(lines[text], caller_db + (cut_in_db if i else 0.0))
        placed.append((at, pcm))
        if i:
            onsets.append(at + onset_s(lines[text]))
        at += len(pcm) / 16000 + INTO_ANSWER_S
    pcm = timeline(placed, tail_s=3.0)
    # SIPp's wait for a BYE starts with the (non-blocking) playback: it hangs up after all of it
    call = place_call(daemon, transcripts, work, pcm, wait_ms=len(pcm) // 16 + 500)
    bursts = call.bursts()
    stops: list[float] = []
    detail: list[dict[str, float]] = []
    missed = 0
    for line_at in onsets:
        # found at full level: a quieter cut-in keeps the same onset
        onset = call.onset_on_wire(line_at, ONSET_RMS * 10 ** ((caller_db + cut_in_db) / 20))
        covering = [b for b in bursts if b.start <= onset < b.end]
        detail.append({"line_at": line_at, "onset": onset, "wall0": call.wall0,
                       "burst_end": covering[0].end if covering else math.nan})
        if covering:
            stops.append((covering[0].end - onset) * 1000)
        else:
            missed += 1  # the agent was not speaking at the onset: no barge-in to time
    users = [e["text"] for e in call.events("user")]
    if os.environ.get("BARGE_IN_WIRE_EXPLAIN"):
        print(call.explain(), file=sys.stderr)
    heard_first = bool(users) and users[0] == FIRST_REQUEST
    return {"stops_ms": stops, "missed": missed, "first_words_heard": heard_first, "user_turns": users,
            "sipp_rc": call.sipp.returncode, "detail": detail}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(values, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gate-db", type=float, nargs="+", default=[0, 8, 10, 12, 15])
    ap.add_argument("--calls", type=int, default=2, help="calls per setting")
    ap.add_argument("--cut-ins", type=int, default=4, help="cut-ins per call")
    ap.add_argument("--caller-db", type=float, nargs="+", default=[0.0],
                    help="gain of every caller line (0 = the levelled espeak of tests/cloud_call)")
    ap.add_argument("--cut-in-db", type=float, nargs="+", default=[0.0],
                    help="extra gain of the cut-ins, relative to the first request")
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument("--config-extra", default="", help="TOML appended to the daemon's config "
                    "(e.g. '[conversation.barge_in]\\npause_after_ms = 20')")
    ap.add_argument("--keep", type=Path, help="keep the calls' files (captures, transcripts) here")
    args = ap.parse_args()
    if not (have_sipp() and have_speech_tools() and os.geteuid() == 0):
        sys.exit("needs sipp, espeak-ng, sox and root (tcpdump)")
    env = {"DEEPGRAM_API_KEY": DEEPGRAM_KEY, "OPENAI_API_KEY": OPENAI_KEY,
           "ELEVENLABS_API_KEY": ELEVENLABS_KEY}
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="barge-in-wire-") as tmp_name:
        tmp = Path(tmp_name)
        if args.keep:
            tmp = args.keep
            tmp.mkdir(parents=True, exist_ok=True)
        lines = {t: caller_line(t, tmp, f"line{i}") for i, t in enumerate([FIRST_REQUEST, *CUT_INS])}
        print(f"caller level {active_dbfs(lines[FIRST_REQUEST]):.1f} dBFS active (before --caller-db)",
              file=sys.stderr)
        cloud = CloudThread()
        fakes = cloud.start()
        try:
            for gate in args.gate_db:
                folder = tmp / f"gate{gate:g}"
                folder.mkdir()
                transcripts = folder / "transcripts"
                config = daemon_config(fakes.http_url, transcripts).replace(
                    "[conversation]\n", f"[conversation]\nlevel_gate_db = {gate}\n", 1) + args.config_extra
                with run_daemon(folder, agent="conversation", config=config, env=env,
                                ready_timeout=60) as daemon:
                    for caller_db in args.caller_db:
                        for cut_in_db in args.cut_in_db:
                            calls = []
                            for n in range(args.calls):
                                work = folder / f"c{caller_db:g}-{cut_in_db:g}-{n}"
                                calls.append(one_call(cloud, daemon, transcripts, work, lines,
                                                      args.cut_ins, caller_db, cut_in_db))
                            stops = [s for c in calls for s in c["stops_ms"]]
                            res = {"gate_db": gate, "caller_db": caller_db, "cut_in_db": cut_in_db,
                                   "cut_ins": len(stops) + sum(c["missed"] for c in calls),
                                   "stopped": len(stops),
                                   "stop_p50_ms": pct(stops, 50), "stop_p95_ms": pct(stops, 95),
                                   "stop_max_ms": max(stops) if stops else None,
                                   "first_words_heard":
                                       f"{sum(c['first_words_heard'] for c in calls)}/{len(calls)}",
                                   "stops_ms": [round(s) for s in stops],
                                   "detail": [d for c in calls for d in c["detail"]],
                                   "load": os.getloadavg()[0], "at": time.strftime("%H:%M:%S", time.gmtime())}
                            results.append(res)
                            print(json.dumps(res), flush=True)
                            for c in calls:
                                if c["sipp_rc"] != 0 or c["missed"]:
                                    print(f"  note: sipp rc {c['sipp_rc']}, missed {c['missed']}, "
                                          f"user turns {c['user_turns']}", file=sys.stderr)
        finally:
            cloud.stop()
    print("\ngate dB | caller dB | cut-in dB | stopped | p50 | p95 | max ms | first words")
    for r in results:
        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.0f}"
        print(f"{r['gate_db']:g} | {r['caller_db']:g} | {r['cut_in_db']:g} | {r['stopped']}/{r['cut_ins']} | "
              f"{f(r['stop_p50_ms'])} | {f(r['stop_p95_ms'])} | {f(r['stop_max_ms'])} | "
              f"{r['first_words_heard']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
