"""enova.observe.ports against real listeners, IPv4 and IPv6."""

from __future__ import annotations

import socket

import pytest

from enova.observe.ports import port_is_free


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="this host has no IPv6 loopback")


def _listener(family: int, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen()
    return sock


@ipv6
def test_a_port_taken_on_the_ipv6_loopback_is_not_free_there_and_a_free_one_is():
    with _listener(socket.AF_INET6, "::1") as taken:
        port = taken.getsockname()[1]
        assert not port_is_free("::1", port)
        assert not port_is_free("::", port)          # the wildcard would need ::1 too
    assert port_is_free("::1", port)


@ipv6
def test_an_ipv6_listener_leaves_the_same_port_free_on_the_ipv4_loopback():
    with _listener(socket.AF_INET6, "::1") as taken:
        port = taken.getsockname()[1]
        assert port_is_free("127.0.0.1", port)


def test_an_ipv4_listener_takes_its_port_on_its_address_the_wildcard_and_localhost():
    with _listener(socket.AF_INET, "127.0.0.1") as taken:
        port = taken.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        assert not port_is_free("0.0.0.0", port)
        assert not port_is_free("localhost", port)
    assert port_is_free("127.0.0.1", port) and port_is_free("localhost", port)


def test_a_host_that_does_not_resolve_or_is_not_ours_is_never_free():
    assert not port_is_free("no-such-host.invalid", 8080)
    assert not port_is_free("192.0.2.1", 8080)       # TEST-NET-1: not an address of this machine
