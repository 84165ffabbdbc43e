"""
Who may change a registrar's handlespace over ENRP, and who may read it
(RFC 5355 sections 2.5, 2.15 and 2.17), sans I/O.

RFC 5355 section 2.5.3 asks registrars to authenticate each other, with
TLS-PSK as the mechanism every implementation has; a registrar whose ENRP
endpoint is TLS-PSK with a key file of registrars only gets exactly that
(every connection proves a registrar's key).  Without TLS the best a
registrar can do is to decide by address who may introduce itself as a
peer, and then to bind each peer id to the connections and addresses it
was admitted on.  L{PeerPolicy} holds the addresses and switches that
decision needs; L{rserpool.enrp.machine.ENRPServer} applies it (the rules
are in ``doc/enrp.rst``, "Who is a peer").

Nothing here touches a reactor or a socket.
"""
import ipaddress
import re

import attrs

__all__ = ["PeerPolicy", "parse_networks", "endpoint_arguments", "endpoint_addresses",
           "MAX_PEERS"]

#: The most peers a registrar keeps (and so the most it dials): real
#: deployments run a handful of registrars; a peer's List Response naming
#: thousands must not make us dial thousands.
MAX_PEERS = 256


def _addresses(values):
    return frozenset(ipaddress.ip_address(str(v)) for v in values)


def _networks(values):
    if isinstance(values, str):
        return parse_networks(values)
    return tuple(v if isinstance(v, (ipaddress.IPv4Network, ipaddress.IPv6Network))
                 else ipaddress.ip_network(str(v), strict=False) for v in values)


@attrs.frozen
class PeerPolicy:
    """
    Whom a registrar accepts as an ENRP peer and whom it shows its
    handlespace.

    @ivar static: the addresses of the static peers (C{--peer}): a
        registrar connecting from one of them may introduce itself.
    @ivar networks: networks (C{--enrp-peer-networks}) whose registrars may
        introduce themselves too, by Presence over a connection or over
        multicast.
    @ivar local: this host's addresses: List and Handle Table Requests
        from them (and from loopback) are answered whoever asks, so that
        C{rserpool dump} and RSPLIB's C{hsdump} work on the registrar's
        host.
    @ivar public_dump: answer List and Handle Table Requests from anyone
        (C{--enrp-public-dump}).
    @ivar authenticated: every ENRP connection proves a registrar's TLS-PSK
        key (the ENRP listener and the peers use a key file of registrars
        only): a registrar heard of by multicast Presence may then be
        dialled wherever it is, since the handshake decides.
    @ivar max_peers: the most peers kept.
    """

    static: frozenset = attrs.field(default=frozenset(), converter=_addresses)
    networks: tuple = attrs.field(default=(), converter=_networks)
    local: frozenset = attrs.field(default=frozenset(), converter=_addresses)
    public_dump: bool = False
    authenticated: bool = False
    max_peers: int = MAX_PEERS

    def admits(self, address):
        """
        @param address: an L{ipaddress} address.
        @return: whether it is a static peer's or in one of L{networks}.
        """
        if address in self.static:
            return True
        return any(address.version == n.version and address in n for n in self.networks)

    def this_host(self, addresses, local_addresses=()):
        """
        @param addresses: the remote addresses of a connection.
        @param local_addresses: its local addresses.
        @return: whether the connection comes from this host (loopback, one
            of L{local}, or the very address it reached).
        """
        for a in addresses:
            if a.is_loopback or a in self.local or a in local_addresses:
                return True
        return False


def parse_networks(text):
    """
    Networks from C{--enrp-peer-networks}: addresses or prefixes, separated
    by commas or spaces (C{192.0.2.0/24, 2001:db8::/64, 198.51.100.7}).

    @return: a tuple of L{ipaddress} networks.
    @raise ValueError: with a one-line reason.
    """
    out = []
    for item in re.split(r"[\s,]+", str(text).strip()):
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError("not an address or network: %r (write 192.0.2.0/24 or "
                             "2001:db8::/64)" % (item,)) from None
    return tuple(out)


def endpoint_arguments(description):
    """
    An endpoint string taken apart as Twisted reads it (C{:} separates
    arguments, C{\\} escapes the next character).

    @return: C{(prefix, positional arguments, keyword arguments dict)}.
    """
    parts = _split(description.strip())
    positional, keywords = [], {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            keywords[key] = value
        else:
            positional.append(part)
    return parts[0], positional, keywords


def _split(description):
    # Twisted endpoint strings: ':' separates arguments, '\' escapes.
    parts, current, escaped = [], [], False
    for ch in description:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def endpoint_addresses(description):
    """
    The IP addresses a client endpoint string names literally
    (C{tcp:192.0.2.2:9901}, C{tcp:host=192.0.2.2:port=9901},
    C{sctp:host=192.0.2.2,198.51.100.2:port=9901:ppid=12}, C{psk:...}).
    Host names are not resolved: a static peer named by its host name is
    known by address once a connection to it is up.

    @return: a frozenset of L{ipaddress} addresses (empty if none).
    """
    _, positional, keywords = endpoint_arguments(description)
    hosts = [keywords["host"]] if "host" in keywords else positional[:1]
    out = set()
    for host in hosts:
        for item in host.split(","):
            try:
                out.add(ipaddress.ip_address(item.strip().strip("[]").split("%", 1)[0]))
            except ValueError:
                continue
    return frozenset(out)
