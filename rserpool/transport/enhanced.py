"""
The Enhanced Mode session layer on Twisted: the adapter that runs the
sans-IO session machines of L{rserpool.session.core} over Twisted
connections (it moved here from C{rserpool.session.protocol}, so that
L{rserpool.session} loads no reactor).

The application writes and receives messages through an ordinary Twisted
protocol: C{transport.write(data)} is DATA_SEND_REQUEST (one call, one
message) and C{dataReceived(data)} is DATA_RECEIVED_NOTIFICATION (one call,
one message); C{transport.writeMessage(data, ppid, stream)} and a
C{messageReceived(data, ppid, stream)} method give the PPID and stream, as
over SCTP.  Underneath, each session is one control+data connection whose
mapping L{rserpool.transport.channel} picks: the TCP mapping's multiplexed
framing with its heartbeat, or SCTP messages told apart by PPID.

Pool user side: L{PoolSession} (usually through
L{rserpool.pu.PoolClientEndpoint} or the C{rserpool:} endpoint string).
When the connection fails it reports the PE with GETNEXTSERVER, connects to
the PE chosen by the pool's policy, sends the last cookie (Cookie Echo),
the Business Card if any, calls the failover callback, and then sends the
data that had not been handed to the old connection.

Pool element side: L{PESessionFactory} wraps the application's factory.
The application's protocol may define C{cookieReceived(cookie)}
(COOKIE_INDICATION, called before any data of a failed-over PU) and
C{businessCardReceived(card)}; its transport has C{set_cookie(bytes)}
(SET_COOKIE).  With a C{sealer} (L{rserpool.session.sealing.CookieSealer})
the session seals what C{set_cookie} is given and opens each Cookie Echo
first: the application gets the state back, or C{cookieRefused(rejection)}
(without that method, the session is closed).
"""
from twisted.internet import defer, error
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rserpool.asap.pool_user import PoolElementInfo
from rserpool.session.core import (
    BusinessCardReceived,
    CLOSED,
    CLOSING,
    CallFailover,
    ControlError,
    CookieIndication,
    CookieRefused,
    Deliver,
    DATA_PPID,
    PESessionCore,
    PUSessionCore,
    SendClose,
    SendFrame,
    check_data_ppid,
)
from rserpool.transport.channel import Link

__all__ = [
    "PESessionFactory",
    "PoolSession",
    "SessionFailed",
    "SessionTransport",
    "pool_element_infos",
    "reach_business_card",
]


class SessionFailed(error.ConnectionLost):
    """
    The session could not fail over: no PE of the pool was reachable.
    """


@implementer(ITransport)
class SessionTransport:
    """
    What the application's protocol sees as its transport in Enhanced
    Mode.  Every C{write} is one message (DATA_SEND_REQUEST).

    @ivar failovers: how many failovers this session went through (RFC 5355
        section 2.9: the application can tell it must re-establish trust).
    @ivar pool_element: the L{PoolElementInfo} now served by (PU side).
    @ivar cookie_received: the cookie a failed-over PU sent (PE side).
    @ivar business_card: the peer's L{rserpool.wire.BusinessCard}, if any.
    """

    disconnecting = False

    def __init__(self, session):
        self._session = session

    def write(self, data):
        """
        DATA_SEND_REQUEST: send C{data} as one message, with the session's
        data PPID.
        """
        self._session.send(data)

    def writeSequence(self, seq):
        """
        Send the concatenation of C{seq} as one message.
        """
        self._session.send(b"".join(seq))

    def writeMessage(self, data, ppid=None, stream=None, unordered=False):
        """
        DATA_SEND_REQUEST with SCTP's options (as
        L{rserpool.transport.sctp.ISCTPTransport.writeMessage}).

        @param ppid: the data's PPID (the session's data PPID by default;
            11, 12 and 0xffffffff are the session layer's).
        @param stream: the stream number (0 by default).
        @param unordered: allow delivery out of order.
        """
        self._session.send(data, ppid, stream or 0, unordered)

    @property
    def mapping(self):
        """
        The mapping the session runs on now: C{"tcp-mux"} (the TCP
        mapping's multiplexed framing), C{"sctp"}, or C{None} between
        connections.
        """
        link = self._session.link
        return None if link is None else link.mapping

    def loseConnection(self):
        """
        End the session on purpose (the peer is told; no failover).
        """
        self.disconnecting = True
        self._session.close()

    def abortConnection(self):
        """
        End the session at once.
        """
        self.disconnecting = True
        self._session.close(abort=True)

    def getPeer(self):
        link = self._session.link
        return link.transport.getPeer() if link is not None and link.transport else None

    def getHost(self):
        link = self._session.link
        return link.transport.getHost() if link is not None and link.transport else None

    def registerProducer(self, producer, streaming):
        self._session.producer = producer

    def unregisterProducer(self):
        self._session.producer = None

    @property
    def failovers(self):
        return self._session.failovers

    @property
    def pool_element(self):
        return getattr(self._session, "pe", None)

    @property
    def cookie_received(self):
        return getattr(self._session, "cookie_received", None)

    @property
    def cookie(self):
        """
        The last cookie the PE set (PU side; C{None} before the first): what
        a failover hands to the next PE.
        """
        core = self._session.core
        return getattr(core, "cookie", None)

    @property
    def business_card(self):
        return getattr(self._session, "business_card", None)

    def set_cookie(self, cookie):
        """
        SET_COOKIE (PE side): give the PU a state cookie to hand to the
        next PE if it fails over (sealed first if the session factory has a
        sealer).
        """
        self._session.set_cookie(cookie)

    def rtt(self):
        """
        The session's smoothed RTT: from the multiplexed framing's
        heartbeat, or the SCTP association's.

        @raise rserpool.interfaces.NotAvailable: before the first
            heartbeat answer.
        """
        return self._session.link.rtt()


class PoolSession:
    """
    The pool user's end of an Enhanced Mode session with a pool.

    @ivar core: the L{PUSessionCore}.
    @ivar pe: the L{PoolElementInfo} currently connected (or last tried).
    @ivar protocol: the application's protocol, once connected.
    @ivar history: the identifiers of the PEs this session was served by,
        in order.
    """

    log = Logger()

    def __init__(self, reactor, pool_user, pool_handle, factory, attempts=5,
                 endpoint_for=None, failover_callback=None, business_card=None,
                 heartbeat_interval=30.0, max_missed=3, retry_delay=0.25,
                 first=None, candidates=(), max_pending=None, data_ppid=DATA_PPID):
        """
        @param pool_user: a L{rserpool.pu.PoolUser} (or C{None} when only
            C{candidates} are to be tried).
        @param pool_handle: the pool's handle (C{bytes}).
        @param factory: the application's client factory.
        @param attempts: consecutive failed PEs before the session gives up.
        @param endpoint_for: a callable giving the client endpoint of a
            L{PoolElementInfo}.
        @param failover_callback: called as C{callback(protocol, pe)} after
            a failover, once the new connection is up and the Cookie Echo is
            sent, before the re-sent data (services draft section 4.5.2).
            Without it the protocol's C{sessionFailover(pe)} is called if it
            has one.
        @param business_card: a L{rserpool.wire.BusinessCard} to send to
            every PE (when this PU is also a PE).
        @param heartbeat_interval: seconds between heartbeats (C{None}: off).
        @param max_missed: silent heartbeat intervals before failover.
        @param retry_delay: seconds to wait when no PE could be selected
            before asking again.
        @param first: a L{PoolElementInfo} to try first.
        @param candidates: L{PoolElementInfo}s to try, in order, before
            asking the pool (a Business Card's list).
        @param max_pending: the most messages buffered during a failover.
        @param data_ppid: the PPID of the data written with C{write} (SCTP
            carries it; the multiplexed framing too).
        """
        self.reactor = reactor
        self.pool_user = pool_user
        self.pool_handle = pool_handle
        self.factory = factory
        self.attempts = attempts
        self.endpoint_for = endpoint_for or _default_endpoint(reactor)
        self.failover_callback = failover_callback
        self.core = PUSessionCore(business_card, max_pending)
        self.options = {"heartbeat_interval": heartbeat_interval, "max_missed": max_missed}
        self.data_ppid = check_data_ppid(data_ppid)
        self.retry_delay = retry_delay
        self.candidates = list(candidates)
        if first is not None:
            self.candidates.insert(0, first)
        self.pe = None
        self.link = None
        self.protocol = None
        self.transport = SessionTransport(self)
        self.history = []
        self.producer = None
        self._result = None
        self._failed_pe = None
        self._failures = 0
        self._connecting = None
        self._retry = None

    @property
    def failovers(self):
        return self.core.failovers

    def connect(self):
        """
        Open the session.

        @return: a L{Deferred} firing with the application's protocol once
            the first PE is connected.
        """
        self._result = defer.Deferred()
        self._next()
        return self._result

    # -- selection --------------------------------------------------------

    def _next(self):
        self._retry = None
        if self.core.state in (CLOSING, CLOSED):
            return
        if self.candidates:
            self._try(self.candidates.pop(0))
            return
        if self.pool_user is None:
            self._give_up("no candidate PE left")
            return
        if self._failed_pe is not None:
            d = self.pool_user.get_next_server(self.pool_handle, self._failed_pe)
        else:
            d = self.pool_user.get_primary_server(self.pool_handle)
        self._failed_pe = None
        d.addCallbacks(self._try, self._selection_failed)

    def _selection_failed(self, failure):
        self._failures += 1
        if self._failures >= self.attempts:
            self._give_up(failure.getErrorMessage())
            return
        self.log.info("session to {handle!r}: {why}; retrying",
                      handle=self.pool_handle, why=failure.getErrorMessage())
        self._retry = self.reactor.callLater(self.retry_delay, self._next)

    def _try(self, info):
        if self.core.state in (CLOSING, CLOSED):
            return
        self.pe = info
        # Over SCTP a pool user closes with SHUTDOWN alone (channel.py).
        link = Link(self, self.reactor, close_marker=False, **self.options)
        try:
            d = connectProtocol(self.endpoint_for(info), link)
        except Exception:
            d = defer.fail()
        self._connecting = d
        d.addErrback(self._connect_failed, info)

    def _connect_failed(self, failure, info):
        self._connecting = None
        if failure.check(defer.CancelledError) or self.core.state in (CLOSING, CLOSED):
            return
        self.log.info("session to {handle!r}: PE {pe_id:08x} unreachable: {why}",
                      handle=self.pool_handle, pe_id=info.identifier,
                      why=failure.getErrorMessage())
        self._failures += 1
        self._failed_pe = info
        if self._failures >= self.attempts:
            if self.pool_user is not None:
                self.pool_user.report_unreachable(self.pool_handle, info.identifier)
            self._give_up(failure.getErrorMessage())
            return
        self._next()

    def _give_up(self, why):
        self.core.closed()
        reason = SessionFailed(
            "no PE of pool %r reachable: %s" % (self.pool_handle.decode("utf-8", "replace"), why))
        if self.protocol is None:
            if self._result is not None and not self._result.called:
                self._result.errback(reason)
        else:
            self.protocol.connectionLost(Failure(reason))

    # -- link events ------------------------------------------------------

    def link_made(self, link):
        self._connecting = None
        self.link = link
        self._failures = 0
        self.history.append(self.pe.identifier)
        self.log.debug("session to {handle!r}: PE {pe_id:08x} over {mapping}",
                       handle=self.pool_handle, pe_id=self.pe.identifier, mapping=link.mapping)
        for action in self.core.connected():
            if isinstance(action, SendFrame):
                link.send_frame(action)
            elif isinstance(action, CallFailover):
                self.log.info("session to {handle!r} failed over to {pe_id:08x} ({n})",
                              handle=self.pool_handle, pe_id=self.pe.identifier,
                              n=action.failovers)
                # Time to failover, for the pool user's metrics.
                note = getattr(self.pool_user, "note_failover", None)
                lost, self._lost_at = getattr(self, "_lost_at", None), None
                if note is not None and lost is not None:
                    note(self.reactor.seconds() - lost)
                self._call_failover()
        if self.protocol is None:
            self.protocol = self.factory.buildProtocol(link.transport.getPeer())
            if self.protocol is None:
                self.close()
                self._result.errback(error.ConnectError("the factory built no protocol"))
                return
            try:
                self.protocol.pool_element = self.pe
            except AttributeError:
                pass
            self.protocol.makeConnection(self.transport)
            self._result.callback(self.protocol)
        for frame in self.core.flush():
            link.send_frame(frame)

    def _call_failover(self):
        protocol = self.protocol
        if protocol is None:
            return
        try:
            if self.failover_callback is not None:
                self.failover_callback(protocol, self.pe)
            else:
                hook = getattr(protocol, "sessionFailover", None)
                if hook is not None:
                    hook(self.pe)
        except Exception:
            self.log.failure("failover callback failed")

    def link_message(self, link, payload, ppid, stream=0):
        if link is not self.link:
            return
        for event in self.core.received(payload, ppid, stream):
            if isinstance(event, Deliver):
                if self.protocol is not None:
                    deliver(self.protocol, event)
            elif isinstance(event, BusinessCardReceived):
                self.business_card = event.card
            elif isinstance(event, ControlError):
                self.log.warn("session to {handle!r}: {reason}",
                              handle=self.pool_handle, reason=event.reason)

    def link_failed(self, link, reason):
        """
        The connection to the PE came up but never carried the session:
        its TLS handshake failed.  The PE counts as unreachable, as if the
        connection had failed.
        """
        self._connect_failed(reason, self.pe)

    def link_closing(self, link):
        if link is not self.link:
            return
        self.core.peer_closed()
        link.close()

    def link_lost(self, link, reason):
        if link is not self.link:
            return
        self.link = None
        if self.core.lost():
            self._lost_at = self.reactor.seconds()
            self.log.info("session to {handle!r}: lost PE {pe_id:08x} ({why}); failing over",
                          handle=self.pool_handle, pe_id=self.pe.identifier,
                          why=reason.getErrorMessage())
            self._failed_pe = self.pe
            self._next()
        elif self.protocol is not None:
            self.protocol.connectionLost(Failure(error.ConnectionDone("session closed")))

    # -- application side -------------------------------------------------

    def send(self, data, ppid=None, stream=0, unordered=False):
        ppid = self.data_ppid if ppid is None else ppid
        for frame in self.core.send(data, ppid, stream, unordered):
            self.link.send_frame(frame)

    def close(self, abort=False):
        """
        End the session on purpose.
        """
        frames = self.core.close()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._connecting is not None:
            self._connecting.cancel()
        link = self.link
        if link is None:
            self.core.closed()
            if self.protocol is not None:
                self.protocol.connectionLost(Failure(error.ConnectionDone("session closed")))
            return
        if not abort:
            for action in frames:
                if isinstance(action, SendClose):
                    link.send_close()
        link.close(abort)


def deliver(protocol, event):
    """
    DATA_RECEIVED_NOTIFICATION: C{protocol.messageReceived(data, ppid,
    stream)} if it has one (as over SCTP), else C{dataReceived(data)}.
    """
    received = getattr(protocol, "messageReceived", None)
    if callable(received):
        received(event.payload, event.ppid, event.stream)
    else:
        protocol.dataReceived(event.payload)


def _default_endpoint(reactor):
    from twisted.internet.endpoints import clientFromString

    return lambda info: clientFromString(reactor, info.endpoint_description())


class _PESession:
    """
    The PE's end of one session: the link, the core and the application's
    protocol.
    """

    log = Logger()

    def __init__(self, factory, addr):
        self.core = PESessionCore(getattr(factory, "sealer", None))
        self.reactor = factory.reactor
        self.app = factory.app_factory.buildProtocol(addr)
        self.data_ppid = factory.data_ppid
        self.link = Link(self, factory.reactor, close_marker=True, **factory.options)
        self.transport = SessionTransport(self)
        self.failovers = 0
        self.refusals = 0
        self.producer = None

    @property
    def cookie_received(self):
        return self.core.cookie_received

    @property
    def business_card(self):
        return self.core.business_card

    def link_made(self, link):
        self.app.makeConnection(self.transport)

    def link_message(self, link, payload, ppid, stream=0):
        for event in self.core.received(payload, ppid, stream, self.reactor.seconds()):
            if isinstance(event, Deliver):
                deliver(self.app, event)
            elif isinstance(event, CookieRefused):
                self._cookie_refused(link, event.rejection)
            elif isinstance(event, CookieIndication):
                # Services draft 4.5.1: before any data of this PU.
                self.failovers += 1
                hook = getattr(self.app, "cookieReceived", None)
                if hook is not None:
                    hook(event.cookie)
            elif isinstance(event, BusinessCardReceived):
                hook = getattr(self.app, "businessCardReceived", None)
                if hook is not None:
                    hook(event.card)
            elif isinstance(event, ControlError):
                self.log.warn("session from {peer}: {reason}",
                              peer=link.transport.getPeer(), reason=event.reason)

    def _cookie_refused(self, link, rejection):
        # The reason goes to our log only: the PU is not told why (a forger
        # learns nothing), and one line per session at most.
        self.refusals += 1
        emit = self.log.warn if self.refusals == 1 else self.log.debug
        emit("session from {peer}: Cookie Echo refused ({reason}): {detail}",
             peer=link.transport.getPeer(), reason=rejection.reason, detail=rejection.detail)
        hook = getattr(self.app, "cookieRefused", None)
        if hook is not None:
            hook(rejection)
            return
        # Without the state its cookie stood for, the application cannot
        # serve this PU: end the session, and deliver nothing more from it.
        if self.core.closing:
            self.core.refused = True
            return
        for action in self.core.refuse():
            if isinstance(action, SendClose):
                self.link.send_close()
        self.link.close()

    def link_closing(self, link):
        self.core.peer_closed()
        link.close()

    def link_lost(self, link, reason):
        if self.core.closing:
            reason = Failure(error.ConnectionDone("session closed"))
        self.app.connectionLost(reason)

    def send(self, data, ppid=None, stream=0, unordered=False):
        ppid = self.data_ppid if ppid is None else ppid
        for frame in self.core.send(data, ppid, stream, unordered):
            self.link.send_frame(frame)

    def set_cookie(self, cookie):
        if not self.core.closing:
            self.link.send_frame(self.core.set_cookie(cookie, self.reactor.seconds()))

    def close(self, abort=False):
        if self.core.closing:
            return
        actions = self.core.close()
        if not abort:
            for action in actions:
                if isinstance(action, SendClose):
                    self.link.send_close()
        self.link.close(abort)


class PESessionFactory(Factory):
    """
    Wraps a PE application's factory in the session layer.
    """

    noisy = False

    def __init__(self, app_factory, reactor=None, heartbeat_interval=30.0, max_missed=3,
                 data_ppid=DATA_PPID, sealer=None):
        """
        @param app_factory: the application's server factory.
        @param heartbeat_interval: seconds between heartbeats (C{None}:
            only answer the PU's) of the multiplexed framing (SCTP has its
            own heartbeat).
        @param max_missed: silent intervals before the PU is given up.
        @param data_ppid: the PPID of the data the application writes with
            C{write}.
        @param sealer: a L{rserpool.session.sealing.CookieSealer}: cookies
            set by the application are sealed, Cookie Echoes opened before
            the application sees them (C{None}: cookies pass as they are).
        """
        if reactor is None:
            from twisted.internet import reactor
        self.app_factory = app_factory
        self.sealer = sealer
        self.reactor = reactor
        self.options = {"heartbeat_interval": heartbeat_interval, "max_missed": max_missed}
        self.data_ppid = check_data_ppid(data_ppid)
        self.sessions = set()

    def doStart(self):
        self.app_factory.doStart()

    def doStop(self):
        self.app_factory.doStop()

    def buildProtocol(self, addr):
        session = _PESession(self, addr)
        if session.app is None:
            return None
        self.sessions.add(session)
        session.link.factory = self
        original = session.link_lost

        def lost(link, reason):
            self.sessions.discard(session)
            original(link, reason)

        session.link_lost = lost
        return session.link


def pool_element_infos(card):
    """
    The L{PoolElementInfo}s of a Business Card, in its order.
    """
    return [PoolElementInfo.from_wire(card.pool_handle, pe) for pe in card.pool_elements]


def reach_business_card(reactor, card, factory, pool_user=None, **options):
    """
    Reach a PE equivalent to a peer that sent C{card} (services draft
    section 3.3): the PEs the card lists, in order, then (with a
    C{pool_user}) any PE of the card's pool.

    @return: a L{Deferred} firing with C{factory}'s protocol, connected
        through a L{PoolSession}.
    """
    session = PoolSession(reactor, pool_user, card.pool_handle, factory,
                          candidates=pool_element_infos(card), **options)
    return session.connect()
