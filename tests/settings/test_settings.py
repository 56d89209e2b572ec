from pathlib import Path

import pytest

from bridge.cli import main
from bridge.settings import Secrets, Settings, SettingsError, load_settings
from bridge.settings.secrets import MissingSecretError


def test_defaults_load_without_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, environ={})
    assert settings.sip.listen_port == 5060
    assert settings.sip.codecs == ["PCMU", "PCMA"]


def test_env_overrides_file_and_flags_override_env(tmp_path: Path) -> None:
    cfg = tmp_path / "vb.toml"
    cfg.write_text('[sip]\nlisten_port = 5070\ncodecs = ["PCMA"]\n')
    env = {"VOICE_BRIDGE_SIP__LISTEN_PORT": "5080"}
    assert load_settings(cfg, environ=env).sip.listen_port == 5080
    assert load_settings(cfg, environ=env).sip.codecs == ["PCMA"]
    s = load_settings(cfg, overrides={"sip": {"listen_port": 5090}}, environ=env)
    assert s.sip.listen_port == 5090


def test_errors_name_key_and_reason(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[sip]\nlisten_port = 70000\nauth_token = "s3cret"\n[sip.trust]\ntrusted_cidrs=["10.0.0.0/33"]\n'
    )
    with pytest.raises(SettingsError) as err:
        load_settings(cfg, environ={})
    keys = dict(err.value.errors)
    assert "sip.listen_port" in keys
    assert "secrets belong in the environment" in keys["sip.auth_token"]
    assert "not a CIDR" in keys["sip.trust.trusted_cidrs"]
    assert "s3cret" not in str(err.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.toml"
    cfg.write_text("[sip\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(cfg, environ={})
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_check_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[media]\nrtp_port_min = 20000\nrtp_port_max = 20001\n")
    assert main(["check", "--config", str(cfg)]) == 2
    assert "media: " in capsys.readouterr().err
    assert main(["check", "--config", "config/voice-bridge.example.toml"]) == 0


def test_secrets_only_from_environment() -> None:
    secrets = Secrets.from_env({"OPENAI_API_KEY": "sk-test", "PLIVO_AUTH_TOKEN": "tok"})
    assert secrets.require("openai_api_key") == "sk-test"
    assert "sk-test" not in repr(secrets)
    with pytest.raises(MissingSecretError, match="DEEPGRAM_API_KEY"):
        secrets.require("deepgram_api_key")


def test_a_bad_listen_address_is_named_when_the_settings_load() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(None, environ={}, overrides={"daemon": {"stream_listen": "127.0.0.1"}})
    assert [key for key, _ in err.value.errors] == ["daemon.stream_listen"]
    assert "HOST:PORT" in err.value.errors[0][1]
    ok = load_settings(None, environ={}, overrides={"daemon": {"stream_listen": "[::1]:8081"}})
    assert ok.daemon.stream_listen == "[::1]:8081"


def test_check_warns_when_plivo_could_neither_be_trusted_nor_authenticate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.settings.plivo_checks import plivo_warnings

    for var in ("VOICE_BRIDGE_SIP_INBOUND_PASSWORD", "PLIVO_AUTH_TOKEN", "PLIVO_AUTH_ID"):
        monkeypatch.delenv(var, raising=False)
    cfg = tmp_path / "vb.toml"
    cfg.write_text('[plivo]\nmode = "sip"\npublic_base_url = "https://vb.example.com"\n')
    assert main(["check", "--config", str(cfg)]) == 0  # valid, but warned
    assert "sip.trust" in capsys.readouterr().err
    trusted = Settings.model_validate({"sip": {"trust": {"trusted_cidrs": ["127.0.0.0/8", "203.0.113.0/24"]}},
                                       "plivo": {"public_base_url": "https://x"}})
    assert not [w for w in plivo_warnings(trusted, Secrets()) if w.startswith("sip.trust")]
    auth = Settings.model_validate({"sip": {"trust": {"inbound_user": "plivo"}},
                                    "plivo": {"public_base_url": "https://x"}})
    assert [w for w in plivo_warnings(auth, Secrets()) if w.startswith("sip.trust")]  # no password
    with_password = Secrets(sip_inbound_password="pw")
    assert not [w for w in plivo_warnings(auth, with_password) if w.startswith("sip.trust")]
    no_url = Settings.model_validate({})
    assert any(w.startswith("plivo.public_base_url") for w in plivo_warnings(no_url, Secrets()))
    long_agent = Settings.model_validate({"plivo": {"routes": [{"to": "+1415", "agent": "x y" * 20}]}})
    assert any(w.startswith("plivo.routes") for w in plivo_warnings(long_agent, Secrets()))
