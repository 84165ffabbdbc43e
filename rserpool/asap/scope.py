"""
Address scopes, ordered as RSPLIB orders them (``getScope()`` in its
``netutilities.c``, read for behaviour only): a registrar accepts a PE's
transport addresses only from a minimum scope up (RSPLIB's
``-minaddressscope``).
"""
import enum
import functools
import ipaddress


class Scope(enum.IntEnum):
    """
    Address scopes, narrowest first; the values are RSPLIB's.
    """

    UNSPECIFIED = 0
    MULTICAST_NODE_LOCAL = 1
    LOOPBACK = 2
    MULTICAST_LINK_LOCAL = 3
    LINK_LOCAL = 4
    MULTICAST_SITE_LOCAL = 5
    SITE_LOCAL = 6
    MULTICAST_ORG_LOCAL = 7
    MULTICAST_GLOBAL = 8
    GLOBAL = 10


#: The names C{--min-address-scope} accepts (RSPLIB spells site-local
#: ``sitelocal``; both spellings work).
SCOPE_NAMES = {
    "loopback": Scope.LOOPBACK,
    "link-local": Scope.LINK_LOCAL,
    "linklocal": Scope.LINK_LOCAL,
    "site-local": Scope.SITE_LOCAL,
    "sitelocal": Scope.SITE_LOCAL,
    "global": Scope.GLOBAL,
}

_V4_SITE = [
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
]
_V4_LINK = ipaddress.ip_network("169.254.0.0/16")
_V6_SITE_LOCAL = ipaddress.ip_network("fec0::/10")
_V6_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


def parse_scope(name):
    """
    @param name: C{"loopback"}, C{"site-local"}, C{"global"}, ...
    @return: the L{Scope}.
    @raise ValueError: for an unknown name.
    """
    try:
        return SCOPE_NAMES[name.strip().lower()]
    except KeyError:
        raise ValueError(
            "unknown address scope {!r}: use loopback, site-local or global".format(name)
        ) from None


@functools.lru_cache(maxsize=4096)
def address_scope(address):
    """
    The scope of an address, as RSPLIB classifies it.

    IPv4: 0.0.0.0 unspecified, 127/8 loopback, RFC 1918 site-local,
    169.254/16 link-local, 224/4 multicast, the rest global.  IPv6: an
    IPv4-mapped address is classified as its IPv4 address; unique local
    addresses (fc00::/7, which RSPLIB's macros treat as global) count as
    site-local here, like the deprecated fec0::/10.

    @param address: an L{ipaddress} address.
    @rtype: L{Scope}
    """
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return address_scope(address.ipv4_mapped)
        if address.is_unspecified:
            return Scope.UNSPECIFIED
        if address.is_loopback:
            return Scope.LOOPBACK
        if address.is_multicast:
            scope = address.packed[1] & 0x0F
            if scope <= 1:
                return Scope.MULTICAST_NODE_LOCAL
            if scope == 2:
                return Scope.MULTICAST_LINK_LOCAL
            if scope <= 5:
                return Scope.MULTICAST_SITE_LOCAL
            if scope == 8:
                return Scope.MULTICAST_ORG_LOCAL
            return Scope.MULTICAST_GLOBAL
        if address.is_link_local:
            return Scope.LINK_LOCAL
        if address in _V6_SITE_LOCAL or address in _V6_UNIQUE_LOCAL:
            return Scope.SITE_LOCAL
        return Scope.GLOBAL
    if int(address) == 0:
        return Scope.UNSPECIFIED
    if address.is_loopback:
        return Scope.LOOPBACK
    for net in _V4_SITE:
        if address in net:
            return Scope.SITE_LOCAL
    if address in _V4_LINK:
        return Scope.LINK_LOCAL
    if address.is_multicast:
        return Scope.MULTICAST_GLOBAL
    return Scope.GLOBAL


def listening_scope(address):
    """
    The default minimum scope for a registrar listening on an address: the
    address's own scope, so a registrar on 127.0.0.1 accepts loopback PEs;
    a wildcard listener (0.0.0.0, ::) gets RSPLIB's default, site-local.

    @param address: an L{ipaddress} address or C{None} (unknown).
    @rtype: L{Scope}
    """
    if address is None:
        return Scope.SITE_LOCAL
    scope = address_scope(address)
    if scope == Scope.UNSPECIFIED:
        return Scope.SITE_LOCAL
    return scope
