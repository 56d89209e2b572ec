"""`check` and `run` share one validation path (bridge.daemon.preflight): every problem `run`
would fail on, found before it starts, reported as `key: reason`, all at once."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.daemon.preflight import preflight
from bridge.settings import Secrets, Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def _problems(data: dict[str, object], env: dict[str, str] | None = None) -> dict[str, str]:
    found = preflight(Settings.model_validate(data), Secrets.from_env(env or {}))
    return dict(found)


def test_the_example_configuration_has_no_problem() -> None:
    assert preflight(load_settings(ROOT / "config/voice-bridge.example.toml", environ={}), Secrets()) == []


def test_a_misspelt_agent_name_is_named_with_a_suggestion() -> None:
    found = _problems({"daemon": {"agent": "convresation"},
                       "plivo": {"routes": [{"to": "+14155550100", "agent": "ecko"}]}})
    assert "did you mean 'conversation'" in found["daemon.agent"]
    assert "did you mean 'echo'" in found["plivo.routes.0.agent"]


def test_missing_files_are_named(tmp_path: Path) -> None:
    found = _problems({
        "llm": {"script_file": str(tmp_path / "nope.toml")},
        "stt": {"pocketsphinx_corpus": str(tmp_path / "corpus.txt")},
        "conversation": {"system_prompt_file": str(tmp_path / "prompt.txt")},
    })
    assert "nope.toml" in found["llm.script_file"]
    assert "corpus.txt" in found["stt.pocketsphinx_corpus"]
    assert "no such file" in found["conversation.system_prompt_file"]


def test_the_prompt_agent_needs_a_readable_wav(tmp_path: Path) -> None:
    assert "needs an audio file" in _problems({"daemon": {"agent": "prompt"}})["daemon.prompt_file"]
    bad = tmp_path / "prompt.wav"
    bad.write_text("not audio")
    assert "daemon.prompt_file" in _problems({"daemon": {"agent": "prompt", "prompt_file": str(bad)}})


def test_an_unknown_espeak_voice_is_named() -> None:
    assert "xx-nope" in _problems({"tts": {"espeak_voice": "xx-nope"}})["tts.espeak_voice"]


def test_every_missing_cloud_key_is_named_not_only_the_first() -> None:
    found = preflight(
        Settings.model_validate({"stt": {"providers": ["deepgram"]}, "llm": {"providers": ["openai"]},
                                 "tts": {"providers": ["elevenlabs"]}}),
        Secrets.from_env({"OPENAI_API_KEY": "sk-test"}),
    )
    text = "\n".join(f"{k}: {r}" for k, r in found)
    assert "stt.providers: deepgram needs DEEPGRAM_API_KEY" in text
    assert "tts.providers: elevenlabs needs ELEVENLABS_API_KEY" in text
    assert "OPENAI_API_KEY" not in text


def test_unwritable_directories_are_named(tmp_path: Path) -> None:
    afile = tmp_path / "a-file"
    afile.write_text("")
    found = _problems({
        "daemon": {"data_dir": str(afile / "data")},
        "conversation": {"transcripts_dir": str(afile / "t")},
        "media": {"recordings_dir": str(afile)},
    })
    assert set(found) >= {"daemon.data_dir", "conversation.transcripts_dir", "media.recordings_dir"}
    assert "not a directory" in found["daemon.data_dir"]
    assert _problems({"daemon": {"data_dir": str(tmp_path / "new" / "data")}}) == {}  # created at start
    assert _problems({"conversation": {"transcripts_dir": ""}}) == {}  # off: nothing to write


def test_region_and_caller_ids_are_checked() -> None:
    region = _problems({"compliance": {"default_region": "XQ"}})["compliance.default_region"]
    assert "unknown region" in region
    found = _problems({"compliance": {"registered_caller_ids": ["+919876543210", "12"]},
                       "plivo": {"caller_id": "abc"}})
    assert set(found) == {"compliance.registered_caller_ids.1", "plivo.caller_id"}


def test_secrets_other_features_need_are_named() -> None:
    found = _problems({
        "sip": {"registration": {"enabled": True, "user": "u"}, "trust": {"inbound_user": "x"}},
        "daemon": {"stream_listen": "127.0.0.1:0"},
    })
    assert "VOICE_BRIDGE_SIP_PASSWORD" in found["sip.registration.enabled"]
    assert "VOICE_BRIDGE_SIP_INBOUND_PASSWORD" in found["sip.trust.inbound_user"]
    assert "VOICE_BRIDGE_STREAM_SECRET" in found["plivo.stream_require_token"]


def test_bad_listen_hosts_are_named() -> None:
    found = _problems({"sip": {"listen_host": "no-such-host.invalid"}, "http": {"listen_host": "192.0.2.77"}})
    assert "not an address" in found["sip.listen_host"]
    assert "cannot listen" in found["http.listen_host"]  # TEST-NET-1: not on this machine


def test_anthropic_is_not_accepted_by_the_schema() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(None, environ={}, overrides={"llm": {"providers": ["anthropic"]}})
    assert [k for k, _ in err.value.errors] == ["llm.providers.0"]


def test_a_mistyped_environment_section_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(None, environ={"VOICE_BRIDGE_SPI__MAX_CALLS": "5"})
    assert err.value.errors == [(
        "VOICE_BRIDGE_SPI__MAX_CALLS",
        "unknown settings section 'spi' (did you mean VOICE_BRIDGE_SIP__MAX_CALLS?)",
    )]


def test_unknown_keys_get_a_did_you_mean_and_secrets_the_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "vb.toml"
    cfg.write_text('[sip]\nmax_cals = 3\n[stt]\ndeepgram_api_key = "k"\n'
                   '[[plivo.routes]]\nto = "1"\nagnet = "a"\n')
    with pytest.raises(SettingsError) as err:
        load_settings(cfg, environ={})
    found = dict(err.value.errors)
    assert found["sip.max_cals"] == "unknown key (did you mean 'max_calls'?)"
    assert "DEEPGRAM_API_KEY" in found["stt.deepgram_api_key"]
    assert "did you mean 'agent'" in found["plivo.routes.0.agnet"]


def test_check_reports_every_problem_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "vb.toml"
    cfg.write_text('[daemon]\nagent = "convresation"\n[tts]\nespeak_voice = "xx-nope"\n'
                   '[compliance]\ndefault_region = "XQ"\n')
    monkeypatch.setenv("VOICE_BRIDGE_SPI__MAX_CALLS", "5")
    assert main(["check", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    for key in ("VOICE_BRIDGE_SPI__MAX_CALLS:", "daemon.agent:", "tts.espeak_voice:",
                "compliance.default_region:"):
        assert key in err


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    code = f"from bridge.cli import main; raise SystemExit(main({args!r}))"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})


def test_run_refuses_to_start_on_what_check_reports(tmp_path: Path) -> None:
    cfg = tmp_path / "vb.toml"
    cfg.write_text('[tts]\nespeak_voice = "xx-nope"\n[http]\nlisten_port = 0\n[sip]\nlisten_port = 0\n')
    done = _run(["run", "--config", str(cfg)], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "tts.espeak_voice: unknown espeak-ng voice" in done.stderr
    assert "READY" not in done.stdout


def test_a_port_in_use_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        cfg = tmp_path / "vb.toml"
        cfg.write_text(f'[daemon]\nagent = "echo"\ndata_dir = "{tmp_path}"\n[http]\nlisten_port = 0\n'
                       f'[sip]\nlisten_host = "127.0.0.1"\nlisten_port = {port}\n')
        done = _run(["run", "--config", str(cfg)], tmp_path)
    finally:
        taken.close()
    assert done.returncode == 2, done.stderr
    assert f"sip.listen_host/listen_port: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
