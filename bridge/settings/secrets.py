"""Secrets: only ever read from the environment (an EnvironmentFile under systemd).

Vendor keys keep the vendors' usual variable names. ``SecretStr`` keeps them out of reprs and
logs; call ``.get_secret_value()`` only where the secret is sent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, SecretStr

# field name -> environment variable
ENV_NAMES: dict[str, str] = {
    "sip_password": "VOICE_BRIDGE_SIP_PASSWORD",
    "sip_inbound_password": "VOICE_BRIDGE_SIP_INBOUND_PASSWORD",
    "trunk_password": "VOICE_BRIDGE_TRUNK_PASSWORD",
    "api_token": "VOICE_BRIDGE_API_TOKEN",
    "stream_secret": "VOICE_BRIDGE_STREAM_SECRET",
    "plivo_auth_id": "PLIVO_AUTH_ID",
    "plivo_auth_token": "PLIVO_AUTH_TOKEN",
    "deepgram_api_key": "DEEPGRAM_API_KEY",
    "openai_api_key": "OPENAI_API_KEY",
    "elevenlabs_api_key": "ELEVENLABS_API_KEY",
}


class Secrets(BaseModel):
    model_config = ConfigDict(frozen=True)

    sip_password: SecretStr | None = None
    sip_inbound_password: SecretStr | None = None
    trunk_password: SecretStr | None = None
    api_token: SecretStr | None = None
    stream_secret: SecretStr | None = None
    plivo_auth_id: SecretStr | None = None
    plivo_auth_token: SecretStr | None = None
    deepgram_api_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    elevenlabs_api_key: SecretStr | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Secrets:
        env = os.environ if environ is None else environ
        values = {field: env[var] for field, var in ENV_NAMES.items() if env.get(var)}
        return cls.model_validate(values)

    def optional(self, field: str) -> str | None:
        """The secret's value, or None when it is not set."""
        value = getattr(self, field)
        return None if value is None else str(value.get_secret_value())

    def require(self, field: str) -> str:
        """The secret's value, or a clear error naming the environment variable to set."""
        value = self.optional(field)
        if value is None:
            raise MissingSecretError(ENV_NAMES[field])
        return value


class MissingSecretError(RuntimeError):
    def __init__(self, env_var: str) -> None:
        super().__init__(f"environment variable {env_var} is not set")
        self.env_var = env_var
