"""REGISTER to a Plivo SIP endpoint (or any registrar): digest auth (MD5/SHA-256, qop=auth),
refresh before expiry, retry with backoff, unregister on shutdown (RFC 3261 §10).

Requests go out of the daemon's own SIP socket, so the registrar's INVITEs reach the
address it saw our REGISTER come from (the NAT binding, too)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import TYPE_CHECKING

from aiosipua import SipResponse
from aiosipua.auth import SipDigestAuth

from bridge.metrics import REGISTRATION_STATE
from bridge.settings import Secrets
from bridge.settings.sip import SipSettings
from bridge.sip.credentials import answer_challenge
from bridge.sip.transactions import TransactionTimeout
from bridge.sip.transport import Peer, resolve
from bridge.sip.wire import ALLOW, new_branch, new_call_id, new_request, new_tag

if TYPE_CHECKING:
    from bridge.sip.server import SipServer

log = logging.getLogger(__name__)


class RegistrationClient:
    def __init__(self, settings: SipSettings, secrets: Secrets, server: SipServer) -> None:
        self._s = settings
        self._r = settings.registration
        self._server = server
        self._auth = SipDigestAuth(self._r.user, secrets.optional("sip_password") or "")
        self._call_id = ""
        self._tag = new_tag()
        self._cseq = 0
        self._task: asyncio.Task[None] | None = None
        self._dest: tuple[str, int] | None = None
        self.state = "disabled"
        self.expires_at = 0.0
        self.last_error = ""

    async def start(self) -> None:
        if not self._r.enabled:
            return
        if not self._r.user:
            raise ValueError("sip.registration.user: required when registration is enabled")
        self.state = "registering"
        self._call_id = new_call_id(self._s.user_agent.replace(" ", "-"))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sip-registration")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._task = None
        if self.state == "registered":
            with contextlib.suppress(TransactionTimeout, OSError, ValueError):
                await asyncio.wait_for(self._register(0), 4.0)
        self._set_state("unregistered")

    def _set_state(self, state: str) -> None:
        self.state = state
        REGISTRATION_STATE.set(1 if state == "registered" else 0)

    async def _run(self) -> None:
        delay = self._r.retry_min_s
        while True:
            try:
                granted = await self._register(self._r.expires_s)
                self._set_state("registered")
                self.last_error = ""
                delay = self._r.retry_min_s
                # Refresh a margin before expiry: the larger of the fixed margin and 10 %.
                wait = max(granted - max(self._r.refresh_margin_s, granted * 0.1), 1.0)
                loop = asyncio.get_running_loop()
                self.expires_at = loop.time() + granted
                log.info("registered", extra={"registrar": self._r.registrar, "expires_s": granted})
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                raise
            except (TransactionTimeout, OSError, ValueError, RegistrationRefused) as exc:
                self._set_state("failed")
                self.last_error = str(exc)
                log.warning("registration failed, retrying in %.0f s: %s", delay, exc,
                            extra={"registrar": self._r.registrar})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._r.retry_max_s)

    async def _destination(self) -> tuple[str, int]:
        host, _, port = self._r.registrar.partition(":")
        dest = await resolve(host, int(port) if port else 5060)
        self._server.trust.trust_host(dest[0])  # the registrar's INVITEs are trusted
        return dest

    async def _register(self, expires: int) -> int:
        """One REGISTER exchange (answering one challenge); returns the granted expiry."""
        dest = await self._destination()
        peer = Peer("udp", dest)
        auth_header: tuple[str, str] | None = None
        for _attempt in range(2):
            resp = await self._send(dest, peer, expires, auth_header)
            code = resp.status_code
            if 200 <= code < 300:
                return _granted(resp, expires)
            if code in (401, 407) and auth_header is None:
                auth_header = answer_challenge(self._auth, resp, "REGISTER", self._req_uri)
                if auth_header is None:
                    raise RegistrationRefused(f"{code}: challenge we cannot answer")
                continue
            if code == 423:  # Interval Too Brief: take the registrar's minimum
                min_exp = resp.get_header("min-expires")
                if min_exp and min_exp.strip().isdigit():
                    expires = int(min_exp)
                    continue
            raise RegistrationRefused(f"{code} {resp.reason_phrase}")
        raise RegistrationRefused("credentials rejected")

    async def _send(self, dest: tuple[str, int], peer: Peer, expires: int,
                    auth: tuple[str, str] | None) -> SipResponse:
        domain = self._r.domain or self._r.registrar.split(":", 1)[0]
        local_ip = self._server.local_ip_for(dest[0])
        branch = new_branch()
        self._cseq += 1
        aor = f"<sip:{self._r.user}@{domain}>"
        req = new_request("REGISTER", f"sip:{domain}", transport="udp", host=local_ip,
                          port=self._server.bound_port, branch=branch, from_=f"{aor};tag={self._tag}",
                          to=aor, call_id=self._call_id, cseq=self._cseq)
        req.set_header("Contact", f"<sip:{self._r.user}@{local_ip}:{self._server.bound_port};transport=udp>")
        req.set_header("Expires", str(expires))
        req.set_header("User-Agent", self._s.user_agent)
        req.set_header("Allow", ALLOW)
        if auth is not None:
            req.set_header(auth[0], auth[1])
        self._req_uri = req.uri
        return await self._server.tx.request(bytes(req), branch, "REGISTER", peer, dest)


class RegistrationRefused(RuntimeError):
    """The registrar answered with a final error."""


def _granted(resp: SipResponse, asked: int) -> int:
    for contact in resp.get_header_values("contact"):
        m = re.search(r";\s*expires\s*=\s*(\d+)", contact, re.IGNORECASE)
        if m:
            return int(m.group(1))
    value = resp.get_header("expires")
    if value and value.strip().isdigit():
        return int(value)
    return asked
