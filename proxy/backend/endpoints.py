"""Triton endpoint addresses: the forms ``triton_url`` takes, and which endpoints are on this host."""

from __future__ import annotations

import ipaddress

DNS_PREFIX = "dns:///"


def parse_endpoints(value: str) -> list[str]:
    """The endpoints of a ``triton_url``: ``host:port`` items separated by commas, or one ``dns:///host:port``.

    Raises ValueError saying which item is wrong and why.
    """
    items = [item.strip() for item in value.split(",")]
    if not value.strip() or any(not item for item in items):
        raise ValueError(f"triton_url must be host:port[,host:port...] or dns:///host:port, got {value!r}")
    if any(item.startswith(DNS_PREFIX) for item in items) and len(items) > 1:
        raise ValueError("triton_url: a dns:/// name stands alone (it resolves to every endpoint)")
    for item in items:
        host, sep, port = item.removeprefix(DNS_PREFIX).rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"triton_url: {item!r} is not host:port (or dns:///host:port)")
    if len(set(items)) != len(items):
        raise ValueError(f"triton_url names an endpoint twice: {value!r}")
    return items


def is_local(endpoint: str) -> bool:
    """Whether ``host:port`` is on this host (loopback): only there can Triton read our shared memory."""
    host = endpoint.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address(host: str, port: int) -> str:
    """``host:port`` (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
