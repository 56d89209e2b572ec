"""Outbound calls through a SIP trunk (Plivo Zentrunk or any BYOC trunk): the INVITE client.

Handles 100/18x/2xx/3xx-6xx, a 401/407 digest challenge (answered once), CANCEL on ring
timeout, ACK for every final response (and again for retransmitted 2xx), and hands the
answered call to the same CallApp that serves inbound calls, so the agent runs unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from aiosipua import SipRequest, SipResponse
from aiosipua.auth import SipDigestAuth
from aiosipua.headers import stringify_uri

from bridge.callmodel import CallInfo
from bridge.privacy import mask_number
from bridge.settings.outbound import TrunkSettings
from bridge.sip.call import SipCall
from bridge.sip.credentials import answer_challenge
from bridge.sip.sdp_offer import SdpError, SessionDescription, negotiate, parse_offer
from bridge.sip.server import SipServer
from bridge.sip.transactions import TransactionTimeout
from bridge.sip.transport import Peer, resolve
from bridge.sip.wire import ALLOW, new_branch, new_call_id, new_request, new_tag, tag_of

log = logging.getLogger(__name__)

Outcome = Literal["answered", "busy", "no-answer", "rejected", "failed"]


@dataclass
class OutboundResult:
    outcome: Outcome
    code: int
    detail: str
    call: SipCall | None = None


def _classify(code: int) -> Outcome:
    if code in (486, 600):
        return "busy"
    if code in (408, 480, 487):
        return "no-answer"
    return "rejected" if 400 <= code < 700 else "failed"


async def _resolve(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.partition(":")
    return await resolve(host, int(port) if port else 5060)


class TrunkCaller:
    """Places calls through one trunk from the daemon's SIP socket."""

    def __init__(self, server: SipServer, trunk: TrunkSettings, password: str | None,
                 codecs: list[str], dtmf_pt: int = 101) -> None:
        if not trunk.host:
            raise ValueError("outbound.trunk.host: required for calls via the SIP trunk")
        if trunk.transport != "udp":
            raise ValueError("outbound.trunk.transport: only udp is implemented for outbound calls")
        self._server = server
        self._trunk = trunk
        self._auth = SipDigestAuth(trunk.user, password or "") if trunk.user else None
        self._codecs = codecs
        self._dtmf_pt = dtmf_pt

    async def call(self, to_e164: str, from_e164: str, headers: dict[str, str] | None = None,
                   ring_timeout_s: float | None = None) -> OutboundResult:
        # From here until the INVITE's final answer the SIP stop knows of this call: it sends
        # no INVITE after the stop began, CANCELs one that rings, and waits for the answer.
        with self._server.ringing() as stopping:
            if stopping.is_set():
                return OutboundResult("failed", 503, "shutting down")
            return await self._place(to_e164, from_e164, headers or {}, ring_timeout_s, stopping)

    async def _place(self, to_e164: str, from_e164: str, headers: dict[str, str],
                     ring_timeout_s: float | None, stopping: asyncio.Event) -> OutboundResult:
        server, app = self._server, self._server.app
        domain = self._trunk.host.split(":", 1)[0]
        dest = await _resolve(self._trunk.outbound_proxy or self._trunk.host)
        peer = Peer("udp", dest)
        local_ip = server.local_ip_for(dest[0])
        call_id = new_call_id(local_ip)
        to_uri = f"sip:{to_e164}@{domain}"
        from_uri = f"sip:{from_e164}@{domain}"
        info = CallInfo(call_id=call_id, from_uri=from_uri, to_uri=to_uri, source=dest, direction="outbound")
        refusal = app.admit(info)
        if refusal is not None:
            return OutboundResult("failed", refusal[0], refusal[1])
        call = SipCall(info=info, control=server.dialogs, peer=peer, local_tag=new_tag(), remote_tag="",
                       local_uri=f"<{from_uri}>", remote_uri=f"<{to_uri}>", remote_target=to_uri)
        try:
            host, port = await app.prepare(call)
        except Exception as exc:  # no RTP port: refuse before any signalling
            app.ended(call, "error")
            return OutboundResult("failed", 503, f"media setup failed: {exc}")
        call.prepared = True
        if host in ("", "0.0.0.0"):
            host = local_ip
        advertised = server.settings.public_address or host
        call.sdp = SessionDescription(advertised, port, server.settings.user_agent)
        offer = call.sdp.offer(self._codecs, self._dtmf_pt)
        log.info("outbound INVITE", extra={"call_id": call_id, "to": mask_number(to_e164)})
        try:
            ring = ring_timeout_s or self._trunk.ring_timeout_s
            result = await self._invite(call, offer, headers, ring, stopping)
        except (TransactionTimeout, OSError) as exc:
            result = OutboundResult("failed", 408, f"trunk did not answer: {exc}")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our own caller gave up on us
            # the stop closed the transaction layer with our INVITE (or CANCEL) unanswered
            result = OutboundResult("failed", 503, "shutting down: no final answer before the stop")
        if result.outcome != "answered":
            server.forget_uac(call_id)
            if call.state != "ended":  # an unusable answer was already hung up (and ended)
                call.state = "ended"
                app.ended(call, result.outcome if result.outcome in ("busy", "no-answer") else "error")
        return result

    def _request(self, call: SipCall, cseq: int, branch: str, body: bytes,
                 headers: dict[str, str], auth: tuple[str, str] | None) -> SipRequest:
        server = self._server
        req = new_request("INVITE", call.remote_target, transport="udp",
                          host=server.local_ip_for(call.peer.addr[0]), port=server.bound_port, branch=branch,
                          from_=f"{call.local_uri};tag={call.local_tag}", to=call.remote_uri,
                          call_id=call.info.call_id, cseq=cseq)
        req.set_header("Contact", server.contact_for(call.peer))
        req.set_header("Allow", ALLOW)
        req.set_header("User-Agent", server.settings.user_agent)
        for name, value in headers.items():
            req.set_header(name, value)
        if auth is not None:
            req.set_header(auth[0], auth[1])
        req.set_header("Content-Type", "application/sdp")
        req.body = body
        return req

    async def _invite(self, call: SipCall, offer: bytes, headers: dict[str, str],
                      ring_timeout_s: float, stopping: asyncio.Event) -> OutboundResult:
        auth: tuple[str, str] | None = None
        cseq = 1
        for _attempt in range(2):
            if stopping.is_set():  # the stop began while we set up (or were challenged)
                return OutboundResult("failed", 503, "shutting down")
            branch = new_branch()
            req = self._request(call, cseq, branch, offer, headers, auth)
            resp = await self._ring(call, req, branch, ring_timeout_s, stopping)
            code = resp.status_code
            if code >= 300:
                self._ack_failure(call, req, resp, branch)
            if code in (401, 407) and auth is None and self._auth is not None:
                auth = answer_challenge(self._auth, resp, "INVITE", req.uri)
                if auth is not None:
                    cseq += 1
                    continue
            if 200 <= code < 300:
                call.local_cseq = cseq
                return await self._answered(call, resp)
            outcome = _classify(code)
            return OutboundResult(outcome, code, f"{code} {resp.reason_phrase}")
        return OutboundResult("rejected", 403, "trunk refused our credentials")

    async def _ring(self, call: SipCall, req: SipRequest, branch: str, ring_timeout_s: float,
                    stopping: asyncio.Event) -> SipResponse:
        """Send the INVITE; CANCEL it if nobody answers in time (the 487 then comes back here)."""
        provisional = asyncio.Event()
        tx = asyncio.ensure_future(self._server.tx.request(
            bytes(req), branch, "INVITE", call.peer, call.peer.addr,
            on_provisional=lambda _r: provisional.set(),
        ))
        await _first(tx, stopping.wait(), ring_timeout_s)
        if not tx.done() and not provisional.is_set():
            # §9.1: no CANCEL before a provisional response; Timer B bounds this wait
            await _first(tx, provisional.wait())
        if tx.done():
            return tx.result()
        why = "shutting down" if stopping.is_set() else "ring timeout"
        log.info("%s: CANCEL", why, extra={"call_id": call.info.call_id})
        return await self._cancel(call, req, branch, tx)

    async def _cancel(self, call: SipCall, req: SipRequest, branch: str,
                      tx: asyncio.Future[SipResponse]) -> SipResponse:
        """CANCEL the INVITE; its final answer (487, or a 200 that crossed the CANCEL) comes to `tx`."""
        cancel = _in_invite_transaction(req, "CANCEL", req.get_header("to") or "")
        with contextlib.suppress(TransactionTimeout, OSError):
            await self._server.tx.request(bytes(cancel), branch, "CANCEL", call.peer, call.peer.addr)
        try:
            return await asyncio.wait_for(tx, 64 * self._server.tx.t1)
        except (TimeoutError, TransactionTimeout):
            tx.cancel()
            resp = SipResponse(status_code=487, reason_phrase="Request Terminated (no answer)")
            return resp

    def _ack_failure(self, call: SipCall, req: SipRequest, resp: SipResponse, branch: str) -> None:
        """ACK for a non-2xx final belongs to the INVITE transaction: same branch (§17.1.1.3)."""
        ack = _in_invite_transaction(req, "ACK", resp.get_header("to") or req.get_header("to") or "")
        data = bytes(ack)
        self._server.remember_uac_ack(call.info.call_id, data, call.peer, call.peer.addr)
        self._server.send_raw(data, call.peer, call.peer.addr)

    async def _answered(self, call: SipCall, resp: SipResponse) -> OutboundResult:
        server = self._server
        call.remote_tag = tag_of(resp.get_header("to")) or ""
        contacts = resp.contact
        if contacts and contacts[0].uri.host:
            call.remote_target = stringify_uri(contacts[0].uri)
        call.route_set = list(reversed(resp.get_header_values("record-route")))  # UAC: reversed (§12.1.2)
        await self._send_ack(call)
        # confirmed only once our ACK is out: a stop in progress BYEs confirmed dialogs, and
        # its BYE must not overtake the ACK
        call.state = "confirmed"
        server.adopt(call)
        try:
            if not resp.body:
                raise SdpError("200 without SDP")
            call.media = negotiate(parse_offer(resp.body), self._codecs)
        except SdpError as exc:
            log.info("answer unusable: %s", exc, extra={"call_id": call.info.call_id})
            await call.hangup("error")
            return OutboundResult("failed", 488, str(exc))
        server.app.established(call)
        return OutboundResult("answered", resp.status_code, "answered", call)

    async def _send_ack(self, call: SipCall) -> None:
        server = self._server
        ack = new_request("ACK", call.remote_target, transport="udp",
                          host=server.local_ip_for(call.peer.addr[0]), port=server.bound_port,
                          branch=new_branch(),
                          from_=f"{call.local_uri};tag={call.local_tag}",
                          to=f"{call.remote_uri};tag={call.remote_tag}", call_id=call.info.call_id,
                          cseq=call.local_cseq)
        for route in call.route_set:
            ack.add_header("Route", route)
        data = bytes(ack)
        dest = await server.destination(call)
        server.remember_uac_ack(call.info.call_id, data, call.peer, dest)
        server.send_raw(data, call.peer, dest)


async def _first(tx: asyncio.Future[SipResponse], other: Coroutine[Any, Any, Any],
                 limit_s: float | None = None) -> None:
    """Until the transaction ends or `other` does (or `limit_s`); `other` is dropped after."""
    waiter = asyncio.ensure_future(other)
    try:
        await asyncio.wait({tx, waiter}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


def _in_invite_transaction(invite: SipRequest, method: str, to: str) -> SipRequest:
    """CANCEL, or the ACK of a non-2xx final: same Request-URI, top Via (branch), From,
    Call-ID and CSeq number as the INVITE (RFC 3261 §9.1, §17.1.1.3)."""
    req = SipRequest(method=method, uri=invite.uri)
    req.add_header("Via", invite.get_header_values("via")[0])
    req.set_header("Max-Forwards", "70")
    req.set_header("From", invite.get_header("from") or "")
    req.set_header("To", to)
    req.set_header("Call-ID", invite.get_header("call-id") or "")
    req.set_header("CSeq", f"{invite.cseq.seq if invite.cseq else 1} {method}")
    return req
