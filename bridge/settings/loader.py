"""Read settings: built-in defaults < TOML file < environment (VOICE_BRIDGE_<SECTION>__<KEY>)
< explicit overrides (command-line flags). Errors name the key and the reason."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bridge.settings.schema import Settings

ENV_PREFIX = "VOICE_BRIDGE_"
DEFAULT_PATH = Path("config/voice-bridge.toml")


class SettingsError(Exception):
    """Invalid configuration; ``errors`` holds (key, reason) pairs."""

    def __init__(self, errors: list[tuple[str, str]], source: str = "") -> None:
        self.errors = errors
        self.source = source
        lines = "\n".join(f"{key}: {reason}" for key, reason in errors)
        super().__init__(f"invalid configuration{f' in {source}' if source else ''}:\n{lines}")


def default_config_path(environ: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if environ is None else environ
    if env.get("VOICE_BRIDGE_CONFIG"):
        return Path(env["VOICE_BRIDGE_CONFIG"])
    return DEFAULT_PATH if DEFAULT_PATH.exists() else None


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """VOICE_BRIDGE_SIP__LISTEN_PORT=5080 -> {"sip": {"listen_port": "5080"}}.

    Values that parse as JSON (numbers, booleans, lists) are taken as such.
    """
    sections = set(Settings.model_fields)
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if path[0] not in sections:
            continue
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _key(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def load_settings(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    env = os.environ if environ is None else environ
    file_path = Path(path) if path is not None else default_config_path(env)
    data: dict[str, Any] = {}
    source = ""
    if file_path is not None:
        source = str(file_path)
        try:
            with open(file_path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise SettingsError([("(file)", f"{file_path} does not exist")], source) from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError([("(file)", f"not valid TOML: {exc}")], source) from None
    data = _merge(data, _env_overrides(env))
    if overrides:
        data = _merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            reason = err["msg"]
            if err["type"] == "extra_forbidden":
                reason = "unknown key (secrets belong in the environment, not in this file)"
            errors.append((_key(err["loc"]), reason))
        raise SettingsError(errors, source) from None
