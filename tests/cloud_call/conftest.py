"""One FakeCloud (background thread) and one daemon for the package: the daemon runs the
conversation agent on the REAL cloud provider SDKs pointed at the fakes on 127.0.0.1.

Providers are listed twice where the tests need failover (two OpenAI entries: the second is
the same fake, so "the next provider" answers once the first has failed), and the TTS list
has both ElevenLabs clients (stream-input WebSocket first, the HTTP stream as failover).
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.simulator.procs import Daemon, run_daemon
from bridge.simulator.sipp import have_sipp
from devkit.fakes import FakeCloud
from devkit.fakes.server import DEEPGRAM_KEY, ELEVENLABS_KEY, OPENAI_KEY
from tests.support.audio import have_speech_tools

from .cloud_thread import CloudThread

GREETING = "Hello, how can I help?"
FALLBACK = "Sorry, one moment please."


def daemon_config(url: str, transcripts: Path) -> str:
    return f"""
[daemon]
agent = "conversation"

[conversation]
greeting = "{GREETING}"
fallback_text = "{FALLBACK}"
transcripts_dir = "{transcripts}"
# The fake LLM gives its scripted replies in request order: a preemptive request that is then
# restarted would take the next turn's reply (preemption has its own tests).
preemptive_generation = false

[privacy]
redact_transcripts = false

[stt]
providers = ["deepgram"]
deepgram_url = "{url}"

[llm]
providers = ["openai", "openai"]
base_url = "{url}/v1"
model = "gpt-4o-mini"

[tts]
providers = ["elevenlabs-ws", "elevenlabs"]
elevenlabs_url = "{url}"
"""


@dataclass
class CloudDaemon:
    cloud: CloudThread
    daemon: Daemon
    transcripts: Path

    @property
    def fakes(self) -> FakeCloud:
        assert self.cloud.cloud is not None
        return self.cloud.cloud

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.daemon.http}/metrics", timeout=5) as resp:
            return resp.read().decode()


def _skip_reason() -> str:
    if not have_sipp():
        return "sipp (Debian sip-tester) not installed"
    if not have_speech_tools():
        return "espeak-ng and sox are needed for the caller's voice"
    if os.geteuid() != 0:
        return "tcpdump capture needs root"
    return ""


@pytest.fixture(scope="package")
def cloud_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudDaemon]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("cloud-daemon")
    transcripts = tmp / "transcripts"
    cloud = CloudThread()
    fakes = cloud.start()
    env = {
        "DEEPGRAM_API_KEY": DEEPGRAM_KEY,
        "OPENAI_API_KEY": OPENAI_KEY,
        "ELEVENLABS_API_KEY": ELEVENLABS_KEY,
    }
    try:
        config = daemon_config(fakes.http_url, transcripts)
        with run_daemon(tmp, agent="conversation", config=config, env=env, ready_timeout=60) as daemon:
            yield CloudDaemon(cloud, daemon, transcripts)
    finally:
        cloud.stop()


@pytest.fixture
def cd(cloud_daemon: CloudDaemon) -> CloudDaemon:
    """The shared daemon with the fakes reset for a new call."""
    cloud_daemon.cloud.reset()
    return cloud_daemon
