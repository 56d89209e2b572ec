"""bench/stream_conversation_scaleout.py's pure parts: the daemons' configuration (conversation,
one shared stream port) and voice-to-voice read from what a lean caller heard. The bench
itself is not run here."""

from __future__ import annotations

import tomllib

from bench.stream_conversation_scaleout import daemon_config, heard_figures, parser
from bridge.audio.g711 import pcm_to_ulaw

TICK = 160  # mu-law bytes a 20 ms tick


def _ticks(*voiced: bool) -> bytes:
    loud = pcm_to_ulaw((4000).to_bytes(2, "little", signed=True) * 160)
    return b"".join(loud if v else b"\xff" * TICK for v in voiced)


def test_every_daemon_runs_the_conversation_on_the_one_stream_port() -> None:
    tree = tomllib.loads(daemon_config("http://127.0.0.1:9999", "elevenlabs-ws", 40123))
    assert tree["daemon"]["agent"] == "conversation"
    assert tree["daemon"]["stream_listen"] == "127.0.0.1:40123"
    assert tree["plivo"]["nonce_db"] == ":memory:"


def test_voice_to_voice_is_from_a_questions_end_to_the_first_voiced_tick_heard_after() -> None:
    # 0.5 s silence, the agent's greeting over ticks 25-29, silence, a reply from tick 60
    heard = _ticks(*([False] * 25 + [True] * 5 + [False] * 30 + [True] * 10))
    # question A ends at 0.8 s: reply at tick 60 (1.2 s) -> 400 ms; question B ends after
    # everything heard -> no reply; the greeting (before A's end) is not a reply
    assert heard_figures(heard, [(0.2, 0.8), (1.0, 1.5)]) == [400, None]
    assert heard_figures(b"", [(0.2, 0.8)]) == [None]


def test_the_bench_takes_the_scaleout_plan_and_budget() -> None:
    args = parser().parse_args(["--daemon-cpu-quota", "0.3", "--daemons", "1", "2",
                                "--calls-per-daemon", "1", "15"])
    assert args.calls_per_daemon == [1, 15] and args.daemon_cpu_quota == 0.3
