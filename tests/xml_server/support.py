"""Helpers for XML-server tests: settings, a signed-request client, XML parsing."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from bridge.settings import Settings
from bridge.simulator.plivo.signing import sign_v3
from xml_server import create_app

TOKEN = "MjQ0NjY1YjIxNDc2ZWI0ZTRkZWJhY2Rm"
STREAM_SECRET = "s3cret-stream-key"
BASE = "http://localhost"
CALL = {
    "CallUUID": "3b5a1a64-8e3e-11ee-b9d1-0242ac120002",
    "From": "+919876543210",
    "To": "918035735100",
    "Direction": "inbound",
    "CallStatus": "ringing",
}


def settings(**plivo: Any) -> Settings:
    # The test client connects from 127.0.0.1: trusted as a proxy unless a test says otherwise.
    defaults = {"trusted_proxies": ["127.0.0.1/32"], "nonce_db": ":memory:"}
    return Settings.model_validate({"plivo": {**defaults, **plivo}})


def app(**plivo: Any) -> Flask:
    return create_app(settings(**plivo), TOKEN, STREAM_SECRET)


def signed_post(client: FlaskClient, path: str, data: dict[str, str], *, url: str | None = None,
                token: str = TOKEN, headers: dict[str, str] | None = None) -> TestResponse:
    """POST as Plivo does: the signature covers ``url`` (default: the test client's own URL)."""
    sig = sign_v3(token, "POST", url or BASE + path, data)
    return client.post(path, data=data, headers={**sig, **(headers or {})})


def parse(body: bytes) -> ET.Element:
    root = ET.fromstring(body)
    assert root.tag == "Response"
    return root
