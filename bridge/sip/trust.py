"""Who may call us: trusted networks (Plivo's edge, the registrar, your PBX), digest auth
for everyone else (RFC 7616, MD5 and SHA-256), a per-source flood limit and a lockout after
repeated failed authentications."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass

from aiosipua.headers import parse_auth

from bridge.settings.sip import TrustSettings

NONCE_TTL_S = 300.0
_HASH = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class TrustPolicy:
    def __init__(self, settings: TrustSettings, inbound_password: str | None) -> None:
        self._s = settings
        self._nets = [ipaddress.ip_network(c, strict=False) for c in settings.trusted_cidrs]
        self._extra: set[str] = set()
        self._password = inbound_password
        self._key = secrets.token_bytes(16)
        self._buckets: dict[str, _Bucket] = {}
        self._fails: dict[str, list[float]] = {}
        self._locked: dict[str, float] = {}
        self._now = time.monotonic

    def trust_host(self, ip: str) -> None:
        """Also trust this address (the registrar we registered with: calls come from it)."""
        self._extra.add(ip)

    def is_trusted(self, ip: str) -> bool:
        if ip in self._extra:
            return True
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._nets)

    @property
    def can_challenge(self) -> bool:
        return bool(self._s.inbound_user and self._password)

    # -- flood limit -------------------------------------------------------------------
    def rate(self, ip: str) -> str:
        """'ok', 'reject' (answer 503) or 'drop' (silence) for a request outside a dialog.

        Token bucket per source; trusted sources are exempt. Refusals drive the bucket below
        zero, and a source that keeps flooding past -burst gets silence, not 503s: answering
        a flood at full rate would make us an amplifier."""
        if self.is_trusted(ip):
            return "ok"
        now = self._now()
        b = self._buckets.get(ip)
        if b is None:
            if len(self._buckets) > 50_000:  # bounded memory under a spoofed-source flood
                self._buckets.clear()
            b = self._buckets[ip] = _Bucket(float(self._s.burst_per_source), now)
        b.tokens = min(float(self._s.burst_per_source), b.tokens + (now - b.stamp) * self._s.rate_per_source)
        b.stamp = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return "ok"
        if b.tokens > -float(self._s.burst_per_source):
            b.tokens -= 1.0
            return "reject"
        return "drop"

    def locked_out(self, ip: str) -> bool:
        until = self._locked.get(ip)
        if until is None:
            return False
        if self._now() >= until:
            del self._locked[ip]
            return False
        return True

    # -- digest ------------------------------------------------------------------------
    def challenges(self) -> list[str]:
        """WWW-Authenticate values, SHA-256 first (RFC 8760), MD5 for older UAs."""
        nonce = self._nonce()
        base = f'realm="{self._s.realm}", nonce="{nonce}", qop="auth"'
        return [f"Digest {base}, algorithm=SHA-256", f"Digest {base}, algorithm=MD5"]

    def _nonce(self, stamp: int | None = None) -> str:
        stamp = int(self._now()) if stamp is None else stamp
        mac = hmac.new(self._key, str(stamp).encode(), hashlib.sha256).hexdigest()[:24]
        return f"{stamp:x}.{mac}"

    def _nonce_ok(self, nonce: str) -> bool:
        stamp_hex, _, _ = nonce.partition(".")
        try:
            stamp = int(stamp_hex, 16)
        except ValueError:
            return False
        if not hmac.compare_digest(self._nonce(stamp), nonce):
            return False
        return self._now() - stamp <= NONCE_TTL_S

    def verify(self, ip: str, method: str, authorization: str | None) -> bool:
        """Check an Authorization header; failures count towards the lockout."""
        if not authorization or not self.can_challenge:
            return False
        ok = self._check(method, authorization)
        if not ok:
            self._fail(ip)
        return ok

    def _check(self, method: str, authorization: str) -> bool:
        try:
            cred = parse_auth(authorization)
        except (ValueError, IndexError, KeyError):
            return False
        p = cred.params
        if cred.scheme.lower() != "digest" or p.get("username") != self._s.inbound_user:
            return False
        if p.get("realm") != self._s.realm or not self._nonce_ok(p.get("nonce", "")):
            return False
        hasher = _HASH.get(p.get("algorithm", "MD5").upper())
        if hasher is None:
            return False

        def h(s: str) -> str:
            return hasher(s.encode()).hexdigest()

        ha1 = h(f"{self._s.inbound_user}:{self._s.realm}:{self._password}")
        ha2 = h(f"{method}:{p.get('uri', '')}")
        if p.get("qop"):
            if p.get("qop") != "auth":
                return False
            expected = h(f"{ha1}:{p['nonce']}:{p.get('nc', '')}:{p.get('cnonce', '')}:auth:{ha2}")
        else:
            expected = h(f"{ha1}:{p['nonce']}:{ha2}")
        return hmac.compare_digest(expected, p.get("response", ""))

    def _fail(self, ip: str) -> None:
        now = self._now()
        window = [t for t in self._fails.get(ip, []) if now - t < self._s.auth_fail_window_s]
        window.append(now)
        self._fails[ip] = window
        if len(window) >= self._s.auth_fail_limit:
            self._locked[ip] = now + self._s.lockout_s
            self._fails.pop(ip, None)
