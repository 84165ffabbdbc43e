"""
Tests for the SCTP transport mapping (L{rserpool.transport.sctp}).

Three kinds:

  - the kernel ABI (constants, structure layouts, packing), known answers
    taken from C{<linux/sctp.h>} and from C{gcc}'s C{sizeof}/C{offsetof} on
    it; these run everywhere;
  - the transports' logic against a scripted fake socket and a
    L{MemoryReactorClock}, endpoint string parsing, and the error when the
    kernel has no SCTP; these run everywhere too;
  - real associations over the loopback interface, which need kernel SCTP.
    They skip elsewhere; run them in a User-Mode-Linux guest with::

        ../shared/tools/sctp-vm python3 -m twisted.trial tests.test_sctp
"""
import errno
import os
import socket
import struct

from twisted.internet import defer, error, reactor
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import (
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpointStringParser,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.trial import unittest

from rserpool.codes import ASAP_PPID, ENRP_PPID, PolicyType
from rserpool.transport import _sctp_abi as abi
from rserpool.transport import sctp
from rserpool.wire import (
    IPv4Address,
    Policy,
    PoolElement,
    Registration,
    SCTPTransport,
    decode,
    encode,
)
from tests.helpers import eventually

SKIP_REASON = "kernel has no SCTP (run under ../shared/tools/sctp-vm)"
_UNAVAILABLE = sctp.sctpAvailable()


def requireSCTP():
    """
    Skip the calling test unless the kernel can create SCTP sockets.
    """
    if _UNAVAILABLE is not None:
        raise unittest.SkipTest(SKIP_REASON)


def native16(n):
    return n.to_bytes(2, "little" if struct.pack("=H", 1)[0] else "big")


def native32(n, signed=False):
    return n.to_bytes(4, "little" if struct.pack("=H", 1)[0] else "big", signed=signed)


# -- the kernel ABI ------------------------------------------------------------


class ABITests(unittest.SynchronousTestCase):
    """
    Constants and layouts, checked against <linux/sctp.h>.
    """

    def test_constants(self):
        """
        The option and message numbers of <linux/sctp.h>.
        """
        self.assertEqual(abi.SOL_SCTP, 132)
        self.assertEqual(abi.IPPROTO_SCTP, 132)
        self.assertEqual(abi.SCTP_INITMSG, 2)
        self.assertEqual(abi.SCTP_NODELAY, 3)
        self.assertEqual(abi.SCTP_EVENTS, 11)
        self.assertEqual(abi.SCTP_STATUS, 14)
        self.assertEqual(abi.SCTP_RECVRCVINFO, 32)
        self.assertEqual(abi.SCTP_SOCKOPT_BINDX_ADD, 100)
        self.assertEqual(abi.SCTP_GET_PEER_ADDRS, 108)
        self.assertEqual(abi.SCTP_GET_LOCAL_ADDRS, 109)
        self.assertEqual(abi.SCTP_SOCKOPT_CONNECTX, 110)
        self.assertEqual((abi.SCTP_INIT, abi.SCTP_SNDRCV, abi.SCTP_SNDINFO, abi.SCTP_RCVINFO), (0, 1, 2, 3))
        self.assertEqual(abi.MSG_NOTIFICATION, 0x8000)
        self.assertEqual(abi.MSG_EOR, 0x80)
        self.assertEqual(abi.SCTP_EOF, 0x200)
        self.assertEqual((abi.SCTP_UNORDERED, abi.SCTP_ABORT), (1, 4))
        self.assertEqual(abi.SCTP_ASSOC_CHANGE, 0x8001)
        self.assertEqual(abi.SCTP_PEER_ADDR_CHANGE, 0x8002)
        self.assertEqual(abi.SCTP_SHUTDOWN_EVENT, 0x8005)
        self.assertEqual(
            (abi.SCTP_COMM_UP, abi.SCTP_COMM_LOST, abi.SCTP_RESTART, abi.SCTP_SHUTDOWN_COMP,
             abi.SCTP_CANT_STR_ASSOC),
            (0, 1, 2, 3, 4),
        )
        self.assertEqual(ASAP_PPID, 11)
        self.assertEqual(ENRP_PPID, 12)

    def test_sizes(self):
        """
        Each format is as long as the C structure: the numbers are gcc's
        C{sizeof} for <linux/sctp.h> on x86-64 Linux.
        """
        sizes = {
            "INITMSG": 8,
            "SNDRCVINFO": 32,
            "SNDINFO": 16,
            "RCVINFO": 28,
            "ASSOC_CHANGE": 20,
            "PADDR_CHANGE": 148,
            "SHUTDOWN_EVENT": 12,
            "PADDRINFO": 152,
            "STATUS": 176,
            "GETADDRS": 8,
            "SN_HEADER": 8,
            "SOCKADDR_IN": 16,
            "SOCKADDR_IN6": 28,
        }
        for name, size in sizes.items():
            self.assertEqual(getattr(abi, name).size, size, name)

    def test_offsets(self):
        """
        Fields sit where gcc's C{offsetof} puts them (padding spelled out).
        """
        self.assertEqual(struct.calcsize("=HHH2x"), 8)  # sinfo_ppid
        self.assertEqual(struct.calcsize("=HHH2xIIIII"), 28)  # sinfo_assoc_id
        self.assertEqual(struct.calcsize("=HHH2xIIII"), 24)  # rcv_assoc_id
        self.assertEqual(struct.calcsize("=HHIHHHH"), 16)  # sac_assoc_id
        self.assertEqual(struct.calcsize("=HHI128s"), 136)  # spc_state
        self.assertEqual(struct.calcsize("=HHI128sii"), 144)  # spc_assoc_id
        self.assertEqual(struct.calcsize("=iiIHHHHI"), 24)  # sstat_primary
        self.assertEqual(struct.calcsize("=i128siI"), 140)  # spinfo_srtt

    def test_sndinfo(self):
        """
        C{struct sctp_sndinfo}: the PPID goes in network byte order (the
        kernel copies it to the wire unchanged), the rest native.
        """
        self.assertEqual(
            abi.pack_sndinfo(11, stream=2, flags=abi.SCTP_UNORDERED, assoc_id=7),
            native16(2) + native16(1) + b"\x00\x00\x00\x0b" + native32(0) + native32(7),
        )
        self.assertEqual(abi.pack_sndinfo(0x01020304)[4:8], b"\x01\x02\x03\x04")
        self.assertEqual(abi.ppid_from_kernel(abi.ppid_to_kernel(12)), 12)

    def test_rcvinfo(self):
        """
        C{SCTP_RCVINFO} ancillary data is read with the PPID in host order.
        """
        data = (native16(3) + native16(9) + native16(abi.SCTP_UNORDERED) + b"\0\0"
                + b"\x00\x00\x00\x0c" + native32(100) + native32(99) + native32(0) + native32(5))
        info = abi.parse_receive_info([(abi.IPPROTO_SCTP, abi.SCTP_RCVINFO, data)])
        self.assertEqual(info, abi.ReceiveInfo(stream=3, ppid=12, flags=1, assoc_id=5, ssn=9, tsn=100))
        self.assertTrue(info.unordered)

    def test_sndrcvinfo(self):
        """
        The older C{SCTP_SNDRCV} is understood too; C{SCTP_RCVINFO} wins
        when both are there; other levels are ignored.
        """
        sndrcv = (native16(1) + native16(2) + native16(0) + b"\0\0" + b"\x00\x00\x00\x0b"
                  + native32(0) * 4 + native32(-1, signed=True))
        info = abi.parse_receive_info([(socket.SOL_SOCKET, 1, b"xxxx"), (abi.IPPROTO_SCTP, abi.SCTP_SNDRCV, sndrcv)])
        self.assertEqual((info.stream, info.ppid, info.assoc_id), (1, 11, -1))
        self.assertIsNone(abi.parse_receive_info([]))

    def test_sockaddr(self):
        """
        C{sockaddr_in} / C{sockaddr_in6}, as C{sctp_bindx()} takes them.
        """
        self.assertEqual(
            abi.pack_sockaddr("127.0.0.2", 3863),
            native16(socket.AF_INET) + b"\x0f\x17" + b"\x7f\x00\x00\x02" + b"\0" * 8,
        )
        six = abi.pack_sockaddr("::1", 9901)
        self.assertEqual(six, native16(socket.AF_INET6) + b"\x26\xad" + b"\0" * 4 + b"\0" * 15 + b"\x01" + b"\0" * 4)
        self.assertRaises(ValueError, abi.pack_sockaddr, "localhost")
        self.assertEqual(
            abi.unpack_sockaddrs(abi.pack_sockaddr("192.0.2.1", 5) + six + abi.pack_sockaddr("::ffff:10.0.0.1", 6)),
            [("192.0.2.1", 5), ("::1", 9901), ("10.0.0.1", 6)],
        )
        getaddrs = native32(0) + native32(2) + abi.pack_sockaddr("127.0.0.1", 7) + abi.pack_sockaddr("127.0.0.2", 7)
        self.assertEqual(abi.unpack_getaddrs(getaddrs), [("127.0.0.1", 7), ("127.0.0.2", 7)])

    def test_events(self):
        """
        C{struct sctp_event_subscribe}: one byte per event, in header order.
        """
        self.assertEqual(abi.pack_events(data_io=True, shutdown=True), b"\x01\0\0\0\0\x01\0\0\0\0")
        self.assertEqual(abi.pack_events(association=True, address=True)[:3], b"\0\x01\x01")

    def test_assocChange(self):
        """
        An C{SCTP_ASSOC_CHANGE} notification.
        """
        data = (native16(0x8001) + native16(0) + native32(20) + native16(abi.SCTP_COMM_LOST)
                + native16(6) + native16(10) + native16(5) + native32(42))
        self.assertEqual(abi.parse_notification(data), abi.AssociationChange(1, 6, 10, 5, 42))
        # sac_info after the structure is ignored
        self.assertEqual(abi.parse_notification(data + b"\x01\x02\x03\x04").assoc_id, 42)

    def test_paddrChange(self):
        """
        An C{SCTP_PEER_ADDR_CHANGE} notification carries a
        C{sockaddr_storage}.
        """
        storage = abi.pack_sockaddr("127.0.0.2", 3863).ljust(128, b"\0")
        data = (native16(0x8002) + native16(0) + native32(148) + storage
                + native32(abi.SCTP_ADDR_CONFIRMED) + native32(0) + native32(3))
        self.assertEqual(
            abi.parse_notification(data),
            abi.PeerAddressChange(("127.0.0.2", 3863), abi.SCTP_ADDR_CONFIRMED, 0, 3),
        )

    def test_otherNotifications(self):
        """
        C{SCTP_SHUTDOWN_EVENT}; unknown types are passed on; short ones
        raise L{ValueError}.
        """
        self.assertEqual(
            abi.parse_notification(native16(0x8005) + native16(0) + native32(12) + native32(9)),
            abi.ShutdownEvent(9),
        )
        dry = native16(0x8009) + native16(0) + native32(12) + native32(9)
        self.assertEqual(abi.parse_notification(dry), abi.OtherNotification(0x8009, dry))
        self.assertRaises(ValueError, abi.parse_notification, b"\x01\x80")
        self.assertRaises(ValueError, abi.parse_notification, native16(0x8001) + native16(0) + native32(20))


# -- the transports against a fake socket ---------------------------------------


class FakeSocket:
    """
    Enough of an SCTP socket for the transports: C{recvmsg} answers from
    C{incoming}, C{sendmsg} records into C{sent} or raises what C{sendErrors}
    holds.
    """

    family = socket.AF_INET

    def __init__(self, peer=("127.0.0.1", 3863)):
        self.incoming = []
        self.sent = []
        self.sendErrors = []
        self.closed = False
        self.options = {}
        self.peer = peer

    def fileno(self):
        return -1 if self.closed else 99

    def recvmsg(self, size, ancsize):
        if not self.incoming:
            raise BlockingIOError(errno.EAGAIN, "again")
        item = self.incoming.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    def sendmsg(self, buffers, ancdata=()):
        if self.sendErrors:
            e = self.sendErrors.pop(0)
            if e is not None:
                raise e
        self.sent.append((b"".join(buffers), ancdata))
        return len(b"".join(buffers))

    def getsockname(self):
        return ("127.0.0.1", 5000)

    def getpeername(self):
        return self.peer

    def getsockopt(self, level, option, size=None):
        if (level, option) == (socket.SOL_SOCKET, socket.SO_ERROR):
            return 0
        raise OSError(errno.ENOPROTOOPT, "no")

    def setsockopt(self, level, option, value):
        self.options[(level, option)] = value

    def close(self):
        self.closed = True


def rcvinfo(ppid, stream=0, assoc_id=0):
    return [(abi.IPPROTO_SCTP, abi.SCTP_RCVINFO, abi.RCVINFO.pack(stream, 0, 0, socket.htonl(ppid), 0, 0, 0, assoc_id))]


def sent_info(ancdata):
    """
    (stream, flags, ppid, assoc_id) of a sendmsg's SCTP_SNDINFO.
    """
    [(level, ctype, data)] = ancdata
    assert (level, ctype) == (abi.IPPROTO_SCTP, abi.SCTP_SNDINFO)
    sid, flags, ppid, _ctx, assoc = abi.SNDINFO.unpack(data)
    return sid, flags, socket.ntohl(ppid), assoc


def assoc_change(state, assoc_id):
    return abi.ASSOC_CHANGE.pack(abi.SCTP_ASSOC_CHANGE, 0, 20, state, 0, 10, 10, assoc_id)


class Recorder(Protocol):
    """
    Records messages and the end of the connection.
    """

    def __init__(self):
        self.messages = []
        self.lost = []
        self.made = 0

    def connectionMade(self):
        self.made += 1

    def messageReceived(self, data, ppid, stream):
        self.messages.append((data, ppid, stream))

    def connectionLost(self, reason):
        self.lost.append(reason)


class PlainRecorder(Protocol):
    def __init__(self):
        self.data = []

    def dataReceived(self, data):
        self.data.append(data)


class ConnectionLogicTests(unittest.SynchronousTestCase):
    """
    L{sctp.SCTPConnection} over a L{FakeSocket}.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.skt = FakeSocket()
        self.protocol = Recorder()
        self.conn = sctp.SCTPConnection(self.skt, self.protocol, self.reactor, defaultPPID=11)
        self.conn._start()

    def test_pieces(self):
        """
        Pieces without C{MSG_EOR} are put together; PPID and stream come
        from the first piece's C{SCTP_RCVINFO}.
        """
        self.skt.incoming = [
            (b"ab", rcvinfo(12, 3), 0, None),
            (b"cd", [], 0, None),
            (b"ef", [], abi.MSG_EOR, None),
            (b"x", rcvinfo(11), abi.MSG_EOR, None),
        ]
        self.assertIsNone(self.conn.doRead())
        self.assertEqual(self.protocol.messages, [(b"abcdef", 12, 3), (b"x", 11, 0)])

    def test_plainProtocol(self):
        """
        A protocol without C{messageReceived} gets C{dataReceived} once per
        message.
        """
        p = PlainRecorder()
        conn = sctp.SCTPConnection(FakeSocket(), p, self.reactor)
        conn._start()
        conn.socket.incoming = [(b"one", rcvinfo(11), abi.MSG_EOR, None), (b"two", rcvinfo(11), abi.MSG_EOR, None)]
        conn.doRead()
        self.assertEqual(p.data, [b"one", b"two"])

    def test_eof(self):
        """
        Reading nothing means the peer shut the association down.
        """
        self.skt.incoming = [(b"", [], 0, None)]
        self.assertIsInstance(self.conn.doRead(), error.ConnectionDone)

    def test_reset(self):
        """
        C{ECONNRESET} (the peer aborted) is a lost connection.
        """
        self.skt.incoming = [ConnectionResetError(errno.ECONNRESET, "reset")]
        self.assertIsInstance(self.conn.doRead(), error.ConnectionLost)

    def test_commLost(self):
        """
        An C{SCTP_COMM_LOST} notification ends the connection.
        """
        self.skt.incoming = [(assoc_change(abi.SCTP_COMM_LOST, 0), [], abi.MSG_NOTIFICATION | abi.MSG_EOR, None)]
        self.assertIsInstance(self.conn.doRead(), error.ConnectionLost)

    def test_write(self):
        """
        C{write} sends one message with the default PPID; C{writeMessage}
        with its own PPID, stream and order; nothing is concatenated.
        """
        self.conn.write(b"a")
        self.conn.writeSequence([b"b", b"c"])
        self.conn.writeMessage(b"d", ppid=12, stream=4, unordered=True)
        self.assertIn(self.conn, self.reactor.getWriters())
        self.assertIsNone(self.conn.doWrite())
        self.assertEqual(
            [(data, sent_info(anc)) for data, anc in self.skt.sent],
            [(b"a", (0, 0, 11, 0)), (b"bc", (0, 0, 11, 0)), (b"d", (4, abi.SCTP_UNORDERED, 12, 0))],
        )
        self.assertNotIn(self.conn, self.reactor.getWriters())

    def test_again(self):
        """
        When the kernel's buffer is full the message stays queued, whole,
        and goes out on the next writable event.
        """
        self.conn.write(b"first")
        self.conn.write(b"second")
        self.skt.sendErrors = [None, BlockingIOError(errno.EAGAIN, "again")]
        self.assertIsNone(self.conn.doWrite())
        self.assertEqual([d for d, _ in self.skt.sent], [b"first"])
        self.assertIn(self.conn, self.reactor.getWriters())
        self.assertIsNone(self.conn.doWrite())
        self.assertEqual([d for d, _ in self.skt.sent], [b"first", b"second"])

    def test_loseConnection(self):
        """
        C{loseConnection} sends what is queued, then closes the socket and
        tells the protocol.
        """
        self.conn.write(b"last")
        self.conn.loseConnection()
        self.conn.write(b"ignored")
        why = self.conn.doWrite()
        self.assertIsInstance(why, error.ConnectionDone)
        self.assertEqual([d for d, _ in self.skt.sent], [b"last"])
        self.conn.connectionLost(why)
        self.assertTrue(self.skt.closed)
        self.assertEqual(len(self.protocol.lost), 1)

    def test_abort(self):
        """
        C{abortConnection} drops the queue and closes with
        C{SO_LINGER} 0 (the kernel sends ABORT).
        """
        self.conn.write(b"dropped")
        self.conn.abortConnection()
        self.reactor.advance(0)
        self.assertEqual(self.skt.sent, [])
        self.assertEqual(self.skt.options[(socket.SOL_SOCKET, socket.SO_LINGER)], struct.pack("=ii", 1, 0))
        self.assertTrue(self.skt.closed)
        self.protocol.lost[0].trap(error.ConnectionAborted)

    def test_tooLong(self):
        """
        A message beyond C{maxMessageSize} aborts the association.
        """
        self.conn._reassembler.maxSize = 3
        self.skt.incoming = [(b"ab", rcvinfo(11), 0, None), (b"cd", [], 0, None)]
        self.conn.doRead()
        self.reactor.advance(0)
        self.protocol.lost[0].trap(error.ConnectionAborted)


def fake_seqpacket_port(reactor, number, ppid, skt, accepted):
    """
    An L{sctp.SCTPSeqPacketPort} on C{skt} (a fake socket) whose
    associations get L{Recorder} protocols, appended to C{accepted}.
    """

    def build(addr):
        p = Recorder()
        p.addr = addr
        accepted.append(p)
        return p

    factory = Factory.forProtocol(Protocol)
    factory.buildProtocol = build
    port = sctp.SCTPSeqPacketPort(number, factory, reactor=reactor, defaultPPID=ppid)
    port.socket = skt
    port.fileno = skt.fileno
    port.connected = True
    return port


class SeqPacketLogicTests(unittest.SynchronousTestCase):
    """
    L{sctp.SCTPSeqPacketPort} over a L{FakeSocket}.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.protocols = []
        self.skt = FakeSocket()
        self.port = fake_seqpacket_port(self.reactor, 3863, 11, self.skt, self.protocols)

    def notify(self, state, assoc_id, peer):
        self.skt.incoming.append((assoc_change(state, assoc_id), [], abi.MSG_NOTIFICATION | abi.MSG_EOR, peer))

    def test_associations(self):
        """
        Each C{SCTP_COMM_UP} builds a protocol with the peer's primary
        address; messages go to their association's protocol; replies carry
        its C{assoc_id}.
        """
        self.notify(abi.SCTP_COMM_UP, 1, ("127.0.0.1", 40001))
        self.notify(abi.SCTP_COMM_UP, 2, ("127.0.0.1", 40002))
        self.skt.incoming += [
            (b"to-2", rcvinfo(11, 0, 2), abi.MSG_EOR, ("127.0.0.1", 40002)),
            (b"to-1", rcvinfo(12, 1, 1), abi.MSG_EOR, ("127.0.0.1", 40001)),
        ]
        self.port.doRead()
        one, two = self.protocols
        self.assertEqual((one.addr.host, one.addr.port), ("127.0.0.1", 40001))
        self.assertEqual(two.addr.port, 40002)
        self.assertEqual(one.messages, [(b"to-1", 12, 1)])
        self.assertEqual(two.messages, [(b"to-2", 11, 0)])
        self.assertEqual((one.made, two.made), (1, 1))
        self.assertEqual(one.transport.getPeer().port, 40001)
        two.transport.write(b"reply")
        one.transport.writeMessage(b"other", ppid=12, stream=1)
        self.port.doWrite()
        self.assertEqual(
            [(d, sent_info(a)) for d, a in self.skt.sent],
            [(b"reply", (0, 0, 11, 2)), (b"other", (1, 0, 12, 1))],
        )

    def test_end(self):
        """
        C{SCTP_SHUTDOWN_COMP} ends an association cleanly, C{SCTP_COMM_LOST}
        with a lost connection; queued messages of a lost association are
        dropped, the others' are kept.
        """
        self.notify(abi.SCTP_COMM_UP, 1, ("127.0.0.1", 1))
        self.notify(abi.SCTP_COMM_UP, 2, ("127.0.0.1", 2))
        self.port.doRead()
        one, two = self.protocols
        one.transport.write(b"kept")
        two.transport.write(b"dropped")
        self.notify(abi.SCTP_SHUTDOWN_COMP, 1, ("127.0.0.1", 1))
        self.notify(abi.SCTP_COMM_LOST, 2, ("127.0.0.1", 2))
        self.port.doRead()
        one.lost[0].trap(error.ConnectionDone)
        two.lost[0].trap(error.ConnectionLost)
        self.assertEqual(self.port.associations, {})
        self.port.doWrite()
        self.assertEqual([d for d, _ in self.skt.sent], [])

    def test_loseConnection(self):
        """
        C{loseConnection} on an association queues an empty C{SCTP_EOF}
        message after its data.
        """
        self.notify(abi.SCTP_COMM_UP, 7, ("127.0.0.1", 1))
        self.port.doRead()
        [p] = self.protocols
        p.transport.write(b"bye")
        p.transport.loseConnection()
        p.transport.write(b"ignored")
        self.port.doWrite()
        self.assertEqual(
            [(d, sent_info(a)) for d, a in self.skt.sent],
            [(b"bye", (0, 0, 11, 7)), (b"", (0, abi.SCTP_EOF, 0, 7))],
        )

    def test_sendFailure(self):
        """
        A send failing for one association does not stop the socket.
        """
        self.notify(abi.SCTP_COMM_UP, 1, ("127.0.0.1", 1))
        self.port.doRead()
        [p] = self.protocols
        p.transport.write(b"a")
        p.transport.write(b"b")
        self.skt.sendErrors = [OSError(errno.EPIPE, "gone")]
        self.assertIsNone(self.port.doWrite())
        self.assertEqual([d for d, _ in self.skt.sent], [b"b"])

    def test_refused(self):
        """
        A factory that returns C{None} has the association aborted.
        """
        self.port.factory.buildProtocol = lambda addr: None
        self.notify(abi.SCTP_COMM_UP, 5, ("127.0.0.1", 1))
        self.port.doRead()
        [(data, anc)] = self.skt.sent
        self.assertEqual(sent_info(anc), (0, abi.SCTP_ABORT, 0, 5))

    def test_peerAddresses(self):
        """
        Peer addresses confirmed later are added behind the primary.
        """
        self.notify(abi.SCTP_COMM_UP, 1, ("127.0.0.1", 9))
        storage = abi.pack_sockaddr("127.0.0.2", 9).ljust(128, b"\0")
        change = abi.PADDR_CHANGE.pack(abi.SCTP_PEER_ADDR_CHANGE, 0, 148, storage, abi.SCTP_ADDR_CONFIRMED, 0, 1)
        self.skt.incoming.append((change, [], abi.MSG_NOTIFICATION | abi.MSG_EOR, None))
        self.port.doRead()
        self.assertEqual(
            self.protocols[0].transport.getPeerAddresses(), (("127.0.0.1", 9), ("127.0.0.2", 9))
        )


# -- endpoints, plugins, and a kernel without SCTP --------------------------------


class EndpointStringTests(unittest.SynchronousTestCase):
    """
    C{sctp:} endpoint strings, found as plugins.
    """

    def test_plugins(self):
        """
        The plugins in C{twisted/plugins/rserpool_endpoints.py} are found.
        """
        self.assertIn("sctp", [p.prefix for p in getPlugins(IStreamServerEndpointStringParser)])
        self.assertIn("sctp", [p.prefix for p in getPlugins(IStreamClientEndpointStringParserWithReactor)])

    def test_server(self):
        ep = serverFromString(reactor, "sctp:3863:interface=127.0.0.1,127.0.0.2:backlog=7:mode=seqpacket:ppid=11")
        self.assertIsInstance(ep, sctp.SCTPServerEndpoint)
        self.assertEqual(
            (ep.port, ep.interfaces, ep.backlog, ep.mode, ep.defaultPPID),
            (3863, ("127.0.0.1", "127.0.0.2"), 7, "seqpacket", 11),
        )
        ep = serverFromString(reactor, "sctp:0")
        self.assertEqual((ep.port, ep.interfaces, ep.mode, ep.defaultPPID), (0, (), "stream", 0))
        ep = serverFromString(reactor, r"sctp:port=9901:interface=\:\:1")
        self.assertEqual((ep.port, ep.interfaces), (9901, ("::1",)))

    def test_serverErrors(self):
        for bad in ("sctp:3863:mode=dgram", "sctp:3863:colour=red", "sctp:99999", "sctp:x",
                    "sctp:1:interface=eth0", "sctp:interface=127.0.0.1"):
            self.assertRaises(ValueError, serverFromString, reactor, bad)

    def test_client(self):
        ep = clientFromString(reactor, "sctp:host=127.0.0.1:port=3863:bindAddress=127.0.0.3,127.0.0.4:timeout=5:ppid=12")
        self.assertIsInstance(ep, sctp.SCTPClientEndpoint)
        self.assertEqual(
            (ep.hosts, ep.port, ep.bindAddresses, ep.timeout, ep.defaultPPID),
            (("127.0.0.1",), 3863, ("127.0.0.3", "127.0.0.4"), 5.0, 12),
        )
        ep = clientFromString(reactor, "sctp:127.0.0.1:9901")
        self.assertEqual((ep.hosts, ep.port, ep.timeout), (("127.0.0.1",), 9901, 30.0))
        ep = clientFromString(reactor, "sctp:host=127.0.0.1,127.0.0.2:port=1")
        self.assertEqual(ep.hosts, ("127.0.0.1", "127.0.0.2"))

    def test_clientErrors(self):
        for bad in ("sctp:host=127.0.0.1", "sctp:port=1", "sctp:host=127.0.0.1:port=1:x=y",
                    "sctp:host=127.0.0.1:port=0", "sctp:host=127.0.0.1:port=1:timeout=soon",
                    "sctp:host=127.0.0.1:port=1:bindAddress=eth0"):
            self.assertRaises(ValueError, clientFromString, reactor, bad)


class UnavailableTests(unittest.TestCase):
    """
    Without kernel SCTP, listening and connecting fail with
    L{sctp.SCTPUnavailable} through the endpoint's L{Deferred}: one line
    naming the cause.  Socket creation is made to fail as such a kernel's
    does, so this runs with kernel SCTP too.
    """

    def setUp(self):
        def noSCTP(family, kind, proto=0):
            if proto == abi.IPPROTO_SCTP:
                raise OSError(errno.EPROTONOSUPPORT, os.strerror(errno.EPROTONOSUPPORT))
            return socket.socket(family, kind, proto)

        self.patch(sctp, "_socket", noSCTP)

    def test_message(self):
        self.assertEqual(
            str(sctp.SCTPUnavailable()),
            "this kernel has no SCTP: load the module with 'modprobe sctp' (EPROTONOSUPPORT)",
        )
        self.assertIsInstance(sctp.sctpAvailable(), sctp.SCTPUnavailable)

    def test_listen(self):
        d = serverFromString(reactor, "sctp:0:interface=127.0.0.1").listen(Factory.forProtocol(Protocol))
        f = self.failureResultOf(d, sctp.SCTPUnavailable)
        self.assertIn("modprobe sctp", f.getErrorMessage())
        self.assertNotIn("\n", f.getErrorMessage())

    def test_connect(self):
        d = clientFromString(reactor, "sctp:host=127.0.0.1:port=3863").connect(Factory.forProtocol(Protocol))
        self.failureResultOf(d, sctp.SCTPUnavailable)

    def test_otherErrors(self):
        """
        Other socket errors are not mistaken for a missing SCTP.
        """
        def noMemory(family, kind, proto=0):
            raise OSError(errno.ENOMEM, "no memory")

        self.patch(sctp, "_socket", noMemory)
        e = self.assertRaises(OSError, sctp._sctpSocket, socket.AF_INET, socket.SOCK_STREAM)
        self.assertEqual(e.errno, errno.ENOMEM)


# -- real associations (kernel SCTP) -------------------------------------------------


class Peer(Protocol):
    """
    Records messages; C{expect(n)} fires once C{n} have arrived;
    C{whenLost} fires with the exception C{connectionLost} was given.
    """

    def __init__(self, echo=False):
        self.echo = echo
        self.messages = []
        self._waiting = None
        self.whenLost = defer.Deferred()
        self.whenMade = defer.Deferred()

    def connectionMade(self):
        self.whenMade.callback(self)
        factory = getattr(self, "factory", None)
        if isinstance(factory, PeerFactory):
            factory._made()

    def messageReceived(self, data, ppid, stream):
        self.messages.append((data, ppid, stream))
        if self.echo:
            self.transport.writeMessage(data, ppid, stream)
        self._check()

    def expect(self, n):
        self._waiting = (n, defer.Deferred())
        d = self._waiting[1]
        self._check()
        return d

    def _check(self):
        if self._waiting is not None and len(self.messages) >= self._waiting[0]:
            d, self._waiting = self._waiting[1], None
            d.callback(self.messages)

    def connectionLost(self, reason):
        # the exception, not the Failure: a Failure would errback
        self.whenLost.callback(reason.value)


class PeerFactory(Factory):
    """
    Builds L{Peer}s; C{peer(i)} fires with the C{i}th once it is connected.
    """

    def __init__(self, echo=False):
        self.echo = echo
        self.peers = []
        self._made_count = 0
        self._waiters = []

    def buildProtocol(self, addr):
        p = Peer(self.echo)
        p.factory = self
        p.addr = addr
        self.peers.append(p)
        return p

    def peer(self, i=0):
        d = defer.Deferred()
        self._waiters.append((i, d))
        self._fire()
        return d

    def _made(self):
        self._made_count += 1
        self._fire()

    def _fire(self):
        ready = [(i, d) for i, d in self._waiters if i < self._made_count]
        self._waiters = [w for w in self._waiters if w not in ready]
        for i, d in ready:
            d.callback(self.peers[i])


class KernelTestsMixin:
    """
    Real associations over loopback.
    """

    timeout = 20

    def setUp(self):
        requireSCTP()
        self.ports = []
        self.clients = []
        self.accepted = []
        self.lost = set()

    def track(self, p):
        """
        Note in C{self.lost} when C{p} loses its connection.
        """
        lost = p.connectionLost

        def connectionLost(reason):
            self.lost.add(id(p))
            return lost(reason)

        p.connectionLost = connectionLost
        return p

    @defer.inlineCallbacks
    def tearDown(self):
        # abort what is still up on both sides, close the ports, and wait
        # for the aborts' connectionLost calls (scheduled with callLater(0))
        aborted = []
        for p in self.clients + self.accepted:
            transport = p.transport
            if transport is not None and transport.connected and not isinstance(transport, sctp.SCTPAssociation):
                transport.abortConnection()
                aborted.append(id(p))
        yield defer.gatherResults([p.stopListening() for p in self.ports])
        yield eventually(lambda: self.lost.issuperset(aborted),
                         "the aborted associations' connectionLost", timeout=5.0, step=0)

    @defer.inlineCallbacks
    def listen(self, description, factory):
        build = factory.buildProtocol

        def buildProtocol(addr):
            p = build(addr)
            if p is not None:
                self.accepted.append(self.track(p))
            return p

        factory.buildProtocol = buildProtocol
        port = yield serverFromString(reactor, description).listen(factory)
        self.ports.append(port)
        return port

    @defer.inlineCallbacks
    def connect(self, description, echo=False):
        p = yield clientFromString(reactor, description).connect(
            Factory.forProtocol(lambda: self.track(Peer(echo))))
        self.clients.append(p)
        return p


class OneToOneTests(KernelTestsMixin, unittest.TestCase):
    """
    One-to-one (C{SOCK_STREAM}) associations.
    """

    @defer.inlineCallbacks
    def test_echoBoundaries(self):
        """
        Three messages with PPIDs 11, 12 and an application's come back as
        exactly three messages, with their PPIDs and streams.
        """
        port = yield self.listen("sctp:0:interface=127.0.0.1", PeerFactory(echo=True))
        client = yield self.connect("sctp:host=127.0.0.1:port=%d" % port.getHost().port)
        client.transport.writeMessage(b"asap", ASAP_PPID)
        client.transport.writeMessage(b"enrp" * 3, ENRP_PPID, stream=2)
        client.transport.writeMessage(b"x", 0xDEADBEEF, stream=1, unordered=True)
        got = yield client.expect(3)
        self.assertEqual(
            sorted(got), sorted([(b"asap", 11, 0), (b"enrp" * 3, 12, 2), (b"x", 0xDEADBEEF, 1)])
        )
        self.assertEqual(len(client.messages), 3)
        self.assertEqual(client.transport.getPeer().port, port.getHost().port)
        self.assertEqual(client.transport.getPeer().type, "SCTP")

    @defer.inlineCallbacks
    def test_plainProtocol(self):
        """
        An ordinary protocol (C{dataReceived}, C{write}) runs over SCTP; its
        messages carry the endpoint's C{ppid}.
        """
        class Echo(Protocol):
            def dataReceived(self, data):
                self.transport.write(data.upper())

        port = yield self.listen("sctp:0:interface=127.0.0.1:ppid=11", Factory.forProtocol(Echo))
        client = yield self.connect("sctp:host=127.0.0.1:port=%d:ppid=12" % port.getHost().port)
        client.transport.write(b"one")
        client.transport.write(b"two")
        got = yield client.expect(2)
        self.assertEqual(got, [(b"ONE", 11, 0), (b"TWO", 11, 0)])

    @defer.inlineCallbacks
    def test_asapCodec(self):
        """
        An ASAP Registration, encoded, sent with PPID 11, decodes on the
        other side.
        """
        factory = PeerFactory()
        port = yield self.listen("sctp:0:interface=127.0.0.1", factory)
        client = yield self.connect("sctp:host=127.0.0.1:port=%d" % port.getHost().port)
        registration = Registration(
            b"EchoPool",
            PoolElement(
                0x01020304, 0, 30000,
                SCTPTransport(7, [IPv4Address("127.0.0.1")], 0),
                Policy(PolicyType.ROUND_ROBIN),
            ),
        )
        client.transport.writeMessage(encode(registration), ASAP_PPID)
        server = yield factory.peer(0)
        [data, ppid, stream] = (yield server.expect(1))[0]
        self.assertEqual(ppid, ASAP_PPID)
        self.assertEqual(decode(data, "asap"), registration)

    @defer.inlineCallbacks
    def test_messageStreamProtocol(self):
        """
        The TCP mapping's L{MessageStreamProtocol} runs unchanged over
        C{sctp:...:ppid=11}: whole messages to its receiver, replies with
        PPID 11.
        """
        from rserpool.transport.tcp import MessageStreamFactory
        from rserpool.wire import EndpointKeepAliveAck

        class Receiver:
            def __init__(self):
                self.got = defer.Deferred()

            def connection_made(self, connection):
                pass

            def message_received(self, connection, message):
                connection.send(message)
                self.got.callback((connection, message))

            def protocol_error(self, connection, error):
                pass

            def connection_lost(self, connection):
                pass

        receiver = Receiver()
        port = yield self.listen("sctp:0:interface=127.0.0.1:ppid=11", MessageStreamFactory(receiver))
        client = yield self.connect("sctp:host=127.0.0.1:port=%d:ppid=11" % port.getHost().port)
        message = EndpointKeepAliveAck(b"EchoPool", 0x12345678)
        client.transport.write(encode(message))
        connection, got = yield receiver.got
        self.assertEqual(got, message)
        self.assertEqual(str(connection.peer[0]), "127.0.0.1")
        [(data, ppid, stream)] = yield client.expect(1)
        self.assertEqual((decode(data, "asap"), ppid), (message, ASAP_PPID))

    @defer.inlineCallbacks
    def test_ppidOnTheWire(self):
        """
        The PPID is in network byte order in the DATA chunk, as Wireshark
        and RSPLIB read it: a raw socket sees ASAP's 11 as 00 00 00 0b.
        """
        try:
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, abi.IPPROTO_SCTP)
        except PermissionError:
            raise unittest.SkipTest("raw sockets need root")
        self.addCleanup(raw.close)
        raw.setblocking(False)
        port = yield self.listen("sctp:0:interface=127.0.0.1", PeerFactory(echo=True))
        client = yield self.connect("sctp:host=127.0.0.1:port=%d" % port.getHost().port)
        payload = b"ppid-on-the-wire"
        client.transport.writeMessage(payload, ASAP_PPID)
        yield client.expect(1)
        ppids = []
        for _ in range(1000):
            try:
                packet = raw.recv(65536)
            except BlockingIOError:
                break
            pos = (packet[0] & 0x0F) * 4 + 12  # IP header, SCTP common header
            while pos + 4 <= len(packet):
                ctype, _flags, length = struct.unpack_from("!BBH", packet, pos)
                if length < 4:
                    break
                if ctype == 0 and packet[pos + 16 : pos + length] == payload:  # DATA
                    ppids.append(packet[pos + 12 : pos + 16])
                pos += (length + 3) & ~3
        self.assertIn(b"\x00\x00\x00\x0b", ppids)

    @defer.inlineCallbacks
    def test_largeMessage(self):
        """
        Messages of 60 KB and of 150 KB (read in several pieces) arrive
        whole.
        """
        port = yield self.listen("sctp:0:interface=127.0.0.1", PeerFactory(echo=True))
        client = yield self.connect("sctp:host=127.0.0.1:port=%d" % port.getHost().port)
        big = bytes(range(256)) * 240  # 61440 bytes
        bigger = os.urandom(150 * 1024)
        client.transport.writeMessage(big, 1234)
        client.transport.writeMessage(bigger, 1235)
        got = yield client.expect(2)
        self.assertEqual([(len(d), p) for d, p, s in got], [(len(big), 1234), (len(bigger), 1235)])
        self.assertEqual(got[0][0], big)
        self.assertEqual(got[1][0], bigger)

    @defer.inlineCallbacks
    def test_gracefulClose(self):
        """
        C{loseConnection} delivers what was written, then the peer's
        C{connectionLost} gets L{ConnectionDone}.
        """
        factory = PeerFactory()
        port = yield self.listen("sctp:0:interface=127.0.0.1", factory)
        client = yield self.connect("sctp:host=127.0.0.1:port=%d" % port.getHost().port)
        client.transport.writeMessage(b"last words", 11)
        client.transport.loseConnection()
        self.assertIsInstance((yield client.whenLost), error.ConnectionDone)
        server = yield factory.peer(0)
        reason = yield server.whenLost
        self.assertEqual(server.messages, [(b"last words", 11, 0)])
        self.assertIsInstance(reason, error.ConnectionDone)

    @defer.inlineCallbacks
    def test_abort(self):
        """
        An aborted association is lost on the other side.
        """
        factory = PeerFactory()
        port = yield self.listen("sctp:0:interface=127.0.0.1", factory)
        client = yield self.connect("sctp:host=127.0.0.1:port=%d" % port.getHost().port)
        client.transport.writeMessage(b"hello", 11)
        server = yield factory.peer(0)
        yield server.expect(1)
        client.transport.abortConnection()
        self.assertIsInstance((yield client.whenLost), error.ConnectionAborted)
        self.assertIsInstance((yield server.whenLost), error.ConnectionLost)

    @defer.inlineCallbacks
    def test_refused(self):
        """
        Connecting to a port nobody listens on fails with
        L{ConnectionRefusedError}.
        """
        port = yield self.listen("sctp:0:interface=127.0.0.1", PeerFactory())
        number = port.getHost().port
        yield port.stopListening()
        self.ports.remove(port)
        d = clientFromString(reactor, "sctp:host=127.0.0.1:port=%d:timeout=5" % number).connect(
            Factory.forProtocol(Peer)
        )
        yield self.assertFailure(d, error.ConnectionRefusedError)

    @defer.inlineCallbacks
    def test_status(self):
        """
        C{getStatus} reads C{SCTP_STATUS}: established, RTT and MTU known.
        """
        port = yield self.listen("sctp:0:interface=127.0.0.1", PeerFactory())
        client = yield self.connect("sctp:host=127.0.0.1:port=%d" % port.getHost().port)
        status = client.transport.getStatus()
        self.assertEqual(status.state, 4)  # SCTP_ESTABLISHED
        self.assertEqual(status.primary, ("127.0.0.1", port.getHost().port))
        self.assertGreater(status.mtu, 0)
        self.assertGreater(status.rto, 0)
        self.assertGreater(status.outbound_streams, 0)

    @defer.inlineCallbacks
    def test_multihoming(self):
        """
        A server bound to 127.0.0.1 and 127.0.0.2 (C{sctp_bindx()}) has both
        addresses; a client reaching it on the second sees both as the
        server's addresses, and a multi-homed client is seen with both of
        its own.
        """
        factory = PeerFactory(echo=True)
        port = yield self.listen("sctp:0:interface=127.0.0.1,127.0.0.2", factory)
        host = port.getHost()
        self.assertEqual(sorted(host.addresses), ["127.0.0.1", "127.0.0.2"])
        client = yield self.connect(
            "sctp:host=127.0.0.2:port=%d:bindAddress=127.0.0.3,127.0.0.4" % host.port
        )
        client.transport.writeMessage(b"via the second address", 11)
        got = yield client.expect(1)
        self.assertEqual(got, [(b"via the second address", 11, 0)])
        self.assertEqual(client.transport.getPeer().host, "127.0.0.2")
        self.assertEqual(
            sorted(a for a, _ in client.transport.getPeerAddresses()), ["127.0.0.1", "127.0.0.2"]
        )
        self.assertEqual(sorted(client.transport.getHost().addresses), ["127.0.0.3", "127.0.0.4"])
        server = yield factory.peer(0)
        self.assertIn(server.addr.host, ("127.0.0.3", "127.0.0.4"))
        self.assertEqual(
            sorted(a for a, _ in server.transport.getPeerAddresses()), ["127.0.0.3", "127.0.0.4"]
        )

    @defer.inlineCallbacks
    def test_connectx(self):
        """
        A client given both addresses of a multi-homed server connects with
        C{sctp_connectx()}.
        """
        port = yield self.listen("sctp:0:interface=127.0.0.1,127.0.0.2", PeerFactory(echo=True))
        client = yield self.connect("sctp:host=127.0.0.2,127.0.0.1:port=%d" % port.getHost().port)
        client.transport.writeMessage(b"x", 12)
        self.assertEqual((yield client.expect(1)), [(b"x", 12, 0)])


class OneToManyTests(KernelTestsMixin, unittest.TestCase):
    """
    A one-to-many (C{SOCK_SEQPACKET}) server.
    """

    @defer.inlineCallbacks
    def test_threeAssociations(self):
        """
        Three clients get three protocols on one socket; each reply goes
        to the association it answers.
        """
        factory = PeerFactory(echo=True)
        port = yield self.listen("sctp:0:interface=127.0.0.1:mode=seqpacket", factory)
        self.assertIsInstance(port, sctp.SCTPSeqPacketPort)
        address = "sctp:host=127.0.0.1:port=%d" % port.getHost().port
        clients = yield defer.gatherResults([self.connect(address) for _ in range(3)])
        for i, client in enumerate(clients):
            client.transport.writeMessage(b"client %d" % i, 11, stream=i)
        for i, client in enumerate(clients):
            got = yield client.expect(1)
            self.assertEqual(got, [(b"client %d" % i, 11, i)])
        self.assertEqual(len(factory.peers), 3)
        self.assertEqual(len({p.transport.assocId for p in factory.peers}), 3)
        self.assertEqual(len(port.associations), 3)
        # each server protocol saw its own client's message only
        for p in factory.peers:
            self.assertEqual(len(p.messages), 1)
            client_port = p.transport.getPeer().port
            [owner] = [c for c in clients if c.transport.getHost().port == client_port]
            self.assertEqual(p.messages[0][0], owner.messages[0][0])

    @defer.inlineCallbacks
    def test_associationLoss(self):
        """
        A client that closes ends its association gracefully
        (L{ConnectionDone}); one that aborts loses it (L{ConnectionLost});
        the others go on.
        """
        factory = PeerFactory(echo=True)
        port = yield self.listen("sctp:0:interface=127.0.0.1:mode=seqpacket:ppid=11", factory)
        address = "sctp:host=127.0.0.1:port=%d" % port.getHost().port
        polite, rude, stays = yield defer.gatherResults([self.connect(address) for _ in range(3)])
        for c in (polite, rude, stays):
            c.transport.write(b"hi")
            yield c.expect(1)
        byPort = {p.transport.getPeer().port: p for p in factory.peers}
        polite.transport.loseConnection()
        self.assertIsInstance((yield byPort[polite.transport.getHost().port].whenLost), error.ConnectionDone)
        rude.transport.abortConnection()
        self.assertIsInstance((yield byPort[rude.transport.getHost().port].whenLost), error.ConnectionLost)
        stays.transport.write(b"still here")
        self.assertEqual((yield stays.expect(2))[1], (b"still here", 0, 0))
        self.assertEqual(len(port.associations), 1)

    @defer.inlineCallbacks
    def test_serverCloses(self):
        """
        C{loseConnection} on a server association shuts it down: both
        sides see the end.
        """
        factory = PeerFactory()
        port = yield self.listen("sctp:0:interface=127.0.0.1:mode=seqpacket", factory)
        client = yield self.connect("sctp:host=127.0.0.1:port=%d" % port.getHost().port)
        client.transport.write(b"hi")
        server = yield factory.peer(0)
        yield server.expect(1)
        server.transport.writeMessage(b"goodbye", 11)
        server.transport.loseConnection()
        self.assertIsInstance((yield client.whenLost), error.ConnectionDone)
        self.assertEqual(client.messages, [(b"goodbye", 11, 0)])
        self.assertIsInstance((yield server.whenLost), error.ConnectionDone)
        self.assertEqual(port.associations, {})

    @defer.inlineCallbacks
    def test_multihomed(self):
        """
        A one-to-many server bound to two addresses is reached on either.
        """
        port = yield self.listen("sctp:0:interface=127.0.0.1,127.0.0.2:mode=seqpacket", PeerFactory(echo=True))
        self.assertEqual(sorted(port.getHost().addresses), ["127.0.0.1", "127.0.0.2"])
        for host in ("127.0.0.1", "127.0.0.2"):
            client = yield self.connect("sctp:host=%s:port=%d" % (host, port.getHost().port))
            client.transport.writeMessage(host.encode(), 12)
            self.assertEqual((yield client.expect(1)), [(host.encode(), 12, 0)])

    @defer.inlineCallbacks
    def test_perAssociationQueries(self):
        """
        An association of a one-to-many socket reports its own multi-homed
        peer's addresses and its own C{SCTP_STATUS}.
        """
        factory = PeerFactory(echo=True)
        port = yield self.listen("sctp:0:interface=127.0.0.1:mode=seqpacket", factory)
        address = "sctp:host=127.0.0.1:port=%d" % port.getHost().port
        single = yield self.connect(address)
        double = yield self.connect(address + ":bindAddress=127.0.0.5,127.0.0.6")
        for c in (single, double):
            c.transport.write(b"hi")
            yield c.expect(1)
        byPort = {p.transport.getPeer().port: p.transport for p in factory.peers}
        one = byPort[single.transport.getHost().port]
        two = byPort[double.transport.getHost().port]
        self.assertEqual([a for a, _ in one.getPeerAddresses()], ["127.0.0.1"])
        self.assertEqual(sorted(a for a, _ in two.getPeerAddresses()), ["127.0.0.5", "127.0.0.6"])
        self.assertEqual(two.getPeerAddresses()[0][0], two.getPeer().host)
        status = two.getStatus()
        self.assertEqual(status.state, 4)  # SCTP_ESTABLISHED
        self.assertEqual(status.primary, (two.getPeer().host, two.getPeer().port))


# -- heartbeat: SCTP_PEER_ADDR_PARAMS ------------------------------------------------


class PeerAddressParamsABITests(unittest.SynchronousTestCase):
    """
    C{struct sctp_paddrparams} (C{packed, aligned(4)}): known answers from
    gcc's C{sizeof}/C{offsetof} on <linux/sctp.h> (x86-64).
    """

    def test_constants(self):
        """
        C{SCTP_PEER_ADDR_PARAMS} and the C{enum sctp_spp_flags} bits.
        """
        self.assertEqual(abi.SCTP_PEER_ADDR_PARAMS, 9)
        self.assertEqual(
            (abi.SPP_HB_ENABLE, abi.SPP_HB_DISABLE, abi.SPP_HB_DEMAND, abi.SPP_PMTUD_ENABLE,
             abi.SPP_PMTUD_DISABLE, abi.SPP_SACKDELAY_ENABLE, abi.SPP_SACKDELAY_DISABLE,
             abi.SPP_HB_TIME_IS_ZERO, abi.SPP_IPV6_FLOWLABEL, abi.SPP_DSCP),
            (1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )

    def test_layout(self):
        """
        156 bytes; hbinterval at 132, pathmaxrxt 136, pathmtu 138,
        sackdelay 142, flags 146, ipv6_flowlabel 150, dscp 154.
        """
        self.assertEqual(abi.PADDRPARAMS.size, 156)
        offsets = {"hbinterval": "=i128s", "pathmaxrxt": "=i128sI", "pathmtu": "=i128sIH",
                   "sackdelay": "=i128sIHI", "flags": "=i128sIHII",
                   "ipv6_flowlabel": "=i128sIHIII", "dscp": "=i128sIHIIII"}
        want = {"hbinterval": 132, "pathmaxrxt": 136, "pathmtu": 138, "sackdelay": 142,
                "flags": 146, "ipv6_flowlabel": 150, "dscp": 154}
        for name, prefix in offsets.items():
            self.assertEqual(struct.calcsize(prefix), want[name], name)
        self.assertTrue(abi.PADDRPARAMS.format.startswith(offsets["dscp"]))

    def test_pack(self):
        """
        The heartbeat request: assoc id, an all-zero C{sockaddr_storage}
        (the whole association), the interval in milliseconds, the path's
        retransmissions, C{SPP_HB_ENABLE}; everything else zero.
        """
        data = abi.pack_paddrparams(7, hbinterval=1500, pathmaxrxt=4, flags=abi.SPP_HB_ENABLE)
        self.assertEqual(
            data,
            native32(7) + b"\0" * 128 + native32(1500) + native16(4) + native32(0) * 2
            + native32(1) + native32(0) + b"\0" + b"\0",
        )
        one = abi.pack_paddrparams(0, address=("127.0.0.2", 3863))
        self.assertEqual(one[4:20], abi.pack_sockaddr("127.0.0.2", 3863))
        self.assertEqual(one[20:132], b"\0" * 112)

    def test_parse(self):
        """
        The C{getsockopt} answer, full or in the kernel's short form (up to
        C{spp_flags}, 148 bytes).
        """
        data = (native32(3) + b"\0" * 128 + native32(30000) + native16(5) + native32(1500)
                + native32(200) + native32(abi.SPP_HB_ENABLE | abi.SPP_PMTUD_ENABLE)
                + native32(0) + b"\0\0")
        params = abi.parse_paddrparams(data)
        self.assertEqual(params, abi.PeerAddressParams(3, 30000, 5, 1500, 200, 9, None))
        self.assertTrue(params.heartbeat_enabled)
        self.assertEqual(abi.parse_paddrparams(data[:148]), params)
        self.assertRaises(ValueError, abi.parse_paddrparams, data[:147])
        self.assertEqual(
            abi.parse_paddrparams(abi.pack_paddrparams(address=("127.0.0.1", 9))).address,
            ("127.0.0.1", 9))


class HeartbeatLogicTests(unittest.SynchronousTestCase):
    """
    C{setHeartbeat} over a L{FakeSocket}, and the Enhanced Mode session's
    L{SCTPChannel} applying its heartbeat settings.
    """

    def test_connection(self):
        """
        One C{setsockopt(SOL_SCTP, SCTP_PEER_ADDR_PARAMS)}: seconds become
        milliseconds, C{maxRetrans} the path's C{spp_pathmaxrxt}.
        """
        skt = FakeSocket()
        conn = sctp.SCTPConnection(skt, Recorder(), MemoryReactorClock())
        conn.setHeartbeat(2.5, 4)
        self.assertEqual(skt.options[(abi.SOL_SCTP, abi.SCTP_PEER_ADDR_PARAMS)],
                         abi.pack_paddrparams(0, 2500, 4, abi.SPP_HB_ENABLE))
        conn.setHeartbeat(0.0001)
        self.assertEqual(skt.options[(abi.SOL_SCTP, abi.SCTP_PEER_ADDR_PARAMS)],
                         abi.pack_paddrparams(0, 1, 0, abi.SPP_HB_ENABLE))

    def test_badValues(self):
        """
        Values the structure cannot carry are refused before the kernel.
        """
        skt = FakeSocket()
        conn = sctp.SCTPConnection(skt, Recorder(), MemoryReactorClock())
        for interval, rxt in [(0, 3), (-1, 3), (None, 3), (2 ** 32, 3), (1, -1), (1, 65536)]:
            self.assertRaises(ValueError, conn.setHeartbeat, interval, rxt)
        self.assertEqual(skt.options.get((abi.SOL_SCTP, abi.SCTP_PEER_ADDR_PARAMS)), None)

    def test_closed(self):
        conn = sctp.SCTPConnection(FakeSocket(), Recorder(), MemoryReactorClock())
        conn._start()
        conn.connectionLost(None)
        self.assertRaises(OSError, conn.setHeartbeat, 1, 3)

    def channel(self, transport, interval, max_missed):
        from rserpool.transport.channel import SCTPChannel

        channel = SCTPChannel(object(), close_marker=False, interval=interval, max_missed=max_missed)
        channel.start(transport)
        return channel

    def test_channelApplies(self):
        """
        The channel sets the session's interval and C{max_missed} on the
        association when it starts.
        """
        skt = FakeSocket()
        conn = sctp.SCTPConnection(skt, Recorder(), MemoryReactorClock())
        channel = self.channel(conn, 1.5, 3)
        self.assertEqual(channel.heartbeat, (1.5, 3))
        self.assertEqual(skt.options[(abi.SOL_SCTP, abi.SCTP_PEER_ADDR_PARAMS)],
                         abi.pack_paddrparams(0, 1500, 3, abi.SPP_HB_ENABLE))

    def test_channelLeavesKernel(self):
        """
        No interval (C{None}): the kernel's heartbeat is left alone; a
        transport without C{setHeartbeat}, or one that refuses, does not
        stop the session.
        """
        skt = FakeSocket()
        conn = sctp.SCTPConnection(skt, Recorder(), MemoryReactorClock())
        self.assertIsNone(self.channel(conn, None, 3).heartbeat)
        self.assertNotIn((abi.SOL_SCTP, abi.SCTP_PEER_ADDR_PARAMS), skt.options)
        self.assertIsNone(self.channel(object(), 1.0, 3).heartbeat)

        class Refusing:
            def setHeartbeat(self, interval, maxRetrans=None):
                raise OSError(errno.EINVAL, "no")

        self.assertIsNone(self.channel(Refusing(), 1.0, 3).heartbeat)
        self.flushLoggedErrors()


class HeartbeatKernelTests(KernelTestsMixin, unittest.TestCase):
    """
    The kernel takes C{SCTP_PEER_ADDR_PARAMS} and reads it back.
    """

    @defer.inlineCallbacks
    def test_oneToOne(self):
        """
        Both ends of a one-to-one association: C{getsockopt} reads back the
        interval in milliseconds, C{spp_pathmaxrxt} and C{SPP_HB_ENABLE}.
        """
        factory = PeerFactory()
        port = yield self.listen("sctp:0:interface=127.0.0.1", factory)
        client = yield self.connect("sctp:host=127.0.0.1:port=%d" % port.getHost().port)
        client.transport.setHeartbeat(0.75, 2)
        params = client.transport.getPeerAddressParams()
        self.assertEqual((params.hbinterval, params.pathmaxrxt), (750, 2))
        self.assertTrue(params.heartbeat_enabled)
        server = yield factory.peer(0)
        before = server.transport.getPeerAddressParams()
        self.assertNotEqual((before.hbinterval, before.pathmaxrxt), (4000, 7))
        server.transport.setHeartbeat(4, 7)
        params = server.transport.getPeerAddressParams()
        self.assertEqual((params.hbinterval, params.pathmaxrxt, params.heartbeat_enabled),
                         (4000, 7, True))

    @defer.inlineCallbacks
    def test_oneToMany(self):
        """
        On a one-to-many socket the setting is one association's.
        """
        factory = PeerFactory()
        port = yield self.listen("sctp:0:interface=127.0.0.1:mode=seqpacket", factory)
        address = "sctp:host=127.0.0.1:port=%d" % port.getHost().port
        yield defer.gatherResults([self.connect(address) for _ in range(2)])
        first = yield factory.peer(0)
        second = yield factory.peer(1)
        untouched = second.transport.getPeerAddressParams()
        first.transport.setHeartbeat(1.25, 3)
        params = first.transport.getPeerAddressParams()
        self.assertEqual((params.assoc_id, params.hbinterval, params.pathmaxrxt),
                         (first.transport.assocId, 1250, 3))
        self.assertEqual(second.transport.getPeerAddressParams(), untouched)

    @defer.inlineCallbacks
    def test_sessionLink(self):
        """
        An Enhanced Mode session link over SCTP applies its heartbeat
        settings to its association.
        """
        from rserpool.transport.channel import Link

        class Owner:
            def __init__(self):
                self.made = defer.Deferred()

            def link_made(self, link):
                self.made.callback(link)

            def link_message(self, link, payload, ppid, stream):
                pass

            def link_closing(self, link):
                pass

            def link_lost(self, link, reason):
                pass

        port = yield self.listen("sctp:0:interface=127.0.0.1", PeerFactory())
        owner = Owner()
        link = yield clientFromString(
            reactor, "sctp:host=127.0.0.1:port=%d" % port.getHost().port
        ).connect(Factory.forProtocol(lambda: Link(owner, reactor, heartbeat_interval=2.0,
                                                   max_missed=4, close_marker=False)))
        self.addCleanup(link.close, True)
        yield owner.made
        self.assertEqual(link.mapping, "sctp")
        self.assertEqual(link.channel.heartbeat, (2.0, 4))
        params = link.transport.getPeerAddressParams()
        self.assertEqual((params.hbinterval, params.pathmaxrxt, params.heartbeat_enabled),
                         (2000, 4, True))


# -- associations set up from a one-to-many socket ---------------------------------


class DiallingSocket(FakeSocket):
    """
    A L{FakeSocket} whose C{connect_ex} answers C{connectResult} and records
    the address; C{sendmsg} records the address too (in C{sentTo}).
    """

    def __init__(self, peer=("127.0.0.1", 3863)):
        FakeSocket.__init__(self, peer)
        self.connects = []
        self.connectResult = errno.EINPROGRESS
        self.sentTo = []

    def connect_ex(self, address):
        self.connects.append(address)
        return self.connectResult

    def sendmsg(self, buffers, ancdata=(), flags=0, address=None):
        self.sentTo.append(address)
        return FakeSocket.sendmsg(self, buffers, ancdata)


class ConnectAssociationLogicTests(unittest.SynchronousTestCase):
    """
    L{sctp.SCTPSeqPacketPort.connectAssociation} and
    L{sctp.SCTPAssociationEndpoint} over a L{DiallingSocket}.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.accepted = []
        self.skt = DiallingSocket()
        self.port = fake_seqpacket_port(self.reactor, 9901, 12, self.skt, self.accepted)
        self.dialled = []
        self.factory = Factory.forProtocol(Protocol)
        self.factory.buildProtocol = lambda addr: self.dialled.append(Recorder()) or self.dialled[-1]

    def notify(self, state, assoc_id, peer):
        self.skt.incoming.append((assoc_change(state, assoc_id), [], abi.MSG_NOTIFICATION | abi.MSG_EOR, peer))

    def test_connected(self):
        """
        C{connectAssociation} connects the one-to-many socket itself; the
        C{SCTP_COMM_UP} from that peer builds the protocol with the given
        factory (not the port's) and fires the L{Deferred} with it; it
        sends over the association like an accepted one.
        """
        d = self.port.connectAssociation("192.0.2.2", 9901, self.factory)
        self.assertEqual(self.skt.connects, [("192.0.2.2", 9901)])
        self.assertNoResult(d)
        self.notify(abi.SCTP_COMM_UP, 4, ("192.0.2.2", 9901))
        self.port.doRead()
        [p] = self.dialled
        self.assertIs(self.successResultOf(d), p)
        self.assertEqual(self.accepted, [])
        self.assertIsInstance(p.transport, sctp.SCTPAssociation)
        self.assertIs(self.port.associations[4], p.transport)
        self.assertEqual((p.made, p.transport.getPeer().port), (1, 9901))
        p.transport.write(b"presence")
        self.port.doWrite()
        self.assertEqual([(data, sent_info(a)) for data, a in self.skt.sent],
                         [(b"presence", (0, 0, 12, 4))])
        # no timeout left behind
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.port._dialling, {})

    def test_othersStillAccepted(self):
        """
        An association from another peer while one is being set up is an
        accepted one, with the port's factory.
        """
        d = self.port.connectAssociation("192.0.2.2", 9901, self.factory)
        self.notify(abi.SCTP_COMM_UP, 1, ("192.0.2.3", 9901))
        self.notify(abi.SCTP_COMM_UP, 2, ("192.0.2.2", 40000))
        self.port.doRead()
        self.assertEqual(len(self.accepted), 2)
        self.assertEqual(self.dialled, [])
        self.assertNoResult(d)

    def test_dataBeforeCommUp(self):
        """
        Data from the peer before C{SCTP_COMM_UP} also starts the dialled
        association.
        """
        d = self.port.connectAssociation("192.0.2.2", 9901, self.factory)
        self.skt.incoming.append((b"hello", rcvinfo(12, 0, 3), abi.MSG_EOR, ("192.0.2.2", 9901)))
        self.port.doRead()
        [p] = self.dialled
        self.assertIs(self.successResultOf(d), p)
        self.assertEqual(p.messages, [(b"hello", 12, 0)])

    def test_multiHomed(self):
        """
        Several addresses go to C{sctp_connectx()}; COMM_UP from any of them
        completes it.
        """
        d = self.port.connectAssociation(("192.0.2.2", "198.51.100.2"), 9901, self.factory)
        self.assertEqual(self.skt.options[(abi.SOL_SCTP, abi.SCTP_SOCKOPT_CONNECTX)],
                         abi.pack_sockaddr("192.0.2.2", 9901) + abi.pack_sockaddr("198.51.100.2", 9901))
        self.notify(abi.SCTP_COMM_UP, 5, ("198.51.100.2", 9901))
        self.port.doRead()
        self.assertIs(self.successResultOf(d), self.dialled[0])

    def test_cannotStart(self):
        """
        C{SCTP_CANT_STR_ASSOC} for that peer fails the L{Deferred} with
        L{ConnectionRefusedError}, as a refused one-to-one association does
        (so a PE's registrar problem reads "connection refused" either way).
        """
        d = self.port.connectAssociation("192.0.2.2", 9901, self.factory)
        self.notify(abi.SCTP_CANT_STR_ASSOC, 6, ("192.0.2.2", 9901))
        self.port.doRead()
        self.failureResultOf(d, error.ConnectionRefusedError)
        self.assertEqual(self.port._dialling, {})
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_exists(self):
        """
        C{EISCONN}: the peer has an association with us already; it keeps
        its protocol and the L{Deferred} fails.
        """
        self.skt.connectResult = errno.EISCONN
        f = self.failureResultOf(self.port.connectAssociation("192.0.2.2", 9901, self.factory),
                                 error.ConnectError)
        self.assertIn("exists already", str(f.value))
        self.skt.connectResult = errno.ENETUNREACH
        self.failureResultOf(self.port.connectAssociation("192.0.2.2", 9901, self.factory),
                             error.ConnectError)
        self.assertEqual(self.port._dialling, {})

    def test_twice(self):
        """
        A second attempt at the same peer while the first is under way
        fails at once.
        """
        self.port.connectAssociation("192.0.2.2", 9901, self.factory)
        self.failureResultOf(self.port.connectAssociation("192.0.2.2", 9901, self.factory),
                             error.ConnectError)

    def test_timeout(self):
        """
        No association within C{timeout}: it is aborted (by address) and
        the L{Deferred} fails with L{error.TimeoutError}.
        """
        d = self.port.connectAssociation("192.0.2.2", 9901, self.factory, timeout=5)
        self.reactor.advance(5)
        self.failureResultOf(d, error.TimeoutError)
        [(data, anc)] = self.skt.sent
        self.assertEqual(sent_info(anc)[1], abi.SCTP_ABORT)
        self.assertEqual(self.skt.sentTo, [("192.0.2.2", 9901)])
        self.assertEqual(self.port._dialling, {})

    def test_cancel(self):
        d = self.port.connectAssociation("192.0.2.2", 9901, self.factory)
        d.cancel()
        self.failureResultOf(d, error.ConnectingCancelledError)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_closed(self):
        """
        Closing the port fails what is being set up.
        """
        d = self.port.connectAssociation("192.0.2.2", 9901, self.factory)
        self.port.stopListening()
        self.reactor.advance(0)
        self.failureResultOf(d, error.ConnectError)
        self.failureResultOf(self.port.connectAssociation("192.0.2.2", 9901, self.factory),
                             error.ConnectError)

    def test_defaultFactory(self):
        d = self.port.connectAssociation("192.0.2.2", 9901)
        self.notify(abi.SCTP_COMM_UP, 4, ("192.0.2.2", 9901))
        self.port.doRead()
        self.assertIs(self.successResultOf(d), self.accepted[0])

    def test_endpoint(self):
        """
        L{sctp.SCTPAssociationEndpoint} connects through the port.
        """
        endpoint = sctp.SCTPAssociationEndpoint(self.port, "192.0.2.2", 9901, timeout=3)
        from twisted.internet.interfaces import IStreamClientEndpoint

        self.assertTrue(IStreamClientEndpoint.providedBy(endpoint))
        d = endpoint.connect(self.factory)
        self.assertEqual(self.skt.connects, [("192.0.2.2", 9901)])
        self.reactor.advance(3)
        self.failureResultOf(d, error.TimeoutError)


class ConnectAssociationKernelTests(KernelTestsMixin, unittest.TestCase):
    """
    Associations set up from a listening one-to-many socket leave from
    its port.
    """

    @defer.inlineCallbacks
    def test_fromListeningPort(self):
        """
        The peer sees the association come from the one-to-many socket's
        port; messages go both ways; the port's own associations go on.
        """
        remote = PeerFactory(echo=True)
        target = yield self.listen("sctp:0:interface=127.0.0.1:mode=seqpacket", remote)
        local = PeerFactory()
        port = yield self.listen("sctp:0:interface=127.0.0.1:mode=seqpacket:ppid=12", local)
        mine = yield port.connectAssociation("127.0.0.1", target.getHost().port, PeerFactory())
        self.assertIsInstance(mine.transport, sctp.SCTPAssociation)
        self.assertEqual(mine.transport.getPeer().port, target.getHost().port)
        theirs = yield remote.peer(0)
        self.assertEqual(theirs.transport.getPeer().port, port.getHost().port)
        mine.transport.write(b"hello")
        got = yield mine.expect(1)
        self.assertEqual(got, [(b"hello", 12, 0)])
        self.assertEqual(local.peers, [])
        # an ordinary client of the port is still accepted
        client = yield self.connect("sctp:host=127.0.0.1:port=%d" % port.getHost().port)
        accepted = yield local.peer(0)
        self.assertEqual(accepted.transport.getPeer().port, client.transport.getHost().port)
        # a second association to the same peer: only one can exist
        yield self.assertFailure(port.connectAssociation("127.0.0.1", target.getHost().port),
                                 error.ConnectError)

    @defer.inlineCallbacks
    def test_localAddressesOfAssociation(self):
        """
        An association of a one-to-many socket on the wildcard address
        tells its own local addresses (what a PE registers over it), a
        loopback one first towards a peer on loopback, and the socket's
        port.
        """
        local = PeerFactory()
        port = yield self.listen("sctp:0:mode=seqpacket", local)
        self.assertEqual(port.getHost().host, "0.0.0.0")
        number = port.getHost().port
        # an association the socket accepts (a registrar reaching a PE)
        yield self.connect("sctp:host=127.0.0.1:port=%d" % number)
        accepted = yield local.peer(0)
        host = accepted.transport.getHost()
        self.assertEqual((host.host, host.port), ("127.0.0.1", number))
        self.assertNotIn("0.0.0.0", host.addresses)
        # and one it sets up
        target = yield self.listen("sctp:0:interface=127.0.0.1:mode=seqpacket", PeerFactory())
        mine = yield port.connectAssociation("127.0.0.1", target.getHost().port, PeerFactory())
        host = mine.transport.getHost()
        self.assertEqual((host.host, host.port), ("127.0.0.1", number))
        self.assertNotIn("0.0.0.0", host.addresses)

    @defer.inlineCallbacks
    def test_localAddressesPerAssociation(self):
        """
        Two associations of one wildcard socket, towards a peer on a
        network and a peer on loopback: each tells its own local end (the
        socket's address is the first association's).
        """
        import shutil

        from tests.test_interop_rsplib import Network

        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise unittest.SkipTest("needs root and iproute2's ip for a dummy interface")
        net = Network("rsassoc", 218, count=2)
        net.up()
        self.addCleanup(net.down)
        there = yield self.listen("sctp:0:interface=%s:mode=seqpacket" % net.addresses[0],
                                  PeerFactory())
        here = yield self.listen("sctp:0:interface=127.0.0.1:mode=seqpacket", PeerFactory())
        port = yield self.listen("sctp:0:mode=seqpacket", PeerFactory())
        far = yield port.connectAssociation(net.addresses[0], there.getHost().port, PeerFactory())
        near = yield port.connectAssociation("127.0.0.1", here.getHost().port, PeerFactory())
        self.assertNotEqual(far.transport.getHost().host, "127.0.0.1")
        self.assertNotIn("127.0.0.1", far.transport.getHost().addresses)
        self.assertEqual(near.transport.getHost().host, "127.0.0.1")

    @defer.inlineCallbacks
    def test_refused(self):
        """
        Nobody listening: the setup fails (ABORT in answer to INIT).
        """
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
        probe.close()
        port = yield self.listen("sctp:0:interface=127.0.0.1:mode=seqpacket", PeerFactory())
        yield self.assertFailure(port.connectAssociation("127.0.0.1", free, timeout=10),
                                 error.ConnectError)
        self.assertEqual(port._dialling, {})


class RegistrarPeerEndpointTests(unittest.SynchronousTestCase):
    """
    The registrar sets up associations to C{sctp:} ENRP peers from its
    ENRP listener when that is a one-to-many socket.
    """

    def fromENRPPort(self, ports, description):
        from types import SimpleNamespace

        from rserpool.services import PeeringService

        service = SimpleNamespace(listeners=SimpleNamespace(ports_of={"ENRP": ports}))
        return PeeringService._from_enrp_port(service, clientFromString(reactor, description))

    def seqpacket(self):
        port = sctp.SCTPSeqPacketPort(9901, Factory(), reactor=MemoryReactorClock())
        port.connected = True
        return port

    def test_seqpacketListener(self):
        port = self.seqpacket()
        endpoint = self.fromENRPPort(
            [port], "sctp:host=192.0.2.2,198.51.100.2:port=9901:ppid=12:timeout=7:bindAddress=192.0.2.1")
        self.assertIsInstance(endpoint, sctp.SCTPAssociationEndpoint)
        self.assertIs(endpoint.port, port)
        self.assertEqual((endpoint.hosts, endpoint.peerPort, endpoint.timeout),
                         (("192.0.2.2", "198.51.100.2"), 9901, 7.0))

    def test_otherListeners(self):
        """
        A one-to-one listener, a closed one, or a TCP peer: the endpoint is
        kept.
        """
        stream = sctp.SCTPStreamPort(9901, Factory(), reactor=MemoryReactorClock())
        closed = self.seqpacket()
        closed.connected = False
        for ports in ([], [stream], [closed]):
            self.assertIsInstance(self.fromENRPPort(ports, "sctp:host=192.0.2.2:port=9901"),
                                  sctp.SCTPClientEndpoint)
        self.assertNotIsInstance(self.fromENRPPort([self.seqpacket()], "tcp:host=192.0.2.2:port=9901"),
                                 sctp.SCTPAssociationEndpoint)
