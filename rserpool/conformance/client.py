"""
The suite's minimal wire client: a connection to the implementation under
test that sends messages encoded by L{rserpool.wire} (or raw bytes) and
hands back what arrives, decoded, with bounded waits.

It is built on our codec and our transport mappings only
(L{rserpool.transport.tcp.message_protocol}: the TCP mapping, or the SCTP
one over an C{sctp:} endpoint): it knows nothing of our registrar, and
tests an implementation exactly as an independent peer would.

Every wait ends: L{WireConnection.expect} fails with L{NoAnswer} (an
C{AssertionError}, so a test fails rather than errs) when nothing matching
arrives in time, or at once when the connection is gone.
"""
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import INegotiated
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.trial.unittest import FailTest
from zope.interface import implementer

from rserpool.interfaces import IMessageReceiver
from rserpool.transport.tcp import message_protocol
from rserpool.wire import (
    ASAP,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    ProtocolError,
    ServerAnnounce,
    decode,
)

__all__ = [
    "NoAnswer", "Inbox", "WireConnection", "connect", "AnnounceHearer", "describe", "sleep",
]


class NoAnswer(FailTest):
    """
    The implementation under test did not send what a test waited for
    (in time, or before it closed the connection): a failure of the test
    (trial's C{FailTest}, an C{AssertionError}), not an error.
    """


def describe(message):
    """
    A short description of a message for failure texts.
    """
    if isinstance(message, ProtocolError):
        return "undecodable (%s)" % (message,)
    name = type(message).__name__
    error = getattr(message, "error", None)
    if error is not None:
        return "%s [%s]" % (name, error.summary())
    if getattr(message, "reject", False):
        return "%s [rejected]" % name
    return name


def sleep(reactor, seconds):
    """
    A L{Deferred} that fires after C{seconds} (the reactor's time).
    """
    d = defer.Deferred()
    call = reactor.callLater(seconds, d.callback, None)
    d.addErrback(lambda f: (call.cancel() if call.active() else None, f)[1])
    return d


def _matcher(match):
    if isinstance(match, type) or (isinstance(match, tuple) and match
                                   and all(isinstance(m, type) for m in match)):
        return lambda m: isinstance(m, match)
    return match


class Inbox:
    """
    Messages received and not yet read, and those waiting for them: one per
    connection, or one shared by the connections of an ENRP peer (the
    target may answer over either).

    @ivar name: what the failures call it.
    @ivar received: every message received, in order (the log).
    """

    def __init__(self, reactor, name="client"):
        self.reactor = reactor
        self.name = name
        self.received = []
        self.open = True
        self._unread = []
        self._waiters = []

    def put(self, message):
        """
        A message (or a L{ProtocolError}) arrived.
        """
        if not isinstance(message, ProtocolError):
            self.received.append(message)
        self._unread.append(message)
        self._check()

    def closed(self, why):
        """
        Nothing more can arrive: fail every waiter at once.
        """
        self.open = False
        waiters, self._waiters = self._waiters, []
        for _, what, d, call in waiters:
            if call.active():
                call.cancel()
            d.errback(NoAnswer("%s: %s before %s%s" % (self.name, why, what, self.seen())))

    def seen(self):
        if not self.received and not self._unread:
            return " (nothing received)"
        shown = [describe(m) for m in self.received[-6:]]
        return " (last received: %s)" % (", ".join(shown) or "nothing decodable")

    def _check(self):
        for entry in list(self._waiters):
            predicate, what, d, call = entry
            for i, m in enumerate(self._unread):
                if predicate(m):
                    del self._unread[i]
                    self._waiters.remove(entry)
                    call.cancel()
                    d.callback(m)
                    break

    def expect(self, match, timeout, what=None):
        """
        Wait for a message.

        @param match: a message class, a tuple of classes, or a predicate.
        @param timeout: seconds to wait at most.
        @param what: the awaited message in words, for the failure.
        @return: a L{Deferred} firing with the first unread matching
            message (which is then read), or failing with L{NoAnswer}.
        """
        predicate = _matcher(match)
        if what is None:
            what = getattr(match, "__name__", "the expected message")
        for i, m in enumerate(self._unread):
            if predicate(m):
                del self._unread[i]
                return defer.succeed(m)
        if not self.open:
            return defer.fail(NoAnswer("%s: connection closed; no %s%s" % (
                self.name, what, self.seen())))
        d = defer.Deferred()
        entry = [predicate, what, d, None]

        def expired():
            if entry in self._waiters:
                self._waiters.remove(entry)
            d.errback(NoAnswer("%s: no %s within %g s%s" % (self.name, what, timeout,
                                                           self.seen())))

        entry[3] = self.reactor.callLater(timeout, expired)
        self._waiters.append(entry)
        return d

    def unread(self, match=None):
        """
        Take every unread message (matching C{match}) and return them.
        """
        predicate = _matcher(match) if match is not None else (lambda m: True)
        taken = [m for m in self._unread if predicate(m)]
        self._unread = [m for m in self._unread if not predicate(m)]
        return taken

    def quiet(self, match, seconds):
        """
        Wait C{seconds}; the L{Deferred} fails with L{NoAnswer} if a
        matching message arrives meanwhile (or is unread already), else
        fires with C{None}.
        """
        predicate = _matcher(match)
        d = sleep(self.reactor, seconds)

        def check(_):
            found = [m for m in self._unread if predicate(m)]
            if found:
                raise NoAnswer("%s: unexpected %s" % (
                    self.name, ", ".join(describe(m) for m in found)))

        return d.addCallback(check)


@implementer(IMessageReceiver)
class WireConnection:
    """
    One ASAP or ENRP connection to the implementation under test.

    @ivar stream: the protocol it runs, of the TCP or the SCTP mapping
        (L{build}), or C{None} before its transport is known.
    @ivar inbox: the L{Inbox} its messages go to (its own unless shared).
    @ivar bad: every L{ProtocolError} for what the target sent that did
        not decode: a conforming implementation sends none.
    @ivar keep_alives: every Endpoint Keep Alive received.
    @ivar acking: for each pool handle, the PE identifiers whose Endpoint
        Keep Alives are acknowledged at once (a live PE).
    @ivar on_message: called with each message before it goes to the
        inbox (an ENRP peer's automatic answers), or C{None}.
    @ivar lost: a L{Deferred} that fires when the connection is gone.
    """

    def __init__(self, reactor, protocol=ASAP, name="client", inbox=None):
        self.reactor = reactor
        self.protocol = protocol
        self.name = name
        self.stream = None
        self.inbox = inbox if inbox is not None else Inbox(reactor, name)
        self._own_inbox = inbox is None
        self.bad = []
        self.keep_alives = []
        self.acking = {}
        self.on_message = None
        self.lost = defer.Deferred()
        self.open = False
        # Fires when the transport itself is gone: over TLS (RFC 5355
        # TLS-PSK targets) that is a round trip of close_notify after the
        # stream stopped, and a test must not end before it.
        self._gone = defer.Deferred()

    def __repr__(self):
        return "<WireConnection %s %s>" % (self.name, self.protocol)

    @property
    def received(self):
        """
        Every message received (by the inbox).
        """
        return self.inbox.received

    def build(self, addr):
        """
        This connection's protocol, of the mapping that suits a transport
        whose peer is C{addr} (a factory's C{buildProtocol} returns it).
        """
        self.stream = message_protocol(self, self.protocol, addr)
        stream_lost = self.stream.connectionLost

        def connectionLost(reason):
            try:
                stream_lost(reason)
            finally:
                if not self._gone.called:
                    self._gone.callback(None)

        self.stream.connectionLost = connectionLost
        return self.stream

    # -- what the transport tells -----------------------------------------

    def connection_made(self, connection):
        self.open = True

    def message_received(self, connection, message):
        if isinstance(message, EndpointKeepAlive):
            self.keep_alives.append((self.reactor.seconds(), message))
            self._answer_keep_alive(message)
        if self.on_message is not None:
            self.on_message(self, message)
        self.inbox.put(message)

    def protocol_error(self, connection, error):
        self.bad.append(error)
        self.inbox.put(error)

    def connection_lost(self, connection):
        if not self.open and self.lost.called:
            return
        self.open = False
        if self._own_inbox:
            self.inbox.closed("the target closed the connection")
        if not self.lost.called:
            self.lost.callback(None)

    # -- keep-alives --------------------------------------------------------

    def _answer_keep_alive(self, message):
        # A PE answers its home registrar's audit (RFC 5352 section 3.4).
        # RSPLIB names the PE; without an identifier the Keep Alive is for
        # every PE of the handle on this connection.
        ids = self.acking.get(message.pool_handle, ())
        if message.identifier is not None:
            ids = [message.identifier] if message.identifier in ids else []
        for identifier in list(ids):
            self.send(EndpointKeepAliveAck(message.pool_handle, identifier))

    def ack(self, handle, identifier, on=True):
        """
        Answer (or, with C{on=False}, stop answering) Endpoint Keep Alives
        for one PE.
        """
        ids = self.acking.setdefault(bytes(handle), set())
        if on:
            ids.add(identifier)
        else:
            ids.discard(identifier)

    # -- sending ------------------------------------------------------------

    def send(self, message):
        """
        Send one message, encoded by L{rserpool.wire}.
        """
        self.stream.send(message)

    def send_raw(self, data):
        """
        Send bytes as they are: one or more messages, well formed or not.
        """
        self.stream.send_encoded(bytes(data))

    def close(self):
        """
        Close the connection; a L{Deferred} fires once it is gone (at most
        a few seconds).
        """
        transport = getattr(self.stream, "transport", None)
        tls = INegotiated.providedBy(transport) and not self._gone.called
        if self.open:
            self.stream.close()
        d = defer.Deferred()
        (self._gone if tls else self.lost).addBoth(
            lambda r: (d.called or d.callback(None), r)[1])

        def late():
            if tls and not self._gone.called:
                transport.abortConnection()
            if not d.called:
                d.callback(None)

        call = self.reactor.callLater(5, late)
        d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
        return d

    # -- what the transport knows ------------------------------------------

    @property
    def mapping(self):
        """
        C{"tcp"} or C{"sctp"}.
        """
        return self.stream.mapping

    @property
    def local_address(self):
        """
        This end's (primary) address, an L{ipaddress} address.
        """
        return self.stream.local[0]

    @property
    def local_addresses(self):
        """
        Every address of this end (one over TCP).
        """
        return self.stream.local_addresses or (self.stream.local[0],)

    # -- waiting (the inbox's) ------------------------------------------------

    def expect(self, match, timeout, what=None):
        """
        Wait for a message (L{Inbox.expect}).
        """
        return self.inbox.expect(match, timeout, what)

    def request(self, message, match, timeout, what=None):
        """
        Send C{message} and wait for an answer (see L{Inbox.expect}).
        """
        d = self.inbox.expect(match, timeout, what)
        self.send(message)
        return d

    def unread(self, match=None):
        """
        Take every unread message (L{Inbox.unread}).
        """
        return self.inbox.unread(match)

    def quiet(self, match, seconds):
        """
        L{Inbox.quiet}.
        """
        return self.inbox.quiet(match, seconds)


def connect(reactor, description, protocol=ASAP, bind=None, timeout=5.0, name="client",
            inbox=None):
    """
    Connect to the implementation under test.

    @param description: a Twisted client endpoint string (C{tcp:...},
        C{sctp:...}).
    @param protocol: C{"asap"} or C{"enrp"}.
    @param bind: a local address to send from, or C{None}.
    @param timeout: seconds for the connection to come up.
    @param inbox: an L{Inbox} to share, or C{None} for one of its own.
    @return: a L{Deferred} firing with a connected L{WireConnection}.
    """
    if bind:
        description = "%s:bindAddress=%s" % (description, bind.replace(":", "\\:"))
    try:
        endpoint = clientFromString(reactor, description)
    except Exception as e:
        return defer.fail(ValueError("bad endpoint %r: %s" % (description, e)))
    wire = WireConnection(reactor, protocol, name, inbox)
    d = endpoint.connect(_Building(wire))
    d.addTimeout(timeout, reactor)
    d.addCallback(lambda _: wire)
    return d


class _Building(Factory):
    noisy = False

    def __init__(self, wire):
        self.wire = wire

    def buildProtocol(self, addr):
        return self.wire.build(addr)


class AnnounceHearer(DatagramProtocol):
    """
    Hears ASAP Server Announces on a UDP group (or unicast port), decoded
    by L{rserpool.wire}.

    Use: C{reactor.listenMulticast(port, hearer, listenMultiple=True)}.

    @ivar heard: C{(time, source, ServerAnnounce)} tuples.
    @ivar bad: C{(source, ProtocolError)} for datagrams that did not
        decode.
    """

    def __init__(self, reactor, group, interface=""):
        self.reactor = reactor
        self.group = group
        self.interface = interface
        self.heard = []
        self.bad = []
        self._waiters = []

    def startProtocol(self):
        import ipaddress

        if ipaddress.ip_address(self.group).is_multicast:
            return self.transport.joinGroup(self.group, self.interface or "")

    def datagramReceived(self, data, addr):
        try:
            message = decode(data, ASAP)
        except ProtocolError as e:
            self.bad.append((addr, e))
            return
        if isinstance(message, ServerAnnounce):
            self.heard.append((self.reactor.seconds(), addr, message))
            waiters, self._waiters = self._waiters, []
            for d, call in waiters:
                call.cancel()
                d.callback(self.heard[-1])

    def next(self, timeout):
        """
        The next Server Announce heard: a L{Deferred} firing with
        C{(time, source, message)}, or failing with L{NoAnswer}.
        """
        d = defer.Deferred()

        def expired():
            self._waiters[:] = [w for w in self._waiters if w[0] is not d]
            d.errback(NoAnswer("no Server Announce within %g s" % timeout))

        self._waiters.append((d, self.reactor.callLater(timeout, expired)))
        return d
