"""A local fake of Plivo's REST API (the calls part) for tests: the real plivo SDK talks to it.

Speaks the wire protocol the SDK uses: HTTP Basic auth with auth_id/auth_token, JSON bodies,
``POST /v1/Account/{auth_id}/Call/`` -> 201 {"api_id", "message": "call fired", "request_uuid"},
``GET  /v1/Account/{auth_id}/Call/{uuid}/`` -> the call record, ``DELETE`` -> 204,
``POST /v1/Account/{auth_id}/Call/{uuid}/`` (transfer: ``legs``, ``aleg_url``) -> 202
{"message": "call transferred"}, ``POST .../Call/{uuid}/DTMF/`` (``digits``, ``leg``) -> 202
{"message": "digits sent"}; an unknown or finished call -> 404 (Plivo's "Transfer a call" and
"Send digits" pages). A transfer moves the call to its new URL: the call record keeps running
(``call_status`` stays in-progress) and :attr:`FakePlivoApi.on_transfer` is told.
Listing, as Plivo documents it (https://www.plivo.com/docs/voice/api/call/ "List all calls",
"List all queued calls", "List all live calls"; SDK ``calls.list``, ``queued_calls.list_ids``,
``live_calls.list_ids``):
``GET /Call/?status=queued`` / ``?status=live`` -> {"api_id", "calls": [ids]}, and
``GET /Call/{id}/?status=queued|live`` -> that call's details ({"to", "from", "call_status",
"request_uuid", ...}); ``GET /Call/`` without status -> the call records (CDRs) of ended calls,
{"api_id", "meta": {"count", "limit", "offset", "next", "previous"}, "objects": [...]}, filtered
by ``to_number`` / ``from_number``, numbers without "+" as Plivo writes them.
A created call stays queued until a test moves it on (:meth:`FakePlivoApi.go_live`,
:meth:`FakePlivoApi.end_call`). Every request is recorded (method, path, headers, parsed JSON
body) for tests to assert on. Failures can be queued with :meth:`FakePlivoApi.fail_next`.
Binds 127.0.0.1 on an ephemeral port (kept across stop()/start(), so tests can take it down
and bring it back).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

_CALL_PATH = re.compile(
    r"^/v1/Account/(?P<account>[A-Z0-9]+)/Call/(?:(?P<uuid>[0-9a-f-]+)/(?P<dtmf>DTMF/)?)?$"
)
_LEGS = ("aleg", "bleg", "both")
_DIGITS = re.compile(r"[0-9*#A-Dw W]+")  # Plivo: 0-9, *, #, A-D; w/W wait half a second / one second
_REQUIRED = ("from", "to", "answer_url")


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON (None if the body was empty or not JSON)
    status: int = 0


@dataclass
class FakePlivoApi:
    auth_id: str = "MAXXXXXXXXXXXXXXXXXX"
    auth_token: str = "fake-auth-token"
    host: str = "127.0.0.1"
    port: int = 0  # 0: an ephemeral port, remembered after the first start()
    # Called (in the server thread) with each accepted call-create body and its request_uuid.
    on_call: Callable[[dict[str, Any], str], None] | None = None
    # Called (in the server thread) with each accepted transfer's call UUID and body.
    on_transfer: Callable[[str, dict[str, Any]], None] | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    _failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://{self.host}:{self._server.server_address[1]}"

    def fail_next(self, status: int, error: str = "fake failure") -> None:
        """The next API request gets this status and {"error": error}."""
        with self._lock:
            self._failures.append((status, {"api_id": str(uuid.uuid4()), "error": error}))

    def call_creates(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.path.endswith("/Call/")]

    def start(self) -> FakePlivoApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # request lines carry numbers in paths/bodies: keep them out of stderr

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                record = RecordedRequest(self.command, self.path, dict(self.headers.items()), body)
                status, payload = api._respond(record)
                record.status = status
                with api._lock:
                    api.requests.append(record)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _handle

        self._server = _QuietServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-plivo-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakePlivoApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # protocol -------------------------------------------------------------------------------
    def _authorised(self, headers: dict[str, str]) -> bool:
        value = headers.get("Authorization", "")
        if not value.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.auth_id and password == self.auth_token

    def _respond(self, req: RecordedRequest) -> tuple[int, dict[str, Any] | None]:
        api_id = str(uuid.uuid4())
        if not self._authorised(req.headers):
            return 401, {"api_id": api_id, "error": "authentication failed"}
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            return failure
        path, _, query = req.path.partition("?")
        params = {k: v[0] for k, v in parse_qs(query).items()}
        match = _CALL_PATH.match(path)
        if match is None or match["account"] != self.auth_id:
            return 404, {"api_id": api_id, "error": "not found"}
        if req.method == "POST" and match["uuid"] is None:
            return self._create(req, api_id)
        if req.method == "GET" and match["uuid"] is None:
            return self._list(params, api_id)
        with self._lock:
            call = self._lookup(match["uuid"] or "")
        if call is None:
            return 404, {"api_id": api_id, "error": "call not found"}
        if req.method == "GET" and not match["dtmf"]:
            wanted = params.get("status")
            if wanted is not None and _kind(call) != wanted:
                return 404, {"api_id": api_id, "error": "call not found"}
            return 200, {"api_id": api_id, **_public(call)}
        if call.get("call_status") in ("completed", "failed", "busy", "no-answer", "cancel"):
            return 404, {"api_id": api_id, "error": "call not found"}  # only live calls are controlled
        if req.method == "POST" and match["dtmf"]:
            return self._digits(req, api_id)
        if req.method == "DELETE" and not match["dtmf"]:
            with self._lock:
                call.update(call_status="completed", hangup_cause_name="Normal Hangup", end_time=_stamp())
            return 204, None
        if req.method == "POST":
            return self._transfer(req, api_id, match["uuid"], call)
        return 405, {"api_id": api_id, "error": "method not allowed"}

    def _lookup(self, some_id: str) -> dict[str, Any] | None:
        call = self.calls.get(some_id)
        if call is None:
            call = next((c for c in self.calls.values() if c.get("call_uuid") == some_id), None)
        return call

    def _list(self, params: dict[str, str], api_id: str) -> tuple[int, dict[str, Any]]:
        limit = int(params.get("limit") or 20)
        offset = int(params.get("offset") or 0)
        status = params.get("status")
        with self._lock:
            calls = list(self.calls.values())
        if status in ("queued", "live"):
            key = "request_uuid" if status == "queued" else "call_uuid"
            ids = [c[key] for c in calls if _kind(c) == status]
            return 200, {"api_id": api_id, "calls": ids[offset:offset + limit]}
        ended = [c for c in calls if _kind(c) == "ended"]
        for name, field_ in (("to_number", "to_number"), ("from_number", "from_number")):
            if params.get(name):
                ended = [c for c in ended if _digits(c[field_]) == _digits(params[name])]
        ended.sort(key=lambda c: c["initiation_time"], reverse=True)  # newest first, as Plivo lists
        page = ended[offset:offset + limit]
        meta = {"count": len(ended), "limit": limit, "offset": offset, "previous": None,
                "next": None if offset + limit >= len(ended) else f"offset={offset + limit}"}
        return 200, {"api_id": api_id, "meta": meta, "objects": [_cdr(c) for c in page]}

    # test controls: move a call along its life ----------------------------------------------
    def go_live(self, request_uuid: str) -> str:
        """The call is ringing/answered: it leaves the queued list for the live list."""
        with self._lock:
            call = self.calls[request_uuid]
            call["call_status"] = "in-progress"
            return str(call["call_uuid"])

    def end_call(self, request_uuid: str, call_status: str, hangup_cause_name: str,
                 bill_duration: int = 0) -> dict[str, Any]:
        """The call ended: it becomes a call record (what the hangup callback would report)."""
        with self._lock:
            call = self.calls[request_uuid]
            call.update(call_status=call_status, hangup_cause_name=hangup_cause_name,
                        bill_duration=bill_duration, end_time=_stamp())
            return dict(call)

    def _transfer(self, req: RecordedRequest, api_id: str, call_uuid: str,
                  call: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = req.body if isinstance(req.body, dict) else {}
        legs = body.get("legs", "aleg")
        if legs not in _LEGS:
            return 400, {"api_id": api_id, "error": "legs must be aleg, bleg or both"}
        for leg in ("aleg", "bleg"):
            if legs in (leg, "both") and not body.get(f"{leg}_url"):
                return 400, {"api_id": api_id, "error": f"{leg}_url is required when legs is {legs}"}
            method = body.get(f"{leg}_method", "POST")
            if method not in ("GET", "POST"):
                return 400, {"api_id": api_id, "error": f"{leg}_method must be GET or POST"}
        with self._lock:
            call["transferred_to"] = body.get("aleg_url", "")
        if self.on_transfer is not None:
            self.on_transfer(call_uuid, dict(body))
        return 202, {"api_id": api_id, "message": "call transferred"}

    def _digits(self, req: RecordedRequest, api_id: str) -> tuple[int, dict[str, Any]]:
        body = req.body if isinstance(req.body, dict) else {}
        digits = body.get("digits", "")
        if not isinstance(digits, str) or not _DIGITS.fullmatch(digits):
            return 400, {"api_id": api_id, "error": "digits: only 0-9, *, #, A-D, w, W"}
        if body.get("leg", "aleg") not in ("aleg", "bleg"):
            return 400, {"api_id": api_id, "error": "leg must be aleg or bleg"}
        return 202, {"api_id": api_id, "message": "digits sent"}

    def _create(self, req: RecordedRequest, api_id: str) -> tuple[int, dict[str, Any]]:
        body = req.body if isinstance(req.body, dict) else {}
        missing = [k for k in _REQUIRED if not body.get(k)]
        if missing:
            return 400, {"api_id": api_id, "error": f"missing parameter(s): {', '.join(missing)}"}
        request_uuid = str(uuid.uuid4())
        with self._lock:
            self.calls[request_uuid] = {
                "request_uuid": request_uuid, "call_uuid": str(uuid.uuid4()),
                "from_number": body["from"], "to_number": body["to"],
                "call_direction": "outbound", "call_status": "queued", "answer_url": body["answer_url"],
                "hangup_url": body.get("hangup_url", ""), "initiation_time": _stamp(), "end_time": None,
                "hangup_cause_name": "", "bill_duration": 0,
            }
        if self.on_call is not None:
            self.on_call(dict(body), request_uuid)
        return 201, {"api_id": api_id, "message": "call fired", "request_uuid": request_uuid}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-request (tests kill them) is not an error here


_LIVE = ("ringing", "in-progress")


def _kind(call: dict[str, Any]) -> str:
    status = call["call_status"]
    return "queued" if status == "queued" else "live" if status in _LIVE else "ended"


def _public(call: dict[str, Any]) -> dict[str, Any]:
    """A call's details as the GET answers them (queued/live details name it to/from)."""
    return {**call, "to": _digits(call.get("to_number", "")), "from": _digits(call.get("from_number", "")),
            "direction": "outbound"}


def _cdr(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "call_uuid": call["call_uuid"], "call_direction": "outbound",
        "from_number": _digits(call["from_number"]), "to_number": _digits(call["to_number"]),
        "initiation_time": call["initiation_time"], "end_time": call["end_time"],
        "bill_duration": call["bill_duration"], "hangup_cause_name": call["hangup_cause_name"],
        "call_state": call["call_status"].upper(), "resource_uri": "",
    }


def _digits(text: str) -> str:
    return "".join(c for c in str(text) if c.isdigit())


def _stamp() -> str:
    """Plivo's record time format, "2026-12-01 16:40:00.123456+00:00" (sub-second kept so a
    test run in one second still orders its calls)."""
    return datetime.now(UTC).isoformat(sep=" ")
