"""
What the TCP and the SCTP mapping of ASAP and ENRP share, as a Twisted
protocol: L{MessageConnectionProtocol}, the base of
L{rserpool.transport.tcp.MessageStreamProtocol} (messages framed by their
own length field in a byte stream) and of
L{rserpool.transport.sctp_messages.SCTPMessageProtocol} (one message per
SCTP message).

The base is the L{IMessageConnection} the state machines see, whatever the
mapping: it hands decoded messages to an L{IMessageReceiver}, keeps them
while an accepted connection's peer does not read its answers (the
L{ConnectionGuard <rserpool.transport.guard.ConnectionGuard>} of a
listener with limits), closes, and releases what the connection held.  A
mapping adds how messages are read and written and what it knows of the
peer's addresses.

Which mapping a connection speaks is chosen when its protocol is built
(L{rserpool.transport.tcp.MessageStreamFactory} asks L{is_sctp_address}),
never changed afterwards.
"""
from collections import deque

from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from rserpool.interfaces import IMessageConnection, normalize_address
from rserpool.transport.guard import ConnectionGuard
from rserpool.wire import ASAP, ProtocolError

__all__ = ["MessageConnectionProtocol", "address_of", "is_sctp", "is_sctp_address"]


def address_of(address):
    """
    C{(ipaddress, port)} for a Twisted L{IAddress} with C{host} and C{port},
    or C{(None, 0)} for another kind of address (a UNIX socket, a test).
    """
    host = getattr(address, "host", None)
    if host is None:
        return (None, 0)
    try:
        return (normalize_address(host), getattr(address, "port", 0))
    except ValueError:
        return (None, getattr(address, "port", 0))


def is_sctp_address(address):
    """
    Whether C{address} (what C{buildProtocol} is given, or a transport's
    C{getPeer()}) is an SCTP association's (type C{"SCTP"}, see
    L{rserpool.transport.sctp.SCTPAddress}).
    """
    return getattr(address, "type", None) == "SCTP"


def is_sctp(transport):
    """
    Whether C{transport} is an SCTP association.
    """
    return is_sctp_address(transport.getPeer())


@implementer(IMessageConnection, IHandshakeListener)
class MessageConnectionProtocol(Protocol):
    """
    A connection carrying ASAP or ENRP messages, whatever the mapping; a
    mapping's subclass reads and writes them (C{dataReceived} or
    C{messageReceived}, C{send}, C{send_encoded}) and sets the addresses
    in C{connectionMade}.

    @ivar receiver: the L{IMessageReceiver}.
    @ivar protocol: C{"asap"} or C{"enrp"}.
    @ivar peer: C{(address, port)} of the remote end.
    @ivar local: C{(address, port)} of the local end.
    @ivar local_addresses: every address of the local end.
    @ivar identity: the TLS-PSK identity the remote end proved (over a
        C{psk:} server endpoint, once the handshake is done), or C{None}.
    """

    log = Logger()
    #: C{"tcp"} or C{"sctp"}: the mapping's name
    mapping = None
    identity = None
    #: the role its key file gives C{identity} (rserpool.transport.psk.ROLES)
    role = None
    #: the L{ConnectionGuard} of an accepted connection whose listener has
    #: limits (L{MessageStreamFactory
    #: <rserpool.transport.tcp.MessageStreamFactory>}), else C{None}
    guard = None
    _pending = None
    _budget_key = None

    def __init__(self, receiver, protocol=ASAP):
        self.receiver = receiver
        self.protocol = protocol
        self.peer = (None, 0)
        self.local = (None, 0)
        self.local_addresses = ()
        self.peer_addresses = ()
        self._peer_transport = None
        self.connected = False

    def __repr__(self):
        return "<{} {} peer {}:{}>".format(
            type(self).__name__, self.protocol, self.peer[0], self.peer[1]
        )

    def _start_guard(self):
        factory = getattr(self, "factory", None)
        limits = getattr(factory, "limits", None)
        if limits is not None:
            self.guard = ConnectionGuard(self, limits, factory.clock, self._resume)

    def describe(self):
        """
        The peer, for log lines: C{192.0.2.1:3863}.
        """
        address, port = self.peer
        if address is None:
            return "an unknown peer"
        return "[%s]:%d" % (address, port) if address.version == 6 else "%s:%d" % (address, port)

    def _note(self, text, **fields):
        # A line about what a peer did: at a bounded rate on a listener
        # with limits (the peer chooses how often), else as it is.
        factory = getattr(self, "factory", None)
        events = getattr(factory, "events", None)
        if events is not None:
            events.warn(factory.clock.seconds(), text, **fields)
        else:
            self.log.warn(text, **fields)

    def guard_closed(self, reason, abort):
        """
        The guard found a limit passed (L{ConnectionGuard}): close, or
        abort when the peer does not read (a graceful close would wait for
        it for ever).
        """
        factory = getattr(self, "factory", None)
        events = getattr(factory, "events", None)
        if events is not None:
            events.info(factory.clock.seconds(),
                        "closing {protocol} connection from {peer}: {reason}",
                        protocol=self.protocol.upper(), peer=self.describe(), reason=reason)
        if self.connected:
            self.connected = False
            self._pending = None
            if self.guard is not None:
                self.guard.stop()
            if abort:
                self.transport.abortConnection()
            else:
                self.transport.loseConnection()
            self.receiver.connection_lost(self)

    def throttle(self, seconds):
        """
        Read nothing more from this connection's source for C{seconds}
        (L{rserpool.actions.Throttle}): on a registrar's listener its turns
        stop (L{TurnScheduler.throttle
        <rserpool.transport.guard.TurnScheduler.throttle>}); elsewhere
        nothing happens.
        """
        turns = getattr(getattr(self, "factory", None), "turns", None)
        if turns is not None and self.guard is not None:
            turns.throttle(self._budget_key or self, seconds)

    @property
    def budget_silent(self):
        """
        Whether this accepted connection has not yet sent a whole message
        (L{ConnectionBudget <rserpool.transport.guard.ConnectionBudget>}
        closes such a connection first).
        """
        return self.guard is None or self.guard.last is None

    def budget_evict(self):
        """
        All connections are taken and this one's source holds most: close
        it for a connection of another source (the budget has released
        it already).
        """
        self._budget_key = None
        if self.connected:
            self.guard_closed("making room for another source's connection", abort=True)
        elif self.transport is not None:
            # Not yet connected (a TLS handshake): just drop it.
            self.transport.abortConnection()

    def handshakeCompleted(self):
        """
        The TLS handshake is done: note the identity the peer proved, if
        it was TLS-PSK (before any of its messages is read).
        """
        from rserpool.transport.psk import psk_identity, psk_role

        self.identity = psk_identity(self.transport)
        self.role = psk_role(self.transport)

    # -- handing messages to the receiver -----------------------------------

    def _handle(self, items):
        receiver = self.receiver
        guard = self.guard
        for index, item in enumerate(items):
            if not self.connected:
                break
            if guard is not None and guard.paused:
                self._keep(items[index:])
                break
            if type(item) is ProtocolError:
                receiver.protocol_error(self, item)
            else:
                receiver.message_received(self, item)

    def _keep(self, items):
        if self._pending is None:
            self._pending = deque()
        self._pending.extend(items)

    def _resume(self):
        # The peer reads again: handle what was kept, until it stops again.
        pending = self._pending
        guard = self.guard
        while pending and self.connected and not (guard is not None and guard.paused):
            item = pending.popleft()
            if type(item) is ProtocolError:
                self.receiver.protocol_error(self, item)
            else:
                self.receiver.message_received(self, item)
        if not pending:
            self._pending = None

    # -- the end ----------------------------------------------------------

    def connectionLost(self, reason):
        self._end_guard()
        if self.connected:
            self.connected = False
            self.receiver.connection_lost(self)

    #: What a connection costs the registrar's process, buffers aside
    #: (its objects; over TLS its OpenSSL state, about 70 KB): what
    #: MemoryReturn counts for each that is gone.
    _FOOTPRINT = 16384

    def _unread(self):
        """
        How many bytes the peer sent that wait undecoded (the mapping's).
        """
        return 0

    def _drop_unread(self):
        """
        Forget the bytes that wait undecoded (the mapping's).
        """

    def _give_back_memory(self):
        # What this connection held (its objects, requests waiting for
        # their turn, answers its peer did not read, up to the transport's
        # buffer) goes back to the system (MemoryReturn).
        memory = getattr(getattr(self, "factory", None), "memory", None)
        if memory is None or self.guard is None:
            return
        held = self._FOOTPRINT + self._unread()
        if self.guard.paused:
            held += getattr(self.transport, "bufferSize", 65536)
        memory.released(held)

    def _end_guard(self):
        self._pending = None
        factory = getattr(self, "factory", None)
        turns = getattr(factory, "turns", None)
        if turns is not None:
            turns.forget(self._budget_key or self, self)
            self._give_back_memory()
        self._drop_unread()
        if self.guard is not None:
            self.guard.release()
        key, self._budget_key = self._budget_key, None
        if key is not None:
            self.factory.budget.release(key, self)

    # -- IMessageConnection -----------------------------------------------

    def close(self):
        """
        Close after the queued bytes are written; stop reading meanwhile.
        """
        if self.connected:
            self.connected = False
            if self.guard is not None:
                # TLS shuts down only once no producer is registered.
                self.guard.stop()
            self.transport.loseConnection()
            self.receiver.connection_lost(self)

    @property
    def peer_transport(self):
        """
        The remote end as a transport parameter (a L{TCPTransport
        <rserpool.wire.TCPTransport>} or L{SCTPTransport
        <rserpool.wire.SCTPTransport>}), or C{None} when its address is
        unknown: what a registrar stores as a PE's ASAP transport.
        """
        return self._peer_transport
