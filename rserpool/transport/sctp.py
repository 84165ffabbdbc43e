"""
SCTP as Twisted transports and endpoints, on the kernel's socket API.

Twisted has no SCTP.  This module drives the kernel's SCTP sockets from the
reactor (L{twisted.internet.abstract.FileDescriptor}s) with nothing but the
standard library: the SCTP constants and structures Python lacks are in
L{rserpool.transport._sctp_abi}, written down from C{<linux/sctp.h>}.

Two socket styles (RFC 6458):

  - B{one-to-one} (C{SOCK_STREAM}): one socket per association, like TCP.
    L{SCTPClientEndpoint} connects one; L{SCTPServerEndpoint} in C{stream}
    mode accepts them, one protocol per association.
  - B{one-to-many} (C{SOCK_SEQPACKET}): one socket carries every
    association, as an RSPLIB registrar serves its PEs and PUs.
    L{SCTPServerEndpoint} in C{seqpacket} mode gives each association
    (known by its C{assoc_id}, announced by an C{SCTP_ASSOC_CHANGE}
    notification) its own protocol and an L{SCTPAssociation} transport that
    sends on that association only.

Every message keeps its boundaries (the kernel sets C{MSG_EOR} on the last
piece; pieces of a message larger than one read are put together here) and
carries its payload protocol identifier and stream, sent and received as
C{SCTP_SNDINFO} / C{SCTP_RCVINFO} ancillary data.  A protocol with a
C{messageReceived(data, ppid, stream)} method (see L{ISCTPProtocol}) gets
them; any other Twisted protocol gets C{dataReceived(data)} once per
message, and its C{transport.write(data)} sends one message with the
transport's L{defaultPPID <ISCTPTransport.defaultPPID>}.  The RSerPool PPIDs
are L{rserpool.codes.ASAP_PPID} (11) and L{rserpool.codes.ENRP_PPID} (12).

Endpoint strings (plugins in C{twisted/plugins/rserpool_endpoints.py})::

    sctp:3863:interface=192.0.2.1,198.51.100.1:backlog=50:mode=seqpacket:ppid=11
    sctp:host=192.0.2.1:port=3863:bindAddress=192.0.2.7:timeout=30:ppid=11

Several addresses (comma separated) make a multi-homed endpoint, bound
with C{sctp_bindx()} (C{SCTP_SOCKOPT_BINDX_ADD}); several client C{host}
addresses are given to C{sctp_connectx()}.

Where the kernel has no SCTP, creating a socket fails with L{SCTPUnavailable},
one line that names the cause and the cure.
"""
import ctypes
import errno
import ipaddress
import os
import socket
import struct

import attrs
from twisted.internet import abstract, defer, error, main
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IListeningPort,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
    ITransport,
)
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python import failure
from zope.interface import Attribute, Interface, implementer

from rserpool.transport import _sctp_abi as abi

__all__ = [
    "SCTPUnavailable",
    "SCTPAddress",
    "SCTPStatus",
    "ISCTPTransport",
    "ISCTPProtocol",
    "SCTPConnection",
    "SCTPAssociation",
    "SCTPStreamPort",
    "SCTPSeqPacketPort",
    "listenSCTP",
    "connectSCTP",
    "SCTPServerEndpoint",
    "SCTPClientEndpoint",
    "SCTPAssociationEndpoint",
    "sctpAvailable",
]


STREAM = "stream"
SEQPACKET = "seqpacket"

# recvmsg: room for both kinds of receive information the kernel may attach
_ANCBUFSIZE = socket.CMSG_SPACE(abi.SNDRCVINFO.size) + socket.CMSG_SPACE(abi.RCVINFO.size)
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)
_NO_SCTP = (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT)
#: struct linger (<sys/socket.h>): l_onoff, l_linger
_LINGER = struct.Struct("=ii")
#: sctp_assoc_t, the first field of the option structures that take one
_ASSOC_ID = struct.Struct("=i")


class SCTPUnavailable(Exception):
    """
    The kernel has no SCTP: creating an SCTP socket failed with
    C{EPROTONOSUPPORT} (or C{ESOCKTNOSUPPORT}).

    @ivar errno: the error number.
    """

    def __init__(self, errnum=errno.EPROTONOSUPPORT):
        Exception.__init__(self, errnum)
        self.errno = errnum

    def __str__(self):
        return "this kernel has no SCTP: load the module with 'modprobe sctp' ({})".format(
            errno.errorcode.get(self.errno, self.errno)
        )


# how sockets are made; a test replaces it to play a kernel without SCTP
_socket = socket.socket


def _sctpSocket(family, kind):
    """
    A new non-blocking SCTP socket.

    @raise SCTPUnavailable: if the kernel has no SCTP.
    """
    try:
        skt = _socket(family, kind, abi.IPPROTO_SCTP)
    except OSError as e:
        if e.errno in _NO_SCTP:
            raise SCTPUnavailable(e.errno) from None
        raise
    skt.setblocking(False)
    return skt


def sctpAvailable():
    """
    Whether this kernel can create SCTP sockets.

    @return: C{None} if it can, else the L{SCTPUnavailable} explaining why
        not.
    """
    try:
        _sctpSocket(socket.AF_INET, socket.SOCK_STREAM).close()
    except SCTPUnavailable as e:
        return e
    return None


def _configure(skt, oneToMany=False):
    """
    Socket options every SCTP socket here gets.
    """
    # Signalling wants latency, not Nagle (RSPLIB sets SCTP_NODELAY too).
    skt.setsockopt(abi.SOL_SCTP, abi.SCTP_NODELAY, 1)
    # The stream and PPID of each message, as SCTP_RCVINFO ancillary data.
    skt.setsockopt(abi.SOL_SCTP, abi.SCTP_RECVRCVINFO, 1)
    # Associations come and go on a one-to-many socket only as
    # notifications.  A one-to-one socket reads end-of-file both after
    # SHUTDOWN and after ABORT: SCTP_COMM_LOST tells them apart.  Both
    # styles hear of the peer's addresses as they are confirmed, added or
    # removed (a protocol may want them: ISCTPProtocol.peerAddressChanged).
    skt.setsockopt(
        abi.SOL_SCTP,
        abi.SCTP_EVENTS,
        abi.pack_events(association=True, address=True, shutdown=oneToMany),
    )


def _family(hosts):
    """
    C{AF_INET6} if any of C{hosts} is an IPv6 address, else C{AF_INET}.
    """
    for host in hosts:
        if abstract.isIPv6Address(host):
            return socket.AF_INET6
    return socket.AF_INET


def _bind(skt, hosts, port):
    """
    Bind to the first address, then add the others with C{sctp_bindx()}.

    @param hosts: textual addresses; empty for the wildcard address.
    @return: the bound port.
    """
    family = skt.family
    if not hosts:
        skt.bind(("::" if family == socket.AF_INET6 else "", port))
        return skt.getsockname()[1]
    skt.bind((hosts[0], port))
    port = skt.getsockname()[1]
    if len(hosts) > 1:
        packed = b"".join(abi.pack_sockaddr(h, port) for h in hosts[1:])
        skt.setsockopt(abi.SOL_SCTP, abi.SCTP_SOCKOPT_BINDX_ADD, packed)
    return port


def _getsockopt(skt, option, request, size):
    """
    C{getsockopt(SOL_SCTP, option)} with input in the buffer.

    The kernel reads the association id (and more) from the buffer of
    several SCTP options (C{SCTP_GET_PEER_ADDRS}, C{SCTP_GET_LOCAL_ADDRS},
    C{SCTP_STATUS}); Python's L{socket.socket.getsockopt} hands it an
    uninitialised buffer and also cuts the answer to the length the kernel
    returns, which for the address lists leaves out the 8-byte header.  So
    libc's C{getsockopt} is called through L{ctypes}, the one place here that
    needs it.

    @param request: the bytes to start the buffer with.
    @param size: the buffer's size.
    @return: the whole buffer after the call.
    @raise OSError: if the kernel says no.
    """
    libc = _libc()
    buf = ctypes.create_string_buffer(request, size)
    length = ctypes.c_uint32(size)
    if libc.getsockopt(skt.fileno(), abi.SOL_SCTP, option, buf, ctypes.byref(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return buf.raw


_LIBC = []


def _libc():
    if not _LIBC:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.getsockopt.argtypes = [
            ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32),
        ]
        libc.getsockopt.restype = ctypes.c_int
        _LIBC.append(libc)
    return _LIBC[0]


def _addresses(skt, option, assocId=0):
    """
    C{SCTP_GET_LOCAL_ADDRS} or C{SCTP_GET_PEER_ADDRS} of a socket.

    @param assocId: the association on a one-to-many socket; 0 for the
        socket's own (one-to-one) association or, for local addresses, the
        endpoint's bound addresses.
    @return: a list of C{(host, port)}, or C{[]} if the kernel says no.
    """
    try:
        data = _getsockopt(skt, option, abi.GETADDRS.pack(assocId, 0), 4096)
    except (OSError, AttributeError):
        return []
    return abi.unpack_getaddrs(data)


def _status(skt, assocId=0):
    """
    C{SCTP_STATUS} of an association as an L{SCTPStatus}.
    """
    data = _getsockopt(skt, abi.SCTP_STATUS, _ASSOC_ID.pack(assocId), abi.STATUS.size)
    (_aid, state, rwnd, _unack, _pend, ins, outs, frag, _paid, storage, _st, _cwnd, srtt, rto,
     mtu) = abi.STATUS.unpack(data)
    primary = abi.unpack_sockaddrs(storage, 1)
    return SCTPStatus(
        state, rwnd, ins, outs, frag, primary[0] if primary else None, srtt / 1000.0, rto / 1000.0, mtu,
    )


def _heartbeatParams(interval, maxRetrans):
    """
    The C{spp_hbinterval} (milliseconds) and C{spp_pathmaxrxt} of
    L{_setHeartbeat}, checked.
    """
    if interval is None or not interval > 0:
        raise ValueError("a heartbeat interval is a positive number of seconds, not %r" % (interval,))
    ms = max(1, int(round(interval * 1000)))
    if ms > 0xFFFFFFFF:
        raise ValueError("heartbeat interval %r s does not fit spp_hbinterval" % (interval,))
    rxt = 0 if maxRetrans is None else int(maxRetrans)
    if not 0 <= rxt <= 0xFFFF:
        raise ValueError("maxRetrans is 1 to 65535 (0 or None: unchanged), not %r" % (maxRetrans,))
    return ms, rxt


def _setHeartbeat(skt, interval, maxRetrans, assocId=0):
    """
    C{setsockopt(SOL_SCTP, SCTP_PEER_ADDR_PARAMS)} for the whole association
    (every path): heartbeats on (C{SPP_HB_ENABLE}) every C{interval}
    seconds, a path unreachable after C{maxRetrans} unanswered
    retransmissions or heartbeats (C{spp_pathmaxrxt}).
    """
    ms, rxt = _heartbeatParams(interval, maxRetrans)
    skt.setsockopt(abi.SOL_SCTP, abi.SCTP_PEER_ADDR_PARAMS,
                   abi.pack_paddrparams(assocId, ms, rxt, abi.SPP_HB_ENABLE))


def _peerAddressParams(skt, assocId=0):
    """
    C{getsockopt(SOL_SCTP, SCTP_PEER_ADDR_PARAMS)} of the whole association
    as an L{abi.PeerAddressParams} (the kernel reads the association id
    from the buffer, hence L{_getsockopt}).
    """
    data = _getsockopt(skt, abi.SCTP_PEER_ADDR_PARAMS, abi.pack_paddrparams(assocId),
                       abi.PADDRPARAMS.size)
    return abi.parse_paddrparams(data)


@implementer(IAddress)
@attrs.frozen
class SCTPAddress:
    """
    The address of an SCTP endpoint.

    @ivar host: its primary address, as text (an IPv4-mapped IPv6 address is
        given as IPv4).
    @ivar port: its port.
    @ivar addresses: every address known for it, primary first: the
        addresses of a multi-homed endpoint.
    """

    host: str
    port: int
    addresses: tuple = attrs.field(default=(), converter=tuple)

    type = "SCTP"

    @classmethod
    def fromSockaddr(cls, sockaddr, addresses=()):
        """
        From a Python socket address tuple.
        """
        host, port = sockaddr[0], sockaddr[1]
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        others = tuple(a for a, _ in addresses if a != host)
        return cls(host, port, (host,) + others)


@attrs.frozen
class SCTPStatus:
    """
    C{SCTP_STATUS} of an association, with the primary path's figures.

    @ivar state: the association's state (C{SCTP_ESTABLISHED} is 4).
    @ivar rwnd: the peer's receiver window.
    @ivar inbound_streams: streams from the peer.
    @ivar outbound_streams: streams towards the peer.
    @ivar fragmentation_point: the largest user message fragment.
    @ivar primary: the primary path's peer address C{(host, port)}.
    @ivar srtt: the primary path's smoothed RTT, in seconds.
    @ivar rto: the primary path's retransmission timeout, in seconds.
    @ivar mtu: the primary path's MTU.
    """

    state: int
    rwnd: int
    inbound_streams: int
    outbound_streams: int
    fragmentation_point: int
    primary: tuple
    srtt: float
    rto: float
    mtu: int


class ISCTPTransport(ITransport):
    """
    An SCTP association as a message transport.
    """

    defaultPPID = Attribute("The PPID of messages sent with C{write()}.")
    defaultStream = Attribute("The stream of messages sent with C{write()}.")

    def writeMessage(data, ppid=None, stream=None, unordered=False):
        """
        Send one message.

        @param data: the message, whole.
        @param ppid: its payload protocol identifier; C{None} for
            C{defaultPPID}.
        @param stream: its stream; C{None} for C{defaultStream}.
        @param unordered: deliver it as soon as it arrives, outside its
            stream's order.
        """

    def getPeerAddresses():
        """
        Every address of the peer known so far, primary first.

        @return: a tuple of C{(host, port)}.
        """

    def abortConnection():
        """
        Abort the association (SCTP ABORT), dropping what is queued.
        """

    def setHeartbeat(interval, maxRetrans=None):
        """
        Turn SCTP heartbeats on for the association, every C{interval}
        seconds, a path given up after C{maxRetrans} unanswered
        retransmissions (C{SCTP_PEER_ADDR_PARAMS}).
        """


class ISCTPProtocol(Interface):
    """
    A protocol that wants each message with its PPID and stream.  Without
    C{messageReceived}, a protocol gets C{dataReceived(data)} per message.
    """

    def messageReceived(data, ppid, stream):
        """
        One whole message arrived.

        @param data: its bytes.
        @param ppid: its payload protocol identifier.
        @param stream: the stream it came on.
        """

    def peerAddressChanged(event):
        """
        Optional: the kernel reported a change of one of the peer's
        addresses (C{SCTP_PEER_ADDR_CHANGE}: confirmed, added, removed,
        made primary, unreachable).

        @param event: an L{abi.PeerAddressChange}.
        """


def _tellAddressChange(protocol, event):
    """
    Pass an C{SCTP_PEER_ADDR_CHANGE} notification to a protocol that wants
    it (L{ISCTPProtocol.peerAddressChanged}).
    """
    changed = getattr(protocol, "peerAddressChanged", None)
    if callable(changed):
        changed(event)


def _deliverer(protocol):
    """
    The callable that takes C{(data, ppid, stream)} for a protocol.
    """
    received = getattr(protocol, "messageReceived", None)
    if callable(received):
        return received
    return lambda data, ppid, stream: protocol.dataReceived(data)


class _Reassembler:
    """
    Puts together the pieces of a message read with several C{recvmsg}
    calls: the kernel sets C{MSG_EOR} on the last.  With the kernel's
    default fragment interleave level 0, the pieces of one message are never
    interleaved with another's, on either socket style.
    """

    def __init__(self, maxSize):
        self.maxSize = maxSize
        self._parts = []
        self._size = 0
        self._first = None

    def feed(self, data, ancdata, flags, address):
        """
        @return: C{None} while the message is incomplete, else
            C{(notification, data, info, address)}: whether it is a
            notification, its bytes, its L{abi.ReceiveInfo} (or C{None}),
            and the address C{recvmsg} gave with its first piece.
        @raise ValueError: if the message grows beyond C{maxSize}.
        """
        if self._first is None:
            self._first = (
                bool(flags & abi.MSG_NOTIFICATION),
                abi.parse_receive_info(ancdata),
                address,
            )
        self._parts.append(data)
        self._size += len(data)
        if self._size > self.maxSize:
            self._parts, self._size, self._first = [], 0, None
            raise ValueError("an SCTP message exceeds %d bytes" % (self.maxSize,))
        if not flags & abi.MSG_EOR:
            return None
        notification, info, address = self._first
        whole = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts, self._size, self._first = [], 0, None
        return notification, whole, info, address


def _sndinfo(ppid, stream, flags=0, assocId=0):
    return [(abi.IPPROTO_SCTP, abi.SCTP_SNDINFO, abi.pack_sndinfo(ppid, stream, flags, assocId))]


class _SCTPReader(abstract.FileDescriptor):
    """
    What both socket styles share: the message write queue and reading
    whole messages.

    @ivar maxMessageSize: larger incoming messages are a protocol
        violation: the association is aborted.
    @ivar readBatch: at most this many C{recvmsg} calls per readable event.
    """

    log = Logger()
    maxMessageSize = 4 * 1024 * 1024
    readBatch = 32
    recvSize = 65536

    def __init__(self, skt, reactor):
        abstract.FileDescriptor.__init__(self, reactor)
        self.socket = skt
        self.fileno = skt.fileno
        self._queue = []  # [(data, ancdata, assocId)], sent from _queueHead
        self._queueHead = 0
        self._queuedBytes = 0
        self._reassembler = _Reassembler(self.maxMessageSize)

    def _enqueue(self, data, ancdata, assocId=0):
        self._queue.append((data, ancdata, assocId))
        self._queuedBytes += len(data)
        self.startWriting()
        if self.producer is not None and self._queuedBytes > self.bufferSize:
            if self.streamingProducer and not self.producerPaused:
                self.producerPaused = True
                self.producer.pauseProducing()

    def _drop(self, assocId):
        """
        Forget the queued messages of one association.
        """
        kept = [m for m in self._queue[self._queueHead :] if m[2] != assocId]
        self._queue, self._queueHead = kept, 0
        self._queuedBytes = sum(len(m[0]) for m in kept)

    def doWrite(self):
        """
        Send queued messages until the kernel's buffer is full.
        """
        queue = self._queue
        while self._queueHead < len(queue):
            data, ancdata, assocId = queue[self._queueHead]
            try:
                self.socket.sendmsg([data], ancdata)
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in _AGAIN or e.errno == errno.ENOBUFS:
                    return None
                why = self._sendFailed(e, assocId)
                if why is not None:
                    return why
            self._queueHead += 1
            self._queuedBytes -= len(data)
        del queue[:]
        self._queueHead = 0
        self._queuedBytes = 0
        self.stopWriting()
        if self.producer is not None and (not self.streamingProducer or self.producerPaused):
            self.producerPaused = False
            self.producer.resumeProducing()
        elif self.disconnecting:
            return self._postLoseConnection()
        return None

    def _sendFailed(self, e, assocId):
        """
        C{sendmsg} failed with C{e}.

        @return: C{None} to drop that message and go on, or the reason the
            socket is lost.
        """
        return error.ConnectionLost(str(e))

    def doRead(self):
        """
        Read up to C{readBatch} messages or pieces of messages.
        """
        for _ in range(self.readBatch):
            try:
                data, ancdata, flags, address = self.socket.recvmsg(self.recvSize, _ANCBUFSIZE)
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in _AGAIN:
                    return None
                return self._readFailed(e)
            if not data and not flags & (abi.MSG_NOTIFICATION | abi.MSG_EOR):
                why = self._endOfFile()
                if why is not None:
                    return why
                continue
            try:
                whole = self._reassembler.feed(data, ancdata, flags, address)
            except ValueError as e:
                why = self._tooLong(str(e))
                if why is not None:
                    return why
                continue
            if whole is None:
                continue
            notification, data, info, address = whole
            if notification:
                try:
                    event = abi.parse_notification(data)
                except ValueError as e:
                    self.log.warn("ignoring an SCTP notification: {reason}", reason=str(e))
                    continue
                why = self._notification(event, address)
            else:
                why = self._message(data, info or abi.ReceiveInfo(), address)
            if why is not None:
                return why
            if not self.connected or self.disconnecting:
                return None
        return None

    def _endOfFile(self):
        # A one-to-one socket reads nothing once the association has ended:
        # after the peer's SHUTDOWN, or with the error pending after its ABORT.
        err = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            return error.ConnectionLost(os.strerror(err))
        return main.CONNECTION_DONE

    def _readFailed(self, e):
        if e.errno in (errno.ECONNRESET, errno.EPIPE):
            return main.CONNECTION_LOST
        return error.ConnectionLost(str(e))


@implementer(ISCTPTransport, IConsumer)
class SCTPConnection(_SCTPReader):
    """
    One association on its own one-to-one (C{SOCK_STREAM}) socket.

    @ivar protocol: the protocol it carries.
    @ivar defaultPPID: the PPID of messages sent with L{write}.
    @ivar defaultStream: the stream of messages sent with L{write}.
    """

    def __init__(self, skt, protocol, reactor, defaultPPID=0):
        _SCTPReader.__init__(self, skt, reactor)
        self.protocol = protocol
        self.defaultPPID = defaultPPID
        self.defaultStream = 0
        self.connected = 1
        self._host = SCTPAddress.fromSockaddr(
            skt.getsockname(), _addresses(skt, abi.SCTP_GET_LOCAL_ADDRS)
        )
        self._peer = SCTPAddress.fromSockaddr(
            skt.getpeername(), _addresses(skt, abi.SCTP_GET_PEER_ADDRS)
        )
        self._deliver = _deliverer(protocol)

    _aborting = False

    def __repr__(self):
        return "<SCTPConnection to {}:{}>".format(self._peer.host, self._peer.port)

    def logPrefix(self):
        return "SCTP"

    def _start(self):
        self.startReading()
        self.protocol.makeConnection(self)

    # -- sending --------------------------------------------------------------

    def writeMessage(self, data, ppid=None, stream=None, unordered=False):
        """
        Send one message; see L{ISCTPTransport.writeMessage}.
        """
        if not self.connected or self.disconnecting:
            return
        self._enqueue(
            bytes(data),
            _sndinfo(
                self.defaultPPID if ppid is None else ppid,
                self.defaultStream if stream is None else stream,
                abi.SCTP_UNORDERED if unordered else 0,
            ),
        )

    def write(self, data):
        """
        Send C{data} as one message with C{defaultPPID} on
        C{defaultStream}.
        """
        if data:
            self.writeMessage(data)

    def writeSequence(self, iovec):
        """
        Send the concatenation of C{iovec} as one message.
        """
        self.write(b"".join(iovec))

    def abortConnection(self):
        """
        Abort the association: the kernel sends ABORT, queued messages are
        dropped.
        """
        if self.disconnected or self._aborting:
            return
        self._aborting = True
        self._queue, self._queueHead, self._queuedBytes = [], 0, 0
        self.stopReading()
        self.stopWriting()
        self.doRead = self.doWrite = lambda: None
        # SO_LINGER with a zero timeout: close() sends ABORT
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER.pack(1, 0))
        self.reactor.callLater(0, self.connectionLost, failure.Failure(error.ConnectionAborted()))

    # -- receiving ------------------------------------------------------------

    def _message(self, data, info, address):
        self._deliver(data, info.ppid, info.stream)

    def _notification(self, event, address):
        # the end of the association, and the peer's addresses
        if isinstance(event, abi.AssociationChange):
            if event.state == abi.SCTP_COMM_LOST:
                return main.CONNECTION_LOST
            if event.state == abi.SCTP_SHUTDOWN_COMP:
                return main.CONNECTION_DONE
        elif isinstance(event, abi.PeerAddressChange):
            _tellAddressChange(self.protocol, event)
        return None

    def _tooLong(self, reason):
        self.log.warn("aborting SCTP association with {peer}: {reason}", peer=self._peer, reason=reason)
        self.abortConnection()
        return None

    def connectionLost(self, reason):
        """
        Close the socket (gracefully: the kernel sends SHUTDOWN after what
        is queued, unless it was aborted) and tell the protocol.
        """
        if self.socket is None:
            return
        abstract.FileDescriptor.connectionLost(self, reason)
        skt, self.socket = self.socket, None
        skt.close()
        protocol, self.protocol = self.protocol, None
        protocol.connectionLost(reason)

    # -- addresses and status -----------------------------------------------

    def getHost(self):
        """
        @return: the local L{SCTPAddress} (all bound addresses in
            C{addresses}).
        """
        return self._host

    def getPeer(self):
        """
        @return: the peer's L{SCTPAddress}: its primary address in C{host},
            every address in C{addresses}.
        """
        return self._peer

    def getPeerAddresses(self):
        """
        @return: every address of the peer, primary first, as
            C{(host, port)}.
        """
        if self.socket is not None:
            found = _addresses(self.socket, abi.SCTP_GET_PEER_ADDRS)
            if found:
                primary = [a for a in found if a[0] == self._peer.host]
                return tuple(primary + [a for a in found if a[0] != self._peer.host])
        return tuple((a, self._peer.port) for a in self._peer.addresses)

    def getStatus(self):
        """
        The association's C{SCTP_STATUS}.

        @return: an L{SCTPStatus}.
        @raise OSError: if the association is gone.
        """
        if self.socket is None:
            raise OSError(errno.ENOTCONN, "the association is closed")
        return _status(self.socket)

    def setHeartbeat(self, interval, maxRetrans=None):
        """
        Set the association's heartbeat (C{SCTP_PEER_ADDR_PARAMS} with
        C{SPP_HB_ENABLE}, for every path): a HEARTBEAT on each idle path
        every C{interval} seconds (plus the path's RTO, with jitter), and a
        path given up after C{maxRetrans} unanswered retransmissions
        (C{spp_pathmaxrxt}).

        @param interval: seconds, > 0 (sent in milliseconds).
        @param maxRetrans: 1 to 65535; C{None} leaves the kernel's (5).
        @raise ValueError: for values the structure cannot carry.
        @raise OSError: if the association is gone or the kernel says no.
        """
        if self.socket is None:
            raise OSError(errno.ENOTCONN, "the association is closed")
        _setHeartbeat(self.socket, interval, maxRetrans)

    def getPeerAddressParams(self):
        """
        The association's C{SCTP_PEER_ADDR_PARAMS}.

        @return: an L{abi.PeerAddressParams} (C{hbinterval} in
            milliseconds).
        @raise OSError: if the association is gone.
        """
        if self.socket is None:
            raise OSError(errno.ENOTCONN, "the association is closed")
        return _peerAddressParams(self.socket)


@implementer(IListeningPort)
class SCTPStreamPort(abstract.FileDescriptor):
    """
    A listening one-to-one (C{SOCK_STREAM}) socket: each association it
    accepts gets its own protocol and L{SCTPConnection}.
    """

    log = Logger()
    acceptBatch = 50

    def __init__(self, port, factory, interfaces=(), backlog=50, reactor=None, defaultPPID=0):
        """
        @param port: the port; 0 for any.
        @param factory: the protocol factory.
        @param interfaces: local addresses to bind, several for a
            multi-homed endpoint; empty for all.
        @param backlog: the C{listen()} backlog.
        @param defaultPPID: the L{SCTPConnection.defaultPPID} of accepted
            associations.
        """
        abstract.FileDescriptor.__init__(self, reactor)
        self.port = port
        self.factory = factory
        self.interfaces = tuple(interfaces)
        self.backlog = backlog
        self.defaultPPID = defaultPPID
        self.socket = None

    def __repr__(self):
        return "<{} on {}>".format(type(self).__name__, self.port)

    kind = socket.SOCK_STREAM

    def _open(self):
        skt = _sctpSocket(_family(self.interfaces), self.kind)
        try:
            _configure(skt, oneToMany=self.kind == socket.SOCK_SEQPACKET)
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.port = _bind(skt, self.interfaces, self.port)
            skt.listen(self.backlog)
        except OSError as e:
            skt.close()
            raise error.CannotListenError(",".join(self.interfaces), self.port, e) from None
        return skt

    def startListening(self):
        """
        Create the socket, bind it (C{sctp_bindx()} for more than one
        address) and listen.

        @raise SCTPUnavailable: if the kernel has no SCTP.
        @raise twisted.internet.error.CannotListenError: if it cannot
            bind or listen.
        """
        self.socket = self._open()
        self.fileno = self.socket.fileno
        self.connected = True
        self.factory.doStart()
        self.log.info("SCTP ({mode}) listening on {port}", mode=self.mode, port=self.port)
        self.startReading()

    mode = STREAM

    def doRead(self):
        for _ in range(self.acceptBatch):
            try:
                skt, addr = self.socket.accept()
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in _AGAIN:
                    return None
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.error("cannot accept an SCTP association: {reason}", reason=str(e))
                    return None
                if e.errno in (errno.ECONNABORTED, errno.EPERM, errno.EPROTO):
                    continue
                raise
            try:
                skt.setblocking(False)
                _configure(skt)
                conn = SCTPConnection(skt, None, self.reactor, self.defaultPPID)
            except OSError as e:
                # the association went away between accept() and now
                self.log.info("SCTP association lost while accepting: {reason}", reason=str(e))
                skt.close()
                continue
            protocol = self.factory.buildProtocol(conn.getPeer())
            if protocol is None:
                skt.close()
                continue
            conn.protocol = protocol
            conn._deliver = _deliverer(protocol)
            conn._start()
        return None

    def getHost(self):
        """
        @return: the L{SCTPAddress} listened on, every bound address in
            C{addresses}.
        """
        return SCTPAddress.fromSockaddr(
            self.socket.getsockname(), _addresses(self.socket, abi.SCTP_GET_LOCAL_ADDRS)
        )

    def stopListening(self):
        """
        Stop listening; associations already accepted go on.

        @return: a L{Deferred} that fires when the socket is closed.
        """
        self.stopReading()
        if not self.connected:
            return defer.succeed(None)
        self.connected = False
        d = defer.Deferred()
        self.reactor.callLater(0, self._close, d)
        return d

    loseConnection = stopListening

    def _close(self, d):
        self.socket.close()
        try:
            self.factory.doStop()
        finally:
            d.callback(None)

    def connectionLost(self, reason):
        if self.connected:
            self.connected = False
            self.stopReading()
            self._close(defer.Deferred())


@implementer(ISCTPTransport, IConsumer)
class SCTPAssociation:
    """
    One association of a one-to-many socket, as a transport: what it sends
    goes to that association only.

    @ivar assocId: the kernel's C{sctp_assoc_t} of the association.
    @ivar protocol: the protocol it carries.
    @ivar defaultPPID: the PPID of messages sent with L{write}.
    @ivar defaultStream: the stream of messages sent with L{write}.
    """

    def __init__(self, port, assocId, peer, protocol, defaultPPID=0):
        self.port = port
        self.assocId = assocId
        self.protocol = protocol
        self.defaultPPID = defaultPPID
        self.defaultStream = 0
        self.connected = True
        self.disconnecting = False
        self._peer = peer
        self._peerAddresses = [(a, peer.port) for a in peer.addresses]
        self._deliver = _deliverer(protocol)
        self.producer = None

    def __repr__(self):
        return "<SCTPAssociation {} to {}:{}>".format(self.assocId, self._peer.host, self._peer.port)

    def writeMessage(self, data, ppid=None, stream=None, unordered=False):
        """
        Send one message on this association; see
        L{ISCTPTransport.writeMessage}.
        """
        if not self.connected or self.disconnecting:
            return
        self.port._enqueue(
            bytes(data),
            _sndinfo(
                self.defaultPPID if ppid is None else ppid,
                self.defaultStream if stream is None else stream,
                abi.SCTP_UNORDERED if unordered else 0,
                self.assocId,
            ),
            self.assocId,
        )

    def write(self, data):
        """
        Send C{data} as one message with C{defaultPPID}.
        """
        if data:
            self.writeMessage(data)

    def writeSequence(self, iovec):
        """
        Send the concatenation of C{iovec} as one message.
        """
        self.write(b"".join(iovec))

    def loseConnection(self):
        """
        Shut the association down gracefully once what is queued is sent
        (C{sendmsg} with C{SCTP_EOF}); C{connectionLost} follows the
        kernel's C{SCTP_SHUTDOWN_COMP}.
        """
        if self.connected and not self.disconnecting:
            self.disconnecting = True
            self.port._enqueue(b"", _sndinfo(0, 0, abi.SCTP_EOF, self.assocId), self.assocId)

    def abortConnection(self):
        """
        Abort the association (C{sendmsg} with C{SCTP_ABORT}), dropping what
        is queued for it.
        """
        if not self.connected:
            return
        self.port._drop(self.assocId)
        try:
            self.port.socket.sendmsg([b""], _sndinfo(0, 0, abi.SCTP_ABORT, self.assocId))
        except OSError:
            pass
        self.port._lost(self.assocId, failure.Failure(error.ConnectionAborted()))

    def getHost(self):
        """
        @return: the L{SCTPAddress} of this association's local end: the
            addresses it uses (C{SCTP_GET_LOCAL_ADDRS} with its id: on a
            socket bound to the wildcard address, those of the host in the
            peer's scope, so no loopback address towards a peer elsewhere)
            and the socket's port; the one-to-many socket's own address
            should the kernel not say.  A loopback address comes first
            towards a peer on loopback.
        """
        found = _addresses(self.port.socket, abi.SCTP_GET_LOCAL_ADDRS, self.assocId) \
            if self.connected and self.port.socket is not None else []
        if not found:
            return self.port.getHost()
        loopback = _isLoopback(self._peer.host)
        found.sort(key=lambda a: _isLoopback(a[0]) != loopback)
        return SCTPAddress.fromSockaddr(found[0], found)

    def getPeer(self):
        """
        @return: the peer's L{SCTPAddress}, its primary address in C{host}.
        """
        return self._peer

    def getPeerAddresses(self):
        """
        @return: every address of the peer, primary first, as
            C{(host, port)}: the kernel's list (C{SCTP_GET_PEER_ADDRS}),
            or, should it fail, those known from notifications.
        """
        found = _addresses(self.port.socket, abi.SCTP_GET_PEER_ADDRS, self.assocId) if self.connected else []
        if not found:
            return tuple(self._peerAddresses)
        primary = [a for a in found if a[0] == self._peer.host]
        return tuple(primary + [a for a in found if a[0] != self._peer.host])

    def getStatus(self):
        """
        The association's C{SCTP_STATUS}.

        @return: an L{SCTPStatus}.
        @raise OSError: if the association is gone.
        """
        if not self.connected:
            raise OSError(errno.ENOTCONN, "the association is closed")
        return _status(self.port.socket, self.assocId)

    def setHeartbeat(self, interval, maxRetrans=None):
        """
        Set this association's heartbeat; see
        L{SCTPConnection.setHeartbeat}.
        """
        if not self.connected:
            raise OSError(errno.ENOTCONN, "the association is closed")
        _setHeartbeat(self.port.socket, interval, maxRetrans, self.assocId)

    def getPeerAddressParams(self):
        """
        This association's C{SCTP_PEER_ADDR_PARAMS}; see
        L{SCTPConnection.getPeerAddressParams}.
        """
        if not self.connected:
            raise OSError(errno.ENOTCONN, "the association is closed")
        return _peerAddressParams(self.port.socket, self.assocId)

    def registerProducer(self, producer, streaming):
        """
        Register a producer; it is paused while the socket's queue is full.
        """
        self.producer = producer
        self.port._producers[self.assocId] = (producer, streaming)
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self):
        self.producer = None
        self.port._producers.pop(self.assocId, None)

    def _addressChange(self, event):
        entry = event.address
        if entry is None:
            return
        entry = (entry[0], entry[1])
        if event.state in (abi.SCTP_ADDR_AVAILABLE, abi.SCTP_ADDR_ADDED, abi.SCTP_ADDR_CONFIRMED,
                           abi.SCTP_ADDR_MADE_PRIM):
            if entry not in self._peerAddresses:
                self._peerAddresses.append(entry)
            if event.state == abi.SCTP_ADDR_MADE_PRIM:
                self._peerAddresses.remove(entry)
                self._peerAddresses.insert(0, entry)
        elif event.state == abi.SCTP_ADDR_REMOVED and entry in self._peerAddresses:
            self._peerAddresses.remove(entry)
        _tellAddressChange(self.protocol, event)


@implementer(IListeningPort)
class SCTPSeqPacketPort(_SCTPReader, SCTPStreamPort):
    """
    A one-to-many (C{SOCK_SEQPACKET}) socket serving many associations:
    each gets its own protocol from the factory and an L{SCTPAssociation}.
    An association starts with C{SCTP_ASSOC_CHANGE}/C{SCTP_COMM_UP} and
    ends with C{SCTP_COMM_LOST} (C{connectionLost} with
    L{ConnectionLost <twisted.internet.error.ConnectionLost>}) or
    C{SCTP_SHUTDOWN_COMP} (with
    L{ConnectionDone <twisted.internet.error.ConnectionDone>}).

    @ivar associations: the live L{SCTPAssociation}s by C{assoc_id}.
    """

    kind = socket.SOCK_SEQPACKET
    mode = SEQPACKET

    def __init__(self, port, factory, interfaces=(), backlog=50, reactor=None, defaultPPID=0):
        SCTPStreamPort.__init__(self, port, factory, interfaces, backlog, reactor, defaultPPID)
        self._queue, self._queueHead, self._queuedBytes = [], 0, 0
        self._reassembler = _Reassembler(self.maxMessageSize)
        self._producers = {}
        self.associations = {}
        # associations we are setting up: {(host, port): _Dialling}
        self._dialling = {}

    def startListening(self):
        SCTPStreamPort.startListening(self)

    def doRead(self):
        return _SCTPReader.doRead(self)

    # the port's own producer plumbing is per association
    producer = None

    def _enqueue(self, data, ancdata, assocId=0):
        self._queue.append((data, ancdata, assocId))
        self._queuedBytes += len(data)
        self.startWriting()
        if self._queuedBytes > self.bufferSize:
            for producer, streaming in list(self._producers.values()):
                if streaming:
                    producer.pauseProducing()
            self._paused = True

    _paused = False

    def doWrite(self):
        why = _SCTPReader.doWrite(self)
        if why is None and not self._queue:
            producers = list(self._producers.values())
            paused, self._paused = self._paused, False
            for producer, streaming in producers:
                if not streaming or paused:
                    producer.resumeProducing()
        return why

    def _sendFailed(self, e, assocId):
        # one association's failure is not the socket's: drop its message
        self.log.info(
            "SCTP send on association {assoc} failed: {reason}", assoc=assocId, reason=str(e)
        )
        return None

    def _endOfFile(self):
        return None

    def _readFailed(self, e):
        self.log.warn("SCTP one-to-many receive failed: {reason}", reason=str(e))
        return None

    def _tooLong(self, reason):
        self.log.warn("SCTP one-to-many socket: {reason}; message dropped", reason=reason)
        return None

    def _message(self, data, info, address):
        assoc = self.associations.get(info.assoc_id)
        if assoc is None:
            # data before (or without) COMM_UP: start the association now
            assoc = self._up(info.assoc_id, address)
            if assoc is None:
                return None
        assoc._deliver(data, info.ppid, info.stream)
        return None

    def _notification(self, event, address):
        if isinstance(event, abi.AssociationChange):
            if event.state == abi.SCTP_COMM_UP:
                if event.assoc_id not in self.associations:
                    self._up(event.assoc_id, address)
            elif (event.state == abi.SCTP_CANT_STR_ASSOC and event.assoc_id not in self.associations
                  and self._dialled(address) is not None):
                # Before the setup's own timeout this is an ABORT in answer
                # to INIT (nobody listens there), as ECONNREFUSED is for a
                # one-to-one connect(): say so alike.
                self._dialled(address)._fail(error.ConnectionRefusedError(
                    string="SCTP association setup failed (error cause %d)" % event.error))
            elif event.state == abi.SCTP_COMM_LOST or event.state == abi.SCTP_CANT_STR_ASSOC:
                self._lost(event.assoc_id, failure.Failure(error.ConnectionLost(
                    "SCTP association lost (error cause %d)" % event.error)))
            elif event.state == abi.SCTP_SHUTDOWN_COMP:
                self._lost(event.assoc_id, failure.Failure(error.ConnectionDone()))
        elif isinstance(event, abi.PeerAddressChange):
            assoc = self.associations.get(event.assoc_id)
            if assoc is not None:
                assoc._addressChange(event)
        elif isinstance(event, abi.ShutdownEvent):
            assoc = self.associations.get(event.assoc_id)
            if assoc is not None:
                assoc.disconnecting = True
        return None

    def _up(self, assocId, address):
        """
        A new association: build its protocol.
        """
        if not address:
            address = ("0.0.0.0", 0)
        peer = SCTPAddress.fromSockaddr(address)
        dialling = self._dialled(address)
        factory = self.factory if dialling is None else dialling.factory
        protocol = factory.buildProtocol(peer)
        if protocol is None:
            try:
                self.socket.sendmsg([b""], _sndinfo(0, 0, abi.SCTP_ABORT, assocId))
            except OSError:
                pass
            if dialling is not None:
                dialling._fail(error.NoProtocol())
            return None
        assoc = SCTPAssociation(self, assocId, peer, protocol, self.defaultPPID)
        self.associations[assocId] = assoc
        protocol.makeConnection(assoc)
        if dialling is not None:
            dialling._succeed(protocol)
        return assoc

    def _dialled(self, address):
        """
        The L{_Dialling} waiting for an association with C{address}
        (C{(host, port)}, the peer's primary address), or C{None}.
        """
        if not address or not self._dialling:
            return None
        return self._dialling.get(_peerKey(address[0], address[1]))

    def connectAssociation(self, hosts, port, factory=None, timeout=30):
        """
        Set up an association from this socket (so from its address and
        port) to a peer: C{connect()}, or C{sctp_connectx()} for several
        addresses, on the one-to-many socket, which starts the association
        at once.  It is then served like an accepted one: an
        L{SCTPAssociation} in L{associations}, its protocol built by
        C{factory} when C{SCTP_COMM_UP} arrives.

        Only one association can join two endpoints (addresses and ports):
        if one with C{hosts} and C{port} already exists (say the peer set it
        up), the L{Deferred} fails with
        L{ConnectError <twisted.internet.error.ConnectError>} and the
        existing association keeps the protocol it has.

        @param hosts: the peer's address, or a multi-homed peer's
            addresses; IP addresses only.
        @param port: the peer's port.
        @param factory: builds the protocol; the port's own by default.
        @param timeout: seconds to wait for the association; then it is
            aborted.
        @return: a L{Deferred} that fires with the protocol, connected, or
            fails with a L{ConnectError
            <twisted.internet.error.ConnectError>}, a
            L{TimeoutError <twisted.internet.error.TimeoutError>} or, when
            cancelled, L{ConnectingCancelledError
            <twisted.internet.error.ConnectingCancelledError>}.
        """
        if isinstance(hosts, str):
            hosts = (hosts,)
        hosts = tuple(hosts)
        if factory is None:
            factory = self.factory
        if not self.connected or self.socket is None:
            return defer.fail(error.ConnectError(string="the SCTP socket is not listening"))
        if not hosts:
            return defer.fail(error.ConnectError(string="no peer address"))
        try:
            for h in hosts:
                abi.pack_sockaddr(h, port)
        except ValueError as e:
            return defer.fail(e)
        keys = [_peerKey(h, port) for h in hosts]
        if any(k in self._dialling for k in keys):
            return defer.fail(error.ConnectError(string="already setting up an association with %s" % (
                ",".join(hosts),)))
        try:
            if len(hosts) == 1:
                err = self.socket.connect_ex((hosts[0], port))
            else:
                packed = b"".join(abi.pack_sockaddr(h, port) for h in hosts)
                try:
                    self.socket.setsockopt(abi.SOL_SCTP, abi.SCTP_SOCKOPT_CONNECTX, packed)
                    err = 0
                except OSError as e:
                    err = e.errno
        except OSError as e:
            return defer.fail(error.ConnectError(string=str(e)))
        if err == errno.EISCONN:
            return defer.fail(error.ConnectError(
                string="an SCTP association with %s port %d exists already" % (",".join(hosts), port)))
        if err not in (0, errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
            return defer.fail(error.getConnectError((err, errno.errorcode.get(err, str(err)))))
        dialling = _Dialling(self, keys, hosts, port, factory)
        d = dialling.deferred = defer.Deferred(lambda d: dialling._cancel())
        for k in keys:
            self._dialling[k] = dialling
        dialling.timeoutCall = self.reactor.callLater(timeout, dialling._timedOut)
        return d

    def _lost(self, assocId, reason):
        assoc = self.associations.pop(assocId, None)
        if assoc is None:
            return
        self._drop(assocId)
        self._producers.pop(assocId, None)
        if assoc.producer is not None:
            assoc.producer.stopProducing()
            assoc.producer = None
        assoc.connected = False
        assoc.protocol.connectionLost(reason)

    def _close(self, d):
        for dialling in set(self._dialling.values()):
            dialling._fail(error.ConnectError(string="the SCTP socket was closed"))
        for assocId in list(self.associations):
            self._lost(assocId, failure.Failure(error.ConnectionDone("the socket was closed")))
        self.stopWriting()
        SCTPStreamPort._close(self, d)


def _isLoopback(host):
    """
    Whether textual address C{host} is a loopback one (IPv4-mapped ones
    included).
    """
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _peerKey(host, port):
    """
    C{(host, port)} with C{host} in one canonical text form (IPv4-mapped
    IPv6 addresses as IPv4), to match a peer's address.
    """
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    if abstract.isIPv6Address(host):
        host = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, host.split("%")[0]))
    return (host, port)


class _Dialling:
    """
    An association L{SCTPSeqPacketPort.connectAssociation} is setting up.
    """

    def __init__(self, port, keys, hosts, peerPort, factory):
        self.port = port
        self.keys = keys
        self.hosts = hosts
        self.peerPort = peerPort
        self.factory = factory
        self.deferred = None
        self.timeoutCall = None

    def _done(self):
        for k in self.keys:
            if self.port._dialling.get(k) is self:
                del self.port._dialling[k]
        if self.timeoutCall is not None and self.timeoutCall.active():
            self.timeoutCall.cancel()
        self.timeoutCall = None
        d, self.deferred = self.deferred, None
        return d

    def _succeed(self, protocol):
        d = self._done()
        if d is not None:
            d.callback(protocol)

    def _fail(self, reason):
        d = self._done()
        if d is not None:
            d.errback(reason)

    def _abort(self):
        # the association has no id we know yet: abort it by address
        try:
            self.port.socket.sendmsg(
                [b""], _sndinfo(0, 0, abi.SCTP_ABORT), 0, (self.hosts[0], self.peerPort))
        except (OSError, AttributeError):
            pass

    def _timedOut(self):
        self.timeoutCall = None
        self._abort()
        self._fail(error.TimeoutError(string="SCTP association setup timed out"))

    def _cancel(self):
        self._abort()
        self._fail(error.ConnectingCancelledError(None))


def listenSCTP(reactor, port, factory, interfaces=(), backlog=50, mode=STREAM, defaultPPID=0):
    """
    Listen for SCTP associations.

    @param reactor: the reactor (an C{IReactorFDSet}).
    @param port: the port; 0 for any.
    @param factory: builds one protocol per association.
    @param interfaces: local addresses; several make a multi-homed endpoint.
    @param backlog: the C{listen()} backlog.
    @param mode: C{"stream"} for one socket per association (one-to-one),
        C{"seqpacket"} for one socket for all (one-to-many).
    @param defaultPPID: the PPID of messages written with C{write()}.
    @return: the listening L{SCTPStreamPort} or L{SCTPSeqPacketPort}.
    @raise SCTPUnavailable: if the kernel has no SCTP.
    @raise twisted.internet.error.CannotListenError: if it cannot bind.
    """
    if mode == STREAM:
        cls = SCTPStreamPort
    elif mode == SEQPACKET:
        cls = SCTPSeqPacketPort
    else:
        raise ValueError("SCTP mode must be 'stream' or 'seqpacket', not {!r}".format(mode))
    p = cls(port, factory, interfaces, backlog, reactor, defaultPPID)
    p.startListening()
    return p


class _Connecting(abstract.FileDescriptor):
    """
    A one-to-one socket waiting for its association to come up.
    """

    def __init__(self, reactor, skt, factory, defaultPPID, deferred):
        abstract.FileDescriptor.__init__(self, reactor)
        self.socket = skt
        self.fileno = skt.fileno
        self.factory = factory
        self.defaultPPID = defaultPPID
        self.deferred = deferred
        self.timeoutCall = None

    def doWrite(self):
        self._finish(self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        return None

    def doRead(self):
        return None

    def _finish(self, err):
        self.stopWriting()
        if self.timeoutCall is not None and self.timeoutCall.active():
            self.timeoutCall.cancel()
        self.timeoutCall = None
        if self.deferred is None:
            return
        d, self.deferred = self.deferred, None
        skt, self.socket = self.socket, None
        if err:
            skt.close()
            d.errback(error.getConnectError((err, errno.errorcode.get(err, str(err)))))
            return
        try:
            conn = SCTPConnection(skt, None, self.reactor, self.defaultPPID)
        except OSError as e:
            skt.close()
            d.errback(error.ConnectError(string=str(e)))
            return
        protocol = self.factory.buildProtocol(conn.getPeer())
        if protocol is None:
            skt.close()
            d.errback(error.NoProtocol())
            return
        conn.protocol = protocol
        conn._deliver = _deliverer(protocol)
        conn._start()
        d.callback(protocol)

    def connectionLost(self, reason):
        # the reactor saw the socket fail (POLLERR/POLLHUP) before it was
        # ever writable, e.g. ABORT in answer to INIT: port unreachable
        abstract.FileDescriptor.connectionLost(self, reason)
        if self.socket is not None:
            err = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self._finish(err or errno.ECONNREFUSED)

    def timedOut(self):
        self.timeoutCall = None
        self._abandon(error.TimeoutError(string="SCTP association setup timed out"))

    def cancel(self, d):
        self._abandon(error.ConnectingCancelledError(None))

    def _abandon(self, reason):
        if self.deferred is None:
            return
        self.stopWriting()
        if self.timeoutCall is not None and self.timeoutCall.active():
            self.timeoutCall.cancel()
        self.timeoutCall = None
        d, self.deferred = self.deferred, None
        self.socket.close()
        self.socket = None
        d.errback(reason)


def connectSCTP(reactor, hosts, port, factory, timeout=30, bindAddresses=(), defaultPPID=0):
    """
    Set up a one-to-one association.

    @param reactor: the reactor (C{IReactorFDSet} and C{IReactorTime}).
    @param hosts: the peer's address, or a sequence of a multi-homed peer's
        addresses (given to C{sctp_connectx()}); IP addresses only.
    @param port: the peer's port.
    @param factory: builds the protocol.
    @param timeout: seconds to wait for the association.
    @param bindAddresses: local addresses; several make the local end
        multi-homed.
    @param defaultPPID: the PPID of messages written with C{write()}.
    @return: a L{Deferred} that fires with the protocol, connected, or
        fails with L{SCTPUnavailable}, a
        L{ConnectError <twisted.internet.error.ConnectError>} or a
        L{TimeoutError <twisted.internet.error.TimeoutError>}.
    """
    if isinstance(hosts, str):
        hosts = (hosts,)
    hosts = tuple(hosts)
    bindAddresses = tuple(bindAddresses)
    try:
        for h in hosts + bindAddresses:
            abi.pack_sockaddr(h)
        skt = _sctpSocket(_family(hosts + bindAddresses), socket.SOCK_STREAM)
    except (SCTPUnavailable, ValueError) as e:
        return defer.fail(e)
    try:
        _configure(skt)
        if bindAddresses:
            _bind(skt, bindAddresses, 0)
        if len(hosts) == 1:
            err = skt.connect_ex((hosts[0], port))
        else:
            packed = b"".join(abi.pack_sockaddr(h, port) for h in hosts)
            try:
                skt.setsockopt(abi.SOL_SCTP, abi.SCTP_SOCKOPT_CONNECTX, packed)
                err = 0
            except OSError as e:
                err = e.errno
    except OSError as e:
        skt.close()
        return defer.fail(error.ConnectError(string=str(e)))
    d = defer.Deferred(lambda d: connecting.cancel(d))
    connecting = _Connecting(reactor, skt, factory, defaultPPID, d)
    if err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, 0):
        # writable once the association is up (or has failed)
        connecting.startWriting()
        connecting.timeoutCall = reactor.callLater(timeout, connecting.timedOut)
    else:
        connecting._finish(err)
    return d


@implementer(IStreamServerEndpoint)
class SCTPServerEndpoint:
    """
    An SCTP server endpoint (C{sctp:PORT:...}).
    """

    def __init__(self, reactor, port, interfaces=(), backlog=50, mode=STREAM, defaultPPID=0):
        """
        See L{listenSCTP} for the parameters.
        """
        if mode not in (STREAM, SEQPACKET):
            raise ValueError("SCTP mode must be 'stream' or 'seqpacket', not {!r}".format(mode))
        self.reactor = reactor
        self.port = port
        self.interfaces = tuple(interfaces)
        self.backlog = backlog
        self.mode = mode
        self.defaultPPID = defaultPPID

    def __repr__(self):
        return "<SCTPServerEndpoint {}:{} {}>".format(",".join(self.interfaces), self.port, self.mode)

    def listen(self, protocolFactory):
        """
        @return: a L{Deferred} firing with the listening port, or failing
            with L{SCTPUnavailable} or
            L{CannotListenError <twisted.internet.error.CannotListenError>}.
        """
        return defer.execute(
            listenSCTP, self.reactor, self.port, protocolFactory, self.interfaces, self.backlog,
            self.mode, self.defaultPPID,
        )


@implementer(IStreamClientEndpoint)
class SCTPClientEndpoint:
    """
    An SCTP client endpoint (C{sctp:host=...:port=...}): one one-to-one
    association per C{connect}.
    """

    def __init__(self, reactor, host, port, timeout=30, bindAddresses=(), defaultPPID=0):
        """
        See L{connectSCTP}; C{host} may be a name, resolved with the
        reactor's resolver (to one IPv4 address).
        """
        self.reactor = reactor
        self.hosts = (host,) if isinstance(host, str) else tuple(host)
        self.port = port
        self.timeout = timeout
        self.bindAddresses = tuple(bindAddresses)
        self.defaultPPID = defaultPPID

    def __repr__(self):
        return "<SCTPClientEndpoint {}:{}>".format(",".join(self.hosts), self.port)

    def connect(self, protocolFactory):
        """
        @return: a L{Deferred} firing with the connected protocol.
        """
        if all(abstract.isIPAddress(h) or abstract.isIPv6Address(h) for h in self.hosts):
            return connectSCTP(
                self.reactor, self.hosts, self.port, protocolFactory, self.timeout,
                self.bindAddresses, self.defaultPPID,
            )
        d = defer.gatherResults([
            defer.succeed(h) if abstract.isIPAddress(h) or abstract.isIPv6Address(h)
            else self.reactor.resolve(h) for h in self.hosts
        ], consumeErrors=True)
        d.addErrback(lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)
        d.addCallback(
            lambda hosts: connectSCTP(
                self.reactor, hosts, self.port, protocolFactory, self.timeout,
                self.bindAddresses, self.defaultPPID,
            )
        )
        return d


@implementer(IStreamClientEndpoint)
class SCTPAssociationEndpoint:
    """
    A client endpoint whose associations leave from a listening one-to-many
    socket (L{SCTPSeqPacketPort.connectAssociation}): the peer sees them
    come from that socket's addresses and port.
    """

    def __init__(self, port, host, peerPort, timeout=30):
        """
        @param port: the listening L{SCTPSeqPacketPort}.
        @param host: the peer's address or addresses; names are resolved
            with the reactor's resolver.
        @param peerPort: the peer's port.
        """
        self.port = port
        self.hosts = (host,) if isinstance(host, str) else tuple(host)
        self.peerPort = peerPort
        self.timeout = timeout

    def __repr__(self):
        return "<SCTPAssociationEndpoint {}:{} from {}>".format(
            ",".join(self.hosts), self.peerPort, self.port.port)

    def connect(self, protocolFactory):
        """
        @return: a L{Deferred} firing with the connected protocol.
        """
        def connect(hosts):
            return self.port.connectAssociation(hosts, self.peerPort, protocolFactory, self.timeout)

        if all(abstract.isIPAddress(h) or abstract.isIPv6Address(h) for h in self.hosts):
            return connect(self.hosts)
        d = defer.gatherResults([
            defer.succeed(h) if abstract.isIPAddress(h) or abstract.isIPv6Address(h)
            else self.port.reactor.resolve(h) for h in self.hosts
        ], consumeErrors=True)
        d.addErrback(lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)
        d.addCallback(connect)
        return d


# -- endpoint string parsers ---------------------------------------------------


def _split(value):
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def _int(name, value, low=0, high=65535):
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError("sctp endpoint: {} must be a number, not {!r}".format(name, value)) from None
    if not low <= n <= high:
        raise ValueError("sctp endpoint: {} {} is out of range {}-{}".format(name, n, low, high))
    return n


@implementer(IPlugin, IStreamServerEndpointStringParser)
class SCTPServerParser:
    """
    Parses C{sctp:PORT[:interface=ADDR[,ADDR...]][:backlog=N]
    [:mode=stream|seqpacket][:ppid=N]}.
    """

    prefix = "sctp"

    def parseStreamServer(self, reactor, port=None, interface="", backlog=50, mode=STREAM,
                          ppid=0, **unknown):
        if unknown:
            raise ValueError("sctp server endpoint: unknown option(s) {}".format(", ".join(sorted(unknown))))
        if port is None:
            raise ValueError("sctp server endpoint: no port (sctp:PORT:...)")
        mode = mode.lower()
        if mode not in (STREAM, SEQPACKET):
            raise ValueError("sctp server endpoint: mode must be stream or seqpacket, not {!r}".format(mode))
        interfaces = _split(interface)
        for a in interfaces:
            abi.pack_sockaddr(a)
        return SCTPServerEndpoint(
            reactor, _int("port", port), interfaces, _int("backlog", backlog, 0, 1 << 16), mode,
            _int("ppid", ppid, 0, 0xFFFFFFFF),
        )


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class SCTPClientParser:
    """
    Parses C{sctp:host=H[,H2...]:port=P[:bindAddress=ADDR[,ADDR...]]
    [:timeout=S][:ppid=N]} (or C{sctp:H:P}).
    """

    prefix = "sctp"

    def parseStreamClient(self, reactor, *args, **kwargs):
        names = ("host", "port")
        for name, value in zip(names, args):
            kwargs.setdefault(name, value)
        if len(args) > 2:
            raise ValueError("sctp client endpoint: too many arguments")
        host = kwargs.pop("host", None)
        port = kwargs.pop("port", None)
        timeout = kwargs.pop("timeout", 30)
        bindAddress = kwargs.pop("bindAddress", "")
        ppid = kwargs.pop("ppid", 0)
        if kwargs:
            raise ValueError("sctp client endpoint: unknown option(s) {}".format(", ".join(sorted(kwargs))))
        if not host or port is None:
            raise ValueError("sctp client endpoint: needs host=...:port=...")
        try:
            timeout = float(timeout)
        except ValueError:
            raise ValueError("sctp client endpoint: timeout must be a number, not {!r}".format(timeout)) from None
        binds = _split(bindAddress)
        for a in binds:
            abi.pack_sockaddr(a)
        return SCTPClientEndpoint(
            reactor, _split(host), _int("port", port, 1), timeout, binds,
            _int("ppid", ppid, 0, 0xFFFFFFFF),
        )
