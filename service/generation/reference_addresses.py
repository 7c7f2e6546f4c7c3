"""Which addresses a reference_image URL may reach: globally reachable ones only (an allow list,
not a deny list), unless the operator opens chosen networks with MG_REFERENCE_ALLOW_NETWORKS.

Private, loopback, link-local, shared (100.64.0.0/10), site-local, multicast, reserved,
documentation and cloud-metadata addresses are refused. An IPv6 address that carries an IPv4 one
(IPv4-mapped, 6to4, NAT64 64:ff9b::/96, Teredo) is judged by the IPv4 address it reaches, so the
IPv6 spelling of 127.0.0.1 is refused like 127.0.0.1, and a NAT64 address of a public host passes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata endpoints that are not private by address class alone.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)
# Not globally reachable (IANA special-purpose registries), although `is_global` says they are in
# some Python versions: IETF protocol assignments, the 6to4 relay anycast, site-local (deprecated
# but still routed inside some networks), local-use NAT64, documentation, SRv6 SIDs.
NOT_GLOBAL = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.0.0/24", "192.88.99.0/24", "fec0::/10", "64:ff9b:1::/48", "3fff::/20", "5f00::/16")
)
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: the last 32 bits are IPv4


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """MG_REFERENCE_ALLOW_NETWORKS: comma-separated CIDRs (e.g. "10.0.0.0/8,127.0.0.1/32")."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def reached_addresses(address: IPAddress) -> tuple[IPAddress, ...]:
    """The address(es) a connection to `address` ends up at: the IPv4 address an IPv6 form carries
    (IPv4-mapped, 6to4, NAT64, Teredo's server and client), else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return (address.ipv4_mapped,)
        if address.sixtofour is not None:
            return (address.sixtofour,)
        if address.teredo is not None:
            return address.teredo
        if address in NAT64:
            return (ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF),)
    return (address,)


def is_public(address: IPAddress) -> bool:
    """Globally reachable, and none of the kinds a gateway must never fetch from. The flags beside
    `is_global` are belt and braces: what `is_global` covers has changed across Python versions."""
    return (
        address.is_global
        and not (
            address.is_multicast
            or address.is_reserved
            or address.is_loopback
            or address.is_link_local
            or address.is_unspecified
            or address in METADATA_ADDRESSES
        )
        and not any(address in network for network in NOT_GLOBAL)
    )


def address_allowed(address: IPAddress, allow: Sequence[IPNetwork]) -> bool:
    """Only public addresses, unless the operator opened the network (MG_REFERENCE_ALLOW_NETWORKS)."""
    if any(address in network for network in allow):
        return True
    return all(
        is_public(reached) or any(reached in network for network in allow)
        for reached in reached_addresses(address)
    )
