"""Gunicorn entry point: ``gunicorn xml_server.wsgi:app``.

Settings come from $VOICE_BRIDGE_CONFIG (+ VOICE_BRIDGE_* overrides), secrets from the
environment (PLIVO_AUTH_TOKEN, VOICE_BRIDGE_STREAM_SECRET, VOICE_BRIDGE_SIP_INBOUND_PASSWORD).
"""

from __future__ import annotations

from bridge.logs import setup_logging
from bridge.settings import Secrets, load_settings
from xml_server.app import create_app

_settings = load_settings()
# The daemon's logging setup: one JSON line per record under systemd, numbers masked, and the
# same filter on gunicorn's access/error loggers (their request lines carry query strings).
setup_logging(_settings.logging.level, _settings.logging.format, _settings.logging.log_phone_numbers)
_secrets = Secrets.from_env()


app = create_app(_settings, _secrets.optional("plivo_auth_token"), _secrets.optional("stream_secret"),
                 _secrets.optional("sip_inbound_password"))
