"""
The multiplexed control+data framing of the TCP mapping, sans I/O.

Enhanced Mode (draft-ietf-rserpool-service section 3) runs ASAP control
messages (Cookie, Cookie Echo, Business Card) and application data over
one connection between a pool user and a pool element.  SCTP tells them
apart by the payload protocol identifier; over TCP this framing does, and
it adds what section 5.2.1 of the draft requires of any mapping: message
orientation and a heartbeat.  ``doc/tcp-mapping.rst`` specifies the bytes;
in short every frame is::

    type:8 | flags:8 | stream:16 | length:32 | ppid:32 | payload (length bytes)

with L{DATA} frames carrying one user message each, L{HEARTBEAT} /
L{HEARTBEAT_ACK} frames carrying an 8-byte opaque value that the ack
echoes, and an empty L{CLOSE} frame by which an end says it closes the
connection on purpose (TCP cannot tell that from a crash).

This module imports no reactor: L{MuxConnection} takes bytes and the
current time and gives back events and bytes, so Twisted, a test or
another event loop can drive it.
"""
import struct

import attrs

from rserpool.codes import ASAP_PPID, ENRP_PPID
from rserpool.interfaces import NotAvailable

#: Frame types.  The first byte of a plain ASAP or ENRP message is a message
#: type between 0x01 and 0x0e, so a plain ASAP peer that reaches a
#: multiplexed port (or the other way round) is caught at its first byte.
DATA = 0xA0
HEARTBEAT = 0xA1
HEARTBEAT_ACK = 0xA2
CLOSE = 0xA3

#: DATA flag: the sender allows delivery out of order (SCTP's U bit).
FLAG_UNORDERED = 0x01

#: Size of the frame header.
HEADER_SIZE = 12

#: Default heartbeat interval in seconds (SCTP's default HB.interval).
DEFAULT_HEARTBEAT_INTERVAL = 30.0
#: Default number of heartbeat intervals without any frame from the peer
#: before the connection is declared dead (SCTP's Path.Max.Retrans is 5; a
#: TCP connection has one path and retransmits by itself, so fewer do).
DEFAULT_MAX_MISSED = 3
#: Default largest payload accepted in one frame.
DEFAULT_MAX_PAYLOAD = 1 << 20

_HEADER = struct.Struct("!BBHII")
_Q = struct.Struct("!Q")


class MuxFramingError(Exception):
    """
    The byte stream is not (any more) a sequence of frames: an unknown frame
    type, a payload above the limit, a heartbeat of the wrong size.  The
    connection must be closed; nothing after this point can be trusted.
    """


@attrs.frozen
class DataReceived:
    """
    One user message arrived.

    @ivar payload: the message's bytes.
    @ivar ppid: its payload protocol identifier (C{11} for ASAP control).
    @ivar stream: the stream number the sender chose.
    @ivar unordered: the sender allowed unordered delivery (it was delivered
        in order anyway: TCP cannot do otherwise).
    """

    payload: bytes
    ppid: int
    stream: int = 0
    unordered: bool = False

    @property
    def is_control(self):
        """
        Whether this is an ASAP (or ENRP) control message rather than data.
        """
        return self.ppid in (ASAP_PPID, ENRP_PPID)


@attrs.frozen
class CloseReceived:
    """
    The peer closes the connection on purpose (a L{CLOSE} frame): nothing
    follows, and its end is no failure.
    """


@attrs.frozen
class HeartbeatAcknowledged:
    """
    The peer answered a heartbeat.

    @ivar rtt: the measured round-trip time in seconds.
    """

    rtt: float


@attrs.frozen
class ConnectionDead:
    """
    Nothing arrived from the peer for C{max_missed} heartbeat intervals:
    close the connection and fail over.
    """

    silent_for: float


def encode_frame(frame_type, payload, ppid=0, stream=0, flags=0):
    """
    Frame one payload.

    @return: the frame's bytes (header and payload).
    """
    return _HEADER.pack(frame_type, flags, stream, len(payload), ppid) + payload


class MuxConnection:
    """
    One end of a multiplexed control+data connection.

    Feed it what the socket reads with L{receive}; send with L{send}; call
    L{timer} when L{next_deadline} is reached; write out whatever
    L{data_to_send} returns after each call.

    Heartbeats: every C{interval} seconds this end sends a L{HEARTBEAT}
    carrying a sequence number; the peer answers each with a
    L{HEARTBEAT_ACK} that echoes it, which gives a round-trip time sample.
    Any frame from the peer shows it is alive; when nothing arrived for
    C{interval * max_missed} seconds, L{timer} reports L{ConnectionDead}.

    @ivar streams_independent: always C{False}: stream numbers are carried
        and delivered, but one TCP byte stream blocks every stream behind a
        lost segment (services draft section 5.2.2, item 1).
    @ivar unordered_delivery: always C{False}: the unordered flag is
        carried, but messages arrive in order (section 5.2.2, item 2).
    """

    mapping = "tcp-mux"
    streams_independent = False
    unordered_delivery = False

    def __init__(
        self,
        now,
        interval=DEFAULT_HEARTBEAT_INTERVAL,
        max_missed=DEFAULT_MAX_MISSED,
        max_payload=DEFAULT_MAX_PAYLOAD,
    ):
        """
        @param now: the current time in seconds.
        @param interval: seconds between heartbeats; C{None} turns this
            end's heartbeats off (it still answers the peer's).
        @param max_missed: intervals of silence before the peer is dead.
        @param max_payload: the largest payload accepted in one frame.
        """
        self.interval = interval
        self.max_missed = max_missed
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._out = []
        self._broken = None
        self._last_heard = now
        self._next_heartbeat = None if interval is None else now + interval
        self._sequence = 0
        self._pending = {}
        self._srtt = None
        self._rttvar = None
        self.dead = False
        self.close_sent = False
        self.close_received = False

    # -- sending ----------------------------------------------------------

    def send(self, payload, ppid=0, stream=0, unordered=False):
        """
        Queue one user message.

        @param payload: its bytes.
        @param ppid: payload protocol identifier; C{11} marks ASAP control.
        @param stream: a stream number, 0 to 65535.
        @param unordered: allow out-of-order delivery (see
            L{unordered_delivery}).
        """
        payload = bytes(payload)
        if len(payload) > 0xFFFFFFFF:
            raise ValueError("payload too long for one frame")
        if not 0 <= stream <= 0xFFFF:
            raise ValueError("stream must fit in 16 bits")
        self._out.append(
            encode_frame(DATA, payload, ppid, stream, FLAG_UNORDERED if unordered else 0)
        )

    def send_close(self):
        """
        Queue a L{CLOSE} frame: this end closes the connection on purpose.
        Nothing may be sent after it; this end's heartbeats stop.
        """
        if not self.close_sent:
            self.close_sent = True
            self._out.append(encode_frame(CLOSE, b""))

    def send_control(self, message_bytes):
        """
        Queue one encoded ASAP control message (PPID 11).
        """
        self.send(message_bytes, ASAP_PPID)

    def data_to_send(self):
        """
        The bytes to write to the connection now (and forget them).
        """
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out = []
        return out

    # -- receiving --------------------------------------------------------

    def receive(self, data, now):
        """
        Take bytes read from the connection.

        @return: a list of L{DataReceived}, L{HeartbeatAcknowledged} and
            L{CloseReceived}.
        @raise MuxFramingError: the stream cannot be parsed any more; close
            the connection.
        """
        if self._broken is not None:
            raise self._broken
        if self.close_received:
            # The peer said it sends nothing more.
            return []
        buf = self._buffer
        buf += data
        events = []
        pos = 0
        n = len(buf)
        if n:
            self._last_heard = now
        while n - pos >= HEADER_SIZE:
            ftype, flags, stream, length, ppid = _HEADER.unpack_from(buf, pos)
            if ftype not in (DATA, HEARTBEAT, HEARTBEAT_ACK, CLOSE):
                return self._fail("unknown frame type 0x%02x" % ftype)
            if length > self.max_payload:
                return self._fail(
                    "frame payload of %d bytes exceeds the limit of %d" % (length, self.max_payload)
                )
            if n - pos - HEADER_SIZE < length:
                break
            start = pos + HEADER_SIZE
            payload = bytes(buf[start : start + length])
            pos = start + length
            if ftype == DATA:
                events.append(DataReceived(payload, ppid, stream, bool(flags & FLAG_UNORDERED)))
            elif ftype == CLOSE:
                if length:
                    return self._fail("close frame with a %d-byte payload" % length)
                self.close_received = True
                events.append(CloseReceived())
                # anything after it is ignored
                del buf[:]
                return events
            elif length != 8:
                return self._fail("heartbeat frame with a %d-byte payload" % length)
            elif ftype == HEARTBEAT:
                self._out.append(encode_frame(HEARTBEAT_ACK, payload))
            else:
                (sequence,) = _Q.unpack(payload)
                sent = self._pending.pop(sequence, None)
                if sent is not None:
                    # Older heartbeats are answered in order: forget them.
                    for s in [s for s in self._pending if s < sequence]:
                        del self._pending[s]
                    rtt = max(0.0, now - sent)
                    self._sample(rtt)
                    events.append(HeartbeatAcknowledged(rtt))
        if pos:
            del buf[:pos]
        return events

    def _fail(self, reason):
        self._broken = MuxFramingError(reason)
        del self._buffer[:]
        raise self._broken

    def _sample(self, rtt):
        # RFC 6298 section 2: smoothed RTT and its variation.
        if self._srtt is None:
            self._srtt = rtt
            self._rttvar = rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt

    # -- time -------------------------------------------------------------

    @property
    def next_deadline(self):
        """
        When L{timer} must be called next (absolute time), or C{None}.
        """
        if self.dead or self.interval is None or self.close_sent or self.close_received:
            return None
        return min(self._next_heartbeat, self._last_heard + self.interval * self.max_missed)

    def timer(self, now):
        """
        Let time pass: send a heartbeat when one is due, and detect a silent
        peer.

        @return: a list with a L{ConnectionDead} event, or an empty list.
        """
        if self.dead or self.interval is None or self.close_sent or self.close_received:
            return []
        silent = now - self._last_heard
        if silent >= self.interval * self.max_missed:
            self.dead = True
            return [ConnectionDead(silent)]
        if now >= self._next_heartbeat:
            self._sequence += 1
            self._pending[self._sequence] = now
            self._out.append(encode_frame(HEARTBEAT, _Q.pack(self._sequence)))
            self._next_heartbeat = now + self.interval
        return []

    # -- services draft section 5.2.3 -------------------------------------

    def rtt(self):
        """
        The smoothed round-trip time measured by heartbeats, in seconds.

        @raise NotAvailable: before the first heartbeat was answered.
        """
        if self._srtt is None:
            raise NotAvailable("rtt", self.mapping)
        return self._srtt

    def rto(self):
        """
        @raise NotAvailable: TCP keeps its retransmission timeout to itself.
        """
        raise NotAvailable("rto", self.mapping)

    def path_mtu(self):
        """
        @raise NotAvailable: TCP does not expose the path MTU.
        """
        raise NotAvailable("path_mtu", self.mapping)

    def set_lifetime(self, seconds):
        """
        @raise NotAvailable: TCP cannot abandon a message once written.
        """
        raise NotAvailable("lifetime", self.mapping)
