"""
How an Enhanced Mode session's frames travel: the transport mapping
(draft-ietf-rserpool-service section 5.1), on Twisted (moved here from
C{rserpool.session.channel}: the session package is the sans-IO core).

The session cores (L{rserpool.session.core}) speak in frames, each a user
message with a PPID (11 for ASAP control, anything else for data), plus
one request, "tell the peer this end closes on purpose" (L{SendClose}).
A channel carries them over one connection:

 - L{MuxChannel}, over a byte stream (TCP, TLS): the TCP mapping's
   multiplexed framing (L{rserpool.transport.mux}, ``doc/tcp-mapping.rst``)
   with its heartbeat; the close is its CLOSE frame.
 - L{SCTPChannel}, over an SCTP association: every frame is one SCTP
   message with its own PPID, as RSPLIB sends them (RFC 5352 section 4:
   ASAP control with PPID 11 on the association that carries the data).
   SCTP has its own heartbeat: the session's C{heartbeat_interval} and
   C{max_missed} are applied to it (C{SCTP_PEER_ADDR_PARAMS}).

L{Link} is the Twisted protocol a session hands to an endpoint; it picks
the channel when the transport is known (an SCTP transport's addresses
have type C{"SCTP"}), so C{tcp:}, C{ssl:} and C{sctp:} endpoints all work
and the session never asks which it got.

Deliberate close over SCTP.  SCTP tells a graceful SHUTDOWN from an ABORT
(or a lost association), but not a process that closed its socket from one
that was killed: the kernel shuts down a killed process's associations
gracefully.  So:

 - a pool user ends the session with SHUTDOWN alone, as RSPLIB's
   C{rsp_close()} does; the PE never fails over, and its application sees
   C{ConnectionDone} for a SHUTDOWN, C{ConnectionLost} for an ABORT or a
   lost association;
 - a pool element, whose graceful end the PU could not tell from its death
   (and would fail over), first sends the close marker as one SCTP message:
   a single zero byte (SCTP cannot carry an empty message) with PPID
   L{CLOSE_PPID}, then SHUTDOWN.  RSPLIB's PUs have no such notion: they
   would see that byte as data with PPID 0xffffffff, then fail over, as
   they do whenever their association ends.
"""
from twisted.internet.interfaces import IHandshakeListener, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from rserpool.session.core import CLOSE_PPID
from rserpool.interfaces import NotAvailable
from rserpool.transport.connection import is_sctp
from rserpool.transport.tcp import MultiplexProtocol

__all__ = ["Link", "MuxChannel", "SCTPChannel", "is_sctp"]

#: The close marker's payload over SCTP (an SCTP message cannot be empty).
SCTP_CLOSE_MARKER = b"\x00"


class MuxChannel:
    """
    Frames over the TCP mapping's multiplexed framing, with its heartbeat:
    the close is its CLOSE frame; a silent peer is aborted by the framing
    itself (L{MultiplexProtocol}).

    @ivar protocol: the L{MultiplexProtocol} doing the framing.
    """

    mapping = "tcp-mux"

    def __init__(self, link, clock, interval, max_missed):
        self.link = link
        self.protocol = MultiplexProtocol(clock, self._message, on_close=link.peer_closed,
                                          interval=interval, max_missed=max_missed)

    def start(self, transport):
        self.protocol.makeConnection(transport)

    def data_received(self, data):
        self.protocol.dataReceived(data)

    def _message(self, event):
        if event.ppid == CLOSE_PPID and not event.payload:
            # How peers ended sessions before the CLOSE frame existed.
            self.link.peer_closed()
        else:
            self.link.message(event.payload, event.ppid, event.stream)

    def send(self, frame):
        self.protocol.send(frame.payload, frame.ppid, frame.stream, frame.unordered)

    def send_close(self):
        self.protocol.close()

    def stop(self, reason):
        self.protocol.connectionLost(reason)

    def rtt(self):
        """
        The RTT measured by the framing's heartbeats.

        @raise NotAvailable: before the first answer.
        """
        return self.protocol.connection.rtt()


class SCTPChannel:
    """
    Frames as SCTP messages, control and data told apart by the PPID
    (services draft section 5.1, RSPLIB's Enhanced Mode).

    The session's heartbeat settings become the association's SCTP
    heartbeat (C{SCTP_PEER_ADDR_PARAMS}, through the transport's
    C{setHeartbeat}): a HEARTBEAT chunk every C{interval} seconds on each
    idle path (the kernel adds the path's RTO and a jitter), and a path
    given up after C{max_missed} unanswered ones (C{spp_pathmaxrxt}).
    C{interval=None} leaves the kernel's settings (30 s, 5).

    @ivar close_marker: whether L{send_close} sends the marker message (the
        PE side) or nothing (the PU side: SHUTDOWN says it).
    @ivar heartbeat: C{(interval, max_missed)} as applied, or C{None} if
        the kernel's settings were left (no interval, or the transport
        refused them).
    """

    mapping = "sctp"
    log = Logger()

    def __init__(self, link, close_marker, interval=None, max_missed=None):
        self.link = link
        self.close_marker = close_marker
        self.interval = interval
        self.max_missed = max_missed
        self.transport = None
        self.heartbeat = None

    def start(self, transport):
        self.transport = transport
        self._apply_heartbeat()

    def _apply_heartbeat(self):
        if self.interval is None:
            return
        set_heartbeat = getattr(self.transport, "setHeartbeat", None)
        if set_heartbeat is None:
            return
        try:
            set_heartbeat(self.interval, self.max_missed)
        except (OSError, ValueError) as e:
            # The session still works on the kernel's heartbeat.
            self.log.warn("SCTP heartbeat ({interval} s, {max_missed}) not applied: {error}",
                          interval=self.interval, max_missed=self.max_missed, error=e)
            return
        self.heartbeat = (self.interval, self.max_missed)

    def data_received(self, data):
        # An SCTP transport without PPIDs: data with the default PPID.
        self.link.message(data, 0, 0)

    def message_received(self, data, ppid, stream):
        if ppid == CLOSE_PPID:
            self.link.peer_closed()
        else:
            self.link.message(data, ppid, stream)

    def send(self, frame):
        if not frame.payload:
            # SCTP has no empty user messages (RFC 4960 section 6.2).
            return
        self.transport.writeMessage(frame.payload, frame.ppid, frame.stream, frame.unordered)

    def send_close(self):
        if self.close_marker:
            self.transport.writeMessage(SCTP_CLOSE_MARKER, CLOSE_PPID, 0, False)

    def stop(self, reason):
        pass

    def rtt(self):
        """
        The association's smoothed RTT (C{SCTP_STATUS}).

        @raise NotAvailable: the association is gone.
        """
        try:
            return self.transport.getStatus().srtt
        except (OSError, AttributeError):
            raise NotAvailable("rtt", self.mapping)


@implementer(IHandshakeListener)
class Link(Protocol):
    """
    One session connection, whatever its mapping, reporting to its owner
    (a L{rserpool.transport.enhanced.PoolSession} or a PE's session): C{link_made(link)},
    C{link_message(link, payload, ppid, stream)}, C{link_closing(link)} (the
    peer closes on purpose) and C{link_lost(link, reason)}.

    Over TLS the link is made only once the handshake is done: a
    connection whose handshake fails never carried a byte of the session,
    and its owner hears C{link_failed(link, reason)} (when it has that
    method) instead of C{link_lost}, as for a PE it could not reach (RFC
    5355 section 2.9: a failover never goes on in clear or into a
    connection that is not secured yet).

    @ivar channel: the L{MuxChannel} or L{SCTPChannel}, once connected.
    @ivar up: whether frames can be sent.
    """

    def __init__(self, owner, clock, heartbeat_interval=30.0, max_missed=3,
                 close_marker=True):
        """
        @param heartbeat_interval: the heartbeat interval: the multiplexed
            framing's (C{None}: only answer the peer's), or the SCTP
            association's (C{None}: the kernel's).
        @param max_missed: silent intervals before the peer is dead (over
            SCTP: the path's C{spp_pathmaxrxt}).
        @param close_marker: over SCTP, whether a deliberate close sends the
            marker message (pool elements) or SHUTDOWN alone (pool users).
        """
        self.owner = owner
        self.clock = clock
        self.heartbeat_interval = heartbeat_interval
        self.max_missed = max_missed
        self.close_marker = close_marker
        self.channel = None
        self.up = False
        self._handshaking = False
        self._handshake_done = False

    def makeConnection(self, transport):
        if is_sctp(transport):
            self.channel = SCTPChannel(self, self.close_marker, self.heartbeat_interval,
                                       self.max_missed)
        else:
            self.channel = MuxChannel(self, self.clock, self.heartbeat_interval, self.max_missed)
        Protocol.makeConnection(self, transport)

    @property
    def mapping(self):
        """
        C{"tcp-mux"} or C{"sctp"} (C{None} before the connection is up).
        """
        return None if self.channel is None else self.channel.mapping

    def connectionMade(self):
        if ISSLTransport.providedBy(self.transport) and not self._handshake_done:
            self._handshaking = True
            return
        self._start()

    def handshakeCompleted(self):
        """
        The TLS handshake is done: the link is up.
        """
        self._handshake_done = True
        if self._handshaking:
            self._handshaking = False
            self._start()

    def _start(self):
        self.channel.start(self.transport)
        self.up = True
        self.owner.link_made(self)

    def dataReceived(self, data):
        self.channel.data_received(data)

    def messageReceived(self, data, ppid, stream):
        """
        One SCTP message (L{rserpool.transport.sctp.ISCTPProtocol}).
        """
        self.channel.message_received(data, ppid, stream)

    def message(self, payload, ppid, stream):
        self.owner.link_message(self, payload, ppid, stream)

    def peer_closed(self):
        self.owner.link_closing(self)

    def send_frame(self, frame):
        if self.up:
            self.channel.send(frame)

    def send_close(self):
        if self.up:
            self.channel.send_close()

    def close(self, abort=False):
        """
        End the connection: gracefully after what is queued (TCP FIN, SCTP
        SHUTDOWN), or at once (RST, SCTP ABORT).
        """
        if self.transport is None:
            return
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def rtt(self):
        return self.channel.rtt()

    def connectionLost(self, reason):
        if self._handshaking:
            # Never up: the TLS handshake failed (or the peer left first).
            self._handshaking = False
            failed = getattr(self.owner, "link_failed", None)
            if failed is not None:
                failed(self, reason)
            return
        if self.channel is not None:
            self.channel.stop(reason)
        self.up = False
        self.owner.link_lost(self, reason)
