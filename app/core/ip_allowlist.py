"""Optional source-address allowlist for the admin and sign-in APIs.

``X-Forwarded-For`` is believed only when the direct peer is one of the trusted proxies;
the client is then the right-most address in the header that is not itself a proxy.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from starlette.requests import Request

from app.core.errors import Forbidden
from app.core.settings import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=32)
def parse_networks(spec: str) -> tuple[Network, ...]:
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()
    )


def _address(value: str) -> Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _in_any(address: Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in net for net in networks)


def client_ip(request: Request, settings: Settings) -> str:
    """The caller's address, looking through trusted reverse proxies only."""
    peer = request.client.host if request.client else ""
    trusted = parse_networks(settings.trusted_proxies)
    # Every X-Forwarded-For line, in order: a proxy may append its own line rather than
    # extend the client's, and the client's line is the one it could have forged.
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    if not forwarded or not _in_any(_address(peer), trusted):
        return peer
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _in_any(_address(hop), trusted):
            return hop
    return hops[0] if hops else peer


def enforce_admin_ip_allowlist(request: Request, settings: Settings) -> None:
    """Forbidden unless the allowlist is off or the caller's address is on it."""
    if not settings.admin_ip_allowlist.strip():
        return
    allowed = parse_networks(settings.admin_ip_allowlist)
    if not _in_any(_address(client_ip(request, settings)), allowed):
        raise Forbidden("This address may not use the admin API")
