"""Read settings: built-in defaults < TOML file < environment (VOICE_BRIDGE_<SECTION>__<KEY>)
< explicit overrides (command-line flags). Errors name the key and the reason."""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from bridge.settings.schema import Settings
from bridge.settings.secrets import ENV_NAMES

ENV_PREFIX = "VOICE_BRIDGE_"
DEFAULT_PATH = Path("config/voice-bridge.toml")


class SettingsError(Exception):
    """Invalid configuration; ``errors`` holds (key, reason) pairs."""

    def __init__(
        self, errors: list[tuple[str, str]], source: str = "", settings: Settings | None = None
    ) -> None:
        self.errors = errors
        self.source = source
        self.settings = settings  # what did load, when only the environment's names were wrong
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


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """VOICE_BRIDGE_SIP__LISTEN_PORT=5080 -> {"sip": {"listen_port": "5080"}}.

    Values that parse as JSON (numbers, booleans, lists) are taken as such. A variable naming
    a section that does not exist (VOICE_BRIDGE_SPI__MAX_CALLS) is an error, as an unknown
    key in the file is: it would otherwise be silently ignored.
    """
    sections = list(Settings.model_fields)
    out: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if path[0] not in sections:
            close = difflib.get_close_matches(path[0], sections, n=1)
            hint = f" (did you mean {ENV_PREFIX}{'__'.join([close[0], *path[1:]]).upper()}?)" if close else ""
            errors.append((name, f"unknown settings section {path[0]!r}{hint}"))
            continue
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out, errors


def _key(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The settings model holding the key at ``loc`` (list indices skipped), if any."""
    model: type[BaseModel] = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        inner = field.annotation
        for arg in getattr(inner, "__args__", ()):  # list[RouteSettings] and the like
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                inner = arg
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return None
        model = inner
    return model


def unknown_key_reason(loc: tuple[int | str, ...]) -> str:
    """'unknown key' with a did-you-mean among the keys that exist there, or the variable to
    set when the key is a secret (secrets are never read from the file)."""
    key = str(loc[-1]) if loc else ""
    secret = next((var for field, var in ENV_NAMES.items() if key in (field, var.lower())), None)
    if secret is not None or any(w in key for w in ("password", "token", "secret", "api_key")):
        where = f" (set {secret})" if secret else ""
        return f"unknown key: secrets belong in the environment{where}, not in this file"
    model = _model_at(loc[:-1])
    close = difflib.get_close_matches(key, list(model.model_fields), n=1) if model is not None else []
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


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
    from_env, errors = _env_overrides(env)
    data = _merge(data, from_env)
    if overrides:
        data = _merge(data, overrides)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            reason = err["msg"]
            if err["type"] == "extra_forbidden":
                reason = unknown_key_reason(err["loc"])
            errors.append((_key(err["loc"]), reason))
    if errors:
        raise SettingsError(errors, source, settings) from None
    assert settings is not None
    return settings
