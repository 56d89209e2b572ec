"""Who may call: trusted CIDRs, digest verification (MD5 and SHA-256, computed here by hand per
RFC 7616), the offered algorithms and their order, nonce expiry (stale), nonces bound to the
source, replayed nonce counts, lockout after repeated failures, and the per-source flood limit."""

from __future__ import annotations

import hashlib

from aiosipua.headers import parse_auth

from bridge.settings.sip import TrustSettings
from bridge.sip.trust import NONCE_TTL_S, TrustPolicy

USER, PASSWORD, REALM = "plivo-in", "hunter2", "voice-bridge"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _policy(**kw: object) -> tuple[TrustPolicy, Clock]:
    settings = TrustSettings(trusted_cidrs=["10.1.0.0/16"], inbound_user=USER, realm=REALM, **kw)  # type: ignore[arg-type]
    policy = TrustPolicy(settings, PASSWORD)
    clock = Clock()
    policy._now = clock  # the policy reads time through this seam
    return policy, clock


IP = "192.0.2.1"


def _authorization(challenge: str, algorithm: str, password: str = PASSWORD, uri: str = "sip:agent@x",
                   nc: int | None = 1) -> str:
    """What a UA answers to `challenge` (RFC 7616 §3.4.1); nc=None: RFC 2069 style, no qop."""
    params = parse_auth(challenge).params
    hasher = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]

    def h(s: str) -> str:
        return hasher(s.encode()).hexdigest()

    nonce, cnonce = params["nonce"], "0a4f113b"
    ha1, ha2 = h(f"{USER}:{REALM}:{password}"), h(f"INVITE:{uri}")
    if nc is None:
        return (f'Digest username="{USER}", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
                f'response="{h(f"{ha1}:{nonce}:{ha2}")}", algorithm={algorithm}')
    ncs = f"{nc:08x}"
    response = h(f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{USER}", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm={algorithm}, qop=auth, nc={ncs}, cnonce="{cnonce}"')


def test_cidrs_and_added_hosts_are_trusted() -> None:
    policy, _ = _policy()
    assert policy.is_trusted("10.1.200.3")
    assert not policy.is_trusted("10.2.0.1")
    assert not policy.is_trusted("not-an-ip")
    policy.trust_host("198.51.100.4")  # e.g. the registrar
    assert policy.is_trusted("198.51.100.4")


def test_challenges_offer_md5_alone_by_default_or_the_configured_list_in_order() -> None:
    policy, _ = _policy()
    (only,) = policy.challenges(IP)
    assert "algorithm=MD5" in only
    assert 'qop="auth"' in only and f'realm="{REALM}"' in only and "stale" not in only
    # An algorithm not offered is not accepted either.
    assert not policy.verify(IP, "INVITE", _authorization(only.replace("MD5", "SHA-256"), "SHA-256"))
    policy, _ = _policy(digest_algorithms=["SHA-256", "MD5"])
    first, second = policy.challenges(IP)
    assert "algorithm=SHA-256" in first and "algorithm=MD5" in second


def test_digest_md5_and_sha256_verify() -> None:
    policy, _ = _policy(digest_algorithms=["MD5", "SHA-256"])
    md5, sha = policy.challenges(IP)
    assert policy.verify(IP, "INVITE", _authorization(sha, "SHA-256"))
    assert policy.verify(IP, "INVITE", _authorization(md5, "MD5", nc=2))  # same nonce: next count
    assert not policy.verify(IP, "INVITE", _authorization(md5, "MD5", password="wrong", nc=3))
    assert not policy.verify(IP, "INVITE", None)
    assert not policy.verify(IP, "INVITE", "Basic Zm9vOmJhcg==")
    assert not policy.verify(IP, "INVITE", "Digest garbage")


def test_a_replayed_authorization_is_refused_and_counts_as_a_failure() -> None:
    policy, _ = _policy(auth_fail_limit=3)
    md5 = policy.challenges(IP)[0]
    captured = _authorization(md5, "MD5", nc=1)
    assert policy.verify(IP, "INVITE", captured)
    assert not policy.verify(IP, "INVITE", captured)  # the same header again: a replay
    assert policy.verify(IP, "INVITE", _authorization(md5, "MD5", nc=5))  # counting up is fine
    assert not policy.verify(IP, "INVITE", _authorization(md5, "MD5", nc=4))  # rewound
    assert not policy.verify(IP, "INVITE", _authorization(md5, "MD5", nc=5))
    assert policy.locked_out(IP)  # three replays: the source is locked out like a guesser


def test_without_qop_a_nonce_is_good_once() -> None:
    policy, _ = _policy()
    md5 = policy.challenges(IP)[0]
    old_style = _authorization(md5, "MD5", nc=None)
    assert policy.verify(IP, "INVITE", old_style)
    assert not policy.verify(IP, "INVITE", old_style)


def test_a_nonce_is_bound_to_the_source_it_was_issued_to() -> None:
    policy, _ = _policy()
    md5 = policy.challenges("192.0.2.1")[0]
    assert not policy.verify("198.51.100.7", "INVITE", _authorization(md5, "MD5"))  # captured, sent elsewhere
    assert policy.verify("192.0.2.1", "INVITE", _authorization(md5, "MD5"))


def test_forged_and_stale_nonces_fail() -> None:
    policy, clock = _policy()
    md5 = policy.challenges(IP)[0]
    forged = md5.replace('nonce="', 'nonce="1')
    assert not policy.verify(IP, "INVITE", _authorization(forged, "MD5"))
    clock.t += NONCE_TTL_S + 1
    late = policy.verify(IP, "INVITE", _authorization(md5, "MD5"))
    assert not late and late.stale  # right password, old nonce: re-challenge with stale=true
    assert "stale=true" in policy.challenges(IP, stale=True)[0]
    bad = policy.verify(IP, "INVITE", _authorization(md5, "MD5", password="wrong"))
    assert not bad and not bad.stale
    assert policy.verify(IP, "INVITE", _authorization(policy.challenges(IP)[0], "MD5"))


def test_repeated_failures_lock_the_source_out_for_a_while() -> None:
    policy, clock = _policy(auth_fail_limit=3, auth_fail_window_s=60, lockout_s=30)
    md5 = policy.challenges("192.0.2.66")[0]
    for _ in range(3):
        assert not policy.verify("192.0.2.66", "INVITE", _authorization(md5, "MD5", password="nope"))
    assert policy.locked_out("192.0.2.66")
    assert not policy.locked_out("192.0.2.67")  # per source
    clock.t += 31
    assert not policy.locked_out("192.0.2.66")


def test_flood_limit_rejects_then_goes_silent_and_spares_trusted_sources() -> None:
    policy, clock = _policy(rate_per_source=2.0, burst_per_source=3)
    verdicts = [policy.rate("192.0.2.9") for _ in range(8)]
    assert verdicts == ["ok"] * 3 + ["reject"] * 3 + ["drop"] * 2
    assert all(policy.rate("10.1.0.5") == "ok" for _ in range(100))
    clock.t += 10  # refilled: 2 per second, capped at the burst
    assert [policy.rate("192.0.2.9") for _ in range(3)] == ["ok"] * 3
