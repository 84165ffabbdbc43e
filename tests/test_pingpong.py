"""
Tests for the PingPong example (RSPLIB's format, rserpool.examples.pingpong):
known-answer bytes of its messages and cookie, the PE's answers and cookies
through the Enhanced Mode session layer, and a pool user failing over
between two PEs with the cookie, all in memory over the TCP mapping under
one L{task.Clock}.
"""
import io

from twisted.internet import defer, task
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from twisted.trial import unittest
from zope.interface import implementer

from rserpool.asap.pool_user import PoolElementInfo
from rserpool.codes import ASAP_PPID, PolicyType
from rserpool.examples import pingpong, server_factory
from rserpool.examples.pingpong import (
    COOKIE_ID,
    PPID_PINGPONG,
    Ping,
    PingPongClient,
    PingPongError,
    Pong,
    decode,
    decode_cookie,
    encode,
    encode_cookie,
)
from rserpool.transport.enhanced import PESessionFactory, PoolSession
from rserpool.transport import mux
from rserpool.wire import Cookie, CookieEcho, Policy, TCPTransport
from rserpool.wire import decode as decode_asap
from rserpool.wire import encode as encode_asap


class FormatTests(unittest.TestCase):
    """
    The bytes of RSPLIB's src/pingpongpackets.h.
    """

    def test_ping(self):
        raw = bytes.fromhex("01 00 00 0f 00 00 00 00 00 00 00 01") + b"abc"
        self.assertEqual(encode(Ping(1, b"abc")), raw)
        self.assertEqual(decode(raw), Ping(1, b"abc"))

    def test_pong(self):
        raw = bytes.fromhex(
            "02 00 00 16 00 00 00 00 00 00 01 02 00 00 00 00 00 00 00 07") + b"xy"
        self.assertEqual(encode(Pong(0x102, 7, b"xy")), raw)
        self.assertEqual(decode(raw), Pong(0x102, 7, b"xy"))

    def test_cookie(self):
        raw = b"<PP-TD1>" + bytes.fromhex("00 00 00 00 00 00 00 2a")
        self.assertEqual(COOKIE_ID, b"<PP-TD1>")
        self.assertEqual(encode_cookie(42), raw)
        self.assertEqual(decode_cookie(raw), 42)
        self.assertRaises(PingPongError, decode_cookie, raw[:-1])
        self.assertRaises(PingPongError, decode_cookie, b"<XX-TD1>" + raw[8:])

    def test_ppid(self):
        # RSPLIB's PPID_PPP (its old value was 0x29097602)
        self.assertEqual(PPID_PINGPONG, 33)

    def test_bad(self):
        for raw in (b"\x01\x00", bytes.fromhex("01 00 00 08 00 00 00 00"),
                    bytes.fromhex("03 00 00 0c 00 00 00 00 00 00 00 01"),
                    bytes.fromhex("01 00 00 10 00 00 00 00 00 00 00 01")):
            self.assertRaises(PingPongError, decode, raw)

    def test_stream_framing(self):
        # Basic Mode over TCP: messages found by their length field.
        framer = pingpong._Framer()
        data = encode(Ping(1, b"a")) + encode(Ping(2, b"bb"))
        self.assertEqual(framer.feed(data[:5]), [])
        self.assertEqual(framer.feed(data[5:]), [Ping(1, b"a"), Ping(2, b"bb")])
        self.assertRaises(PingPongError, framer.feed, b"\x01\x00\x00\x02")


class ServerTests(unittest.TestCase):
    """
    The PE through the session layer (multiplexed framing, StringTransport).
    """

    def setUp(self):
        self.clock = task.Clock()
        factory = PESessionFactory(server_factory("pingpong"), self.clock, heartbeat_interval=None)
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.peer = mux.MuxConnection(0, interval=None)

    def exchange(self, *frames):
        for payload, ppid in frames:
            self.peer.send(payload, ppid)
        self.proto.dataReceived(self.peer.data_to_send())
        data = self.transport.value()
        self.transport.clear()
        return [(e.ppid, e.payload) for e in self.peer.receive(data, 0)
                if isinstance(e, mux.DataReceived)]

    def test_pong_then_cookie(self):
        out = self.exchange((encode(Ping(5, b"hi")), PPID_PINGPONG),
                            (encode(Ping(6, b"ho")), PPID_PINGPONG))
        self.assertEqual(out, [
            (PPID_PINGPONG, encode(Pong(5, 1, b"hi"))),
            (ASAP_PPID, encode_asap(Cookie(encode_cookie(2)))),
            (PPID_PINGPONG, encode(Pong(6, 2, b"ho"))),
            (ASAP_PPID, encode_asap(Cookie(encode_cookie(3)))),
        ])

    def test_cookie_echo_continues(self):
        out = self.exchange((encode_asap(CookieEcho(encode_cookie(17))), ASAP_PPID),
                            (encode(Ping(9)), PPID_PINGPONG))
        self.assertEqual(out[0], (PPID_PINGPONG, encode(Pong(9, 17))))
        self.assertEqual(decode_asap(out[1][1], "asap"), Cookie(encode_cookie(18)))

    def test_bad_cookie_aborts(self):
        # RSPLIB's server: "Received bad cookie echo!" ends the session.
        self.exchange((encode_asap(CookieEcho(b"not a pingpong cookie")), ASAP_PPID))
        self.assertTrue(self.transport.disconnecting)

    def test_not_a_ping_aborts(self):
        self.exchange((encode(Pong(1, 1)), PPID_PINGPONG))
        self.assertTrue(self.transport.disconnecting)

    def test_basic_mode_over_tcp(self):
        # No session layer: plain bytes, no cookies, stream framing.
        proto = server_factory("pingpong").buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        data = encode(Ping(1)) + encode(Ping(2))
        proto.dataReceived(data[:3])
        proto.dataReceived(data[3:])
        self.assertEqual(transport.value(), encode(Pong(1, 1)) + encode(Pong(2, 2)))


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    Connects a client protocol to a fresh protocol of C{server_factory}, in
    memory (L{iosim}); remembers the pumps and the server sides.
    """

    def __init__(self, server_factory, clock, pumps):
        self.server_factory = server_factory
        self.clock = clock
        self.pumps = pumps

    def connect(self, factory):
        client = factory.buildProtocol(None)
        server = self.server_factory.buildProtocol(None)
        pump = iosim.connect(server, iosim.makeFakeServer(server), client,
                             iosim.makeFakeClient(client), greet=False, clock=self.clock)
        self.pumps.append(pump)
        return defer.succeed(client)


class ClientFailoverTests(unittest.TestCase):
    """
    Our pool user against two of our PEs: the serving PE's connection ends
    without the close marker (as when it is killed); the session goes on
    with the other, which continues the reply count from the cookie.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.pumps = []
        self.out = io.StringIO()
        self.client = PingPongClient(self.clock, self.out, interval=1.0, count=6)
        pes = [PoolElementInfo(b"PingPongPool", n, TCPTransport(7, ("127.0.0.1",), 1),
                               Policy.make(PolicyType.ROUND_ROBIN)) for n in (0xA, 0xB)]
        self.endpoints = {
            pe.identifier: MemoryEndpoint(
                PESessionFactory(server_factory("pingpong"), self.clock, heartbeat_interval=None),
                self.clock, self.pumps)
            for pe in pes}
        self.session = PoolSession(
            self.clock, None, b"PingPongPool", Factory.forProtocol(lambda: self.client),
            endpoint_for=lambda info: self.endpoints[info.identifier], candidates=pes,
            heartbeat_interval=None, data_ppid=PPID_PINGPONG)
        self.session.connect()

    def run_for(self, seconds):
        for _ in range(int(seconds)):
            for pump in self.pumps:
                pump.flush()
            self.clock.advance(1.0)
        for pump in self.pumps:
            pump.flush()

    def test_failover_keeps_numbering(self):
        self.run_for(3)
        self.assertEqual([(m, pe, r) for m, pe, r in self.client.acks],
                         [(1, 0xA, 1), (2, 0xA, 2), (3, 0xA, 3), (4, 0xA, 4)][:len(self.client.acks)])
        self.assertGreaterEqual(len(self.client.acks), 3)
        served = len(self.client.acks)
        # the PE goes away without a word
        self.pumps[0].serverIO.loseConnection()
        self.run_for(6)
        acks = self.client.acks
        self.assertEqual([pe for _, pe, _ in acks[served:]], [0xB] * (len(acks) - served))
        # the reply numbers run on without a gap across the two PEs
        self.assertEqual([r for _, _, r in acks], list(range(1, len(acks) + 1)))
        self.assertEqual(self.successResultOf(self.client.done), 0)
        self.assertIn("Failover to PE $0000000b (cookie echoed)", self.out.getvalue())
        self.assertNotIn("gap", self.out.getvalue())
        self.assertEqual(self.session.failovers, 1)
