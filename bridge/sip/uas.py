"""The user agent server for requests outside a dialog: new calls (INVITE with trust, admission,
offer/answer or late offer, ringing and answering), CANCEL, OPTIONS, and the refusals
(481, 482 for merged requests, 405, 501)."""

from __future__ import annotations

import asyncio
import logging

from aiosipua import SipRequest
from aiosipua.headers import stringify_uri

from bridge.callfacts import facts_from_sip_headers
from bridge.callmodel import CallInfo, MediaParams
from bridge.sip.call import SipCall
from bridge.sip.context import SipContext
from bridge.sip.dialog import Dialogs
from bridge.sip.responses import KNOWN_METHODS
from bridge.sip.sdp_offer import SdpError, SessionDescription, negotiate, parse_offer
from bridge.sip.server_tx import ServerTx
from bridge.sip.transport import Peer
from bridge.sip.wire import ALLOW, BadMessage, build_response, cseq_of, new_tag, tag_of, top_via

log = logging.getLogger(__name__)

SUPPORTED_OPTIONS = {"replaces"}  # what we put in Supported: the only Require tags we accept


def refuse_extensions(ctx: SipContext, tx: ServerTx) -> bool:
    """420 for a Require we do not support (§8.2.2.3; CANCEL never carries one)."""
    req = tx.request
    if req.method.upper() == "CANCEL":
        return False
    tags = [t.strip() for v in req.get_header_values("require") for t in v.split(",") if t.strip()]
    unsupported = [t for t in tags if t.lower() not in SUPPORTED_OPTIONS]
    if unsupported:
        ctx.responder.respond(tx, 420, headers={"Unsupported": ", ".join(unsupported)})
    return bool(unsupported)


class Uas:
    def __init__(self, ctx: SipContext, dialogs: Dialogs) -> None:
        self._ctx = ctx
        self._dialogs = dialogs

    def _retry_later(self) -> dict[str, str]:
        return {"Retry-After": str(self._ctx.settings.retry_after_s)}

    def on_request(self, req: SipRequest, peer: Peer, tx: ServerTx) -> None:
        method = req.method.upper()
        respond = self._ctx.responder.respond
        if method == "INVITE":
            if self._merged(req):
                respond(tx, 482)
                return
            self._on_invite(req, peer, tx)
        elif method == "OPTIONS":
            self._on_options(peer, tx)
        elif method == "CANCEL":
            self._on_cancel(req, tx)
        elif method in ("BYE", "INFO", "UPDATE", "NOTIFY", "PRACK"):
            respond(tx, 481)
        elif method in KNOWN_METHODS:
            respond(tx, 405, headers={"Allow": ALLOW})
        else:
            respond(tx, 501, headers={"Allow": ALLOW})

    def _merged(self, req: SipRequest) -> bool:
        """An INVITE for a call we already have, on a new branch (RFC 3261 §8.2.2.2: a merged
        request, e.g. forked twice upstream or re-sent by a confused UA). A second call on the same
        Call-ID would clash with the first, so it gets 482; true retransmissions (same branch)
        never get here, the transaction layer absorbed them."""
        call_id, from_tag = req.call_id or "", tag_of(req.get_header("from")) or ""
        return any(c.info.call_id == call_id and c.remote_tag == from_tag for c in self._ctx.calls.values())

    def _on_options(self, peer: Peer, tx: ServerTx) -> None:
        """200 with our capabilities, or 503 + Retry-After while we would refuse an INVITE
        (draining, at capacity): dispatchers (Kamailio's ds_ping) probe with OPTIONS and stop
        routing new calls to a node that answers 503 (RFC 3261 §11.2: the answer to OPTIONS is
        the one an INVITE would get)."""
        why = "draining" if self._ctx.draining else self._ctx.app.unavailable()
        if why is None:
            headers = {"Allow": ALLOW, "Accept": "application/sdp, application/dtmf-relay, application/dtmf",
                       "Supported": "replaces", "Contact": self._ctx.addresses.contact_for(peer),
                       "User-Agent": self._ctx.settings.user_agent}
            self._ctx.responder.respond(tx, 200, headers=headers)
            return
        log.debug("OPTIONS answered 503: %s", why, extra={"peer": peer.addr[0]})
        self._ctx.responder.respond(tx, 503, headers=self._retry_later())

    def _on_cancel(self, req: SipRequest, tx: ServerTx) -> None:
        respond = self._ctx.responder.respond
        invite_tx = self._ctx.txs.find((tx.key[0], tx.key[1], "INVITE"))
        if invite_tx is None:
            respond(tx, 481)
            return
        call = self._ctx.calls.get(invite_tx.call_key) if invite_tx.call_key else None
        # §9.2: the 200 to the CANCEL SHOULD carry the same To tag as the 487 to the INVITE.
        respond(tx, 200, to_tag=invite_tx.to_tag if invite_tx.call_key else None)
        if invite_tx.final_code or call is None:
            return  # already answered: CANCEL has no effect (RFC 3261 §9.2)
        respond(invite_tx, 487, to_tag=call.local_tag)
        self._dialogs.end(call, "cancel")

    # -- new calls -------------------------------------------------------------------------
    def _on_invite(self, req: SipRequest, peer: Peer, tx: ServerTx) -> None:
        ctx, respond = self._ctx, self._ctx.responder.respond
        ip = peer.addr[0]
        if ctx.draining:
            respond(tx, 503, headers=self._retry_later())
            return
        if not ctx.trust.is_trusted(ip):
            if ctx.trust.locked_out(ip):
                respond(tx, 403)
                return
            if not ctx.trust.can_challenge:
                log.info("INVITE from an untrusted source refused", extra={"peer": ip})
                respond(tx, 403)
                return
            auth = ctx.trust.verify(ip, "INVITE", req.get_header("authorization"))
            if not auth:
                self._challenge(tx, stale=auth.stale)
                return
        from_addr, to_addr = req.from_addr, req.to_addr
        assert from_addr is not None and to_addr is not None  # checked by parse_message
        contacts = req.contact
        if not contacts or not contacts[0].uri.host:
            raise BadMessage("INVITE without a usable Contact", 400)
        info = CallInfo(
            call_id=req.call_id or "",
            from_uri=stringify_uri(from_addr.uri),
            to_uri=stringify_uri(to_addr.uri),
            source=peer.addr,
            plivo_headers=facts_from_sip_headers(req.headers.items()),  # X-PH-* and raw-mode X-*
        )
        refusal = ctx.app.admit(info)
        if refusal is not None:
            code, reason = refusal
            respond(tx, code, headers=self._retry_later() if code == 503 else {})
            log.info("call refused: %s", reason, extra={"call_id": info.call_id, "code": code})
            return
        media = None
        ctype = (req.content_type or "").lower()
        if req.body and "application/sdp" in ctype:
            try:
                media = negotiate(parse_offer(req.body), list(ctx.settings.codecs))
            except SdpError as exc:
                log.info("488: %s", exc, extra={"call_id": info.call_id})
                respond(tx, 488, headers={"Warning": f'304 voice-bridge "{str(exc)[:120]}"'})
                return
        elif req.body:
            respond(tx, 415, headers={"Accept": "application/sdp"})
            return
        call = SipCall(
            info=info, control=self._dialogs, peer=peer, local_tag=new_tag(), remote_tag=from_addr.tag or "",
            local_uri=_without_tag(req.get_header("to") or ""),
            remote_uri=_without_tag(req.get_header("from") or ""),
            remote_target=stringify_uri(contacts[0].uri),
            route_set=req.get_header_values("record-route"),
            remote_cseq=cseq_of(req)[0], late_offer=media is None, invite_branch=top_via(req).branch or "",
        )
        tx.call_key = call.key
        tx.to_tag = call.local_tag
        ctx.calls[call.key] = call
        respond(tx, 100)
        ctx.spawn(self._answer(call, tx, media), f"answer-{info.call_id}")

    def _challenge(self, tx: ServerTx, *, stale: bool = False) -> None:
        ctx = self._ctx
        resp = build_response(tx.request, 401, "Unauthorized", to_tag=ctx.responder.tag_for(tx),
                              source=tx.peer.addr, headers={"User-Agent": ctx.settings.user_agent})
        for value in ctx.trust.challenges(tx.peer.addr[0], stale=stale):
            resp.add_header("WWW-Authenticate", value)
        ctx.responder.send_response(tx, resp)

    async def _answer(self, call: SipCall, tx: ServerTx, media: MediaParams | None) -> None:
        ctx, respond = self._ctx, self._ctx.responder.respond
        try:
            host, port = await ctx.app.prepare(call)
        except asyncio.CancelledError:  # SIP stopping: every INVITE still gets a final answer
            if not tx.final_code:
                respond(tx, 503, to_tag=call.local_tag, headers=self._retry_later())
            raise
        except Exception as exc:  # ports exhausted, socket errors: refuse, don't crash
            log.warning("call setup failed: %s", exc, extra={"call_id": call.info.call_id})
            ctx.calls.pop(call.key, None)
            if call.state != "ended":
                call.state = "ended"
                respond(tx, 503, to_tag=call.local_tag, headers=self._retry_later())
            ctx.app.ended(call, "error")
            return
        call.prepared = True
        if call.state == "ended":  # CANCELed (487 sent) or hung up while we were binding media
            if not tx.final_code:  # every INVITE gets a final answer
                respond(tx, 503, to_tag=call.local_tag, headers=self._retry_later())
            ctx.app.ended(call, call.end_reason or "cancel")
            return
        if host in ("", "0.0.0.0"):
            host = ctx.addresses.local_ip_for(call.peer.addr[0])
        if ctx.settings.public_address:
            host = ctx.settings.public_address
        call.sdp = SessionDescription(host, port, ctx.settings.user_agent)
        if media is not None:
            call.media = media
            body = call.sdp.answer(media)
        else:
            body = call.sdp.offer(list(ctx.settings.codecs), 101)
        contact = {"Contact": ctx.addresses.contact_for(call.peer)}
        respond(tx, 180, to_tag=call.local_tag, headers=contact)
        if ctx.settings.answer_delay_ms:
            try:
                await asyncio.sleep(ctx.settings.answer_delay_ms / 1000)
            finally:
                # Hung up (drain, shutdown: the sleep is cancelled) while ringing: the INVITE still
                # needs a final answer. After a CANCEL it already has one (487).
                if call.state == "ended" and not tx.final_code:
                    respond(tx, 503, to_tag=call.local_tag, headers=self._retry_later())
            if call.state == "ended":
                return
        ok_headers = {**contact, "Allow": ALLOW, "Supported": "replaces"}
        data = respond(tx, 200, to_tag=call.local_tag, headers=ok_headers, body=body)
        self._dialogs.await_ack(call, tx, data, initial=True)


def _without_tag(value: str) -> str:
    head, sep, tail = value.partition(">")
    if sep:
        return head + ">" + ";".join(p for p in tail.split(";") if p and not p.strip().startswith("tag="))
    return ";".join(p for p in value.split(";") if not p.strip().startswith("tag="))
