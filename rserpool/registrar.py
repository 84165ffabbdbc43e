"""
The registrar as a Twisted service: ASAP listeners, the timer, Server
Announce, and (for now) a minimal ENRP responder, tied around the sans-IO
L{rserpool.asap.registrar.ASAPRegistrar}.

Listeners are Twisted endpoint strings (C{tcp:3863:interface=127.0.0.1};
later C{sctp:...}, C{ssl:...}), parsed with
L{twisted.internet.endpoints.serverFromString}: the state machine never
knows which mapping it runs on.
"""
import ipaddress
import random

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rserpool.asap.registrar import ASAPRegistrar, RegistrarConfig, wire_policy
from rserpool.asap.scope import Scope, listening_scope
from rserpool.transport.base import IMessageReceiver
from rserpool.transport.multicast import AnnounceSender
from rserpool.transport.tcp import MessageStreamFactory, address_of
from rserpool.wire import (
    ENRP,
    ENRPError,
    HandleTableEntry,
    HandleTableRequest,
    HandleTableResponse,
    ListRequest,
    ListResponse,
    OperationError,
    Presence,
    TCPTransport,
)
from rserpool.wire import PoolElement as WirePoolElement

__all__ = ["RegistrarService", "AnnounceSettings", "ListenFailed", "Wakeup", "ASAPReceiver"]


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
    absolute times: C{schedule(when)} keeps the earliest request, and the
    callback gets the current time.
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


@implementer(IMessageReceiver)
class ASAPReceiver:
    """
    Feeds the mapping's events to the sans-IO registrar, with the time.
    """

    def __init__(self, registrar, clock):
        self.registrar = registrar
        self.clock = clock

    def connection_made(self, connection):
        self.registrar.connection_made(connection, self.clock.seconds())

    def message_received(self, connection, message):
        self.registrar.message_received(connection, message, self.clock.seconds())

    def protocol_error(self, connection, error):
        self.registrar.protocol_error(connection, error, self.clock.seconds())

    def connection_lost(self, connection):
        self.registrar.connection_lost(connection, self.clock.seconds())


@implementer(IMessageReceiver)
class _ENRPResponder:
    """
    A stand-in for the ENRP state machines (they arrive with the ENRP
    issue): answers List Request with an empty peer list and Handle Table
    Request with the local handlespace, in pages of at most
    C{max_elements} PEs with the M flag on all but the last (RFC 5353
    sections 3.4 and 3.5: the requester asks again for the next page).
    Other ENRP messages are logged and dropped.
    """

    log = Logger()

    def __init__(self, registrar, max_elements=128):
        self.registrar = registrar
        self.max_elements = max_elements
        self._pages = {}
        self.connections = set()

    def connection_made(self, connection):
        self.connections.add(connection)

    def connection_lost(self, connection):
        self.connections.discard(connection)
        self._pages.pop(connection, None)

    def protocol_error(self, connection, error):
        if error.report:
            connection.send(
                ENRPError(self.registrar.server_id, 0, OperationError.from_error(error))
            )

    def message_received(self, connection, message):
        own = self.registrar.server_id
        if isinstance(message, ListRequest):
            connection.send(ListResponse(own, message.sender_id, ()))
        elif isinstance(message, HandleTableRequest):
            pages = self._pages.get(connection)
            if pages is None:
                pages = self._pages[connection] = self._paginate(message.own_children_only)
            entries = next(pages, ())
            more = bool(entries) and self._peek(connection)
            connection.send(HandleTableResponse(own, message.sender_id, entries, more))
            if not more:
                self._pages.pop(connection, None)
        elif isinstance(message, Presence):
            self.log.debug("ENRP Presence from {id:08x}: peering is not implemented yet",
                           id=message.sender_id)
        else:
            self.log.info("ENRP {message} ignored: peering is not implemented yet",
                          message=type(message).__name__)

    def _peek(self, connection):
        pages = self._pages[connection]
        try:
            first = next(pages)
        except StopIteration:
            return False

        def chain():
            yield first
            yield from pages

        self._pages[connection] = chain()
        return True

    def _paginate(self, own_only):
        hs = self.registrar.handlespace
        own = self.registrar.server_id
        page = []
        count = 0
        for pool in hs.pools():
            pes = [pe for pe in pool if not own_only or pe.home_registrar == own]
            while pes:
                room = self.max_elements - count
                chunk, pes = pes[:room], pes[room:]
                page.append(HandleTableEntry(pool.handle, [_handle_table_pe(pe) for pe in chunk]))
                count += len(chunk)
                if count >= self.max_elements:
                    yield tuple(page)
                    page, count = [], 0
        if page:
            yield tuple(page)


def _handle_table_pe(pe):
    # RSPLIB puts the ASAP transport into Handle Table Responses.
    return WirePoolElement(
        pe.pe_id,
        pe.home_registrar,
        pe.registration_life,
        pe.user_transport.wire,
        wire_policy(pe.policy),
        pe.asap_transport,
    )


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
        reactor=None,
        rng=None,
        exit_on_listen_failure=False,
    ):
        """
        @param config: a L{RegistrarConfig}; its C{min_address_scope} is
            replaced by the listeners' scope unless C{min_address_scope} is
            given.
        @param asap_endpoints: server endpoint strings for ASAP.
        @param enrp_endpoint: a server endpoint string for ENRP, or C{None}.
        @param peers: ENRP peers (C{host:port} strings), kept for the ENRP
            issue.
        @param announce: L{AnnounceSettings}, or C{None} to stay silent.
        @param min_address_scope: a L{Scope} to enforce, or C{None} for the
            narrowest scope of the ASAP listeners' own addresses.
        @param reactor: the reactor (the global one by default).
        @param rng: a C{random.Random}.
        @param exit_on_listen_failure: raise C{SystemExit} with a one-line
            message if an endpoint cannot listen (for C{twistd}, which would
            otherwise print a traceback).
        """
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.rng = rng if rng is not None else random.Random()
        self.asap_endpoints = list(asap_endpoints)
        self.enrp_endpoint = enrp_endpoint
        self.peers = list(peers)
        self.announce = announce
        self.fixed_scope = min_address_scope
        if min_address_scope is not None:
            config = attrs.evolve(config, min_address_scope=min_address_scope)
        self.wakeup = Wakeup(reactor)
        self.registrar = ASAPRegistrar(config, schedule=self.wakeup.schedule, rng=self.rng)
        self.wakeup.callback = self.registrar.timer_fired
        self.max_elements_per_ht_request = max_elements_per_ht_request
        self.exit_on_listen_failure = exit_on_listen_failure
        self.ports = []
        self.asap_ports = []
        self.ready = None
        self._enrp = None
        self._sender = None
        self._listen_scopes = []

    # -- service ----------------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        self.wakeup.stopped = False
        server_id = self.registrar.server_id
        self.log.info("registrar {id:08x} starting", id=server_id)
        receiver = ASAPReceiver(self.registrar, self.reactor)
        factory = MessageStreamFactory(receiver, "asap")
        listens = []
        for description in self.asap_endpoints:
            listens.append(self._listen(description, factory, "ASAP"))
        if self.enrp_endpoint:
            responder = self._enrp = _ENRPResponder(self.registrar, self.max_elements_per_ht_request)
            enrp = _ENRPReceiver(responder)
            listens.append(
                self._listen(self.enrp_endpoint, MessageStreamFactory(enrp, ENRP), "ENRP")
            )
        for peer in self.peers:
            self.log.warn(
                "ENRP peer {peer} noted; peering arrives with the ENRP implementation",
                peer=peer,
            )
        d = defer.gatherResults(listens, consumeErrors=True)
        d.addCallback(self._listening)
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
            endpoint = serverFromString(self.reactor, description)
        except (ValueError, KeyError, TypeError) as e:
            return defer.fail(ListenFailed("bad {} endpoint {!r}: {}".format(what, description, e)))

        def listening(port):
            self.ports.append(port)
            host = address_of(port.getHost())
            if what == "ASAP":
                self.asap_ports.append(port)
                self._listen_scopes.append(listening_scope(host[0]))
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

    def _listening(self, ports):
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
        return ports

    def _listen_failed(self, failure):
        if isinstance(failure.value, defer.FirstError):
            failure = failure.value.subFailure
        failure.trap(ListenFailed)
        self.log.critical("{message}", message=failure.getErrorMessage())
        for port in self.ports:
            port.stopListening()
        self.ports = []
        if not self.exit_on_listen_failure:
            return failure
        if self.reactor.running:
            self.reactor.stop()
        return failure

    def _start_announce(self):
        settings = self.announce
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
            listen = self.reactor.listenMulticast
        else:
            listen = self.reactor.listenUDP
        self._announce_port = listen(0, self._sender, interface=interface)
        self.log.info(
            "announcing registrar {id:08x} to {group} every {interval} s",
            id=self.registrar.server_id,
            group="%s:%d" % settings.group,
            interval=settings.interval,
        )

    def announced_transports(self):
        """
        The transport parameters of the ASAP listeners, for Server Announce.
        """
        out = []
        for port in self.asap_ports:
            address, number = address_of(port.getHost())
            if address is not None and getattr(port.getHost(), "type", "TCP") == "TCP":
                out.append(TCPTransport(number, (address,)))
        return out

    def stopService(self):
        service.Service.stopService(self)
        stops = []
        if self._sender is not None:
            stops.append(defer.maybeDeferred(self._announce_port.stopListening))
            self._sender = None
        for port in self.ports:
            stops.append(defer.maybeDeferred(port.stopListening))
        self.ports = []
        self.asap_ports = []
        self._listen_scopes = []
        for conn in list(self.registrar.connections):
            conn.close()
        if self._enrp is not None:
            for conn in list(self._enrp.connections):
                conn.close()
        self.wakeup.cancel()
        return defer.gatherResults(stops)


@implementer(IMessageReceiver)
class _ENRPReceiver:
    def __init__(self, responder):
        self.responder = responder

    def connection_made(self, connection):
        self.responder.connection_made(connection)

    def message_received(self, connection, message):
        self.responder.message_received(connection, message)

    def protocol_error(self, connection, error):
        self.responder.protocol_error(connection, error)

    def connection_lost(self, connection):
        self.responder.connection_lost(connection)


def _where(address):
    host = getattr(address, "host", None)
    if host is None:
        return str(address)
    port = getattr(address, "port", "")
    if ":" in host:
        return "[%s]:%s" % (host, port)
    return "%s:%s" % (host, port)


def _strerror(error):
    strerror = getattr(error, "strerror", None)
    if strerror:
        return strerror.lower() if strerror[0].isupper() and strerror[1:2].islower() else strerror
    return str(error)


def new_server_id(rng):
    """
    A random, non-zero 32-bit registrar id (RFC 5353 section 3.2).
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
