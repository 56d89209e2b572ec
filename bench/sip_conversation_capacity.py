"""The full conversation on the SIP path at N concurrent calls, through the shipped Kamailio
front to 1 or 2 real daemons; prints JSON figures (issue 13: both paths, 1/60/150 calls).

    .venv/bin/python bench/sip_conversation_capacity.py --daemons 1 2 --calls 1 60 150

Processes: the provider fakes (voice_to_voice.py's process and latency profile: the REAL
Deepgram/OpenAI/ElevenLabs SDKs in the daemons talk to them), Kamailio with
deploy/kamailio/kamailio.cfg, the daemons (`voice-bridge run`, conversation agent), and SIPp
callers (one SIPp per question order, at least one per 100 calls). Each caller plays a pcap of
espeak-ng speech shaped as stream_capacity.py's callers: silence while the greeting plays,
then ``--turns`` questions with room for each answer, then hangs up (BYE through Kamailio).

Figures per (daemons, calls): calls ok/failed (SIPp), how Kamailio spread them, each daemon's
CPU (% of one core over the steady part), RSS per call and loop lag (its /healthz and /metrics),
replies delivered and voice-to-voice p50/p95 from the daemons' turn-latency histogram
(first_audio_out; bucket-interpolated), call ends by reason, and, from a tcpdump of both RTP
directions, voice-to-voice as the caller hears it (last voiced packet of a question to the
agent's first packet after it), replies heard and calls whose first question came before the
greeting was over. "limit" names what ran out: failed calls, replies missing, a daemon over
80 % of a core, loop lag over 50 ms, or memory (peak RSS over 80 % of what was available).

``--hosts 127.0.0.1 127.0.0.2`` binds daemon i to address i: Kamailio then dispatches to a
daemon on another address, as it would to one on another host. It is the same machine and
kernel: it shows the configuration addressing another host, not a second machine's figures.

All processes share this VM's cores (2 here): read CPU figures next to the load printed.

``--daemon-cpu-quota B`` gives every daemon the same fixed budget of B cores (its own cgroup,
bench/cpu_budget.py; root), so that the callers, tcpdump, Kamailio and the fakes keep the rest
of the box; "capacity" then names, per daemon count, the most calls of the list that kept the
bound (no failed call, every reply delivered, voice-to-voice p95 on the wire within
``--v2v-p95-ms``, by default 1.15x the 1-call run's), every smaller count passing too, and
how many times one daemon's calls the others carried (issue 13, target 3).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import cpu_budget  # noqa: E402
from cpu_budget import Budget, CpuGroup  # noqa: E402
from kamailio_scaleout import (  # noqa: E402
    Sampler,
    _daemons,
    _health,
    add_plan_arguments,
    addresses,
    capacity,
    limits,
    plan,
    wait_all_active,
)
from sip_concurrency import caller_media_sinks, media_bases, sipp_command, sipp_counters, split  # noqa: E402
from stream_capacity import ANSWER_S, GREETING_S, caller_audio  # noqa: E402
from voice_to_voice import ANSWERS, QUESTIONS, cloud_settings, pct, serve_fakes, speak  # noqa: E402

from bridge.audio.g711 import decoder  # noqa: E402
from bridge.simulator.pcap import read_udp_payloads  # noqa: E402
from bridge.simulator.procs import Daemon, capture_udp, cpu_seconds  # noqa: E402
from bridge.simulator.sipp import media_scenario  # noqa: E402
from devkit.fakes.server import DEEPGRAM_KEY, ELEVENLABS_KEY, OPENAI_KEY  # noqa: E402
from devkit.kamailio import run_front  # noqa: E402

VOICED = 500  # |sample| above this is speech (espeak peaks near 20000; its silence is 0)
REPLY_WINDOW_S = ANSWER_S - 1  # an agent packet this long after a question's end is its reply


# -- the daemons' configuration ------------------------------------------------------------------
def daemon_config(url: str, tts: str) -> str:
    """voice_to_voice's cloud settings (what differs from the defaults) as the daemon's TOML."""
    values = cloud_settings(url, tts).model_dump(mode="json", exclude_defaults=True)
    return _toml({"daemon": {"agent": "conversation"}, **values})


def _toml(tree: dict[str, Any], prefix: str = "") -> str:
    plain = {k: v for k, v in tree.items() if not isinstance(v, dict) and v is not None}
    lines = [f"[{prefix}]"] if prefix and plain else []
    lines += [f"{k} = {_toml_value(v)}" for k, v in plain.items()]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tree.items():
        if isinstance(v, dict):
            out += _toml(v, f"{prefix}.{k}" if prefix else k)
    return out


def _toml_value(v: Any) -> str:
    import json

    return json.dumps(v)  # strings, numbers, booleans and lists of them read the same in TOML


# -- the callers' audio and where its questions are ------------------------------------------------
def question_spans(questions: list[bytes], turns: int, k: int) -> list[tuple[float, float]]:
    """(first, last voiced sample) of each question in caller_audio()'s k-th audio, seconds."""
    spans, at = [], GREETING_S
    for i in range(turns):
        q = np.frombuffer(questions[(k + i) % len(questions)], dtype="<i2")
        voiced = np.flatnonzero(np.abs(q.astype(np.int32)) > VOICED)
        spans.append((at + voiced[0] / 8000, at + (voiced[-1] + 1) / 8000))
        at += len(q) / 8000 + ANSWER_S
    return spans


# -- the wire: both RTP directions of every call ----------------------------------------------
def wire_figures(pcap: Path, spans: dict[int, list[tuple[float, float]]]) -> dict[str, Any]:
    """Per call (caller media port -> its question spans): voice-to-voice as heard, replies
    heard, and whether the first question started before the greeting had finished."""
    calls: dict[tuple[int, int], dict[str, list[Any]]] = {}
    for t, sport, dport, data in read_udp_payloads(pcap):
        if len(data) < 12 or 200 <= data[1] <= 204:  # RTCP
            continue
        if sport in spans:  # caller -> daemon
            seq = int.from_bytes(data[2:4], "big")
            calls.setdefault((sport, dport), {"in": [], "out": []})["in"].append((t, seq))
        elif dport in spans:  # daemon -> caller
            calls.setdefault((dport, sport), {"in": [], "out": []})["out"].append((t, data[12:]))
    v2v: list[float] = []
    heard = overlapped = no_greeting = 0
    decode = decoder("PCMU")
    for (caller_port, _daemon_port), c in calls.items():
        if not c["in"]:
            continue
        # packet n of the caller's audio carries its samples from n * 20 ms: when it left SIPp
        # is on the capture (one tcpdump missed: the next one's time less 20 ms a packet)
        seq0 = c["in"][0][1]
        sent = {(s - seq0) & 0xFFFF: t for t, s in c["in"]}
        indexes = sorted(sent)

        def left_at(at_s: float, sent: dict[int, float] = sent, indexes: list[int] = indexes) -> float:
            n = math.ceil(at_s / 0.02)
            later = indexes[min(len(indexes) - 1, int(np.searchsorted(indexes, n)))]
            return sent[later] - (later - n) * 0.02
        agent = [t for t, payload in c["out"]
                 if np.abs(np.frombuffer(decode(payload), dtype="<i2").astype(np.int32)).max() > VOICED]
        qs = spans[caller_port]
        first_question = left_at(qs[0][0])
        if not [t for t in agent if t < first_question]:
            no_greeting += 1
        elif _burst_end(agent) > first_question:
            overlapped += 1  # the greeting was still playing when the first question began
        for _start, end in qs:
            spoken = left_at(end)
            reply = [t for t in agent if spoken < t < spoken + REPLY_WINDOW_S]
            if reply:
                heard += 1
                v2v.append((reply[0] - spoken) * 1000)
    return {"calls_seen": len(calls), "replies_heard": heard,
            "voice_to_voice_ms": {"p50": pct(v2v, 0.5), "p95": pct(v2v, 0.95), "max": pct(v2v, 1.0)},
            "calls_question_over_greeting": overlapped, "calls_without_greeting_before_question": no_greeting}


def _burst_end(times: list[float], gap_s: float = 0.1) -> float:
    """End of the first burst of agent packets (the greeting)."""
    end = times[0] if times else 0.0
    for t in times[1:]:
        if t - end > gap_s:
            break
        end = t
    return end + 0.02


# -- the daemons' own figures -----------------------------------------------------------------
def _metrics(daemon: Daemon) -> str:
    with urllib.request.urlopen(f"{daemon.http}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def histogram(text: str, name: str, label: str = "") -> tuple[int, dict[float, float]]:
    """(count, cumulative count by upper bound) of a Prometheus histogram (one label set)."""
    buckets: dict[float, float] = {}
    pattern = rf'^{name}_bucket\{{([^}}]*)\}} (\S+)$'
    for labels, value in re.findall(pattern, text, re.M):
        if label in labels:
            le = re.search(r'le="([^"]+)"', labels)
            if le:
                bound = math.inf if le.group(1) == "+Inf" else float(le.group(1))
                buckets[bound] = buckets.get(bound, 0.0) + float(value)
    return int(buckets.get(math.inf, 0)), buckets


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-quantile interpolated inside its bucket, as Prometheus' histogram_quantile does."""
    total = buckets.get(math.inf, 0.0)
    if not total:
        return None
    rank, lo, below = q * total, 0.0, 0.0
    for bound in sorted(buckets):
        if buckets[bound] >= rank:
            if math.isinf(bound):
                return lo
            return lo + (bound - lo) * (rank - below) / max(1e-9, buckets[bound] - below)
        lo, below = bound, buckets[bound]
    return lo


def daemon_figures(texts: list[str]) -> dict[str, Any]:
    """Replies, voice-to-voice and call ends over every daemon's /metrics."""
    merged: dict[float, float] = {}
    lag: dict[float, float] = {}
    ends: Counter[str] = Counter()
    for text in texts:
        turns = histogram(text, "voice_bridge_turn_latency_seconds", 'mark="first_audio_out"')[1]
        for bound, n in turns.items():
            merged[bound] = merged.get(bound, 0.0) + n
        for bound, n in histogram(text, "voice_bridge_event_loop_lag_seconds")[1].items():
            lag[bound] = lag.get(bound, 0.0) + n
        pattern = r'^voice_bridge_calls_total\{[^}]*outcome="([^"]+)"[^}]*transport="sip"[^}]*\} (\S+)$'
        for outcome, n in re.findall(pattern, text, re.M):
            ends[outcome] += int(float(n))
    ms = lambda v: None if v is None else round(v * 1000)  # noqa: E731
    return {"replies": int(merged.get(math.inf, 0)),
            "voice_to_voice_ms": {"p50": ms(quantile(merged, 0.5)), "p95": ms(quantile(merged, 0.95))},
            "loop_lag_ms": {"p50": ms(quantile(lag, 0.5)), "p95": ms(quantile(lag, 0.95)),
                            "p99": ms(quantile(lag, 0.99))},
            "call_ends": dict(ends)}


# -- one run ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _fakes(token_ms: float) -> Iterator[tuple[str, int]]:
    """voice_to_voice's fakes process: (its URL, its pid)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    answer = ANSWERS["short_first_clause"]
    fakes = ctx.Process(target=serve_fakes, args=(child, token_ms / 1000, answer, (150, 300)), daemon=True)
    fakes.start()
    try:
        if not parent.poll(30):
            raise SystemExit("the fakes did not start")
        assert fakes.pid is not None
        yield parent.recv(), fakes.pid
    finally:
        parent.close()
        fakes.join(10)
        if fakes.is_alive():
            fakes.terminate()


def _mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return math.inf


def run_once(args: argparse.Namespace, n_daemons: int, calls: int, url: str, fakes_pid: int,
             questions: list[bytes], budget: Budget | None = None) -> dict[str, Any]:
    audio = caller_audio(questions, args.turns)
    procs = max(min(calls, len(audio)), -(-calls // 100))
    counts = [n for n in split(calls, procs) if n]
    call_s = max(len(a) for a in audio) / 16000 + 1.0
    env = {"DEEPGRAM_API_KEY": DEEPGRAM_KEY, "OPENAI_API_KEY": OPENAI_KEY,
           "ELEVENLABS_API_KEY": ELEVENLABS_KEY}
    config = daemon_config(url, args.tts)
    mem_before = _mem_available_mib()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vb-sipconv-") as tmp_s:
        tmp = Path(tmp_s)
        groups: list[CpuGroup] = []
        with _daemons(tmp, n_daemons, calls, agent="conversation", config=config, env=env,
                      hosts=args.hosts[:n_daemons] if args.hosts else None,
                      budget=budget, groups=groups) as daemons, \
                run_front(tmp / "k", addresses(daemons), probe_interval_s=2) as front:
            wait_all_active(front)
            ranges = [d.rtp_range for d in daemons]
            bases = _media_bases(counts, ranges)
            sinks = caller_media_sinks(counts, bases)
            spans: dict[int, list[tuple[float, float]]] = {}
            commands = []
            for i, (n, base) in enumerate(zip(counts, bases, strict=True)):
                workdir = tmp / f"sipp{i}"
                workdir.mkdir()
                k = i % len(audio)
                scenario = media_scenario(workdir, "PCMU", audio[k], pause_ms=int(call_s * 1000),
                                          per_call_ports=True, routed=True)
                for c in range(n):
                    spans[base + 4 * c] = question_spans(questions, args.turns, k)
                rate = n / args.ramp_s if calls > 1 else 1.0
                commands.append((workdir, sipp_command(front.target, scenario, n, rate, base,
                                                       call_s + args.ramp_s, workdir)))
            fakes_cpu, wall = cpu_seconds(fakes_pid), time.monotonic()
            port_filter = " or ".join(f"portrange {lo}-{hi}" for lo, hi in ranges)
            # a short snaplen and a 32 MiB ring: tcpdump's defaults hold 8 packets of a burst
            capture = capture_udp(tmp / "rtp.pcap", f"udp and ({port_filter})", snaplen=512,
                                  buffer_kib=32768) if args.capture \
                else contextlib.nullcontext(None)
            with capture, Sampler(daemons, groups) as sampler:
                sipps = []
                for workdir, cmd in commands:
                    with (workdir / "stderr.txt").open("wb") as err:  # a file: a full pipe stalls SIPp
                        sipps.append(subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL,
                                                      stderr=err))
                for p in sipps:
                    p.wait(call_s + args.ramp_s + 120)
            fakes_busy = (cpu_seconds(fakes_pid) - fakes_cpu) / (time.monotonic() - wall)
            for sock in sinks:
                sock.close()
            _wait_calls_over(daemons)  # a late daemon may still be ending calls SIPp is done with
            texts = [_metrics(d) for d in daemons]
            spread = [_sip_calls(t) for t in texts]
            counters: Counter[str] = Counter()
            for workdir, _ in commands:
                counters.update(sipp_counters(workdir))
            wire = wire_figures(tmp / "rtp.pcap", spans) if args.capture else None
            if args.keep:
                import shutil

                shutil.copytree(tmp, args.keep / f"d{n_daemons}-c{calls}", dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("kamailio-run"))
    ok, failed = counters.get("SuccessfulCall", 0), counters.get("FailedCall", 0)
    window = (args.ramp_s + 2, call_s - 2)  # every call up (the ramp is over)
    cpu = sampler.cpu_pct(*window)
    per_daemon = sampler.per_process(cpu, spread)
    for row, pressure in zip(per_daemon, sampler.pressure(*window), strict=True):
        row.update(pressure)
        if budget is not None:
            row["cpu_pct_of_budget"] = round(row["cpu_pct_of_core"] / budget.cores, 1)
    figures = daemon_figures(texts)
    hit = limits(failed, cpu, sampler.lag_max) or []
    if figures["replies"] < calls * args.turns:
        hit.append("replies missing")
    if sum(sampler.rss_peak) - sum(sampler.idle_rss) > 0.8 * mem_before:
        hit.append("memory")
    return {
        "daemons": n_daemons, "hosts": [d.host for d in daemons], "calls": calls, "turns": args.turns,
        "calls_ok": ok, "calls_failed": failed,
        "sipp_failures": {k: v for k, v in counters.items() if k.startswith("Failed") and v},
        "kamailio_spread": spread,
        "replies_delivered": f"{figures['replies']} of {calls * args.turns} questions",
        "voice_to_voice_ms_daemon_histogram": figures["voice_to_voice_ms"],
        "wire": wire,
        "call_ends": figures["call_ends"],
        "per_daemon": per_daemon,
        "daemon_loop_lag_ms_histogram": figures["loop_lag_ms"],
        "fakes_cores_busy": round(fakes_busy, 3),
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "limit": hit or None,
        "quality": {"calls_failed": failed, "replies_missing": calls * args.turns - figures["replies"],
                    "wire_v2v_p95_ms": wire["voice_to_voice_ms"]["p95"] if wire else None,
                    "memory": "memory" in hit},
    }


def _wait_calls_over(daemons: list[Daemon], limit_s: float = 60.0) -> None:
    """Until no daemon has a call in progress (their metrics then count every call), bounded."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if all(int(_health(d)["active_calls"]) == 0 for d in daemons):
                return
        time.sleep(0.5)


def _sip_calls(text: str) -> int:
    pattern = r'^voice_bridge_calls_total\{[^}]*transport="sip"[^}]*\} (\S+)$'
    return int(sum(float(v) for v in re.findall(pattern, text, re.M)))


def _media_bases(counts: list[int], ranges: list[tuple[int, int]]) -> list[int]:
    """sip_concurrency's caller media blocks, clear of every daemon's RTP range."""
    for _ in range(20):
        bases = media_bases(counts, ranges[0])
        if all(b + 4 * n + 4 < lo or b > hi for b, n in zip(bases, counts, strict=True) for lo, hi in ranges):
            return bases
    raise SystemExit("no free block of media ports for SIPp")


def bound_broken(run: dict[str, Any], v2v_p95_ms: float | None) -> list[str] | None:
    """The capacity bound a run broke: a failed call, a reply missing, voice-to-voice p95 as the
    callers hear it over ``v2v_p95_ms`` (not judged without a capture or a bound), memory.
    CPU and loop lag are what the daemon spends to keep it, reported beside."""
    q = run["quality"]
    hit = []
    if q["calls_failed"]:
        hit.append("failed calls")
    if q["replies_missing"] > 0:
        hit.append("replies missing")
    if v2v_p95_ms is not None and run["wire"] is not None and \
            (q["wire_v2v_p95_ms"] is None or q["wire_v2v_p95_ms"] > v2v_p95_ms):
        hit.append(f"wire voice-to-voice p95 > {v2v_p95_ms:g} ms")
    if q["memory"]:
        hit.append("memory")
    return hit or None


def report(bench: str, path: str, failed_key: str, args: argparse.Namespace,
           runs: list[dict[str, Any]], budget: Budget | None) -> dict[str, Any]:
    """The bench's JSON (this one's and the stream path's): each run judged against the bound
    (no call failed, every reply heard, heard voice-to-voice p95 within the 1-call run's)."""
    bound = v2v_bound(runs, args.v2v_p95_ms)
    for run in runs:
        run["bound_broken"] = bound_broken(run, bound)
    return {"bench": bench, "path": path,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
            "tts": args.tts, "answer": ANSWERS["short_first_clause"],
            "max_calls": getattr(args, "max_calls", None),
            "daemon_cpu_budget": budget.__dict__ if budget else None,
            "bound": {failed_key: 0, "replies_missing": 0, "wire_v2v_p95_ms": bound},
            "runs": runs, "capacity": capacity(runs, key="bound_broken")}


def v2v_bound(runs: list[dict[str, Any]], explicit: float | None) -> float | None:
    """``--v2v-p95-ms``, else 1.15x the wire p95 of the first 1-call run (issue 13's 1.15x)."""
    if explicit is not None:
        return explicit
    for run in runs:
        if run["calls"] == 1 and run["quality"]["wire_v2v_p95_ms"] is not None:
            return round(1.15 * run["quality"]["wire_v2v_p95_ms"])
    return None


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_plan_arguments(ap, [1, 60, 150])
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--tts", default="elevenlabs-ws", choices=["elevenlabs-ws", "elevenlabs"])
    ap.add_argument("--ramp-s", type=float, default=10.0, help="calls start spread over this long")
    ap.add_argument("--token-ms", type=float, default=20.0, help="LLM time per token after the first")
    ap.add_argument("--hosts", nargs="+", help="address of daemon 1, 2.. (e.g. 127.0.0.1 127.0.0.2)")
    ap.add_argument("--no-capture", dest="capture", action="store_false",
                    help="no tcpdump (needs root): no voice-to-voice as the caller hears it")
    ap.add_argument("--keep", type=Path, help="copy each run's capture, SIPp files and scenarios here")
    ap.add_argument("--v2v-p95-ms", type=float,
                    help="capacity bound on the wire voice-to-voice p95 (default: 1.15x the 1-call run's)")
    cpu_budget.add_arguments(ap)
    return ap


def main() -> int:
    args = parser().parse_args()
    budget = cpu_budget.from_args(args)
    import json

    with tempfile.TemporaryDirectory() as tmp:
        questions = [speak(q, Path(tmp), f"q{i}") for i, q in enumerate(QUESTIONS)]
    with _fakes(args.token_ms) as (url, fakes_pid):
        runs = [run_once(args, d, c, url, fakes_pid, questions, budget)
                for d, c in plan(args)]
    print(json.dumps(report("sip_conversation_capacity", "sip via kamailio", "calls_failed",
                            args, runs, budget), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
