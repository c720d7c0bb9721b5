"""Is a TCP port free to listen on, for IPv4 and IPv6 hosts alike?

`port_is_free(host, port)` binds a throwaway socket of the host's own address family (from
getaddrinfo: "::1" and "::" are IPv6, "127.0.0.1" and "0.0.0.0" IPv4, a name such as
"localhost" every family it resolves to) and reports whether every bind succeeded. A wildcard
IPv6 host ("::") is checked dual-stack where the system allows it, as a server binding "::"
usually is. Called by apply (the gateway's address, replica ports) before a process is started;
a check, not a reservation: another process may take the port before ours binds it.
"""

from __future__ import annotations

import socket


def bind_addresses(host: str, port: int) -> list[tuple[int, tuple]]:
    """(family, sockaddr) for every TCP address `host` resolves to, without duplicates.
    "" means every IPv4 address (as "0.0.0.0"). Raises OSError (socket.gaierror) for a name
    that does not resolve."""
    infos = socket.getaddrinfo(host or "0.0.0.0", port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
                               flags=socket.AI_PASSIVE)
    seen: list[tuple[int, tuple]] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr) not in seen:
            seen.append((family, sockaddr))
    return seen


def port_is_free(host: str, port: int) -> bool:
    """True when a listener could bind `port` on every address of `host` right now.
    False when one is taken, or when `host` does not resolve or is not an address of this
    machine. Non-blocking apart from name resolution; never raises."""
    try:
        addresses = bind_addresses(host, port)
    except OSError:
        return False
    if not addresses:
        return False
    for family, sockaddr in addresses:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # as servers bind (aiohttp and uvicorn set it): a port left in TIME_WAIT counts as free
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and sockaddr[0] == "::":
                try:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                except OSError:
                    pass
            try:
                sock.bind(sockaddr)
            except OSError:
                return False
    return True


def connect_url(host: str, port: int, path: str = "") -> str:
    """The URL a client on this host uses to reach a server bound to `host`: a wildcard bind
    (0.0.0.0, ::) is reached on loopback, and an IPv6 address is bracketed."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"
