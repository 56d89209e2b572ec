"""Who may call us: trusted networks (Plivo's edge, the registrar, your PBX), digest auth
for everyone else (RFC 7616, MD5 and SHA-256 in a configured order; nonces bound to the
source address, every nonce count accepted once so a captured header cannot be replayed), a
per-source flood limit and a lockout after repeated failed authentications."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from dataclasses import dataclass

from aiosipua.headers import parse_auth

from bridge.settings.sip import TrustSettings

NONCE_TTL_S = 300.0
_HASH = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of checking an Authorization header; true only when it is accepted."""

    ok: bool
    stale: bool = False  # right credentials, expired nonce: challenge again with stale=true

    def __bool__(self) -> bool:
        return self.ok


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
        self._seen_nc: dict[str, tuple[int, int]] = {}  # nonce -> (issued, highest nc), oldest first
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
    def challenges(self, ip: str, *, stale: bool = False) -> list[str]:
        """WWW-Authenticate values, one per configured algorithm in the configured order (MD5
        alone by default: some UAs, baresip 1.0 among them, give up when SHA-256 is offered
        at all). The nonce is bound to the source address and lives NONCE_TTL_S; stale=true
        tells a UA whose nonce expired to retry without asking its user (RFC 7616 §3.3)."""
        nonce = self._nonce(ip)
        base = f'realm="{self._s.realm}", nonce="{nonce}", qop="auth"'
        if stale:
            base += ", stale=true"
        return [f"Digest {base}, algorithm={alg}" for alg in self._s.digest_algorithms]

    def _nonce(self, ip: str, stamp: int | None = None) -> str:
        stamp = int(self._now()) if stamp is None else stamp
        mac = hmac.new(self._key, f"{stamp}|{ip}".encode(), hashlib.sha256).hexdigest()[:24]
        return f"{stamp:x}.{mac}"

    def _nonce_stamp(self, ip: str, nonce: str) -> int | None:
        """The nonce's issue time if we issued it to this source, else None."""
        stamp_hex, _, _ = nonce.partition(".")
        try:
            stamp = int(stamp_hex, 16)
        except ValueError:
            return None
        return stamp if hmac.compare_digest(self._nonce(ip, stamp), nonce) else None

    def verify(self, ip: str, method: str, authorization: str | None) -> AuthResult:
        """Check an Authorization header; failures (replays included) count towards the
        lockout. A correct answer to an expired nonce is `stale`, not a failure."""
        if not authorization or not self.can_challenge:
            return AuthResult(False)
        result = self._check(ip, method, authorization)
        if not result and not result.stale:
            self._fail(ip)
        return result

    def _check(self, ip: str, method: str, authorization: str) -> AuthResult:
        try:
            cred = parse_auth(authorization)
        except (ValueError, IndexError, KeyError):
            return AuthResult(False)
        p = cred.params
        if cred.scheme.lower() != "digest" or p.get("username") != self._s.inbound_user:
            return AuthResult(False)
        algorithm = p.get("algorithm", "MD5").upper()
        if p.get("realm") != self._s.realm or algorithm not in self._s.digest_algorithms:
            return AuthResult(False)
        nonce = p.get("nonce", "")
        stamp = self._nonce_stamp(ip, nonce)  # another source's nonce fails here
        if stamp is None:
            return AuthResult(False)
        hasher = _HASH[algorithm]

        def h(s: str) -> str:
            return hasher(s.encode()).hexdigest()

        ha1 = h(f"{self._s.inbound_user}:{self._s.realm}:{self._password}")
        ha2 = h(f"{method}:{p.get('uri', '')}")
        qop = p.get("qop")
        if qop:
            nc_text = p.get("nc", "")
            if qop != "auth" or not re.fullmatch(r"[0-9a-fA-F]{8}", nc_text):
                return AuthResult(False)
            nc = int(nc_text, 16)
            expected = h(f"{ha1}:{nonce}:{nc_text}:{p.get('cnonce', '')}:auth:{ha2}")
        else:  # RFC 2069 style: no nonce count, so the nonce itself is single-use
            nc = 1
            expected = h(f"{ha1}:{nonce}:{ha2}")
        if not hmac.compare_digest(expected, p.get("response", "")):
            return AuthResult(False)
        if self._now() - stamp > NONCE_TTL_S:
            return AuthResult(False, stale=True)
        return AuthResult(self._count(nonce, stamp, nc))

    def _count(self, nonce: str, stamp: int, nc: int) -> bool:
        """Each nonce count is good once, counting up (RFC 7616 §3.4.5): a captured header
        replayed (same nc) or rewound is refused."""
        cutoff = self._now() - NONCE_TTL_S
        while self._seen_nc:  # oldest first: forget the nonces that expired
            oldest = next(iter(self._seen_nc))
            if self._seen_nc[oldest][0] >= cutoff:
                break
            del self._seen_nc[oldest]
        _, last = self._seen_nc.get(nonce, (stamp, 0))
        if nc <= last:
            return False
        self._seen_nc[nonce] = (stamp, nc)
        return True

    def _fail(self, ip: str) -> None:
        now = self._now()
        window = [t for t in self._fails.get(ip, []) if now - t < self._s.auth_fail_window_s]
        window.append(now)
        self._fails[ip] = window
        if len(window) >= self._s.auth_fail_limit:
            self._locked[ip] = now + self._s.lockout_s
            self._fails.pop(ip, None)
