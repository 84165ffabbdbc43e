"""
ENRP peering (RFC 5353 section 3.2): the registrar's side of ENRP that
reaches out.  It starts the ENRP machine once the listeners listen, dials
the static peers (and keeps dialling them) and the peers the machine
learns of, and sends and hears ENRP Presence on a multicast group when
configured to.  What peers may do is the machine's business
(L{rserpool.enrp.machine}, L{rserpool.enrp.trust}); who dials whom is
this service's.
"""
import ipaddress
import re

import attrs
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from rserpool.actions import Runner
from rserpool.codes import ENRP_PPID
from rserpool.enrp.trust import endpoint_arguments
from rserpool.interfaces import normalize_address
from rserpool.services.listeners import AfterListening
from rserpool.transport.psk import is_secure
from rserpool.transport.sctp import SCTPAssociationEndpoint, SCTPClientEndpoint, SCTPSeqPacketPort
from rserpool.transport.tcp import MessageStreamFactory, address_of
from rserpool.wire import ENRP, Presence, ProtocolError, SCTPTransport, ServerInformation, \
    TCPTransport, decode

__all__ = ["PeeringService", "PresenceMulticast", "presence_from", "peer_endpoint",
           "transport_endpoint", "server_information"]


class PresenceMulticast(DatagramProtocol):
    """
    ENRP Presence over UDP multicast (RFC 5353 sections 3.4.1 and 3.4.2;
    RSPLIB's default group 239.0.0.51:9901): joins the group, hands
    received Presence messages to the server and sends the server's.
    """

    log = Logger()

    def __init__(self, server, clock, group, ttl=30, interface="", run=None):
        self.server = server
        self.clock = clock
        self.run = run if run is not None else Runner()
        self.group = group
        self.ttl = ttl
        self.interface = interface or ""

    def startProtocol(self):
        if ipaddress.ip_address(self.group[0]).is_multicast:
            self.transport.setTTL(self.ttl)
            self.transport.setLoopbackMode(1)
            if self.interface:
                # send on the same interface we listen on (e.g. 127.0.0.1
                # keeps Presence on the host)
                self.transport.setOutgoingInterface(self.interface)
            return self.transport.joinGroup(self.group[0], self.interface)

    def send(self, data):
        """
        Send one encoded Presence to the group.
        """
        try:
            self.transport.write(data, self.group)
        except (OSError, AttributeError) as e:
            self.log.warn("cannot send ENRP Presence to {group}: {error}",
                          group=self.group, error=str(e))

    def datagramReceived(self, data, addr):
        try:
            message = decode(data, ENRP)
        except ProtocolError:
            return
        try:
            source = normalize_address(addr[0])
        except ValueError:
            source = None
        message = presence_from(message, source)
        self.run(self.server.multicast_received(message, source, self.clock.seconds()))


def presence_from(message, source):
    """
    A Presence heard on the multicast group, with the sender's address in
    place of unspecified ones (0.0.0.0, ::) in its Server Information: a
    registrar listening for ENRP on the wildcard address announces it, and
    RSPLIB takes the datagram's source address with the announced port for
    every multicast Presence (rspregistrar-enrp.c).  Other messages and
    Presences without such addresses are returned unchanged.
    """
    information = getattr(message, "server_information", None)
    if source is None or information is None or not isinstance(message, Presence):
        return message
    transport = information.transport
    if not any(a.is_unspecified for a in transport.addresses):
        return message
    # A dict keeps the order and finds duplicates in constant time: a
    # datagram may list 8,000 addresses (issue #14).
    addresses = {}
    for a in transport.addresses:
        addresses[source if a.is_unspecified else a] = None
    transport = attrs.evolve(transport, addresses=tuple(addresses))
    return attrs.evolve(message, server_information=ServerInformation(information.server_id, transport))


def peer_endpoint(text):
    """
    A client endpoint string for a C{--peer} value: an endpoint string
    (C{tcp:HOST:9901}, C{sctp:host=H:port=9901:ppid=12}) is kept;
    C{HOST:PORT} and C{[V6]:PORT} mean TCP.
    """
    text = text.strip()
    m = re.match(r"^\[([0-9A-Fa-f:.]+)\]:(\d+)$", text)
    if m:
        return "tcp:host=%s:port=%s" % (m.group(1).replace(":", "\\:"), m.group(2))
    m = re.match(r"^([^:\[\]]+):(\d+)$", text)
    if m:
        return "tcp:host=%s:port=%s" % (m.group(1), m.group(2))
    return text


def transport_endpoint(transport):
    """
    A client endpoint string to reach a peer's ENRP transport parameter
    (from a List Response or a multicast Presence), or C{None}.
    """
    if not transport.addresses:
        return None
    address = transport.addresses[0]
    if isinstance(transport, SCTPTransport):
        return "sctp:host=%s:port=%d:ppid=%d" % (
            ",".join(str(a) for a in transport.addresses).replace(":", "\\:"),
            transport.port, ENRP_PPID)
    if address.version == 6:
        return "tcp:host=%s:port=%d" % (str(address).replace(":", "\\:"), transport.port)
    return "tcp:host=%s:port=%d" % (address, transport.port)


def server_information(server_id, enrp_ports):
    """
    A registrar's ENRP L{ServerInformation}: its id and where its ENRP
    endpoint listens (the first of C{enrp_ports}; 127.0.0.1:9901 when
    none listens).
    """
    for port in enrp_ports:
        host = port.getHost()
        address, number = address_of(host)
        if getattr(host, "type", "TCP") == "SCTP":
            addresses = []
            for text in getattr(host, "addresses", ()) or (host.host,):
                try:
                    addresses.append(normalize_address(text))
                except (ValueError, AttributeError):
                    pass
            try:
                wildcard = normalize_address(host.host).is_unspecified
            except (ValueError, AttributeError):
                wildcard = False
            if wildcard or any(a.is_unspecified for a in addresses):
                # On the wildcard: the kernel lists every address of the
                # host, loopback included, which means nothing to a peer
                # elsewhere (it would try 127.0.0.1, itself).
                wider = [a for a in addresses if not a.is_loopback]
                if any(not a.is_unspecified for a in wider):
                    addresses = wider
            if addresses:
                return ServerInformation(server_id, SCTPTransport(number, tuple(addresses)))
        elif address is not None:
            return ServerInformation(server_id, TCPTransport(number, (address,)))
    return ServerInformation(server_id, TCPTransport(9901, (ipaddress.ip_address("127.0.0.1"),)))


class PeeringService(AfterListening):
    """
    Dials ENRP peers and runs Presence multicast for one ENRP machine.

    @ivar dialing: C{{endpoint string: ClientService or None}}: the peers
        being dialled (a L{ClientService} for static peers, which it keeps
        reconnecting; C{None} for a one-off attempt to a learned peer).
    """

    log = Logger()

    def __init__(self, listeners, reactor, enrp, run, receiver, peers=(), psk=None,
                 secured=False, multicast=None, multicast_ttl=30, multicast_interface=None):
        """
        @param listeners: the registrar's L{ListenerService}: peers are
            dialled from its C{"ENRP"} listener's address (and, over SCTP,
            from its one-to-many socket).
        @param reactor: the reactor.
        @param enrp: the L{rserpool.enrp.ENRPServer} machine.
        @param run: the registrar's L{Runner}; this service becomes its
            dialler (and multicast sender).
        @param receiver: C{receiver()} gives the receiver of a connection
            this service dials.
        @param peers: static peers: client endpoint strings or C{HOST:PORT}
            (L{peer_endpoint}).
        @param psk: a L{rserpool.transport.psk.PSKEndpoints} to dial every
            peer with TLS-PSK, or C{None}.
        @param secured: every endpoint is secured: peers learned from List
            Responses and Presence (whose addresses say nothing of TLS) are
            not dialled (RFC 5355 section 2.15.3).
        @param multicast: C{(group, port)} for ENRP Presence, or C{None}.
        @param multicast_ttl: its TTL.
        @param multicast_interface: the address of its interface, or
            C{None} for the system's choice.
        """
        AfterListening.__init__(self, listeners)
        self.reactor = reactor
        self.enrp = enrp
        self.run = run
        run.dial = self.dial_peer
        self.receiver = receiver
        self.peers = list(peers)
        self.psk = psk
        self.secured = secured or psk is not None
        self.multicast = multicast
        self.multicast_ttl = multicast_ttl
        self.multicast_interface = multicast_interface
        self.dialing = {}
        self._clients = []
        self._multicast = None
        self._multicast_port = None

    def begin(self):
        # RFC 5353 section 3.2: static peers first (ClientService keeps
        # reconnecting, with backoff, as long as we run), then startup.
        self.run(self.enrp.start(self.reactor.seconds()))
        for description in self.peers:
            self.dial(peer_endpoint(description), static=True)
        if self.multicast is not None:
            self._start_multicast()

    def dial_peer(self, information):
        """
        Dial a peer the machine asked for (an L{rserpool.actions.Dial}).

        @param information: its L{ServerInformation}.
        """
        description = transport_endpoint(information.transport)
        if description is not None:
            self.dial(description)

    def dial(self, description, static=False):
        """
        Dial a peer's ENRP endpoint: a static one for as long as the
        service runs, another once.
        """
        try:
            if self.psk is not None:
                description = self.psk.client(description)
            if description in self.dialing:
                return
            if self.secured and not is_secure(description):
                self.log.warn(
                    "ENRP peer {peer} not dialed: this registrar's endpoints are secured, and "
                    "a learned peer's address says nothing of TLS (list it with --peer, or "
                    "use --psk-keys)", peer=description)
                return
            endpoint = self._from_enrp_port(clientFromString(
                self.reactor, self._from_enrp_address(description)))
        except (ValueError, KeyError, TypeError) as e:
            self.log.error("bad ENRP peer endpoint {peer!r}: {error}", peer=description, error=str(e))
            return
        factory = MessageStreamFactory(self.receiver(), ENRP)
        if static:
            client = ClientService(endpoint, factory, retryPolicy=backoffPolicy(
                initialDelay=0.5, maxDelay=self.enrp.config.max_time_last_heard / 2.0),
                clock=self.reactor)
            client.startService()
            self._clients.append(client)
            self.dialing[description] = client
            self.log.info("ENRP peer {peer}: connecting", peer=description)
        else:
            # A peer we were told of: one attempt; it reconnects to us if it
            # lists us, and List Responses and Presences tell us again.
            self.dialing[description] = None
            d = endpoint.connect(factory)

            def done(result):
                self.dialing.pop(description, None)
                if isinstance(result, Failure):
                    self.log.info("ENRP peer {peer}: {error}", peer=description,
                                  error=result.getErrorMessage())

            d.addBoth(done)

    def _from_enrp_address(self, description):
        """
        A TCP (or TLS-PSK) peer endpoint leaves from our ENRP listener's
        address when it listens on one address only: peers know a
        registrar by that address and bind its id to it (doc/enrp.rst,
        "Who is a peer"), while the kernel would pick the interface's
        primary address.  A C{bindAddress} given stays.
        """
        prefix, _, keywords = endpoint_arguments(description)
        if prefix not in ("tcp", "tcp6", "psk") or "bindAddress" in keywords:
            return description
        for port in self.listeners.ports_of.get("ENRP", ()):
            host = port.getHost()
            if getattr(host, "type", "TCP") != "TCP":
                continue
            address = address_of(host)[0]
            if address is not None and not address.is_unspecified:
                return "%s:bindAddress=%s" % (description, str(address).replace(":", "\\:"))
        return description

    def _from_enrp_port(self, endpoint):
        """
        An SCTP peer endpoint, when our ENRP listener is a one-to-many SCTP
        socket, becomes associations set up from that socket: they leave
        from our ENRP address and port, the ones our Presence names (RSPLIB
        drops a Presence arriving from another port, doc/interop.rst,
        scenario 4).  Its C{bindAddress} is then moot.
        """
        if not isinstance(endpoint, SCTPClientEndpoint):
            return endpoint
        for port in self.listeners.ports_of.get("ENRP", ()):
            if isinstance(port, SCTPSeqPacketPort) and port.connected:
                return SCTPAssociationEndpoint(port, endpoint.hosts, endpoint.port, endpoint.timeout)
        return endpoint

    def _start_multicast(self):
        group = self.multicast
        self._multicast = PresenceMulticast(
            self.enrp, self.reactor, group, ttl=self.multicast_ttl,
            interface=self.multicast_interface or "", run=self.run)
        interface = "::" if ":" in group[0] else ""
        self._multicast_port = self.reactor.listenMulticast(
            group[1], self._multicast, interface=interface, listenMultiple=True)
        self.run.multicast = self._multicast.send
        self.enrp.multicast = True
        self.log.info("ENRP Presence over multicast {group}", group="%s:%d" % group)

    def stopService(self):
        AfterListening.stopService(self)
        stops = [defer.maybeDeferred(client.stopService) for client in self._clients]
        self._clients = []
        self.dialing = {}
        if self._multicast_port is not None:
            stops.append(defer.maybeDeferred(self._multicast_port.stopListening))
            self._multicast_port = None
        self.run.multicast = None
        for conn in list(self.enrp.connections):
            conn.close()
        self.enrp.stop()
        return defer.gatherResults(stops)
