"""Service discovery by DNS: the addresses behind a server written with a host name.

Why plain DNS and nothing more: a Kubernetes headless service and Consul's DNS interface both
answer a name with the addresses of the instances that are up, so re-resolving the name every
`dns_ttl` lets a group follow them without veloxy knowing either. The system resolver
(getaddrinfo) is used, so /etc/hosts, search domains and nsswitch work as for any program; it
does not report the records' TTL, hence the configured one.

Address family: IPv4 when the name has any IPv4 address, else IPv6 (Envoy's V4_PREFERRED).
Taking both would turn "localhost" into two servers, one of which ([::1]) is often not
listening.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

Resolver = Callable[[str, int], Awaitable[list[str]]]


def is_ip(host: str) -> bool:
    """An IP literal needs no resolving."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def pick_addresses(infos: list[tuple]) -> list[str]:
    """Distinct addresses from getaddrinfo results, IPv4 preferred, in answer order."""
    v4 = [info[4][0] for info in infos if info[0] == socket.AF_INET]
    chosen = v4 or [info[4][0] for info in infos if info[0] == socket.AF_INET6]
    return list(dict.fromkeys(chosen))


def resolve_now(host: str, port: int) -> list[str]:
    """Blocking resolution, for start-up only (before the loop serves anything)."""
    if is_ip(host):
        return [host]
    return pick_addresses(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))


async def resolve(host: str, port: int) -> list[str]:
    """Resolution on the running loop (getaddrinfo in the loop's thread pool)."""
    if is_ip(host):
        return [host]
    loop = asyncio.get_running_loop()
    return pick_addresses(await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
