"""`voice-bridge demo`: one live call, end to end on this machine, with no keys and no network.

Starts the real daemon on 127.0.0.1 (SIP + RTP), synthesises a caller with espeak-ng, calls
the daemon with SIPp (a real SIP UA sending real RTP), and prints what happened: codec,
packets each way, duration, the conversation transcript with per-turn latency, and where the
call recording is.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HELP = "place one live demo call to the daemon (offline engines, SIPp caller) and print what happened"

DEFAULT_LINES = ["Where are you located?", "Thank you, goodbye."]
# The example config: offline engines, pocketsphinx's language model built from the agent script.
EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "voice-bridge.example.toml"
LEAD_IN_S = 6.0  # the agent greets first
GAP_S = 12.0  # room for the agent's answer between the caller's lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", choices=["conversation", "echo"], default=None,
                        help="agent to run (default: conversation when the engine is installed)")
    parser.add_argument("--codec", choices=["PCMU", "PCMA"], default="PCMU")
    parser.add_argument("--say", action="append", metavar="TEXT",
                        help="a caller line (repeatable); default: a question, then goodbye")
    parser.add_argument("--workdir", metavar="DIR", help="keep the call's files here (default: a temp dir)")


def _conversation_available() -> bool:
    try:
        import bridge.conversation as conv
    except ImportError:
        return False
    return hasattr(conv, "run_conversation")


def _speak(text: str, path: Path) -> bytes:
    from bridge.audio.wavfile import read_wav_8k_mono

    subprocess.run(["espeak-ng", "-v", "en-us+klatt", "-s", "165", "-w", str(path), text],
                   check=True, capture_output=True, timeout=30)
    return read_wav_8k_mono(path)


def _silence(seconds: float) -> bytes:
    return bytes(int(seconds * 8000) * 2)


def _log_records(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def run(args: argparse.Namespace) -> int:
    from bridge.simulator.procs import run_daemon
    from bridge.simulator.sipp import conversation_scenario, run_sipp

    for tool in ("sipp", "espeak-ng"):
        if shutil.which(tool) is None:
            print(f"demo: {tool} is not installed (bash scripts/setup.sh installs it)", file=sys.stderr)
            return 1
    agent = args.agent or ("conversation" if _conversation_available() else "echo")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="voice-bridge-demo-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    recordings = workdir / "recordings"
    lines = args.say or DEFAULT_LINES

    print(f"demo: agent={agent} codec={args.codec} workdir={workdir}")
    pcm = _silence(LEAD_IN_S if agent == "conversation" else 0.5)
    for i, text in enumerate(lines):
        pcm += _speak(text, workdir / f"caller_{i}.wav") + _silence(GAP_S if agent == "conversation" else 1.0)
    print(f"demo: caller says {lines} ({len(pcm) / 16000:.1f} s of audio)")
    # The wait starts when playback starts; the echo agent never hangs up, the agent says goodbye.
    wait_ms = int(len(pcm) / 16) + (15_000 if agent == "conversation" else 1_000)
    scenario = conversation_scenario(workdir, args.codec, pcm, wait_ms=wait_ms)
    env = {
        "VOICE_BRIDGE_MEDIA__RECORDINGS_DIR": str(recordings),
        "VOICE_BRIDGE_CONVERSATION__TRANSCRIPTS_DIR": str(workdir / "transcripts"),
        "VOICE_BRIDGE_SIP__CODECS": json.dumps([args.codec]),
    }
    config = Path(args.config or EXAMPLE_CONFIG).read_text()
    started = time.monotonic()
    with run_daemon(workdir, agent=agent, env=env, config=config, ready_timeout=60) as daemon:
        print(f"demo: daemon ready (sip 127.0.0.1:{daemon.sip_port}, http {daemon.http}); calling...")
        limit = len(pcm) / 16000 + 60
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(run_sipp, scenario, f"127.0.0.1:{daemon.sip_port}", cwd=workdir, timeout=limit)
            follower = _TranscriptFollower(workdir / "transcripts", call_started=time.monotonic())
            print("\n=== the conversation, as it happens ===")
            while not call.done():
                follower.poll()
                time.sleep(0.1)
            result = call.result()
        deadline = time.monotonic() + 10
        records = _log_records(daemon.log_lines)
        while time.monotonic() < deadline and _call_record(records) is None:
            time.sleep(0.1)
            records = _log_records(daemon.log_lines)
        follower.poll()
    return _report(result.returncode, result.errors, records, workdir, recordings, time.monotonic() - started)


class _TranscriptFollower:
    """Prints the call's transcript lines as the daemon writes them."""

    def __init__(self, folder: Path, call_started: float) -> None:
        self._folder = folder
        self._t0 = call_started
        self._done = 0

    def poll(self) -> None:
        files = sorted(self._folder.glob("*.jsonl")) if self._folder.exists() else []
        if not files:
            return
        text = files[0].read_text()
        lines = text.splitlines()
        complete = lines if text.endswith("\n") else lines[:-1]
        for line in complete[self._done :]:
            print(f"  {time.monotonic() - self._t0:5.1f}s  {_transcript_line(line)}", flush=True)
        self._done = max(self._done, len(complete))


def _call_record(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The daemon's end-of-call line (the one with codec and packet counts)."""
    return next((r for r in records if r.get("msg") == "call ended" and "codec" in r), None)


def _report(rc: int, errors: str, records: list[dict[str, Any]], workdir: Path, recordings: Path,
            elapsed: float) -> int:
    ended = _call_record(records)
    print()
    print("=== the call ===")
    print(f"SIPp: {'completed' if rc == 0 else f'FAILED (rc={rc})'}")
    if rc != 0 and errors:
        print(errors[-1500:])
    if ended is None:
        print("daemon: no call record (see logs)")
        for r in records[-20:]:
            print("  ", r)
        return 1
    print(f"codec: {ended.get('codec')}  packets in: {ended.get('packets_in')}  "
          f"packets out: {ended.get('packets_out')}  duration: {ended.get('duration_s')} s  "
          f"ended by: {ended.get('reason')}")
    turns = [r for r in records if r.get("msg") in ("user turn", "agent turn", "turn")]
    if turns:
        print()
        print("=== transcript ===")
        for r in turns:
            print(f"  {r.get('msg')}: {r.get('text', '')}  {_latency(r)}")
    for path in sorted(workdir.rglob("*.jsonl")):
        print(f"transcript: {path}")
    wavs = sorted(recordings.glob("*.wav")) if recordings.exists() else []
    print()
    for wav in wavs:
        print(f"recording (left: caller, right: agent): {wav}")
    print(f"demo finished in {elapsed:.1f} s")
    ok = rc == 0 and int(ended.get("packets_in") or 0) > 0 and int(ended.get("packets_out") or 0) > 0
    return 0 if ok else 1


def _latency(record: dict[str, Any]) -> str:
    keys = [k for k in record if k.endswith("_ms")]
    return " ".join(f"{k}={record[k]}" for k in keys)


def _transcript_line(line: str) -> str:
    try:
        rec = json.loads(line)
    except ValueError:
        return line
    if not isinstance(rec, dict):
        return line
    who = rec.get("role") or rec.get("event") or rec.get("type") or ""
    text = rec.get("text") or rec.get("content") or ""
    rest = {k: v for k, v in rec.items() if k not in ("role", "event", "type", "text", "content", "ts")}
    return f"{who}: {text}  {json.dumps(rest) if rest else ''}".rstrip()
