"""Plivo XML documents, built with the plivo SDK's ``plivoxml`` (never by string pasting)."""

from __future__ import annotations

from dataclasses import dataclass, field

from plivo import plivoxml

from bridge.settings.plivo import PlivoSettings


class _UserWithAuth(plivoxml.UserElement):  # type: ignore[misc]
    """<User> with sipAuthUsername/sipAuthPassword (Plivo's Dial reference documents them for
    SIP targets that challenge with 401/407; the SDK's UserElement does not have them yet)."""

    _name = "User"

    def __init__(self, content: str, username: str, password: str) -> None:
        super().__init__(content)
        self._auth = {"sipAuthUsername": username, "sipAuthPassword": password}

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), **self._auth}


@dataclass(frozen=True, slots=True)
class SipAuth:
    """The credentials the bridge's digest challenge asks for (sip.trust.inbound_user and
    VOICE_BRIDGE_SIP_INBOUND_PASSWORD), given to Plivo so it can answer the 401/407."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class CallTarget:
    """Where this call goes (after routing by number)."""

    mode: str  # "sip" | "stream"
    sip_uri: str
    stream_url: str


def dial_xml(settings: PlivoSettings, target: CallTarget, headers: str, action_url: str,
             auth: SipAuth | None = None) -> str:
    """<Dial> to the bridge's SIP URI; call facts ride along as X-PH-* headers; with ``auth``,
    Plivo answers the bridge's digest challenge with it."""
    response = plivoxml.ResponseElement()
    dial = plivoxml.DialElement(
        action=action_url,
        method="POST",
        timeout=settings.dial_timeout_s,
        time_limit=settings.time_limit_s,
        caller_id=settings.caller_id or None,
        sip_headers=headers or None,
    )
    if auth is not None:
        dial.add(_UserWithAuth(target.sip_uri, auth.username, auth.password))
    else:
        dial.add_user(target.sip_uri)
    response.add(dial)
    return str(response.to_string(pretty=False))


def stream_xml(settings: PlivoSettings, target: CallTarget, headers: str, status_url: str) -> str:
    """A bidirectional <Stream> that keeps the call up for as long as the socket lives, then (if
    configured) the apology: Plivo runs it only when the stream ends without the call ending."""
    response = plivoxml.ResponseElement()
    response.add(
        plivoxml.StreamElement(
            target.stream_url,
            bidirectional=True,
            audioTrack="inbound",
            streamTimeout=settings.stream_timeout_s,
            statusCallbackUrl=status_url,
            statusCallbackMethod="POST",
            contentType=settings.stream_content_type,
            extraHeaders=headers or None,
            keepCallAlive=True,
        )
    )
    if settings.stream_fallback:
        response.add(plivoxml.SpeakElement(settings.apology_text, voice=settings.voice))
        response.add(plivoxml.HangupElement())
    return str(response.to_string(pretty=False))


def transfer_xml(settings: PlivoSettings, target: str, action_url: str) -> str:
    """Dial a human: a SIP URI as <User>, anything else as a phone <Number>."""
    response = plivoxml.ResponseElement()
    dial = plivoxml.DialElement(action=action_url, method="POST", timeout=settings.dial_timeout_s,
                                caller_id=settings.caller_id or None)
    if target.startswith(("sip:", "sips:")):
        dial.add_user(target)
    else:
        dial.add_number(target)
    response.add(dial)
    return str(response.to_string(pretty=False))


def apology_xml(settings: PlivoSettings) -> str:
    response = plivoxml.ResponseElement()
    response.add(plivoxml.SpeakElement(settings.apology_text, voice=settings.voice))
    response.add(plivoxml.HangupElement())
    return str(response.to_string(pretty=False))


def voicemail_xml(settings: PlivoSettings, recording_url: str) -> str:
    response = plivoxml.ResponseElement()
    response.add(plivoxml.SpeakElement(settings.voicemail_text, voice=settings.voice))
    response.add(
        plivoxml.RecordElement(
            action=recording_url,
            method="POST",
            max_length=settings.voicemail_max_s,
            play_beep=True,
            finish_on_key="#",
        )
    )
    response.add(plivoxml.HangupElement())
    return str(response.to_string(pretty=False))


def machine_message_xml(settings: PlivoSettings, message: str) -> str:
    """An answering machine answered: leave the message (Plivo answers after the beep with
    machine detection), then hang up."""
    response = plivoxml.ResponseElement()
    response.add(plivoxml.SpeakElement(message, voice=settings.voice))
    response.add(plivoxml.HangupElement())
    return str(response.to_string(pretty=False))


def hangup_xml() -> str:
    response = plivoxml.ResponseElement()
    response.add(plivoxml.HangupElement())
    return str(response.to_string(pretty=False))


def empty_xml() -> str:
    return str(plivoxml.ResponseElement().to_string(pretty=False))
