"""
The registrar as a Twisted service: ASAP listeners, the timers, Server
Announce, and ENRP (listener, static peers, optional Presence multicast),
tied around the sans-IO L{rserpool.asap.registrar.ASAPRegistrar} and
L{rserpool.enrp.ENRPServer}: their events go in here, and the actions they
return (L{rserpool.actions}) are carried out here, by one
L{rserpool.actions.Runner} (sends, closes, the two machines' timers,
dialling peers, multicast).

Listeners are Twisted endpoint strings (C{tcp:3863:interface=127.0.0.1};
later C{sctp:...}, C{ssl:...}), parsed with
L{twisted.internet.endpoints.serverFromString}: the state machine never
knows which mapping it runs on.
"""
import fcntl
import ipaddress
import os
import random
import re
import signal
import socket
import struct

import attrs
from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rserpool.actions import Runner
from rserpool.asap.registrar import ASAPRegistrar, RegistrarConfig
from rserpool.asap.scope import Scope, listening_scope
from rserpool.codes import ASAP_PPID, ENRP_PPID
from rserpool.enrp import ENRPConfig, ENRPServer
from rserpool.enrp.trust import PeerPolicy, endpoint_addresses, endpoint_arguments
from rserpool.interfaces import IMessageConnection, normalize_address
from rserpool.limits import RefusalLog
from rserpool.receivers import ASAPReceiver, ENRPReceiver
from rserpool.transport.guard import (ConnectionBudget, ConnectionLimits, TurnScheduler,
                                      limit_accepts, with_backlog)
from rserpool.transport.multicast import AnnounceSender
from rserpool.transport.psk import KeyFileError, PSKServerEndpoint, is_secure
from rserpool.transport.sctp import SCTPAssociationEndpoint, SCTPClientEndpoint, SCTPSeqPacketPort
from rserpool.transport.tcp import MessageStreamFactory, address_of
from rserpool.web.monitor import RegistrarMonitor
from rserpool.wire import (
    ENRP,
    Presence,
    ProtocolError,
    SCTPTransport,
    ServerInformation,
    TCPTransport,
    decode,
)

#: Seconds to wait for an association to an adopted PE's ASAP endpoint.
PE_CONNECT_TIMEOUT = 5.0

__all__ = [
    "RegistrarService",
    "AnnounceSettings",
    "ListenFailed",
    "Wakeup",
    "ASAPReceiver",
    "ENRPReceiver",
    "PresenceMulticast",
    "peer_endpoint",
    "transport_endpoint",
    "asap_endpoint",
    "PendingConnection",
]


class ListenFailed(Exception):
    """
    An endpoint could not listen (port in use, bad address, no permission).
    Its message is one line naming the endpoint and the cause.
    """


@attrs.frozen
class AnnounceSettings:
    """
    ASAP Server Announce (off unless given to L{RegistrarService}).

    @ivar group: C{(host, port)}; RSPLIB's default is 239.0.0.50:3863.
    @ivar interval: seconds between announcements (RSPLIB 1 s).
    @ivar ttl: the multicast TTL (RSPLIB 30).
    @ivar interface: the address of the interface to send from, or C{None}.
    """

    group: tuple = ("239.0.0.50", 3863)
    interval: float = 1.0
    ttl: int = 30
    interface: object = None


class Wakeup:
    """
    One reactor timer for a sans-IO state machine that asks to be woken at
    absolute times (its L{rserpool.actions.Schedule} actions, which a
    L{Runner} hands to C{schedule(when)}): the earliest request is kept,
    and the callback gets the current time.
    """

    def __init__(self, clock, callback=None):
        """
        @param clock: an L{IReactorTime}.
        @param callback: called with C{clock.seconds()} when a requested time
            is reached.
        """
        self.clock = clock
        self.callback = callback
        self._call = None
        self.stopped = False

    def schedule(self, when):
        """
        Wake up at C{when} (seconds) or earlier; ignored once stopped.
        """
        if self.stopped:
            return
        call = self._call
        if call is not None and call.active():
            if call.getTime() <= when:
                return
            call.cancel()
        self._call = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._fire)

    def cancel(self):
        """
        Forget the pending wake-up and ignore further requests.
        """
        self.stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _fire(self):
        self._call = None
        self.callback(self.clock.seconds())


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


def _sctp_listener_addresses(host):
    """
    The addresses an SCTP listener is bound to, normalized, in order and
    without repeats (unusable ones skipped).

    @param host: the listener's C{getHost()}.
    @return: a list of L{ipaddress} addresses, or C{None} when it listens
        on the wildcard address.
    """
    out = []
    for text in getattr(host, "addresses", ()) or (host.host,):
        try:
            address = normalize_address(text)
        except (ValueError, AttributeError):
            continue
        if address.is_unspecified:
            return None
        if address not in out:
            out.append(address)
    return out


def _host_list(addresses):
    return ",".join(str(a) for a in addresses).replace(":", "\\:")


def asap_endpoint(transport, bind=()):
    """
    A client endpoint string to reach a PE's ASAP transport parameter (the
    one RSPLIB's Handle Updates carry), or C{None} when no registrar can
    open a connection to it.

    Only SCTP qualifies: a PE's SCTP ASAP socket is one-to-many and accepts
    associations (RSPLIB's PEs peel off an association that brings an
    Endpoint Keep Alive with the H flag and make it their registrar
    association, RFC 5352 section 3.7); a PE over our TCP mapping listens
    for nothing on its ASAP side.

    @param transport: an L{SCTPTransport} (anything else gives C{None}).
    @param bind: local addresses to bind the association to.
    """
    if not isinstance(transport, SCTPTransport) or not transport.addresses or not transport.port:
        return None
    description = "sctp:host=%s:port=%d:ppid=%d:timeout=%g" % (
        _host_list(transport.addresses), transport.port, ASAP_PPID, PE_CONNECT_TIMEOUT)
    if bind:
        description += ":bindAddress=" + _host_list(bind)
    return description


@implementer(IMessageConnection)
class PendingConnection:
    """
    An ASAP association to an adopted PE, while it is being set up: what
    is sent is queued and goes out once it is up; dropped if it fails.  The
    association itself is an ordinary ASAP connection of the registrar (the
    PE's Endpoint Keep Alive Ack and later re-registrations arrive over it),
    so this object only stands in for it until then.

    @ivar connection: the connected L{IMessageConnection}, or C{None}.
    @ivar failed: C{True} once setting it up failed.
    """

    mapping = "sctp"
    identity = None

    def __init__(self, transport):
        self.transport = transport
        self.peer_addresses = tuple(transport.addresses)
        self.peer_transport = transport
        self.connection = None
        self.failed = False
        self.deferred = None
        self._queue = []

    def send(self, message):
        if self.connection is not None:
            self.connection.send(message)
        elif not self.failed:
            self._queue.append(message)

    def send_encoded(self, data):
        if self.connection is not None:
            self.connection.send_encoded(data)
        elif not self.failed:
            self._queue.append(data)

    def close(self):
        if self.connection is not None:
            self.connection.close()
        self._queue = []
        self.failed = True

    def connected(self, connection):
        self.connection = connection
        queue, self._queue = self._queue, []
        for item in queue:
            if isinstance(item, bytes):
                connection.send_encoded(item)
            else:
                connection.send(item)

    def lost(self):
        self._queue = []
        self.failed = True


class RegistrarService(service.Service):
    """
    A registrar: listens for ASAP on each endpoint, keeps the registrar's
    timer, and optionally announces itself and answers ENRP.

    @ivar registrar: the L{ASAPRegistrar}.
    @ivar ports: the listening ports, once started.
    @ivar ready: a L{Deferred} that fires with the list of listening ports
        once every endpoint listens, or fails with L{ListenFailed}.
    """

    log = Logger()

    def __init__(
        self,
        config,
        asap_endpoints=("tcp:3863:interface=127.0.0.1",),
        enrp_endpoint=None,
        peers=(),
        announce=None,
        min_address_scope=None,
        max_elements_per_ht_request=128,
        enrp_config=None,
        enrp_multicast=None,
        reactor=None,
        rng=None,
        exit_on_listen_failure=False,
        enrp_multicast_ttl=30,
        enrp_multicast_interface=None,
        psk=None,
        secured=False,
        reload_on_sighup=False,
        connection_limits=None,
        peer_networks=None,
        public_dump=False,
        http=None,
        http_limits=None,
        metrics_cache=1.0,
        csp=None,
        csp_interval=0.25,
    ):
        """
        @param config: a L{RegistrarConfig}; its C{min_address_scope} is
            replaced by the listeners' scope unless C{min_address_scope} is
            given.
        @param asap_endpoints: server endpoint strings for ASAP.
        @param enrp_endpoint: a server endpoint string for ENRP, or C{None}
            for no ENRP at all.
        @param peers: static ENRP peers: client endpoint strings
            (C{tcp:HOST:9901}, C{sctp:host=H:port=9901:ppid=12}) or
            C{HOST:PORT}.
        @param max_elements_per_ht_request: PEs per Handle Table Response
            (used when C{enrp_config} is not given).
        @param enrp_config: an L{ENRPConfig}.
        @param enrp_multicast: C{(group, port)} to send and hear ENRP
            Presence on, or C{None} (off, the default).
        @param enrp_multicast_ttl: the multicast TTL of ENRP Presence.
        @param enrp_multicast_interface: the address of the interface to
            send and hear ENRP Presence on, or C{None} for the system's
            choice.
        @param announce: L{AnnounceSettings}, or C{None} to stay silent.
        @param min_address_scope: a L{Scope} to enforce, or C{None} for the
            narrowest scope of the ASAP listeners' own addresses.
        @param reactor: the reactor (the global one by default).
        @param rng: a C{random.Random}.
        @param exit_on_listen_failure: raise C{SystemExit} with a one-line
            message if an endpoint cannot listen (for C{twistd}, which would
            otherwise print a traceback).
        @param psk: a L{rserpool.transport.psk.PSKEndpoints} to secure every
            ASAP and ENRP listener and every ENRP peer connection with
            TLS-PSK (RFC 5355), or C{None}.  Secured, the registrar neither
            listens on nor dials anything else: no registration or peer
            update reaches it unauthenticated.
        @param secured: whether every endpoint is secured (C{psk:}, C{ssl:},
            C{tls:}) without C{psk}: peers learned from List Responses and
            ENRP Presence, whose addresses come without TLS settings, are
            then not dialed (RFC 5355 section 2.15.3).
        @param reload_on_sighup: when a listener is TLS-PSK, call
            L{reload_keys} on SIGHUP while the service runs (for C{twistd}).
        @param peer_networks: networks (L{ipaddress} networks or strings)
            whose registrars may become ENRP peers without being static
            peers or named by one (C{--enrp-peer-networks}; RFC 5355
            section 2.5, doc/enrp.rst "Who is a peer"); C{None}, the
            default, for the networks this host's interfaces are on
            (L{host_networks}: a cluster on one LAN peers with
            C{--peer} given on one side only), C{()} for none.
        @param public_dump: answer ENRP List and Handle Table Requests from
            anyone, not only from peers and this host.
        @raise ValueError: C{psk} without a key file of its own for ENRP
            while ENRP is on: a pool user's key must never open ENRP.
        @param connection_limits: the L{ConnectionLimits} of every accepted
            ASAP and ENRP connection and of the listeners together
            (deadlines, write buffer, connections per source); the
            defaults of L{ConnectionLimits} unless given.
        @param http: a server endpoint string for the HTTP listener
            (metrics, the handlespace page, health checks:
            L{rserpool.web.monitor}), or C{None} (off, the default).
        @param http_limits: its L{rserpool.web.http.HTTPLimits}.
        @param metrics_cache: seconds a rendered C{/metrics} is reused.
        @param csp: C{(host, port)} of RSPLIB's C{cspmonitor} to report to
            (Component Status Protocol, L{rserpool.transport.csp}), or
            C{None}.
        @param csp_interval: seconds between those reports.
        """
        if enrp_endpoint and psk is not None and (
                psk.peer_keys is None or os.path.realpath(psk.peer_keys) ==
                os.path.realpath(psk.keys)):
            # RFC 5355 section 2.5: registrars authenticate each other; a
            # key handed to PEs and pool users must not make a registrar.
            raise ValueError(
                "ENRP over TLS-PSK needs a key file of the registrars' own (--psk-peer-keys), "
                "not the PEs' and pool users' %s (or turn ENRP off with --enrp none)" % psk.keys)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.peer_networks = peer_networks
        self.public_dump = public_dump
        self.rng = rng if rng is not None else random.Random()
        self.asap_endpoints = list(asap_endpoints)
        self.enrp_endpoint = enrp_endpoint
        self.peers = list(peers)
        self.announce = announce
        self.fixed_scope = min_address_scope
        if min_address_scope is not None:
            config = attrs.evolve(config, min_address_scope=min_address_scope)
        #: carries out what the machines return
        self.run = Runner(dial=self._connect_peer)
        self.wakeup = Wakeup(reactor, self._asap_timer)
        self.registrar = ASAPRegistrar(config, rng=self.rng)
        self.run.timers[self.registrar] = self.wakeup
        self.max_elements_per_ht_request = max_elements_per_ht_request
        if enrp_config is None:
            enrp_config = ENRPConfig(max_elements_per_ht_request=max_elements_per_ht_request)
        self.enrp_config = enrp_config
        self.enrp_multicast = enrp_multicast
        self.enrp_multicast_ttl = enrp_multicast_ttl
        self.enrp_multicast_interface = enrp_multicast_interface
        self.enrp = None
        self.enrp_ports = []
        self._enrp_wakeup = None
        self._peer_services = []
        self._dialing = {}
        self._reaching = {}
        self._asap_factory = None
        self._multicast = None
        self._multicast_port = None
        self.exit_on_listen_failure = exit_on_listen_failure
        self.psk = psk
        self.secured = secured or psk is not None
        self._psk_creators = []
        self.reload_on_sighup = reload_on_sighup
        self._previous_sighup = None
        self.ports = []
        self.asap_ports = []
        self.ready = None
        self.connection_limits = connection_limits if connection_limits is not None \
            else ConnectionLimits()
        self.connection_budget = ConnectionBudget(self.connection_limits)
        #: the registrar's time shared out by source, over all listeners
        self.turns = TurnScheduler(self.reactor)
        self.refusals = RefusalLog()
        self.http = http
        self.csp = csp
        self.csp_interval = csp_interval
        #: counters, recent events and the HTTP side (rserpool.web.monitor)
        self.monitor = RegistrarMonitor(self, reactor, limits=http_limits,
                                        metrics_cache=metrics_cache)
        self._enrp = None
        self._sender = None
        self._listen_scopes = []

    # -- service ----------------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        self.wakeup.stopped = False
        server_id = self.registrar.server_id
        self.log.info("registrar {id:08x} starting", id=server_id)
        receiver = self.monitor.asap_receiver(self.registrar, self.reactor, self.run)
        factory = self._asap_factory = MessageStreamFactory(
            receiver, "asap", limits=self.connection_limits, clock=self.reactor,
            budget=self.connection_budget, refusals=self.refusals, turns=self.turns)
        listens = []
        for description in self.asap_endpoints:
            listens.append(self._listen(description, factory, "ASAP"))
        if self.enrp_endpoint:
            listens.append(self._start_enrp())
        http = self.monitor.start(self.http).addErrback(self._http_failed)
        if self.csp is not None:
            self.monitor.start_csp(self.csp, self.csp_interval)
        d = defer.gatherResults(listens + [http], consumeErrors=True)
        d.addCallback(lambda ports: self._listening(ports[:-1]))
        d.addErrback(self._listen_failed)
        self.ready = d
        # An endpoint such as TCP listens at once: report a failure now, as
        # one line, instead of a traceback from twistd.
        if self.exit_on_listen_failure and isinstance(getattr(d, "result", None), Failure):
            failure = d.result
            d.addErrback(lambda f: None)
            raise SystemExit("enrp: " + failure.getErrorMessage())

    def _listen(self, description, factory, what):
        try:
            if self.psk is not None:
                description = self.psk.server(description, peer=(what == "ENRP"))
            endpoint = serverFromString(self.reactor, with_backlog(description))
        except (ValueError, KeyError, TypeError) as e:
            return defer.fail(ListenFailed("bad {} endpoint {!r}: {}".format(what, description, e)))
        if isinstance(endpoint, PSKServerEndpoint):
            self._psk_creators.append(endpoint.creator)

        def listening(port):
            limit_accepts(port)
            self.ports.append(port)
            host = address_of(port.getHost())
            if what == "ASAP":
                self.asap_ports.append(port)
                self._listen_scopes.append(listening_scope(host[0]))
            elif what == "ENRP":
                self.enrp_ports.append(port)
            self.log.info(
                "{what} listening on {endpoint} ({where})",
                what=what,
                endpoint=description,
                where=_where(port.getHost()),
            )
            return port

        def failed(f):
            f.trap(CannotListenError, OSError)
            reason = f.value
            if isinstance(reason, CannotListenError):
                reason = reason.socketError
            raise ListenFailed(
                "cannot listen for {} on {!r}: {}".format(what, description, _strerror(reason))
            )

        return endpoint.listen(factory).addCallbacks(listening, failed)

    def _http_failed(self, f):
        reason = f.value
        if isinstance(reason, CannotListenError):
            reason = reason.socketError
        raise ListenFailed("cannot listen for HTTP on {!r}: {}".format(self.http, _strerror(reason)))

    def _listening(self, ports):
        if self.reload_on_sighup and self._psk_creators and hasattr(signal, "SIGHUP"):
            self._previous_sighup = signal.signal(
                signal.SIGHUP, lambda number, frame: self.reactor.callFromThread(self.reload_keys))
        if self.fixed_scope is None and self._listen_scopes:
            scope = min(self._listen_scopes)
            self.registrar.config = attrs.evolve(self.registrar.config, min_address_scope=scope)
        self.log.info(
            "registrar {id:08x} ready; accepting PE addresses of scope {scope} and wider",
            id=self.registrar.server_id,
            scope=Scope(self.registrar.config.min_address_scope).name.lower().replace("_", "-"),
        )
        if self.announce is not None:
            self._start_announce()
        if self.enrp is not None:
            self._start_peering()
        return ports

    def _listen_failed(self, failure):
        if isinstance(failure.value, defer.FirstError):
            failure = failure.value.subFailure
        failure.trap(ListenFailed)
        self.log.critical("{message}", message=failure.getErrorMessage())
        for port in self.ports:
            port.stopListening()
        self.ports = []
        self.monitor.stop()
        if not self.exit_on_listen_failure:
            return failure
        if self.reactor.running:
            self.reactor.stop()
        return failure

    def reload_keys(self):
        """
        Read the TLS-PSK key files of the listeners again (C{twistd enrp}
        does it on SIGHUP): new handshakes use the new keys, and
        connections authenticated with an identity that is no longer in
        its file are closed, so that removing a key revokes it.  A file that
        cannot be read or is wrong leaves its keys as they were.

        @return: the number of connections closed.
        """
        closed = 0
        for creator in self._psk_creators:
            try:
                removed = creator.reload()
            except KeyFileError as e:
                self.log.error("keys not reloaded: {error}", error=str(e))
                continue
            self.log.info("reloaded {count} keys from {path}", count=len(creator.identities),
                          path=creator.path)
            if removed:
                count = creator.revoke(removed)
                self.log.info("closed {count} connections of revoked identities {identities}",
                              count=count, identities=sorted(removed))
                closed += count
        return closed

    def _start_announce(self):
        settings = self.announce
        if self.psk is not None:
            self.log.warn(
                "Server Announces name this registrar's ASAP port but not its TLS-PSK: "
                "PEs and PUs must reach it through psk: registrar endpoints")
        self._sender = AnnounceSender(
            self.reactor,
            self.registrar.server_id,
            self.announced_transports,
            settings.group,
            settings.interval,
            settings.ttl,
            settings.interface,
            self.rng,
        )
        interface = "::" if ":" in settings.group[0] else ""
        if ipaddress.ip_address(settings.group[0]).is_multicast:
            # As RSPLIB, send from the SCTP ASAP port number: a receiver
            # that finds no usable SCTP transport in the announcement
            # (RSPLIB's) takes the source address and port.
            port = self._sctp_asap_port()
            self._announce_port = None
            if port:
                try:
                    self._announce_port = self.reactor.listenMulticast(
                        port, self._sender, interface=interface, listenMultiple=True)
                except CannotListenError as e:
                    self.log.warn("cannot send Server Announce from UDP port {port}: {error}",
                                  port=port, error=str(e))
            if self._announce_port is None:
                self._announce_port = self.reactor.listenMulticast(
                    0, self._sender, interface=interface)
        else:
            self._announce_port = self.reactor.listenUDP(0, self._sender, interface=interface)
        self.log.info(
            "announcing registrar {id:08x} to {group} every {interval} s",
            id=self.registrar.server_id,
            group="%s:%d" % settings.group,
            interval=settings.interval,
        )

    def _sctp_asap_port(self):
        for port in self.asap_ports:
            host = port.getHost()
            if getattr(host, "type", None) == "SCTP":
                return getattr(host, "port", 0)
        return 0

    def announced_transports(self):
        """
        The transport parameters of the ASAP listeners, for Server Announce:
        SCTP ones first (RSPLIB's receivers take the first SCTP Transport
        and stop reading there), then TCP.

        An SCTP listener on the wildcard address is announced with the
        announce interface's address when one is set; without one it is
        left out, and receivers take the announcement's source address and
        port (the SCTP port, see L{_start_announce}), as from RSPLIB's
        registrars, which announce no transport.
        """
        sctp, tcp = [], []
        interface = self.announce.interface if self.announce is not None else None
        for port in self.asap_ports:
            host = port.getHost()
            kind = getattr(host, "type", "TCP")
            if kind == "SCTP":
                addresses = _sctp_listener_addresses(host)
                if addresses is None:
                    addresses = []
                    if interface:
                        try:
                            addresses = [normalize_address(interface)]
                        except ValueError:
                            pass
                if addresses:
                    sctp.append(SCTPTransport(host.port, tuple(addresses)))
            elif kind == "TCP":
                address, number = address_of(host)
                if address is not None:
                    tcp.append(TCPTransport(number, (address,)))
        return sctp + tcp

    # -- ENRP -------------------------------------------------------------

    def _start_enrp(self):
        """
        Build the ENRP server and listen for peers.
        """
        clock = self.reactor
        self._enrp_wakeup = Wakeup(clock, self._enrp_timer)
        self.enrp = ENRPServer(
            self.registrar,
            self.enrp_config,
            information=self.server_information,
            rng=self.rng,
            reach_pe=self.reach_pe,
            policy=self.peer_policy(),
        )
        self.run.timers[self.enrp] = self._enrp_wakeup
        self._enrp_factory = MessageStreamFactory(
            self.monitor.enrp_receiver(self.enrp, clock, run=self.run), ENRP,
            limits=self.connection_limits,
            clock=self.reactor, budget=self.connection_budget, reserved=True,
            refusals=self.refusals, turns=self.turns)
        return self._listen(self.enrp_endpoint, self._enrp_factory, "ENRP")

    def peer_policy(self):
        """
        The L{PeerPolicy} of this registrar's ENRP server: the static
        peers' literal addresses, the accepted networks, this host's
        addresses (a dump from them is answered) and whether every ENRP
        connection is TLS-PSK with the registrars' keys.
        """
        static = set()
        for description in self.peers:
            static |= endpoint_addresses(peer_endpoint(description))
        networks = self.peer_networks
        if networks is None:
            networks = host_networks()
        self.log.info(
            "ENRP admits as peers its --peer registrars, those they name{networks}",
            networks=" and registrars in " + ", ".join(str(n) for n in networks)
            if networks else " (no other network: --enrp-peer-networks)")
        return PeerPolicy(static=static, networks=tuple(networks),
                          local=host_addresses(), public_dump=self.public_dump,
                          authenticated=self.psk is not None)

    def _start_peering(self):
        # RFC 5353 section 3.2: static peers first (ClientService keeps
        # reconnecting, with backoff, as long as we run), then startup.
        self.run(self.enrp.start(self.reactor.seconds()))
        for description in self.peers:
            self._dial(peer_endpoint(description), static=True)
        if self.enrp_multicast is not None:
            self._start_enrp_multicast()

    def _dial(self, description, static=False):
        try:
            if self.psk is not None:
                description = self.psk.client(description)
            if description in self._dialing:
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
        factory = MessageStreamFactory(
            self.monitor.enrp_receiver(self.enrp, self.reactor, outgoing=True, run=self.run), ENRP)
        if static:
            client = ClientService(endpoint, factory, retryPolicy=backoffPolicy(
                initialDelay=0.5, maxDelay=self.enrp_config.max_time_last_heard / 2.0),
                clock=self.reactor)
            client.startService()
            self._peer_services.append(client)
            self._dialing[description] = client
            self.log.info("ENRP peer {peer}: connecting", peer=description)
        else:
            # A peer we were told of: one attempt; it reconnects to us if it
            # lists us, and List Responses and Presences tell us again.
            self._dialing[description] = None
            d = endpoint.connect(factory)

            def done(result):
                self._dialing.pop(description, None)
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
        for port in self.enrp_ports:
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
        for port in self.enrp_ports:
            if isinstance(port, SCTPSeqPacketPort) and port.connected:
                return SCTPAssociationEndpoint(port, endpoint.hosts, endpoint.port, endpoint.timeout)
        return endpoint

    def _asap_timer(self, now):
        self.run(self.registrar.timer_fired(now))

    def _enrp_timer(self, now):
        self.run(self.enrp.timer_fired(now))

    def _connect_peer(self, information):
        description = transport_endpoint(information.transport)
        if description is not None:
            self._dial(description)

    def reach_pe(self, pe):
        """
        A connection to the ASAP endpoint of a PE this registrar adopts in
        a takeover (RFC 5353 section 3.5.2): the new home must tell the PE
        with an Endpoint Keep Alive carrying the H flag (RFC 5352 section
        3.7), but the PE registered elsewhere and has no connection to us.
        Over SCTP we open an association to the ASAP transport the PE's
        Handle Updates carry, as RSPLIB does from its one-to-many ASAP
        socket; the PE makes it its registrar association.  One association
        serves every PE behind the same ASAP transport.

        @param pe: a handlespace PE.
        @return: an L{IMessageConnection} (a L{PendingConnection} until
            the association is up), or C{None} when the PE cannot be
            reached that way (no or a non-SCTP ASAP transport, or it is
            connected to us already).
        """
        if pe.connection is not None and pe.connection in self.registrar.connections:
            return None
        if self.secured:
            # Only SCTP reaches a PE this way, and SCTP is not secured.
            return None
        transport = pe.asap_transport
        key = (transport.port, tuple(transport.addresses)) \
            if isinstance(transport, SCTPTransport) else None
        pending = self._reaching.get(key)
        if pending is not None and not pending.failed and (
                pending.connection is None or pending.connection in self.registrar.connections):
            return pending
        bind = ()
        if key is not None:
            bind = tuple(a for a in self._asap_bind_addresses()
                         if a.version == transport.addresses[0].version)
        description = asap_endpoint(transport, bind)
        if description is None or self._asap_factory is None:
            return None
        try:
            endpoint = clientFromString(self.reactor, description)
        except (ValueError, KeyError, TypeError) as e:
            self.log.warn("cannot reach PE {pe_id:08x} at {where}: {error}",
                          pe_id=pe.pe_id, where=description, error=str(e))
            return None
        pending = self._reaching[key] = PendingConnection(transport)
        self.log.info("connecting to the ASAP endpoint of adopted PE {pe_id:08x} ({where})",
                      pe_id=pe.pe_id, where=description)
        d = pending.deferred = endpoint.connect(self._asap_factory)

        def connected(protocol):
            pending.deferred = None
            pending.connected(protocol)
            return None

        def failed(f):
            pending.deferred = None
            pending.lost()
            if self._reaching.get(key) is pending:
                del self._reaching[key]
            self.log.info("cannot reach the ASAP endpoint {where}: {error}", where=description,
                          error=f.getErrorMessage())
            return None

        d.addCallbacks(connected, failed)
        return pending

    def _asap_bind_addresses(self):
        # Associations to PEs leave from our ASAP listeners' addresses, the
        # ones the PEs know us by (none when a listener is on the wildcard).
        out = []
        for port in self.asap_ports:
            host = port.getHost()
            if getattr(host, "type", None) != "SCTP":
                continue
            addresses = _sctp_listener_addresses(host)
            if addresses is None:
                return ()
            out.extend(a for a in addresses if a not in out)
        return tuple(out)

    def _start_enrp_multicast(self):
        group = self.enrp_multicast
        self._multicast = PresenceMulticast(
            self.enrp, self.reactor, group, ttl=self.enrp_multicast_ttl,
            interface=self.enrp_multicast_interface or "", run=self.run)
        interface = "::" if ":" in group[0] else ""
        self._multicast_port = self.reactor.listenMulticast(
            group[1], self._multicast, interface=interface, listenMultiple=True)
        self.run.multicast = self._multicast.send
        self.enrp.multicast = True
        self.log.info("ENRP Presence over multicast {group}", group="%s:%d" % group)

    def server_information(self):
        """
        This registrar's ENRP L{ServerInformation}: its id and where its
        ENRP endpoint listens.
        """
        server_id = self.registrar.server_id
        for port in self.enrp_ports:
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
                    # host, loopback included, which means nothing to a
                    # peer elsewhere (it would try 127.0.0.1, itself).
                    wider = [a for a in addresses if not a.is_loopback]
                    if any(not a.is_unspecified for a in wider):
                        addresses = wider
                if addresses:
                    return ServerInformation(server_id, SCTPTransport(number, tuple(addresses)))
            elif address is not None:
                return ServerInformation(server_id, TCPTransport(number, (address,)))
        return ServerInformation(server_id, TCPTransport(9901, (ipaddress.ip_address("127.0.0.1"),)))

    def stopService(self):
        service.Service.stopService(self)
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        stops = []
        if self._sender is not None:
            stops.append(defer.maybeDeferred(self._announce_port.stopListening))
            self._sender = None
        for port in self.ports:
            stops.append(defer.maybeDeferred(port.stopListening))
        self.ports = []
        self.asap_ports = []
        self._listen_scopes = []
        for pending in list(self._reaching.values()):
            if pending.deferred is not None:
                pending.deferred.cancel()
        self._reaching = {}
        for conn in list(self.registrar.connections):
            conn.close()
        for client in self._peer_services:
            stops.append(defer.maybeDeferred(client.stopService))
        self._peer_services = []
        if self._multicast_port is not None:
            stops.append(defer.maybeDeferred(self._multicast_port.stopListening))
            self._multicast_port = None
        if self.enrp is not None:
            for conn in self.enrp.connections:
                conn.close()
            self.enrp.stop()
            self._enrp_wakeup.cancel()
        self.enrp_ports = []
        self.wakeup.cancel()
        stops.append(self.monitor.stop())
        return defer.gatherResults(stops)


def _where(address):
    host = getattr(address, "host", None)
    if host is None:
        return str(address)
    port = getattr(address, "port", "")
    text = "[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)
    try:
        wildcard = normalize_address(host).is_unspecified
    except ValueError:
        wildcard = False
    if wildcard:
        # Say what the wildcard means on this host: the addresses PEs and
        # peers elsewhere can use.
        family = 6 if ":" in host else 4
        found = [str(a) for a in host_addresses() if a.version == family or
                 (family == 6 and _dual_stack_host())]
        text += "; every address: %s" % (", ".join(found) or "none found")
    return text


def _dual_stack_host():
    try:
        with open("/proc/sys/net/ipv6/bindv6only") as f:
            return f.read().strip() == "0"
    except OSError:
        return False


def _host_interfaces():
    """
    This host's interface addresses with their prefix lengths (Linux; an
    empty list where they cannot be read): the primary IPv4 address of
    each interface (SIOCGIFADDR, SIOCGIFNETMASK) and every IPv6 address
    (/proc/net/if_inet6).

    @return: a list of L{ipaddress} interfaces (C{IPv4Interface},
        C{IPv6Interface}).
    """
    out = []
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        names = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for name in names:
            request = struct.pack("256s", name[:15].encode())
            try:
                address = fcntl.ioctl(probe.fileno(), 0x8915, request)[20:24]
                mask = fcntl.ioctl(probe.fileno(), 0x891B, request)[20:24]
            except OSError:
                continue
            prefix = bin(int.from_bytes(mask, "big")).count("1")
            out.append(ipaddress.IPv4Interface((ipaddress.IPv4Address(address), prefix)))
    finally:
        probe.close()
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3:
                    out.append(ipaddress.IPv6Interface(
                        (ipaddress.IPv6Address(int(fields[0], 16)), int(fields[2], 16))))
    except (OSError, ValueError):
        pass
    return out


def host_networks():
    """
    The networks this host's interfaces are on, loopback and IPv6
    link-local excepted (Linux; an empty tuple where they cannot be read):
    the registrars a registrar admits as ENRP peers by default.

    @return: a tuple of L{ipaddress} networks.
    """
    out = []
    for interface in _host_interfaces():
        if interface.ip.is_loopback or (interface.version == 6 and interface.ip.is_link_local):
            continue
        if interface.network not in out:
            out.append(interface.network)
    return tuple(out)


def host_addresses():
    """
    The IP addresses of this host's interfaces (Linux; an empty list
    where they cannot be read): the IPv4 address of each interface and
    every IPv6 address, loopback first.

    @return: a list of L{ipaddress} addresses.
    """
    out = [interface.ip for interface in _host_interfaces()]
    out.sort(key=lambda a: (a.version, not a.is_loopback))
    return out


def _strerror(error):
    strerror = getattr(error, "strerror", None)
    if strerror:
        return strerror.lower() if strerror[0].isupper() and strerror[1:2].islower() else strerror
    return str(error)


def new_server_id(rng):
    """
    A random, non-zero 32-bit registrar id (RFC 5353 section 3.2.1).
    """
    while True:
        value = rng.getrandbits(32)
        if value:
            return value


def make_config(server_id=None, rng=None, **settings):
    """
    A L{RegistrarConfig} with a random id unless one is given.
    """
    if server_id is None:
        server_id = new_server_id(rng if rng is not None else random.SystemRandom())
    return RegistrarConfig(server_id=server_id, **settings)
