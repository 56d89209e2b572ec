"""The aiohttp session for provider requests that bypass an SDK's httpx client
(llm/openai_wire.py, tts/elevenlabs_http.py), set up as that client is, not as aiohttp's
``trust_env`` would: aiohttp's reads ``~/.netrc`` on every request (Basic credentials sent to
the provider, or a refused request next to our own Authorization), does that and the proxy
lookup in the loop's default executor (two thread hops a request) and ignores ``ALL_PROXY``.

Here the proxy is chosen once per session from the environment (``HTTPS_PROXY`` /
``HTTP_PROXY`` for the URL's scheme, else ``ALL_PROXY``; ``NO_PROXY`` bypasses ``*``, host
names and domain suffixes, as httpx reads it), no netrc,
and TLS verified against certifi's CA bundle, as httpx does by default.
"""

from __future__ import annotations

import ssl
import urllib.parse
import urllib.request

import aiohttp
import certifi

from bridge.providers.base import ProviderError


def env_proxy(url: str, provider: str) -> str | None:
    """The proxy httpx would take from the environment for ``url`` (None: direct)."""
    proxies = urllib.request.getproxies_environment()
    parts = urllib.parse.urlsplit(url)
    if _bypassed(parts.hostname or "", proxies.get("no", "")):
        return None
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy:
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy  # httpx reads a bare host:port as http
    scheme = urllib.parse.urlsplit(proxy).scheme
    if scheme != "http":
        # aiohttp speaks to HTTP proxies only; going direct instead would hide the setting
        raise ProviderError(provider, f"the {scheme}:// proxy from the environment is not supported (use http://)")
    return proxy


def _bypassed(host: str, no_proxy: str) -> bool:
    """NO_PROXY: ``*``, or host names that match exactly or as a domain suffix."""
    host = host.lower().rstrip(".")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*":
            return True
        name = entry.split(":", 1)[0].lstrip(".") if not entry.startswith("[") else entry
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def client_session(
    url: str, provider: str, *, timeout: aiohttp.ClientTimeout, pool_limit: int, keepalive_s: float
) -> tuple[aiohttp.ClientSession, str | None]:
    """A session for requests to ``url``'s host, and the proxy to pass with each request.
    Build it inside the running loop."""
    proxy = env_proxy(url, provider)
    tls = ssl.create_default_context(cafile=certifi.where())
    connector = aiohttp.TCPConnector(limit=pool_limit, keepalive_timeout=keepalive_s, ssl=tls)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False), proxy


async def read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """An (error) body to its end, or its first ``cap`` bytes: a JSON error split over two
    reads must not lose its code."""
    parts: list[bytes] = []
    size = 0
    async for data in resp.content.iter_any():
        parts.append(data)
        size += len(data)
        if size >= cap:
            break
    return b"".join(parts)[:cap]
