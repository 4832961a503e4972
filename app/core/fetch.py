"""Fetching user-supplied URLs (swap inputs, webhook targets) without becoming an SSRF proxy.

Every hop is resolved here, refused when any address is not public, and then connected to
the very address that was vetted (the URL's host is swapped for the IP, with the original
``Host`` header and TLS server name), so a DNS answer that changes between the check and
the connect (DNS rebinding) cannot steer us into the internal network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass

import httpx

from app.core.errors import PayloadTooLarge, UrlFetchFailed, UrlNotAllowed

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "SwapMeter-Fetch/1"

# Ranges that ``ipaddress`` does not flag on every Python version but that must never be
# reached from a public service: CGNAT (RFC 6598), "this network", IETF protocol
# assignments and benchmarking.
_EXTRA_BLOCKED_V4 = (
    ipaddress.IPv4Network("100.64.0.0/10"),
    ipaddress.IPv4Network("0.0.0.0/8"),
    ipaddress.IPv4Network("192.0.0.0/24"),
    ipaddress.IPv4Network("198.18.0.0/15"),
)
_UNIQUE_LOCAL_V6 = ipaddress.IPv6Network("fc00::/7")
# Deprecated (RFC 3879) but still routed on some networks; Python does not call it private.
_SITE_LOCAL_V6 = ipaddress.IPv6Network("fec0::/10")
# NAT64 gateways translate these to the embedded IPv4 address, so that address decides.
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be reached from here, or None when it is a public address.

    IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4, Teredo) are judged by the
    IPv4 address they lead to.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = None
        if ip.ipv4_mapped is not None:
            embedded = ip.ipv4_mapped
        elif ip in _NAT64_LOCAL_USE:
            return "NAT64 local-use"
        elif ip in _NAT64_WELL_KNOWN:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.sixtofour is not None:
            embedded = ip.sixtofour
        elif ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is not None:
            inner = blocked_reason(embedded)
            return f"IPv4 {inner} behind IPv6" if inner else None
        if ip in _UNIQUE_LOCAL_V6:
            return "unique-local"
        if ip in _SITE_LOCAL_V6:
            return "site-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and any(ip in net for net in _EXTRA_BLOCKED_V4):
        return "shared or special-purpose"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


@dataclass(frozen=True)
class VettedURL:
    """A URL whose host resolved to ``addresses``, all of them allowed to be reached."""

    url: httpx.URL
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")

    @property
    def server_name(self) -> str:
        """The name TLS must present and be verified against (SNI), not the pinned IP."""
        return self.url.raw_host.decode("ascii")

    def pinned_url(self, address: str) -> httpx.URL:
        return self.url.copy_with(host=address)


def parse_url(url: str | httpx.URL) -> httpx.URL:
    """Parse and check the parts that need no network: scheme, host, no credentials."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise UrlNotAllowed("The URL is not valid") from None
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise UrlNotAllowed("Only http and https URLs are accepted")
    if not parsed.host:
        raise UrlNotAllowed("The URL has no host")
    if parsed.userinfo:
        # Credentials in URLs end up in logs and, after a redirect, at the wrong host.
        raise UrlNotAllowed("URLs with embedded credentials are not accepted")
    return parsed


def _port_of(url: httpx.URL) -> int:
    return url.port or DEFAULT_PORTS[url.scheme]


def is_allow_listed(url: httpx.URL, allow_hosts: frozenset[str]) -> bool:
    """True when ``allow_hosts`` names the URL's host, or its ``host:port``."""
    if not allow_hosts:
        return False
    host = url.host.lower()
    port = _port_of(url)
    names = {host, f"{host}:{port}"}
    if ":" in host:  # IPv6 literals are written in brackets in host:port form
        names |= {f"[{host}]", f"[{host}]:{port}"}
    return not names.isdisjoint(allow_hosts)


async def _resolve(host: str, port: int) -> list[str]:
    """All addresses of ``host``; a module function so tests can stand in a fake DNS."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def vet_url(url: str | httpx.URL, allow_hosts: frozenset[str] = frozenset()) -> VettedURL:
    """Resolve the URL's host and refuse it unless every address is public (or allow-listed).

    Refusing when *any* address is internal matters: a host with one public and one private
    record would otherwise be reachable through whichever address the connect picks.
    """
    parsed = parse_url(url)
    host = parsed.host
    try:
        addresses = await _resolve(host, _port_of(parsed))
    except (socket.gaierror, UnicodeError, OSError):
        raise UrlFetchFailed("The URL's host could not be resolved") from None
    if not addresses:
        raise UrlFetchFailed("The URL's host could not be resolved")
    if not is_allow_listed(parsed, allow_hosts):
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                raise UrlNotAllowed("The URL's host has an unusable address") from None
            reason = blocked_reason(ip)
            if reason is not None:
                log.info("refused URL host %r: resolves to a %s address", host, reason)
                # The address itself stays out of the message: it would map internal DNS.
                raise UrlNotAllowed("The URL's host resolves to a non-public address")
    return VettedURL(parsed, tuple(addresses))


async def send_pinned(
    client: httpx.AsyncClient,
    method: str,
    target: VettedURL,
    *,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    """Send to one of the vetted addresses, never to a fresh DNS answer; streamed response.

    Addresses are tried in resolver order when a connect fails, like a browser would.
    Redirects are never followed here: the caller vets each hop.
    """
    extensions = {"sni_hostname": target.server_name} if target.url.scheme == "https" else {}
    last_error: httpx.ConnectError | None = None
    for address in target.addresses:
        request = client.build_request(
            method,
            target.pinned_url(address),
            headers={**(headers or {}), "Host": target.host_header},
            content=content,
            extensions=extensions,
        )
        try:
            return await client.send(request, stream=True, follow_redirects=False)
        except httpx.ConnectError as exc:
            last_error = exc
    assert last_error is not None
    raise last_error


def _make_client(timeout_s: float) -> httpx.AsyncClient:
    # trust_env=False: an HTTP(S)_PROXY in the environment must not reroute user URLs.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
    )


async def _read_limited(response: httpx.Response, max_bytes: int) -> bytes:
    too_large = PayloadTooLarge(f"The URL's content is larger than {max_bytes} bytes")
    declared = response.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    # aiter_bytes counts decoded bytes, so a compressed body cannot expand past the limit.
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_url(
    url: str,
    *,
    max_bytes: int,
    timeout_s: float,
    allow_hosts: frozenset[str] = frozenset(),
    max_redirects: int = 3,
) -> bytes:
    """GET ``url`` and return its body, within ``max_bytes`` and ``timeout_s`` in total.

    Raises ``UrlNotAllowed`` (bad scheme, internal address, also after a redirect),
    ``PayloadTooLarge`` and ``UrlFetchFailed`` (DNS, connect, timeout, non-2xx, too many
    redirects). Messages are ours: no library or socket error text reaches the client.
    """
    current = parse_url(url)
    try:
        async with asyncio.timeout(timeout_s), _make_client(timeout_s) as client:
            for _hop in range(max_redirects + 1):
                target = await vet_url(current, allow_hosts)
                response = await send_pinned(client, "GET", target)
                try:
                    location = response.headers.get("location")
                    if response.status_code in REDIRECT_STATUSES and location:
                        current = current.join(location)
                        continue
                    if not response.is_success:
                        raise UrlFetchFailed(
                            f"The URL answered HTTP {response.status_code}",
                            details={"upstream_status": response.status_code},
                        )
                    return await _read_limited(response, max_bytes)
                finally:
                    await response.aclose()
            raise UrlFetchFailed(f"The URL redirected more than {max_redirects} times")
    except (TimeoutError, httpx.TimeoutException):
        raise UrlFetchFailed(f"The URL did not answer within {timeout_s:g} s") from None
    except httpx.InvalidURL:
        raise UrlNotAllowed("The URL redirected to an invalid URL") from None
    except httpx.HTTPError as exc:
        log.info("URL fetch of %r failed: %s", current.host, type(exc).__name__)
        raise UrlFetchFailed("The URL could not be read") from None
