"""Flask app factory: Plivo's webhooks, each behind the V3 signature check."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request

from bridge import callfacts
from bridge.outbound.callbacks import record_plivo_outcome
from bridge.plivo_signature import NonceStore
from bridge.privacy import mask_number
from bridge.settings import Settings
from bridge.settings.plivo import nonce_path
from xml_server import responses
from xml_server.routing import call_target, find_route
from xml_server.signature import networks, public_url, verify

log = logging.getLogger("xml_server")

XML = "application/xml"
View = Callable[[], Any]


class ConfigError(ValueError):
    """The XML server cannot run with this configuration (message says what to set)."""


def create_app(settings: Settings, auth_token: str | None, stream_secret: str | None = None,
               sip_auth_password: str | None = None) -> Flask:
    """The WSGI app. ``auth_token`` is PLIVO_AUTH_TOKEN (required while signatures are checked);
    ``stream_secret`` (VOICE_BRIDGE_STREAM_SECRET) signs the stream token in stream mode;
    ``sip_auth_password`` (VOICE_BRIDGE_SIP_INBOUND_PASSWORD) with sip.trust.inbound_user goes
    into <User sipAuthUsername/sipAuthPassword> so Plivo can answer the bridge's challenge."""
    plivo = settings.plivo
    if plivo.validate_signatures and not auth_token:
        raise ConfigError(
            "PLIVO_AUTH_TOKEN is not set: it is needed to check webhook signatures "
            "(set plivo.validate_signatures = false only for local development)"
        )
    if plivo.mode == "stream" and plivo.stream_require_token and not stream_secret:
        raise ConfigError(
            "VOICE_BRIDGE_STREAM_SECRET is not set: stream mode signs a token the daemon checks "
            "(or set plivo.stream_require_token = false for local development)"
        )
    for route in plivo.routes:
        problem = callfacts.configured_value_problem("agent", route.agent) if route.agent else ""
        if problem:
            raise ConfigError(f"plivo.routes (to {route.to}): {problem}; use a shorter agent name")
    if not plivo.validate_signatures:
        log.warning("webhook signature checks are OFF (plivo.validate_signatures = false): development only")
    if plivo.validate_signatures and not plivo.public_base_url and not plivo.trusted_proxies:
        raise ConfigError(
            "plivo.public_base_url is empty: set it to the URL Plivo calls (signatures are computed "
            "over it), or list the reverse proxies whose X-Forwarded-* headers to believe in "
            "plivo.trusted_proxies"
        )
    proxies = networks(plivo.trusted_proxies)
    inbound_user = settings.sip.trust.inbound_user
    sip_auth = None
    if inbound_user and sip_auth_password:
        sip_auth = responses.SipAuth(inbound_user, sip_auth_password)
    if plivo.mode == "sip" and inbound_user and sip_auth is None:
        log.warning("sip.trust.inbound_user is set but VOICE_BRIDGE_SIP_INBOUND_PASSWORD is not: <User> "
                    "carries no sipAuth credentials, so Plivo cannot answer the bridge's challenge")
    show_numbers = settings.logging.log_phone_numbers
    nonces = NonceStore(plivo.replay_window_s, nonce_path(settings))
    app = Flask("xml_server")

    def shown(number: str) -> str:
        return number if show_numbers else mask_number(number)

    def signed(view: View) -> View:
        @functools.wraps(view)
        def wrapper() -> Any:
            if plivo.validate_signatures:
                assert auth_token is not None
                verdict = verify(request, auth_token, plivo.public_base_url, nonces, proxies)
                if not verdict.ok:
                    log.warning(
                        "webhook rejected (403): %s",
                        verdict.reason,
                        extra={"path": request.path, "remote": request.remote_addr},
                    )
                    return Response("forbidden\n", status=403, mimetype="text/plain")
            return view()

        return wrapper

    def param(name: str) -> str:
        value = request.values.get(name, "")
        return value if isinstance(value, str) else ""

    def url_for_path(path: str) -> str:
        # Callback URLs must be what Plivo can reach: the same public base the answer came to.
        here = public_url(request, plivo.public_base_url, proxies)
        base = here.split("?", 1)[0][: -len(request.path)] if request.path != "/" else here
        return base.rstrip("/") + path

    def xml(body: str) -> Response:
        return Response(body, status=200, mimetype=XML)

    def campaign_outcome(outcome: str | None = None) -> None:
        """A campaign call's outcome into the store (vb_call is in the signed URL)."""
        hint = request.args.get("vb_call", "")
        if not hint:
            return
        params = {k: param(k) for k in ("CallUUID", "CallStatus", "HangupCause", "Duration",
                                        "BillDuration", "Machine")}
        try:
            record_plivo_outcome(settings, hint, params, outcome)
        except Exception:  # the store must not turn Plivo's callback into a 500 (it would retry)
            log.exception("campaign outcome not stored", extra={"vb_call": hint})

    @app.route("/answer", methods=["GET", "POST"])
    @signed
    def answer() -> Response:
        call_uuid, direction = param("CallUUID"), param("Direction") or "inbound"
        caller, called = param("From"), param("To")
        if direction == "outbound" and param("Machine").lower() == "true":
            # Plivo's machine detection found an answering machine: act per outbound.on_machine.
            campaign_outcome("machine")
            out = settings.outbound
            log.info("answering machine", extra={"call_uuid": call_uuid, "action": out.on_machine})
            if out.on_machine == "message" and out.machine_message:
                return xml(responses.machine_message_xml(plivo, out.machine_message))
            return xml(responses.hangup_xml())
        route = find_route(plivo, called if direction == "inbound" else caller)
        target = call_target(plivo, route)
        facts = {callfacts.FROM: caller, callfacts.TO: called, callfacts.DIRECTION: direction}
        if target.mode != "stream":  # a stream's start carries the CallUUID itself
            facts = {callfacts.CALL_UUID: call_uuid, **facts}
        if route and route.agent:
            facts[callfacts.AGENT] = route.agent
        fitted = callfacts.fit(facts)
        if fitted.dropped:
            log.warning("call facts too long for Plivo's header rules: not sent",
                        extra={"call_uuid": call_uuid, "dropped": ",".join(fitted.dropped)})
        if target.mode == "stream" and stream_secret and call_uuid:
            kept = {k: v for k, v in facts.items() if k in fitted.encoded}
            fitted.encoded[callfacts.TOKEN] = callfacts.stream_token(stream_secret, call_uuid, kept)
        headers = fitted.header_text()
        log.info(
            "answer",
            extra={
                "call_uuid": call_uuid,
                "from": shown(caller),
                "to": shown(called),
                "direction": direction,
                "mode": target.mode,
                "route": route.to if route else "",
                # outbound calls with machine_detection: Plivo's verdict (not acted on yet)
                "machine": param("Machine"),
            },
        )
        if target.mode == "stream":
            return xml(responses.stream_xml(plivo, target, headers, url_for_path("/stream-status")))
        return xml(responses.dial_xml(plivo, target, headers, url_for_path("/dial-action"), sip_auth))

    @app.route("/hangup", methods=["GET", "POST"])
    @signed
    def hangup() -> Response:
        log.info(
            "call ended",
            extra={
                "call_uuid": param("CallUUID"),
                "from": shown(param("From")),
                "to": shown(param("To")),
                "hangup_cause": param("HangupCause"),
                "duration_s": param("Duration"),
            },
        )
        campaign_outcome()
        return xml(responses.empty_xml())

    @app.route("/status", methods=["GET", "POST"])
    @signed
    def status() -> Response:
        log.info(
            "call status",
            extra={
                "call_uuid": param("CallUUID"),
                "call_status": param("CallStatus"),
                "event": param("Event"),
            },
        )
        campaign_outcome()
        return xml(responses.empty_xml())

    @app.route("/stream-status", methods=["GET", "POST"])
    @signed
    def stream_status() -> Response:
        # Plivo's stream events: StartStream, StopStream, DroppedStream (the socket failed or was
        # refused: the caller hears the fallback after <Stream>), DegradedStream (the app is not
        # keeping up). The stream id's casing is not settled in Plivo's docs: read both.
        event = param("Event")
        extra = {"call_uuid": param("CallUUID"), "event": event,
                 "stream_id": param("StreamID") or param("StreamId") or param("stream_id"),
                 "error": (param("Error") or param("ErrorMessage"))[:200]}
        if event in ("DroppedStream", "DegradedStream"):
            log.warning("stream %s", "dropped" if event == "DroppedStream" else "degraded", extra=extra)
        else:
            log.info("stream status", extra=extra)
        return xml(responses.empty_xml())

    @app.route("/fallback", methods=["GET", "POST"])
    @signed
    def fallback() -> Response:
        log.warning("fallback URL called: answering with the apology", extra={"call_uuid": param("CallUUID")})
        return xml(responses.apology_xml(plivo))

    @app.route("/dial-action", methods=["GET", "POST"])
    @signed
    def dial_action() -> Response:
        dial_status = param("DialStatus")
        log.info(
            "dial ended",
            extra={
                "call_uuid": param("CallUUID"),
                "dial_status": dial_status,
                "hangup_cause": param("DialHangupCause"),
            },
        )
        if dial_status == "completed":
            return xml(responses.hangup_xml())
        if plivo.dial_failed_action == "voicemail":
            return xml(responses.voicemail_xml(plivo, url_for_path("/recording")))
        return xml(responses.apology_xml(plivo))

    @app.route("/transfer", methods=["GET", "POST"])
    @signed
    def transfer() -> Response:
        # The daemon points a live call here (REST transfer); "to" is in the signed URL.
        target = request.args.get("to", "").strip()
        if not target or len(target) > 256:
            log.warning("transfer without a usable target", extra={"call_uuid": param("CallUUID")})
            return xml(responses.apology_xml(plivo))
        log.info("transfer", extra={"call_uuid": param("CallUUID"), "target": shown(target)})
        return xml(responses.transfer_xml(plivo, target, url_for_path("/dial-action")))

    @app.route("/recording", methods=["GET", "POST"])
    @signed
    def recording() -> Response:
        log.info(
            "voicemail recorded",
            extra={"call_uuid": param("CallUUID"), "record_url": param("RecordUrl"),
                   "duration_s": param("RecordingDuration")},
        )
        return xml(responses.hangup_xml())

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok", mode=plivo.mode, signatures=plivo.validate_signatures)

    return app
