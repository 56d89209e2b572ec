"""The daemon's Plivo audio-stream endpoint: a ``websockets`` server on ``daemon.stream_listen``,
path /stream. The upgrade request must carry Plivo's V3 signature (as Plivo's stream SDKs check
it: GET over https://<host><path>, nonce remembered), and the stream must open with a ``start``
whose extra headers carry the HMAC token the XML server issued for that call and its facts
(one stream per token); then the call supervisor (``bridge/supervisor.py``) runs the agent on a
StreamLeg, and ends the call when the leg reports it (``_StreamCall.end``: Plivo REST hang-up
and/or closing the socket) or the socket closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bridge import callcontext
from bridge.callfacts import CALL_UUID, TOKEN, token_valid
from bridge.callmodel import CallInfo
from bridge.leg import LegEnded
from bridge.metrics import CALLS_REFUSED
from bridge.plivo_signature import NonceStore
from bridge.plivo_signature import verify as verify_signature
from bridge.privacy import mask_number
from bridge.settings import Secrets, Settings
from bridge.settings.addresses import parse_host_port
from bridge.settings.plivo import nonce_path
from bridge.stream import protocol
from bridge.stream.busy_leave import BusyLeave
from bridge.stream.callfacts import parse_extra_headers
from bridge.stream.connection import StreamConnection
from bridge.stream.leg import CallControl, StreamLeg
from bridge.stream.listeners import count_listeners, listening_socket, try_group_lock
from bridge.stream.tokens import UsedTokens
from bridge.supervisor import AGENT_GRACE_S, CallSupervisor

log = logging.getLogger(__name__)

PATH = "/stream"
_MAX_BAD_MESSAGES = 200
_NORMAL_ENDS = ("socket closed", "stop", "hangup", "transferred")
# what the leg takes from Plivo besides media (StreamLeg.on_message)
_LEG_MESSAGES = (protocol.Media, protocol.Dtmf, protocol.PlayedStream, protocol.ClearedAudio)
_BUSY_CHECK_S = 0.25  # how often a busy / stepped-out daemon looks again (jittered +-20 %)
_BUSY_REASONS = ("at capacity", "overloaded")


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_listen(value: str) -> tuple[str, int]:
    try:
        return parse_host_port(value, "0.0.0.0")
    except ValueError as exc:
        raise ValueError(f"daemon.stream_listen: {exc}") from None


class StreamServer:
    def __init__(
        self, settings: Settings, secrets: Secrets, supervisor: CallSupervisor,
        control: CallControl | None = None,
    ) -> None:
        self._settings = settings
        # The daemon passes the SIP side's: one capacity, one drain for both transports.
        self.supervisor = supervisor
        self._plivo = settings.plivo
        self._host, self._port = parse_listen(settings.daemon.stream_listen or "127.0.0.1:0")
        self._secret = secrets.optional("stream_secret")
        if self._plivo.stream_require_token and self._secret is None:
            raise ValueError(
                "VOICE_BRIDGE_STREAM_SECRET is not set: the stream server checks a token the XML "
                "server signs with it (plivo.stream_require_token = false only for development)"
            )
        if not self._plivo.stream_require_token:
            log.warning("stream token check is OFF (plivo.stream_require_token = false): development only")
        self._auth_token = secrets.optional("plivo_auth_token")
        if self._plivo.stream_check_signature and self._auth_token is None:
            raise ValueError(
                "PLIVO_AUTH_TOKEN is not set: the stream server checks the V3 signature Plivo puts on "
                "the WebSocket upgrade (plivo.stream_check_signature = false only for development)"
            )
        if not self._plivo.stream_check_signature:
            log.warning("stream signature check is OFF (plivo.stream_check_signature = false): "
                        "development only")
        self._nonces = NonceStore(self._plivo.replay_window_s, nonce_path(settings))
        if control is None and secrets.plivo_auth_id is not None and secrets.plivo_auth_token is not None:
            from bridge.stream.rest import PlivoRestControl

            control = PlivoRestControl(settings.plivo, secrets)
        self._control = control
        if control is None and self._plivo.stream_fallback:
            log.warning("no Plivo REST credentials (PLIVO_AUTH_ID/PLIVO_AUTH_TOKEN): calls end by closing "
                        "the stream, so Plivo speaks the <Stream> fallback line after every call")
        # A token admits one stream: a copy (leaked, or replayed) is refused while it could be valid.
        self._tokens = UsedTokens(self._plivo.stream_timeout_s + 3600)
        # One websockets server per time this daemon joined the port's SO_REUSEPORT group; the
        # last one listens unless it stepped out while busy (bridge/stream/busy_leave.py).
        self._servers: list[Server] = []
        self._current: Server | None = None  # the one listening (None: stepped out, draining)
        self._listening = False
        self._joining = False
        self._watch: asyncio.Task[None] | None = None
        self._busy = BusyLeave(settings.daemon.stream_leave_when_busy, settings.daemon.stream_rejoin_after_s,
                               self._is_busy, self._group_size)
        self.left = 0  # times it stepped out of the group while busy
        self.rejoined = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = False
        self.refused = 0

    @property
    def listening(self) -> bool:
        """Its socket is in the stream port's group (False while draining or stepped out)."""
        return self._listening

    @property
    def bound_port(self) -> int:
        if not self._servers:
            raise RuntimeError("stream server not started")
        return self._port

    @property
    def active_calls(self) -> int:
        return self.supervisor.active("stream")

    async def start(self) -> None:
        server = await self._serve()
        # a rejoin binds the same port (the configured one may be 0: the one we got)
        self._host, self._port = next(iter(server.sockets)).getsockname()[:2]
        self._servers.append(server)
        self._current = server
        self._listening = True
        log.info("stream server listening", extra={"stream": f"{self._host}:{self._port}{PATH}"})
        self._watch = asyncio.get_running_loop().create_task(self._watch_busy(), name="stream-busy-leave")

    async def _serve(self, sock: socket.socket | None = None) -> Server:
        """A websockets server on host:port, or on ``sock`` (a rejoin's, already listening)."""
        return await serve(
            self._handle,
            None if sock is not None else self._host,
            None if sock is not None else self._port,
            sock=sock,
            process_request=self._check_request,
            create_connection=StreamConnection,
            max_size=self._plivo.stream_max_message_bytes,
            compression=None,  # audio does not deflate; save the CPU
            open_timeout=10,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
            # several daemons on one host share the stream port (one stream URL): the kernel
            # spreads new connections over their listeners
            reuse_port=True,
        )

    # --- the port's SO_REUSEPORT group: leave while busy, rejoin with room ----------------

    def _is_busy(self) -> bool:
        return self.supervisor.refusal() in _BUSY_REASONS

    def _group_size(self) -> int | None:
        try:
            return count_listeners(self._host, self._port)
        except ValueError:  # an address /proc/net/tcp cannot show (a scoped IPv6 name): unknown
            return None

    def check_busy(self) -> None:
        """Leave the group if busy and another listener stays; rejoin once there is room
        (or at once if nobody listens). Called on each busy refusal, each call taken and on a
        timer (``_watch_busy``)."""
        if self._draining or not self._servers or self._joining:
            return
        action = self._busy.step(self._listening, asyncio.get_running_loop().time())
        if action == "leave":
            # One busy daemon at a time counts and leaves (a lock the daemons share): two that
            # read "2 listeners" in the same instant would otherwise both go.
            lock = try_group_lock(self._port)
            if lock is None:
                return  # another daemon is leaving now: look again on the next check
            try:
                if self._busy.group_empty(others=True):
                    return
                self._leave()
            finally:
                lock.close()
            self.left += 1
            log.info("busy: left the stream port's group, the other daemons take new streams",
                     extra={"active_calls": self.active_calls, "why": self.supervisor.refusal()})
            if self._busy.group_empty():  # the other drained or died meanwhile
                self._start_rejoin()
        elif action == "join":
            self._start_rejoin()

    def _leave(self) -> None:
        """Out of the group now, keeping the streams this listener accepted: stop accepting on
        it and shutdown(SHUT_RD) the listening socket, which on Linux unhashes it from the
        SO_REUSEPORT group at once; connections the kernel queued on it and we did not accept
        yet move to another listener with net.ipv4.tcp_migrate_req = 1 (deploy/sysctl.d),
        without it they are reset. The asyncio Server itself stays open until its connections
        are done (``_prune``): closing it now would make asyncio drop, unanswered, a connection
        it accepted in this loop pass (Server._attach asserts on a closed server)."""
        self._listening = False
        server = self._current
        self._current = None
        if server is None:
            return
        loop = asyncio.get_running_loop()
        for sock in server.sockets:
            if not loop.remove_reader(sock.fileno()):  # not asyncio's selector (uvloop): plain close
                server.server.close()
                return
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)

    def _start_rejoin(self) -> None:
        """Back in the group NOW (the socket listens, and queues connections, before the loop
        serves it: a throttled daemon may take a while to get there)."""
        if self._joining or self._listening or self._draining:
            return
        try:
            sock = listening_socket(self._host, self._port)
        except OSError as exc:
            log.error("could not rejoin the stream port %s:%s: %s", self._host, self._port, exc)
            return
        self._joining = True
        self._listening = True
        asyncio.get_running_loop().create_task(self._rejoin(sock), name="stream-rejoin")

    async def _rejoin(self, sock: socket.socket) -> None:
        try:
            server = await self._serve(sock)
        except OSError as exc:
            sock.close()
            self._listening = False
            log.error("could not serve the stream port %s:%s again: %s", self._host, self._port, exc)
            return
        finally:
            self._joining = False
        self._prune()
        self._servers.append(server)
        if self._draining:  # began draining while we bound
            server.server.close()
            self._listening = False
            return
        self._current = server
        self.rejoined += 1
        log.info("room again: rejoined the stream port's group", extra={"active_calls": self.active_calls})

    def _prune(self) -> None:
        """Forget the servers of earlier joins that have no connection left."""
        keep = []
        for server in self._servers:
            if server is not self._current and not server.handler_tasks:
                server.close(close_connections=False)
            else:
                keep.append(server)
        self._servers = keep

    async def _watch_busy(self) -> None:
        while not self._draining:
            await asyncio.sleep(_BUSY_CHECK_S * random.uniform(0.8, 1.2))  # jittered: not in step
            try:
                self.check_busy()
            except Exception:
                log.exception("stream busy check failed")

    def begin_drain(self) -> None:
        """Stop listening, so that new streams go to the other daemons sharing the port (503 to
        any still mid-handshake here); calls in progress go on."""
        self._draining = True
        self._leave()
        if self._watch is not None:
            self._watch.cancel()
        for server in self._servers:
            # _leave took the listener out of the group now; the websockets server closes on
            # the next pass (503 to any still mid-handshake), keeping open streams
            server.close(close_connections=False)

    async def stop(self, drain_timeout_s: float = 0.0) -> None:
        """Refuse new streams, let calls finish up to ``drain_timeout_s``, then end the rest
        (the daemon's drain has ended them all by now: one drain for both transports)."""
        self._draining = True
        calls = self.supervisor.calls("stream")
        if calls and drain_timeout_s > 0:
            await asyncio.wait([asyncio.ensure_future(c.wait()) for c in calls], timeout=drain_timeout_s)
        await self.supervisor.end_all("shutdown", "stream")
        self._listening = False
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for server in self._servers:
            server.close(close_connections=True)
        for server in self._servers:
            await server.wait_closed()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=AGENT_GRACE_S + 1)

    # --- per connection ----------------------------------------------------------------

    def _check_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path.rstrip("/") != PATH:
            return conn.respond(HTTPStatus.NOT_FOUND, "not found\n")
        why = None
        if self._draining:
            why = "draining"
        else:
            why = self.supervisor.refusal() or None  # at capacity, or shedding load
        if why is not None:
            CALLS_REFUSED.labels("stream", why).inc()
            self.check_busy()  # leave the group now: the next stream goes to a daemon with room
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, f"{why}\n")
        if self._plivo.stream_check_signature and self._auth_token is not None:
            verdict = verify_signature("GET", self._signed_urls(request), request.headers.get,
                                       self._auth_token, None, self._nonces)
            if not verdict.ok:
                self.refused += 1
                remote = conn.remote_address[0] if conn.remote_address else ""
                log.warning("stream upgrade refused (403): %s", verdict.reason, extra={"remote": remote})
                return conn.respond(HTTPStatus.FORBIDDEN, "forbidden\n")
        return None

    def _signed_urls(self, request: Request) -> list[str]:
        """What Plivo may have signed: https://<Host header><path>, and the configured public
        stream URLs' hosts with this path (a TLS proxy may rewrite Host)."""
        hosts = [request.headers.get("Host", "")]
        configured = [self._plivo.stream_url, *(r.stream_url for r in self._plivo.routes)]
        hosts += [urlsplit(u).netloc for u in configured if u]
        return [f"https://{host}{request.path}" for host in hosts if host]

    async def _handle(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve_stream(ws)
        finally:
            self._tasks.discard(task)

    async def _serve_stream(self, ws: ServerConnection) -> None:
        remote = ws.remote_address
        source = (str(remote[0]), int(remote[1])) if remote else ("", 0)
        try:
            start = await self._await_start(ws)
            facts = parse_extra_headers(start.extra_headers)
            token = facts.pop(TOKEN, "")
            if self._secret is not None:
                if facts.get(CALL_UUID, start.call_id) != start.call_id:
                    raise _Refused(1008, "stream facts name another call")
                if not token_valid(self._secret, start.call_id, token, facts):
                    raise _Refused(1008, "bad or missing stream token")
                if not self._tokens.claim(token):
                    raise _Refused(1008, "stream token already used")
            if self.supervisor.get("stream", start.call_id) is not None:
                # a second stream for a live call (no token to tell them apart): the first keeps it
                raise _Refused(1008, "a stream for this call is already live")
        except _Refused as exc:
            self.refused += 1
            log.warning("stream refused: %s", exc.reason, extra={"remote": source[0]})
            with contextlib.suppress(Exception):
                await ws.close(exc.code, exc.reason)
            return
        except ConnectionClosed:
            return
        if not self.supervisor.take():  # filled up (or began draining) since the upgrade
            with contextlib.suppress(Exception):
                await ws.close(1013, "busy")
            return
        if self._listening and self._is_busy():
            self.check_busy()  # this call filled the daemon: step out before the next knocks
        if not facts.get(CALL_UUID):
            facts[CALL_UUID] = start.call_id  # a stream's callId is Plivo's CallUUID
        leg = StreamLeg(ws, start, chunk_ms=self._plivo.stream_chunk_ms, lead_ms=self._plivo.stream_lead_ms,
                        control=self._control)
        info = CallInfo(
            call_id=start.call_id,
            from_uri=facts.get("From", ""),
            to_uri=facts.get("To", ""),
            source=source,
            plivo_headers=facts,
            direction="outbound" if facts.get("Direction") == "outbound" else "inbound",
        )
        call = self.supervisor.supervise(_StreamCall(ws, leg, self._control), leg, info)
        callcontext.enter(start.call_id)  # this connection's task and the agent's: call_uuid on lines
        log.info(
            "stream call started",
            extra={
                "call_id": leg.call_id,
                "stream_id": leg.stream_id,
                "from": self._shown(info.from_uri),
                "format": f"{start.media_format.encoding};rate={start.media_format.sample_rate}",
            },
        )
        reason = "error"
        try:
            leg.start_sender()
            call.start_agent()
            reason = await self._receive(ws, leg)
        finally:
            # The socket's end (a no-op when the leg ended first: the supervisor acts on that).
            leg.end(reason, "media" if reason == "media timeout" else "peer")
            await call.wait()
            ended = await leg.finished()
            with contextlib.suppress(Exception):
                await ws.close(_close_code(ended), ended.reason)

    def _shown(self, number: str) -> str:
        return number if self._settings.logging.log_phone_numbers else mask_number(number)

    async def _await_start(self, ws: ServerConnection) -> protocol.Start:
        deadline = asyncio.get_running_loop().time() + self._plivo.stream_start_timeout_s
        early = 0
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise _Refused(1008, "no start event in time")
            try:
                raw = await asyncio.wait_for(ws.recv(), remaining)
            except TimeoutError:
                raise _Refused(1008, "no start event in time") from None
            try:
                msg = protocol.parse(raw)
            except protocol.ProtocolError as exc:
                if "media format" in str(exc):
                    raise _Refused(1003, str(exc)) from None
                early += 1
                if early == 1:
                    log.warning("bad message before start: %s", exc)
                continue
            if isinstance(msg, protocol.Start):
                return msg
            early += 1
            if early == 1:
                log.warning("stream sent %s before start: ignored", type(msg).__name__.lower())
            if early > _MAX_BAD_MESSAGES:
                raise _Refused(1008, "no start event")

    async def _receive(self, ws: ServerConnection, leg: StreamLeg) -> str:
        """Read messages until the stream ends; the reason it ended.

        The media timeout is one timer per ``stream_media_timeout_s``, not one per message:
        each 20 ms message only records when media last came, and when the timer fires with
        media seen meanwhile, a new one is set from that moment."""
        media_timeout_s = self._plivo.stream_media_timeout_s
        reader = _Reader(self, ws, leg, asyncio.get_running_loop().time())
        if isinstance(ws, StreamConnection):
            ws.on_text = reader.on_text
        try:
            return await self._read_until_end(reader, leg, media_timeout_s)
        finally:
            if isinstance(ws, StreamConnection):
                ws.on_text = None

    async def _read_until_end(self, reader: _Reader, leg: StreamLeg, media_timeout_s: float) -> str:
        loop = asyncio.get_running_loop()
        while not leg.ended:
            deadline = reader.last_media + media_timeout_s
            if deadline <= loop.time():
                log.warning("no media on the stream: ending the call", extra={"call_id": leg.call_id})
                return "media timeout"
            try:
                async with asyncio.timeout_at(deadline):
                    return await reader.run()
            except TimeoutError:
                continue
        return "hangup"


def _close_code(ended: LegEnded) -> int:
    if ended.by == "owner":
        return 1001  # going away: drain or shutdown, as the websockets server closes them
    return 1000 if ended.reason in _NORMAL_ENDS else 1008


class _StreamCall:
    """The supervisor's handle on one stream call (bridge.supervisor.TransportCall)."""

    transport = "stream"
    transferred_grace_s = 0.0  # after a transfer Plivo runs the transfer XML: just close

    def __init__(self, ws: ServerConnection, leg: StreamLeg, control: CallControl | None) -> None:
        self._ws = ws
        self._leg = leg
        self._control = control

    @property
    def transferred(self) -> bool:
        return self._leg.transferred

    async def end(self, ended: LegEnded) -> None:
        if self._leg.transferred:
            # The call now runs the transfer XML: a REST hang-up would cut the caller off from
            # the human. Closing our stream is all that is left to do.
            with contextlib.suppress(Exception):
                await self._ws.close(1000, "transferred")
            return
        if ended.by == "agent":
            if self._control is not None:
                with contextlib.suppress(Exception):
                    await self._control.hangup(self._leg.call_id)
            # Without REST, closing the socket ends the call: <Stream keepCallAlive> is the
            # document's last element, so Plivo hangs up once the stream is gone.
            with contextlib.suppress(Exception):
                await self._ws.close(1000, "hangup")
            return
        with contextlib.suppress(Exception):
            await self._ws.close(_close_code(ended), ended.reason)

    def summary(self) -> dict[str, Any]:
        leg = self._leg
        return {"stream_id": leg.stream_id, "frames_in": leg.frames_in, "chunks_out": leg.chunks_out,
                "clears": leg.clears_sent}


class _Reader:
    """The receive loop of one stream, without a timeout of its own (see StreamServer._receive),
    and the fast path of ``StreamConnection.on_text`` for the messages of the 20 ms path."""

    def __init__(self, server: StreamServer, ws: ServerConnection, leg: StreamLeg, now: float) -> None:
        self._ws = ws
        self._leg = leg
        self._loop = asyncio.get_running_loop()
        self.last_media = now
        self._bad = 0
        self._failures = 0
        self._unknown: set[str] = set()

    def on_text(self, data: bytes) -> bool:
        """A whole text message as it arrives: media and Plivo's replies go to the leg here
        (True); anything else is left to ``run`` (False), which parses it again (rare)."""
        leg = self._leg
        if leg.ended:
            return False
        try:
            msg = protocol.parse(data)
        except protocol.ProtocolError:
            return False  # counted and logged by run(), as before
        if type(msg) is protocol.Media:
            self.last_media = self._loop.time()
        elif not isinstance(msg, _LEG_MESSAGES):
            return False  # stop, a second start, unknown events
        self._deliver(msg)
        return True

    def _deliver(self, msg: protocol.Message) -> None:
        """To the leg; a failure there loses that message, not the call (logged)."""
        try:
            self._leg.on_message(msg)
        except Exception:
            self._failures += 1
            if self._failures <= 3 or self._failures % 1000 == 0:
                log.exception("stream message handling failed (%d)", self._failures,
                              extra={"call_id": self._leg.call_id})

    async def run(self) -> str:
        ws, leg = self._ws, self._leg
        while not leg.ended:
            try:
                raw = await ws.recv()
            except ConnectionClosed as exc:
                if exc.rcvd is None and exc.sent is not None and exc.sent.code == 1009:
                    log.warning("stream message too big: closed", extra={"call_id": leg.call_id})
                    return "message too big"
                if exc.rcvd is None and exc.sent is None and not leg.ended:
                    # No close frame either way: the connection died (Plivo: DroppedStream).
                    log.warning("stream dropped (no close frame)", extra={"call_id": leg.call_id})
                    return "dropped"
                return "socket closed" if not leg.ended else "hangup"
            try:
                msg = protocol.parse(raw)
            except protocol.ProtocolError as exc:
                self._bad += 1
                if self._bad <= 3 or self._bad % 100 == 0:
                    log.warning("bad stream message (%d): %s", self._bad, exc, extra={"call_id": leg.call_id})
                if self._bad >= _MAX_BAD_MESSAGES:
                    return "protocol errors"
                continue
            if isinstance(msg, protocol.Media):
                self.last_media = self._loop.time()
            elif isinstance(msg, protocol.Stop):
                return "stop"
            elif isinstance(msg, protocol.Start):
                log.warning("second start on a stream: ignored", extra={"call_id": leg.call_id})
                continue
            elif isinstance(msg, protocol.Unknown):
                if msg.event not in self._unknown and len(self._unknown) < 20:
                    self._unknown.add(msg.event)
                    log.info("unknown stream event %r ignored", msg.event, extra={"call_id": leg.call_id})
                continue
            self._deliver(msg)
        return "hangup"
