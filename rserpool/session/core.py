"""
The Enhanced Mode session layer, sans I/O (draft-ietf-rserpool-service
sections 3.3 and 4.4-4.5, RFC 5352 section 4).

A session runs over one control+data connection whose frames are user
messages with a PPID: the TCP mapping's multiplexed framing
(L{rserpool.transport.mux}) or SCTP messages (services draft section
5.1); which one is the business of L{rserpool.transport.channel}, not of
this module.  Frames with the ASAP PPID (11) carry ASAP control
messages: Cookie (PE to PU, SET_COOKIE), Cookie Echo (PU to the new PE
after a failover) and Business Card.  Every other PPID is application
data (0 unless the application chooses one), one message per
DATA_SEND_REQUEST.  L{SendClose} asks the channel to tell the peer the
session ends on purpose, and the channel reports such an end with
C{peer_closed()}: a connection lost without it is a failure, and the
pool user fails over.

L{PUSessionCore} and L{PESessionCore} decide what to send and deliver;
L{rserpool.transport.enhanced} runs them over Twisted connections.
"""
import collections

import attrs

from rserpool.codes import ASAP_PPID, ENRP_PPID
from rserpool.session.sealing import CookieRejected
from rserpool.states import State
from rserpool.wire import (
    BusinessCard,
    Cookie,
    CookieEcho,
    ProtocolError,
    decode,
    encode,
)

__all__ = [
    "DATA_PPID",
    "CLOSE_PPID",
    "PUSessionCore",
    "PESessionCore",
    "SendFrame",
    "SendClose",
    "Deliver",
    "CookieIndication",
    "CookieRefused",
    "BusinessCardReceived",
    "CallFailover",
    "PeerClosed",
    "ControlError",
    "CONNECTING",
    "UP",
    "FAILOVER",
    "CLOSING",
    "CLOSED",
    "SESSION_MOVES",
]

#: The PPID of application data frames unless the application says
#: otherwise.
DATA_PPID = 0
#: The PPID of the message that ends a session on purpose where the mapping
#: has no better way (a convention of this implementation: neither TCP nor
#: SCTP tell a process that closed its socket from one that was killed; see
#: L{rserpool.transport.channel}).  Applications may not send data with it.
CLOSE_PPID = 0xFFFFFFFF

#: PPIDs an application may not use for its data.
RESERVED_PPIDS = (ASAP_PPID, ENRP_PPID, CLOSE_PPID)


def check_data_ppid(ppid):
    """
    @raise ValueError: C{ppid} is not a 32-bit value an application may
        send its data with (11, 12 and L{CLOSE_PPID} are taken).
    """
    if not isinstance(ppid, int) or not 0 <= ppid <= 0xFFFFFFFF:
        raise ValueError("a PPID is a 32-bit number, not %r" % (ppid,))
    if ppid in RESERVED_PPIDS:
        raise ValueError("PPID %d is reserved for the session layer (ASAP 11, ENRP 12, "
                         "close 0xffffffff); choose another for data" % ppid)
    return ppid


@attrs.frozen
class SendFrame:
    """
    Write one frame: C{payload} with C{ppid} on C{stream}.
    """

    payload: bytes
    ppid: int = DATA_PPID
    stream: int = 0
    unordered: bool = False


@attrs.frozen
class SendClose:
    """
    Tell the peer that this end closes the session on purpose (how is the
    mapping's: L{rserpool.transport.channel}).
    """


@attrs.frozen
class Deliver:
    """
    DATA_RECEIVED_NOTIFICATION: hand C{payload} to the application.
    """

    payload: bytes
    ppid: int = DATA_PPID
    stream: int = 0


@attrs.frozen
class CookieIndication:
    """
    COOKIE_INDICATION at a PE: a failed-over PU sent C{cookie} (before any
    of its data).
    """

    cookie: bytes


@attrs.frozen
class CookieRefused:
    """
    A failed-over PU's Cookie Echo did not open with the PE's
    L{rserpool.session.sealing.CookieSealer}: C{rejection} is the
    L{rserpool.session.sealing.CookieRejected} (its reason is for the log,
    never for the peer).
    """

    rejection: Exception


@attrs.frozen
class BusinessCardReceived:
    """
    The peer sent its L{BusinessCard}: it is a PE of C{card.pool_handle}
    and these PEs can stand in for it.
    """

    card: object


@attrs.frozen
class CallFailover:
    """
    Call the PU's failover callback now: the new connection is up and the
    Cookie Echo is out, the re-sent data is not.
    """

    failovers: int


@attrs.frozen
class PeerClosed:
    """
    The peer ended the session on purpose.
    """


@attrs.frozen
class ControlError:
    """
    An undecodable or unexpected control message (logged, ignored).
    """

    reason: str


def _control(payload):
    try:
        return decode(payload, "asap"), None
    except ProtocolError as e:
        return None, ControlError(str(e.reason))


#: States of L{PUSessionCore}.
CONNECTING = "connecting"
UP = "up"
FAILOVER = "failover"
CLOSING = "closing"
CLOSED = "closed"

#: Every move of L{PUSessionCore} (services draft sections 4.4, 4.5): a
#: session comes up, fails over when its connection is lost and comes up
#: again with another PE, until either side closes it; once closing it
#: only ends, and an ended session stays ended.
SESSION_MOVES = {
    CONNECTING: {UP, FAILOVER, CLOSING, CLOSED},
    UP: {FAILOVER, CLOSING, CLOSED},
    FAILOVER: {UP, FAILOVER, CLOSING, CLOSED},
    CLOSING: {CLOSING, CLOSED},
    CLOSED: {CLOSED},
}


class PUSessionCore:
    """
    The pool user's end of a session.

    Data given to L{send} while no connection is up (before the first one,
    during a failover) is kept and sent, in order, once a connection is up:
    after the Cookie Echo, the Business Card and the failover callback
    (services draft section 4.5.2: "invoke the failover callback prior to
    resending any messages").  Data handed to a connection that then fails
    may be lost: the draft makes failover best effort and leaves
    retransmission to the application (section 4.4).

    @ivar state: L{CONNECTING}, L{UP}, L{FAILOVER}, L{CLOSING} or
        L{CLOSED}; it moves only as L{SESSION_MOVES} says.
    @ivar cookie: the last cookie received (services draft section 4.5.1).
    @ivar failovers: how many failovers happened.
    @ivar pending: the L{SendFrame}s of data not yet handed to a
        connection.
    """

    state = State(SESSION_MOVES, initial=CONNECTING)

    def __init__(self, business_card=None, max_pending=None):
        """
        @param business_card: a L{BusinessCard} to send on every new
            connection (a PU that is also a PE), or C{None}.
        @param max_pending: the most messages kept while disconnected
            (C{None}: no limit); beyond it L{send} raises C{BufferError}.
        """
        self.business_card = business_card
        self.max_pending = max_pending
        self.cookie = None
        self.failovers = 0
        self.pending = collections.deque()

    def send(self, payload, ppid=DATA_PPID, stream=0, unordered=False):
        """
        DATA_SEND_REQUEST.

        @param ppid: the data's PPID (see L{check_data_ppid}).
        @return: the L{SendFrame}s to write now (none while disconnected:
            the data waits in L{pending}).
        """
        if self.state in (CLOSING, CLOSED):
            raise RuntimeError("the session is closed")
        frame = SendFrame(bytes(payload), check_data_ppid(ppid), stream, unordered)
        if self.state == UP:
            return [frame]
        if self.max_pending is not None and len(self.pending) >= self.max_pending:
            raise BufferError("%d messages wait for a pool element" % len(self.pending))
        self.pending.append(frame)
        return []

    def connected(self):
        """
        A connection to a PE is up.

        @return: actions in order: L{SendFrame} of the Cookie Echo (after a
            failover, when a cookie is known), L{SendFrame} of the Business
            Card, L{CallFailover} (after a failover); then call L{flush}.
        """
        if self.state in (CLOSING, CLOSED):
            # The application closed the session while this connection
            # was being set up: it does not come up again.
            return []
        out = []
        failover = self.state == FAILOVER
        if failover:
            self.failovers += 1
            if self.cookie is not None:
                # RFC 5352 section 4 / services draft 4.5.1: the new PE gets
                # the last cookie before any data.
                out.append(SendFrame(encode(CookieEcho(self.cookie)), ASAP_PPID))
        if self.business_card is not None:
            out.append(SendFrame(encode(self.business_card), ASAP_PPID))
        self.state = UP
        if failover:
            out.append(CallFailover(self.failovers))
        return out

    def flush(self):
        """
        The frames of the data kept while disconnected (and forget it).
        """
        if self.state != UP:
            return []
        out = list(self.pending)
        self.pending.clear()
        return out

    def received(self, payload, ppid, stream=0):
        """
        A frame from the PE.

        @return: a list of L{Deliver}, L{BusinessCardReceived} or
            L{ControlError}.
        """
        if ppid != ASAP_PPID:
            return [Deliver(payload, ppid, stream)]
        message, problem = _control(payload)
        if problem is not None:
            return [problem]
        if isinstance(message, Cookie):
            self.cookie = message.cookie
            return []
        if isinstance(message, BusinessCard):
            return [BusinessCardReceived(message)]
        return [ControlError("unexpected %s from the pool element" % type(message).__name__)]

    def peer_closed(self):
        """
        The channel says the PE ends the session on purpose.

        @return: C{[PeerClosed()]}.
        """
        if self.state != CLOSED:
            self.state = CLOSING
        return [PeerClosed()]

    def lost(self):
        """
        The connection is gone.

        @return: C{True} if a failover must follow, C{False} if the session
            ended (on purpose, from either side).
        """
        if self.state in (CLOSING, CLOSED):
            self.state = CLOSED
            return False
        self.state = FAILOVER
        return True

    def close(self):
        """
        The application ends the session.

        @return: what to write before closing (L{SendClose}, if connected).
        """
        was = self.state
        if was != CLOSED:
            self.state = CLOSING
        self.pending.clear()
        if was == UP:
            return [SendClose()]
        return []

    def closed(self):
        """
        Mark the session over (no connection, no failover).
        """
        self.state = CLOSED


class PESessionCore:
    """
    The pool element's end of a session.

    With a C{sealer} (L{rserpool.session.sealing.CookieSealer}) the cookies
    the application sets are sealed, and a Cookie Echo is opened before the
    application sees it: L{CookieIndication} carries the state, and a
    cookie that does not open is L{CookieRefused}.

    @ivar cookie_received: the Cookie Echo's cookie (its state, with a
        sealer), if the PU failed over to us.
    @ivar business_card: the PU's L{BusinessCard}, if it sent one.
    @ivar refused: the session ends after a refused cookie; nothing more
        from the PU is delivered.
    """

    def __init__(self, sealer=None):
        self.cookie_received = None
        self.business_card = None
        self.closing = False
        self.refused = False
        self.sealer = sealer

    def set_cookie(self, cookie, now=None):
        """
        SET_COOKIE (services draft section 4.5.1): the frame that gives the
        PU a new state cookie.

        @param now: the time (POSIX seconds), needed with a sealer.
        @raise rserpool.session.sealing.CookieTooLarge: the state does not
            fit in a sealed cookie.
        """
        cookie = bytes(cookie)
        if self.sealer is not None:
            cookie = self.sealer.seal(cookie, _now(now))
        return SendFrame(encode(Cookie(cookie)), ASAP_PPID)

    def received(self, payload, ppid, stream=0, now=None):
        """
        A frame from the PU.

        @param now: the time (POSIX seconds), needed with a sealer.
        @return: a list of L{Deliver}, L{CookieIndication},
            L{CookieRefused}, L{BusinessCardReceived} or L{ControlError}.
        """
        if self.refused:
            return []
        if ppid != ASAP_PPID:
            return [Deliver(payload, ppid, stream)]
        message, problem = _control(payload)
        if problem is not None:
            return [problem]
        if isinstance(message, CookieEcho):
            cookie = message.cookie
            if self.sealer is not None:
                try:
                    cookie = self.sealer.open(cookie, _now(now))
                except CookieRejected as e:
                    return [CookieRefused(e)]
            self.cookie_received = cookie
            return [CookieIndication(cookie)]
        if isinstance(message, BusinessCard):
            self.business_card = message
            return [BusinessCardReceived(message)]
        return [ControlError("unexpected %s from the pool user" % type(message).__name__)]

    def send(self, payload, ppid=DATA_PPID, stream=0, unordered=False):
        """
        DATA_SEND_REQUEST at the PE.

        @return: the L{SendFrame}s to write (none once closing).
        """
        frame = SendFrame(bytes(payload), check_data_ppid(ppid), stream, unordered)
        return [] if self.closing else [frame]

    def peer_closed(self):
        """
        The channel says the PU ends the session on purpose.
        """
        self.closing = True
        return [PeerClosed()]

    def close(self):
        """
        The PE application ends the session: what to send first.
        """
        self.closing = True
        return [SendClose()]

    def refuse(self):
        """
        End the session after a L{CookieRefused} the application did not
        take up: nothing more from this PU is delivered.

        @return: what to send first.
        """
        self.refused = True
        return self.close()


def _now(now):
    if now is None:
        raise TypeError("a session with a cookie sealer needs the time (now)")
    return now
