"""
Reaching adopted PEs (RFC 5353 section 3.5.2, RFC 5352 section 3.7): a
registrar that took over a failed peer's PEs must tell each of them with
an Endpoint Keep Alive carrying the H flag, but those PEs registered
elsewhere and have no connection to it.  Over SCTP it opens an
association to the PE's ASAP transport, as RSPLIB does; the PE makes it
its registrar association.
"""
from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.logger import Logger
from zope.interface import implementer

from rserpool.codes import ASAP_PPID
from rserpool.interfaces import IMessageConnection
from rserpool.services.announcing import sctp_listener_addresses
from rserpool.wire import SCTPTransport

__all__ = ["PEReachService", "PendingConnection", "asap_endpoint", "PE_CONNECT_TIMEOUT"]

#: Seconds to wait for an association to an adopted PE's ASAP endpoint.
PE_CONNECT_TIMEOUT = 5.0


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


class PEReachService(service.Service):
    """
    Opens ASAP associations to adopted PEs for the ENRP machine's
    takeovers (its C{reach_pe}), one per ASAP transport, and cancels those
    still being set up when it stops.
    """

    log = Logger()

    def __init__(self, reactor, registrar, listeners, factory, secured=False):
        """
        @param reactor: the reactor.
        @param registrar: the L{rserpool.asap.registrar.ASAPRegistrar}
            (whose connections tell whether a PE is connected to us).
        @param listeners: the registrar's
            L{rserpool.services.listeners.ListenerService}: associations
            leave from the addresses of its C{"ASAP"} ports.
        @param factory: the ASAP listeners' protocol factory (the
            association is an ordinary ASAP connection).
        @param secured: every endpoint is secured: SCTP is not, so no PE
            is reached this way.
        """
        self.reactor = reactor
        self.registrar = registrar
        self.listeners = listeners
        self.factory = factory
        self.secured = secured
        self._reaching = {}

    def reach_pe(self, pe):
        """
        A connection to the ASAP endpoint of a PE this registrar adopts in
        a takeover.  One association serves every PE behind the same ASAP
        transport.

        @param pe: a handlespace PE.
        @return: an L{IMessageConnection} (a L{PendingConnection} until
            the association is up), or C{None} when the PE cannot be
            reached that way (no or a non-SCTP ASAP transport, or it is
            connected to us already).
        """
        if pe.connection is not None and pe.connection in self.registrar.connections:
            return None
        if self.secured or not self.running:
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
            bind = tuple(a for a in self._bind_addresses()
                         if a.version == transport.addresses[0].version)
        description = asap_endpoint(transport, bind)
        if description is None:
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
        d = pending.deferred = endpoint.connect(self.factory)

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

    def _bind_addresses(self):
        # Associations to PEs leave from our ASAP listeners' addresses, the
        # ones the PEs know us by (none when a listener is on the wildcard).
        out = []
        for port in self.listeners.ports_of.get("ASAP", ()):
            host = port.getHost()
            if getattr(host, "type", None) != "SCTP":
                continue
            addresses = sctp_listener_addresses(host)
            if addresses is None:
                return ()
            out.extend(a for a in addresses if a not in out)
        return tuple(out)

    def stopService(self):
        service.Service.stopService(self)
        for pending in list(self._reaching.values()):
            if pending.deferred is not None:
                pending.deferred.cancel()
        self._reaching = {}
        return defer.succeed(None)
