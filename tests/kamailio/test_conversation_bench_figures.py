"""The figures bench/sip_conversation_capacity.py computes: the daemons' configuration it
writes is voice_to_voice's cloud settings, and the voice-to-voice it reads from a Prometheus
histogram is the quantile Prometheus' histogram_quantile gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bench.sip_conversation_capacity import daemon_config, histogram, quantile
from bench.voice_to_voice import cloud_settings
from bridge.settings.loader import load_settings


def test_the_daemon_config_is_the_cloud_settings_of_voice_to_voice(tmp_path: Path) -> None:
    url = "http://127.0.0.1:4321"
    path = tmp_path / "daemon.toml"
    path.write_text(daemon_config(url, "elevenlabs-ws"))
    loaded = load_settings(path, environ={})
    expected = cloud_settings(url, "elevenlabs-ws")
    assert loaded.daemon.agent == "conversation"
    for section in ("conversation", "stt", "llm", "tts"):
        assert getattr(loaded, section) == getattr(expected, section), section


def test_quantiles_from_the_exposition_interpolate_inside_the_bucket() -> None:
    registry = CollectorRegistry()
    turns = Histogram("voice_bridge_turn_latency_seconds", "t", ["mark"], buckets=(0.5, 1.0, 2.0),
                      registry=registry)
    for value in (0.2, 0.4, 0.6, 0.8, 1.5, 3.0):
        turns.labels("first_audio_out").observe(value)
    turns.labels("stt_final").observe(0.1)  # another mark: not counted
    count, buckets = histogram(generate_latest(registry).decode(), "voice_bridge_turn_latency_seconds",
                               'mark="first_audio_out"')
    assert count == 6
    assert quantile(buckets, 0.5) == pytest.approx(0.5 + 0.5 * (3 - 2) / 2)  # rank 3 in (0.5, 1.0]
    assert quantile(buckets, 0.25) == pytest.approx(0.5 * 1.5 / 2)  # rank 1.5 in (0, 0.5]
    assert quantile(buckets, 0.95) == 2.0  # in +Inf: the highest finite bound, as Prometheus does
    assert quantile({}, 0.5) is None
