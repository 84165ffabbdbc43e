"""
The Enhanced Mode session layer, sans I/O (draft-ietf-rserpool-service
sections 3.3 and 4.4-4.5, RFC 5352 section 4).

A session runs over one multiplexed control+data connection
(L{rserpool.transport.mux}: each frame is a user message with a PPID).
Frames with the ASAP PPID (11) carry ASAP control messages: Cookie (PE to
PU, SET_COOKIE), Cookie Echo (PU to the new PE after a failover) and
Business Card.  Frames with PPID 0 carry application data, one message
per DATA_SEND_REQUEST.  A data-less frame with L{CLOSE_PPID} says the
sender ends the session on purpose: a connection lost without it is a
failure, and the pool user fails over.

L{PUSessionCore} and L{PESessionCore} decide what to send and deliver;
L{rserpool.session.twisted} runs them over Twisted connections.
"""
import collections

import attrs

from rserpool.codes import ASAP_PPID
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
    "Deliver",
    "CookieIndication",
    "BusinessCardReceived",
    "CallFailover",
    "PeerClosed",
    "ControlError",
]

#: The PPID of application data frames.
DATA_PPID = 0
#: The PPID of the empty frame that ends a session on purpose (a session
#: layer convention of this implementation: neither TCP nor SCTP tell a
#: process that closed its socket from one that was killed).
CLOSE_PPID = 0xFFFFFFFF


@attrs.frozen
class SendFrame:
    """
    Write one frame: C{payload} with C{ppid}.
    """

    payload: bytes
    ppid: int = DATA_PPID


@attrs.frozen
class Deliver:
    """
    DATA_RECEIVED_NOTIFICATION: hand C{payload} to the application.
    """

    payload: bytes


@attrs.frozen
class CookieIndication:
    """
    COOKIE_INDICATION at a PE: a failed-over PU sent C{cookie} (before any
    of its data).
    """

    cookie: bytes


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

    @ivar state: C{"connecting"}, C{"up"}, C{"failover"}, C{"closing"} or
        C{"closed"}.
    @ivar cookie: the last cookie received (services draft section 4.5.1).
    @ivar failovers: how many failovers happened.
    @ivar pending: payloads not yet handed to a connection.
    """

    def __init__(self, business_card=None, max_pending=None):
        """
        @param business_card: a L{BusinessCard} to send on every new
            connection (a PU that is also a PE), or C{None}.
        @param max_pending: the most messages kept while disconnected
            (C{None}: no limit); beyond it L{send} raises C{BufferError}.
        """
        self.business_card = business_card
        self.max_pending = max_pending
        self.state = "connecting"
        self.cookie = None
        self.failovers = 0
        self.pending = collections.deque()

    def send(self, payload):
        """
        DATA_SEND_REQUEST.

        @return: the L{SendFrame}s to write now (none while disconnected:
            the data waits in L{pending}).
        """
        if self.state in ("closing", "closed"):
            raise RuntimeError("the session is closed")
        payload = bytes(payload)
        if self.state == "up":
            return [SendFrame(payload)]
        if self.max_pending is not None and len(self.pending) >= self.max_pending:
            raise BufferError("%d messages wait for a pool element" % len(self.pending))
        self.pending.append(payload)
        return []

    def connected(self):
        """
        A connection to a PE is up.

        @return: actions in order: L{SendFrame} of the Cookie Echo (after a
            failover, when a cookie is known), L{SendFrame} of the Business
            Card, L{CallFailover} (after a failover); then call L{flush}.
        """
        out = []
        failover = self.state == "failover"
        if failover:
            self.failovers += 1
            if self.cookie is not None:
                # RFC 5352 section 4 / services draft 4.5.1: the new PE gets
                # the last cookie before any data.
                out.append(SendFrame(encode(CookieEcho(self.cookie)), ASAP_PPID))
        if self.business_card is not None:
            out.append(SendFrame(encode(self.business_card), ASAP_PPID))
        self.state = "up"
        if failover:
            out.append(CallFailover(self.failovers))
        return out

    def flush(self):
        """
        The frames of the data kept while disconnected (and forget it).
        """
        if self.state != "up":
            return []
        out = [SendFrame(p) for p in self.pending]
        self.pending.clear()
        return out

    def received(self, payload, ppid):
        """
        A frame from the PE.

        @return: a list of L{Deliver}, L{PeerClosed} or L{ControlError}.
        """
        if ppid == CLOSE_PPID:
            if self.state not in ("closed",):
                self.state = "closing"
            return [PeerClosed()]
        if ppid != ASAP_PPID:
            return [Deliver(payload)]
        message, problem = _control(payload)
        if problem is not None:
            return [problem]
        if isinstance(message, Cookie):
            self.cookie = message.cookie
            return []
        if isinstance(message, BusinessCard):
            return [BusinessCardReceived(message)]
        return [ControlError("unexpected %s from the pool element" % type(message).__name__)]

    def lost(self):
        """
        The connection is gone.

        @return: C{True} if a failover must follow, C{False} if the session
            ended (on purpose, from either side).
        """
        if self.state in ("closing", "closed"):
            self.state = "closed"
            return False
        self.state = "failover"
        return True

    def close(self):
        """
        The application ends the session.

        @return: the frames to write before closing (the close marker, if
            connected).
        """
        was = self.state
        self.state = "closing"
        self.pending.clear()
        if was == "up":
            return [SendFrame(b"", CLOSE_PPID)]
        return []

    def closed(self):
        """
        Mark the session over (no connection, no failover).
        """
        self.state = "closed"


class PESessionCore:
    """
    The pool element's end of a session.

    @ivar cookie_received: the Cookie Echo's cookie, if the PU failed over
        to us.
    @ivar business_card: the PU's L{BusinessCard}, if it sent one.
    """

    def __init__(self):
        self.cookie_received = None
        self.business_card = None
        self.closing = False

    def set_cookie(self, cookie):
        """
        SET_COOKIE (services draft section 4.5.1): the frame that gives the
        PU a new state cookie.
        """
        return SendFrame(encode(Cookie(bytes(cookie))), ASAP_PPID)

    def received(self, payload, ppid):
        """
        A frame from the PU.

        @return: a list of L{Deliver}, L{CookieIndication},
            L{BusinessCardReceived}, L{PeerClosed} or L{ControlError}.
        """
        if ppid == CLOSE_PPID:
            self.closing = True
            return [PeerClosed()]
        if ppid != ASAP_PPID:
            return [Deliver(payload)]
        message, problem = _control(payload)
        if problem is not None:
            return [problem]
        if isinstance(message, CookieEcho):
            self.cookie_received = message.cookie
            return [CookieIndication(message.cookie)]
        if isinstance(message, BusinessCard):
            self.business_card = message
            return [BusinessCardReceived(message)]
        return [ControlError("unexpected %s from the pool user" % type(message).__name__)]

    def close(self):
        """
        The PE application ends the session: the close marker to send.
        """
        self.closing = True
        return [SendFrame(b"", CLOSE_PPID)]
