"""
ASAP Server Announce (RFC 5352 section 3.6 and 2.2.10), sans I/O: the
registrar's periodic announcement and the PE/PU side's table of the
registrars it has heard of.

A registrar multicasts a Server Announce with its id and the transports its
ASAP endpoint listens on.  RSPLIB's registrars send no transport: their
announce socket is bound to their ASAP port, and RSPLIB's receivers take
the datagram's source address and source port as an SCTP endpoint
(rserpoolmessageparser.c, scanServerAnnounceMessage); they take the first
SCTP Transport parameter when there is one and ignore the others.  PEs and PUs learn
registrars from them for the registrar hunt (RFC 5352 section 3.6) and
forget a registrar not heard for a while (RSPLIB's
``registrar.announce.timeout``, 5 s).

The sockets are in L{rserpool.transport.multicast}.
"""

import attrs

from rserpool.codes import ASAP_PORT
from rserpool.interfaces import normalize_address
from rserpool.wire import ProtocolError, SCTPTransport, ServerAnnounce, TCPTransport, decode

__all__ = [
    "ANNOUNCE_TIMEOUT",
    "KnownRegistrar",
    "RegistrarTable",
    "announce_delay",
    "server_announce",
]

#: Seconds after which a registrar not announced again is forgotten
#: (RSPLIB's ASAP_DEFAULT_REGISTRAR_ANNOUNCE_TIMEOUT).
ANNOUNCE_TIMEOUT = 5.0


def announce_delay(interval, rng):
    """
    The time to the next announcement: C{interval} varied by +-12.5 %, as
    RSPLIB varies its cycles, so that registrars started together do not
    announce in lockstep.

    @param interval: the nominal interval in seconds.
    @param rng: a C{random.Random}.
    """
    return interval * (0.875 + 0.25 * rng.random())


def server_announce(server_id, transports):
    """
    The Server Announce a registrar sends.

    @param server_id: the registrar's id.
    @param transports: transport parameters of its ASAP endpoints.
    @rtype: L{ServerAnnounce}
    """
    return ServerAnnounce(server_id, tuple(transports))


@attrs.frozen
class KnownRegistrar:
    """
    A registrar learned from Server Announce.

    @ivar server_id: its id.
    @ivar transports: where it serves ASAP (transport parameters); an
        unspecified address (0.0.0.0, ::) has been replaced by the
        announcement's source address.
    @ivar last_heard: when its last announcement arrived (seconds).
    """

    server_id: int
    transports: tuple
    last_heard: float

    @property
    def endpoints(self):
        """
        C{(protocol, address, port)} triples to connect to, e.g.
        C{("tcp", IPv4Address("192.0.2.1"), 3863)}.
        """
        out = []
        for t in self.transports:
            for a in t.addresses:
                out.append((t.protocol, a, t.port))
        return out


class RegistrarTable:
    """
    The registrars a PE or PU has heard announce themselves.

    Feed it datagrams with L{datagram_received}; ask L{registrars} for the
    live ones.
    """

    def __init__(self, timeout=ANNOUNCE_TIMEOUT, default_protocol="sctp", default_port=ASAP_PORT):
        """
        @param timeout: seconds after which a silent registrar is dropped.
        @param default_protocol: the transport assumed when an announcement
            carries no transport (RSPLIB's registrars announce none and
            serve SCTP).
        @param default_port: the ASAP port assumed when an announcement
            carries no transport, or C{None} for the datagram's source
            port, as RSPLIB does (its registrars send announcements from
            their ASAP port number, e.g. 3863).  L{AnnounceListener
            <rserpool.transport.multicast.AnnounceListener>} uses C{None}.
        """
        self.timeout = timeout
        self.default_protocol = default_protocol
        self.default_port = default_port
        self._known = {}

    def datagram_received(self, data, source, now):
        """
        Learn from one datagram received on the announce group.

        @param data: the datagram.
        @param source: C{(host, port)} of the sender.
        @param now: the current time in seconds.
        @return: the L{KnownRegistrar}, or C{None} if the datagram was not a
            valid Server Announce (it is ignored: nobody to answer on a
            multicast group).
        """
        try:
            message = decode(data, "asap")
        except ProtocolError:
            return None
        if not isinstance(message, ServerAnnounce) or message.server_id == 0:
            return None
        sender = normalize_address(source[0])
        transports = []
        for t in message.transports:
            addresses = tuple(sender if a.is_unspecified else a for a in t.addresses)
            transports.append(attrs.evolve(t, addresses=addresses))
        if not transports:
            cls = TCPTransport if self.default_protocol == "tcp" else SCTPTransport
            port = self.default_port
            if port is None:
                port = source[1] if len(source) > 1 and source[1] else ASAP_PORT
            transports.append(cls(port, (sender,)))
        entry = KnownRegistrar(message.server_id, tuple(transports), now)
        self._known[message.server_id] = entry
        return entry

    def expire(self, now):
        """
        Forget registrars not heard for L{timeout} seconds.

        @return: the ids forgotten.
        """
        gone = [i for i, r in self._known.items() if now - r.last_heard > self.timeout]
        for i in gone:
            del self._known[i]
        return gone

    def registrars(self, now):
        """
        @return: the live L{KnownRegistrar}s, most recently heard first.
        """
        self.expire(now)
        return sorted(self._known.values(), key=lambda r: -r.last_heard)

    def get(self, server_id):
        """
        @return: the L{KnownRegistrar} with this id, or C{None}.
        """
        return self._known.get(server_id)
