"""
The TCP mapping (``doc/tcp-mapping.rst``), as Twisted protocols.

Where one protocol flows (PE or PU to registrar over ASAP, registrar to
registrar over ENRP) a connection carries plain ASAP or ENRP messages, one
after the other, each found by its own 16-bit length field and padded to 4
bytes: exactly what Wireshark's ASAP dissector reads on TCP port 3863.
L{MessageStreamProtocol} does that framing with
L{rserpool.wire.StreamDecoder} and hands whole, decoded messages to an
L{IMessageReceiver}; it is the L{IMessageConnection} the state machines
see.  Which transport it runs on is chosen by a Twisted endpoint string
(C{tcp:3863:interface=127.0.0.1}, C{ssl:...}): nothing here opens a socket.
What it shares with the SCTP mapping
(L{rserpool.transport.sctp_messages}) is
L{rserpool.transport.connection.MessageConnectionProtocol};
L{MessageStreamFactory} builds the mapping that suits each connection's
transport.

The multiplexed control+data framing of Enhanced Mode is
L{rserpool.transport.mux} (sans I/O); L{MultiplexProtocol} runs it over a
Twisted transport with its heartbeat.
"""
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from rserpool.limits import EventLog, RefusalLog, host_principal
from rserpool.interfaces import NotAvailable
from rserpool.transport.connection import MessageConnectionProtocol, address_of, is_sctp_address
from rserpool.transport.guard import MemoryReturn, TurnScheduler
from rserpool.transport import mux
from rserpool.transport.sctp_messages import SCTPMessageProtocol
from rserpool.wire import ASAP, ProtocolError, StreamDecoder, TCPTransport, encode

__all__ = [
    "MessageStreamProtocol",
    "MessageStreamFactory",
    "MultiplexProtocol",
    "address_of",
    "message_protocol",
]


def _whole_message_first(raw):
    """
    Whether C{raw} starts with a whole message (padding included), or
    with a header that breaks the framing (which must be handled too).
    """
    if len(raw) < 4:
        return False
    length = (raw[2] << 8) | raw[3]
    return length < 4 or len(raw) >= (length + 3) & ~3


class MessageStreamProtocol(MessageConnectionProtocol):
    """
    A connection carrying plain ASAP or ENRP messages framed by their own
    length field.

    A message that is well framed but invalid goes to the receiver's
    C{protocol_error} and the stream goes on.  A length field below the
    header's 4 bytes means the framing is lost: the receiver's
    C{protocol_error} is told (so it can answer with an Error), then this
    connection, and only this one, is closed.

    This is the TCP mapping whatever the transport: over an SCTP
    association, L{MessageStreamFactory} builds the SCTP mapping
    (L{SCTPMessageProtocol}) instead.  (A protocol made by hand and given
    to C{connectProtocol} stays this one: connect with a
    L{MessageStreamFactory} to get the mapping of the endpoint's
    transport.)

    @ivar local_addresses: every address of the local end (one over TCP).
    """

    mapping = "tcp"

    def __init__(self, receiver, protocol=ASAP):
        MessageConnectionProtocol.__init__(self, receiver, protocol)
        self._decoder = StreamDecoder(protocol)

    def connectionMade(self):
        self.connected = True
        self.peer = address_of(self.transport.getPeer())
        self.local = address_of(self.transport.getHost())
        self.local_addresses = (self.local[0],) if self.local[0] is not None else ()
        if self.peer[0] is not None:
            self.peer_addresses = (self.peer[0],)
            self._peer_transport = TCPTransport(self.peer[1], (self.peer[0],))
        # The ASAP keep-alive watches PEs; TCP keep-alive also clears out
        # connections of silent pool users whose host vanished.
        set_keepalive = getattr(self.transport, "setTcpKeepAlive", None)
        if set_keepalive is not None:
            set_keepalive(1)
        self._start_guard()
        self.receiver.connection_made(self)

    def dataReceived(self, data):
        if not self.connected:
            return
        if self.guard is not None and getattr(self.factory, "turns", None) is not None:
            self._received(data)
            return
        try:
            items = self._decoder.feed(data)
        except ProtocolError as e:
            self._lost_framing(e)
            return
        guard = self.guard
        if guard is not None:
            if items:
                guard.received()
            guard.partial(self._decoder.buffered)
            if guard.paused or self._pending:
                # The peer does not read our answers: keep its requests
                # until it does (at most what one read brought).
                self._keep(items)
                return
        self._handle(items)

    def _lost_framing(self, error):
        error.detached()
        self._note("closing {protocol} connection from {peer}: {reason}",
                   protocol=self.protocol, peer=self.describe(), reason=error.reason)
        self.receiver.protocol_error(self, error)
        self.close()

    # -- an accepted connection's share of the registrar's time -------------
    #
    # (rserpool.transport.guard.TurnScheduler.)  What a read brings stays
    # in _raw, undecoded; at most a quantum of messages is decoded and
    # handled at once, and the rest in turns, while the connection is not
    # read from (_held): one 64 KiB read of 16-byte requests is 4,096
    # messages, 100 ms of the registrar's time at once, and 4,096 decoded
    # messages kept while the peer does not read (issue #14).

    _raw = None
    _held = False

    def _received(self, data):
        guard = self.guard
        turns = self.factory.turns
        quantum = turns.quantum
        now = not self._pending and not self._held and not guard.paused \
            and turns.at_once(self._budget_key or self)
        if now and not self._raw:
            # Nothing waits, and the read is at most a quantum of whole
            # messages (a request, a keep-alive ack): handle them as they are.
            n = len(data)
            pos = 0
            count = 0
            while n - pos >= 4 and count <= quantum:
                length = (data[pos + 2] << 8) | data[pos + 3]
                if length < 4:
                    break
                pos += (length + 3) & ~3
                count += 1
            if pos == n and 0 < count <= quantum:
                try:
                    items = self._decoder.feed(data)
                except ProtocolError as e:
                    self._lost_framing(e)
                    return
                guard.received()
                self._keep(items)
                turns.run_at_once(self._turn, quantum)
                return
        raw = self._raw
        if raw is None:
            raw = self._raw = bytearray()
        raw += data
        if _whole_message_first(raw):
            guard.received()
        if not now:
            # Its turn comes (or the peer reads again); not read meanwhile.
            self._settle()
            return
        turns.run_at_once(self._turn, quantum)

    def take_turn(self, quantum):
        """
        The L{TurnScheduler <rserpool.transport.guard.TurnScheduler>}'s
        call: handle up to C{quantum} waiting messages.
        """
        if self.connected:
            self._turn(quantum, self.factory.turns.deadline)

    def _turn(self, limit, deadline=None):
        # Up to `limit` messages, and (after the first) not past `deadline`
        # (a timer value: a registration costs far more than a resolution).
        guard = self.guard
        receiver = self.receiver
        timer = self.factory.turns.timer
        handled = 0
        while handled < limit and self.connected and not guard.paused:
            if handled and deadline is not None and timer() >= deadline:
                break
            pending = self._pending
            if not pending:
                if not self._decode(limit - handled):
                    break
                continue
            item = pending.popleft()
            handled += 1
            if type(item) is ProtocolError:
                receiver.protocol_error(self, item)
            else:
                receiver.message_received(self, item)
        self._settle()

    def _decode(self, count):
        # Decode up to `count` whole messages of _raw into _pending.
        raw = self._raw
        if not raw:
            return False
        n = len(raw)
        pos = 0
        taken = 0
        while taken < count and n - pos >= 4:
            length = (raw[pos + 2] << 8) | raw[pos + 3]
            if length < 4:
                if pos == 0:
                    pos = 4  # the decoder says why the framing is lost
                break
            total = (length + 3) & ~3
            if n - pos < total:
                break
            pos += total
            taken += 1
        if not pos:
            return False
        chunk = bytes(raw[:pos])
        del raw[:pos]
        try:
            items = self._decoder.feed(chunk)
        except ProtocolError as e:
            self._lost_framing(e)
            return False
        self._keep(items)
        return True

    def _settle(self):
        # After a read or a turn: wait for another turn, unread, while
        # whole messages wait; else read again.
        if not self.connected:
            return
        guard = self.guard
        raw = self._raw
        waiting = bool(self._pending) or (raw is not None and _whole_message_first(raw))
        if waiting:
            guard.partial(0)
            if not guard.paused:
                self.factory.turns.wait(self._budget_key or self, self)
            if not self._held:
                self._held = True
                self.transport.pauseProducing()
            return
        guard.partial(len(raw) if raw is not None else 0)
        if self._held:
            self._held = False
            if not guard.paused:
                self.transport.resumeProducing()

    def _resume(self):
        # The peer reads again: handle what was kept, until it stops again.
        if self._raw is not None:
            if self._held:
                # Reading stays off until the messages that wait are
                # handled (the guard turned it on).
                self.transport.pauseProducing()
            self._turn(self.factory.turns.quantum)
            return
        MessageConnectionProtocol._resume(self)

    def _unread(self):
        return len(self._raw) if self._raw is not None else 0

    def _drop_unread(self):
        self._raw = None

    # -- IMessageConnection -----------------------------------------------

    def send(self, message):
        """
        Encode and send one message.
        """
        if self.connected:
            data = encode(message)
            self.transport.write(data)
            if self.guard is not None:
                self.guard.wrote(len(data))

    def send_encoded(self, data):
        """
        Send already encoded messages.
        """
        if self.connected:
            self.transport.write(data)
            if self.guard is not None:
                self.guard.wrote(len(data))

    def rtt(self):
        """
        @raise NotAvailable: TCP keeps its RTT estimate to itself.
        """
        raise NotAvailable("rtt", self.mapping)

    def rto(self):
        """
        @raise NotAvailable: TCP keeps its RTO to itself.
        """
        raise NotAvailable("rto", self.mapping)

    def path_mtu(self):
        """
        @raise NotAvailable: TCP does not expose the path MTU.
        """
        raise NotAvailable("path_mtu", self.mapping)


class MessageStreamFactory(Factory):
    """
    Builds each connection's protocol, all feeding one receiver: the TCP
    mapping (L{MessageStreamProtocol}), or the SCTP mapping for an SCTP
    association (L{message_protocol}).  Clients connect with it too
    (C{endpoint.connect(MessageStreamFactory(receiver))}) to get the
    mapping of the endpoint's transport.
    """

    protocol = MessageStreamProtocol
    noisy = False

    def __init__(self, receiver, protocol=ASAP, limits=None, clock=None, budget=None,
                 reserved=False, refusals=None, turns=None):
        """
        @param receiver: the L{IMessageReceiver} every connection reports
            to.
        @param protocol: C{"asap"} or C{"enrp"}.
        @param limits: L{ConnectionLimits
            <rserpool.transport.guard.ConnectionLimits>} for every accepted
            connection (deadlines, write buffer), or C{None} (a client's
            own connections need none).
        @param clock: the C{IReactorTime} for the limits.
        @param budget: a L{ConnectionBudget
            <rserpool.transport.guard.ConnectionBudget>} shared by the
            listeners, or C{None}.
        @param reserved: whether this listener may use the budget's
            reserve (ENRP: registrar peers).
        @param refusals: a L{RefusalLog} for refused connections.
        @param turns: the L{TurnScheduler
            <rserpool.transport.guard.TurnScheduler>} this listener's
            connections share with other listeners' (one is made for it
            if it has limits and none is given).
        """
        self.receiver = receiver
        self.message_protocol = protocol
        self.limits = limits
        self.clock = clock
        self.budget = budget
        self.reserved = reserved
        self.refusals = refusals if refusals is not None else RefusalLog()
        self.events = EventLog(Logger(namespace="rserpool.transport.guard")) \
            if limits is not None else None
        #: the accepted connections' turns (with limits), or C{None}
        if turns is None and limits is not None and clock is not None:
            turns = TurnScheduler(clock)
        self.turns = turns if limits is not None else None
        #: memory given back after connections that held buffers
        self.memory = MemoryReturn(clock) if self.turns is not None else None

    def buildProtocol(self, addr):
        key = None
        if self.budget is not None:
            key = host_principal(getattr(addr, "host", None), self.budget.limits.ipv6_prefix)
            refused = self.budget.admit(key, self.reserved)
            if refused is not None:
                # Twisted closes a connection whose protocol is None.
                self.refusals.refused(
                    "%s connection" % self.message_protocol.upper(), key, self.clock.seconds(),
                    "too many connections open from it" if refused == "per source"
                    else "too many connections open")
                return None
        p = self._build(addr)
        p._budget_key = key
        if key is not None and not self.reserved:
            self.budget.attach(key, p)
        return p

    def _build(self, addr):
        p = message_protocol(self.receiver, self.message_protocol, addr)
        p.factory = self
        return p


def message_protocol(receiver, protocol, addr):
    """
    A connection of the mapping that suits the transport: the SCTP mapping
    (RFC 5352 section 5, L{SCTPMessageProtocol}) for an SCTP association,
    else the TCP mapping (L{MessageStreamProtocol}).

    @param receiver: the L{IMessageReceiver} it reports to.
    @param protocol: C{"asap"} or C{"enrp"}.
    @param addr: the peer's address, as C{buildProtocol} is given it.
    """
    if is_sctp_address(addr):
        return SCTPMessageProtocol(receiver, protocol)
    return MessageStreamProtocol(receiver, protocol)


class MultiplexProtocol(Protocol):
    """
    A multiplexed control+data connection (L{rserpool.transport.mux}) over a
    Twisted transport, heartbeat included.

    Subclass or pass callbacks: C{on_message(event)} gets each
    L{mux.DataReceived}; C{on_dead()} is called when the heartbeat finds
    the peer silent (the connection is then aborted: a silent peer may
    never read again, so a graceful close could wait for ever);
    C{on_close()} when the peer sent a L{mux.CLOSE} frame (it closes on
    purpose; this end then closes too); C{on_lost(reason)} when the
    connection is gone, whatever the cause.

    @ivar connection: the L{mux.MuxConnection}, for its RTT estimate.
    @ivar closed_by_peer: whether the peer sent a CLOSE frame.
    """

    log = Logger()

    def __init__(self, clock, on_message, on_dead=None, on_close=None, on_lost=None, **options):
        """
        @param clock: an L{IReactorTime}.
        @param on_message: called with each L{mux.DataReceived}.
        @param on_dead: called without arguments when the peer went silent.
        @param on_close: called without arguments when the peer closes on
            purpose (a CLOSE frame).
        @param on_lost: called with the reason when the connection is gone.
        @param options: passed to L{mux.MuxConnection} (C{interval},
            C{max_missed}, C{max_payload}).
        """
        self.clock = clock
        self.on_message = on_message
        self.on_dead = on_dead
        self.on_close = on_close
        self.on_lost = on_lost
        self._options = options
        self.connection = None
        self.closed_by_peer = False
        self._call = None

    def connectionMade(self):
        self.connection = mux.MuxConnection(self.clock.seconds(), **self._options)
        self._arm()

    def dataReceived(self, data):
        try:
            events = self.connection.receive(data, self.clock.seconds())
        except mux.MuxFramingError as e:
            self.log.warn("closing multiplexed connection: {reason}", reason=str(e))
            self.transport.abortConnection()
            return
        self._flush()
        for event in events:
            if isinstance(event, mux.DataReceived):
                self.on_message(event)
            elif isinstance(event, mux.CloseReceived):
                self.closed_by_peer = True
                if self.on_close is not None:
                    self.on_close()
                self.transport.loseConnection()
        self._arm()

    def send(self, payload, ppid=0, stream=0, unordered=False):
        """
        Send one user message (see L{mux.MuxConnection.send}).
        """
        self.connection.send(payload, ppid, stream, unordered)
        self._flush()

    def close(self):
        """
        Close on purpose: a CLOSE frame after what is queued, then the
        connection.
        """
        if self.connection is not None and self.transport is not None:
            self.connection.send_close()
            self._flush()
            self._arm()
            self.transport.loseConnection()

    def _flush(self):
        data = self.connection.data_to_send()
        if data:
            self.transport.write(data)

    def _arm(self):
        deadline = self.connection.next_deadline
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if deadline is not None:
            self._call = self.clock.callLater(
                max(0.0, deadline - self.clock.seconds()), self._timer
            )

    def _timer(self):
        self._call = None
        events = self.connection.timer(self.clock.seconds())
        self._flush()
        if events:
            self.log.info("multiplexed connection: peer silent, aborting")
            self.transport.abortConnection()
            if self.on_dead is not None:
                self.on_dead()
            return
        self._arm()

    def connectionLost(self, reason):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self.on_lost is not None:
            self.on_lost(reason)
