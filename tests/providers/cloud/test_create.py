"""create(settings, secrets) for the cloud providers: keys from the environment, clear errors,
SDKs imported only when selected."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.providers.base import Message, TextDelta
from bridge.providers.factory import build_providers
from bridge.providers.llm.openai_chat import OpenAIChat
from bridge.providers.stt.deepgram_stt import DeepgramSTT
from bridge.providers.tts.elevenlabs_http import ElevenLabsHttpTTS
from bridge.providers.tts.elevenlabs_multi import ElevenLabsMultiTTS
from bridge.providers.tts.elevenlabs_ws import ElevenLabsWsTTS
from bridge.settings import Secrets, Settings
from bridge.settings.secrets import MissingSecretError
from devkit.fakes import FakeCloud
from devkit.fakes.server import DEEPGRAM_KEY, ELEVENLABS_KEY, OPENAI_KEY

from .conftest import clauses, silence, speech


def cloud_settings(url: str, tts: str = "elevenlabs") -> Settings:
    return Settings.model_validate(
        {
            "stt": {"providers": ["deepgram"], "deepgram_url": url},
            "llm": {"providers": ["openai"], "base_url": f"{url}/v1", "model": "gpt-4o-mini"},
            "tts": {"providers": [tts], "elevenlabs_url": url, "voice_id": "v9"},
        }
    )


ENV = {"DEEPGRAM_API_KEY": DEEPGRAM_KEY, "OPENAI_API_KEY": OPENAI_KEY, "ELEVENLABS_API_KEY": ELEVENLABS_KEY}


async def test_configured_providers_work_end_to_end(cloud: FakeCloud) -> None:
    providers = build_providers(cloud_settings(cloud.http_url), Secrets.from_env(ENV))
    stt, llm, tts = providers.stt[0], providers.llm[0], providers.tts[0]
    assert isinstance(stt, DeepgramSTT) and isinstance(llm, OpenAIChat) and isinstance(tts, ElevenLabsHttpTTS)

    cloud.deepgram.script.append("What time is it?")
    cloud.openai.script.append("It is noon.")
    stream = await stt.open()
    audio = speech(600) + silence(400)
    for i in range(0, len(audio), 320):
        await stream.send(audio[i : i + 320])
    async for t in stream.transcripts():
        if t.end_of_utterance:
            break
    await stream.close()
    assert t.text == "What time is it?"
    events = [e async for e in llm.stream([Message("user", "hi")], [])]
    reply = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert reply == "It is noon."
    audio_out = [c async for c in tts.synthesize(clauses(reply))]
    assert audio_out and audio_out[0].encoding == "ulaw"
    assert cloud.openai.journal.of("request")[0].data["body"]["model"] == "gpt-4o-mini"
    assert cloud.elevenlabs.journal.of("request")[0].data["voice"] == "v9"
    await tts.aclose()


def test_ws_tts_is_selectable() -> None:
    providers = build_providers(cloud_settings("http://127.0.0.1:9", "elevenlabs-ws"), Secrets.from_env(ENV))
    assert isinstance(providers.tts[0], ElevenLabsWsTTS)


def test_multi_context_tts_is_selectable() -> None:
    settings = cloud_settings("http://127.0.0.1:9", "elevenlabs-multi")
    providers = build_providers(settings, Secrets.from_env(ENV))
    assert isinstance(providers.tts[0], ElevenLabsMultiTTS)


@pytest.mark.parametrize("missing", sorted(ENV))
def test_missing_key_names_the_variable(missing: str) -> None:
    env = {k: v for k, v in ENV.items() if k != missing}
    with pytest.raises(MissingSecretError) as info:
        build_providers(cloud_settings("http://127.0.0.1:9"), Secrets.from_env(env))
    assert info.value.env_var == missing and missing in str(info.value)


def test_anthropic_is_refused_by_the_schema_not_at_start() -> None:
    # No module implements it: the schema no longer accepts the name, so `check` names it.
    with pytest.raises(ValueError, match=r"llm\.providers\.0[\s\S]*'openai' or 'scripted'"):
        Settings.model_validate({"llm": {"providers": ["anthropic"]}})


def test_bad_url_is_a_clear_error() -> None:
    settings = Settings.model_validate({"stt": {"providers": ["deepgram"], "deepgram_url": "ftp://x"}})
    with pytest.raises(ValueError, match="deepgram_url"):
        build_providers(settings, Secrets.from_env(ENV))


def test_sdks_are_imported_only_when_selected() -> None:
    code = (
        "import sys\n"
        "from bridge.providers.factory import build_providers\n"
        "import bridge.providers.base\n"
        "print(sorted(m for m in ('deepgram', 'openai', 'elevenlabs') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("tts_name", ["elevenlabs", "elevenlabs-ws", "elevenlabs-multi"])
async def test_created_providers_leave_first_token_and_first_byte_to_the_engine(
    cloud: FakeCloud, tts_name: str
) -> None:
    """The engine owns those deadlines (one failure label per kind): providers created from
    the same settings answer past them and keep only a loose read backstop."""
    base = cloud_settings(cloud.http_url, tts_name)
    settings = base.model_copy(update={
        "llm": base.llm.model_copy(update={"first_token_timeout_s": 0.2}),
        "tts": base.tts.model_copy(update={"first_byte_timeout_s": 0.2, "elevenlabs_keep_warm": False}),
    })
    providers = build_providers(settings, Secrets.from_env(ENV))
    llm, tts = providers.llm[0], providers.tts[0]
    cloud.openai.script.append("Slow but here.")
    cloud.openai.faults.first_byte_delay_s = 0.6
    cloud.elevenlabs.faults.first_byte_delay_s = 0.6
    cloud.elevenlabs.ws_faults.first_byte_delay_s = 0.6
    text = [e.text async for e in llm.stream([Message("user", "hi")], []) if isinstance(e, TextDelta)]
    assert "".join(text) == "Slow but here."
    audio = [c async for c in tts.synthesize(clauses("Hello there."))]
    assert sum(len(c.data) for c in audio) > 0
    await tts.aclose()
