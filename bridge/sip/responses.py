"""Building and sending our responses: one place for the reason phrases, the User-Agent on
finals, the one To tag per transaction and the response metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from aiosipua import SipRequest, SipResponse

from bridge.metrics import SIP_RESPONSES
from bridge.sip.server_tx import Outgoing, ServerTransactions, ServerTx
from bridge.sip.transport import Peer
from bridge.sip.wire import BadMessage, build_response, new_tag, response_destination, tag_of

KNOWN_METHODS = {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "UPDATE", "NOTIFY", "REFER",
                 "REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "PRACK"}
REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 202: "Accepted", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 405: "Method Not Allowed", 415: "Unsupported Media Type",
           416: "Unsupported URI Scheme", 420: "Bad Extension",
           481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
           487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
           501: "Not Implemented",
           503: "Service Unavailable", 505: "Version Not Supported"}

Send = Callable[[list[Outgoing]], None]


def method_label(method: str) -> str:
    """A bounded metric label: the methods we know, else 'other'."""
    return method if method in KNOWN_METHODS else "other"


class Responder:
    def __init__(self, txs: ServerTransactions, send: Send, clock: Callable[[], float],
                 user_agent: str) -> None:
        self._txs = txs
        self._send = send
        self._clock = clock
        self._user_agent = user_agent

    def tag_for(self, tx: ServerTx) -> str:
        if tx.to_tag is None:
            tx.to_tag = new_tag()
        return tx.to_tag

    def respond(self, tx: ServerTx, code: int, *, to_tag: str | None = None,
                headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
        """Answer the transaction's request; returns the bytes sent (2xx are resent until ACK)."""
        req = tx.request
        if code > 100 and to_tag is None and not tag_of(req.get_header("to")):
            to_tag = self.tag_for(tx)
        all_headers = {"User-Agent": self._user_agent} if code >= 200 else {}
        all_headers.update(headers or {})
        resp = build_response(req, code, REASONS.get(code, "OK"), to_tag=to_tag, headers=all_headers,
                              body=body, source=tx.peer.addr)
        return self.send_response(tx, resp)

    def send_response(self, tx: ServerTx, resp: SipResponse) -> bytes:
        data = bytes(resp)
        self._send(self._txs.respond(tx, data, resp.status_code, self._clock()))
        SIP_RESPONSES.labels(method_label(tx.method), str(resp.status_code)).inc()
        return data

    def reply_stateless(self, req: SipRequest, peer: Peer, code: int, warning: str = "") -> None:
        """A response outside any transaction (malformed requests): best effort."""
        headers = {"Warning": f'399 voice-bridge "{warning[:100]}"'} if warning and code == 400 else {}
        resp = build_response(req, code, REASONS.get(code, "Error"), headers=headers, to_tag=new_tag(),
                              source=peer.addr)
        with contextlib.suppress(BadMessage, IndexError, ValueError):
            self._send([Outgoing(bytes(resp), peer, response_destination(req, peer.addr))])
        SIP_RESPONSES.labels(method_label(req.method), str(code)).inc()
