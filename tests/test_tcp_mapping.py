"""
Tests of the TCP mapping: plain ASAP/ENRP framing (L{MessageStreamProtocol})
and the multiplexed control+data framing with its heartbeat
(L{rserpool.transport.mux}, L{MultiplexProtocol}); see
``doc/tcp-mapping.rst``.
"""
import struct

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from rserpool.transport import mux
from rserpool.interfaces import IMessageConnection, NotAvailable, normalize_address
from rserpool.transport.tcp import MessageStreamFactory, MessageStreamProtocol, MultiplexProtocol
from rserpool.wire import EndpointKeepAliveAck, ListRequest, TCPTransport, encode

from tests.helpers import Recorder


def connected(receiver, protocol="asap", host="192.0.2.5"):
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "192.0.2.1", 3863),
        peerAddress=IPv4Address("TCP", host, 4000),
    )
    p = MessageStreamProtocol(receiver, protocol)
    p.makeConnection(transport)
    return p, transport


class MessageStreamTests(unittest.TestCase):
    def test_interface(self):
        p, _ = connected(Recorder())
        verifyObject(IMessageConnection, p)
        self.assertEqual(p.peer, (normalize_address("192.0.2.5"), 4000))
        self.assertEqual(p.peer_transport, TCPTransport(4000, ("192.0.2.5",)))
        self.assertEqual(p.mapping, "tcp")

    def test_not_available(self):
        """
        Services draft section 5.2.3: what TCP cannot tell is reported as
        not available, not faked.
        """
        p, _ = connected(Recorder())
        for method in (p.rtt, p.rto, p.path_mtu):
            e = self.assertRaises(NotAvailable, method)
            self.assertEqual(e.mapping, "tcp")
        self.assertIn("not available over the tcp mapping", str(e))

    def test_messages_delivered_whole(self):
        r = Recorder()
        p, _ = connected(r)
        a = encode(EndpointKeepAliveAck(b"pool", 1))
        b = encode(EndpointKeepAliveAck(b"other pool", 2))
        data = a + b
        p.dataReceived(data[:3])
        p.dataReceived(data[3:len(a) + 5])
        p.dataReceived(data[len(a) + 5:])
        self.assertEqual(
            [e[1] for e in r.events[1:]],
            [EndpointKeepAliveAck(b"pool", 1), EndpointKeepAliveAck(b"other pool", 2)],
        )

    def test_enrp(self):
        r = Recorder()
        p, _ = connected(r, "enrp")
        p.dataReceived(encode(ListRequest(1, 2)))
        self.assertEqual(r.events[-1], ("message", ListRequest(1, 2)))

    def test_bad_message_stream_goes_on(self):
        r = Recorder()
        p, t = connected(r)
        p.dataReceived(b"\x99\x00\x00\x04" + encode(EndpointKeepAliveAck(b"p", 1)))
        self.assertEqual(r.events[1][0], "error")
        self.assertEqual(r.events[2], ("message", EndpointKeepAliveAck(b"p", 1)))
        self.assertFalse(t.disconnecting)

    def test_framing_lost(self):
        r = Recorder()
        p, t = connected(r)
        p.dataReceived(b"\x01\x00\x00\x03" + encode(EndpointKeepAliveAck(b"p", 1)))
        self.assertEqual([e[0] for e in r.events], ["made", "error", "lost"])
        self.assertTrue(t.disconnecting)
        p.dataReceived(b"more")
        p.connectionLost(None)
        self.assertEqual(len(r.events), 3)

    def test_send(self):
        p, t = connected(Recorder())
        p.send(EndpointKeepAliveAck(b"p", 1))
        p.send_encoded(b"abcd")
        self.assertEqual(t.value(), encode(EndpointKeepAliveAck(b"p", 1)) + b"abcd")
        p.close()
        p.send(EndpointKeepAliveAck(b"p", 1))
        self.assertEqual(len(t.value()), 24)

    def test_factory(self):
        r = Recorder()
        f = MessageStreamFactory(r, "enrp")
        p = f.buildProtocol(None)
        self.assertEqual(p.protocol, "enrp")
        self.assertIs(p.receiver, r)


class MuxCodecTests(unittest.TestCase):
    """
    The multiplexed framing, byte by byte as doc/tcp-mapping.rst says.
    """

    def test_data_frame_layout(self):
        c = mux.MuxConnection(0.0)
        c.send(b"hello", ppid=11, stream=3, unordered=True)
        self.assertEqual(
            c.data_to_send(),
            b"\xa0\x01\x00\x03" b"\x00\x00\x00\x05" b"\x00\x00\x00\x0b" b"hello",
        )
        self.assertEqual(c.data_to_send(), b"")

    def test_round_trip(self):
        a = mux.MuxConnection(0.0)
        b = mux.MuxConnection(0.0)
        a.send(b"data", ppid=0)
        a.send_control(encode(EndpointKeepAliveAck(b"p", 1)))
        a.send(b"", ppid=99, stream=65535)
        wire = a.data_to_send()
        events = []
        for i in range(len(wire)):
            events += b.receive(wire[i : i + 1], 1.0)
        self.assertEqual(
            events,
            [
                mux.DataReceived(b"data", 0),
                mux.DataReceived(encode(EndpointKeepAliveAck(b"p", 1)), 11),
                mux.DataReceived(b"", 99, 65535),
            ],
        )
        self.assertFalse(events[0].is_control)
        self.assertTrue(events[1].is_control)

    def test_heartbeat(self):
        """
        A heartbeat goes out every interval; the peer echoes it; the ack
        gives an RTT sample.
        """
        a = mux.MuxConnection(0.0, interval=10.0)
        b = mux.MuxConnection(0.0, interval=None)
        self.assertRaises(NotAvailable, a.rtt)
        self.assertEqual(a.next_deadline, 10.0)
        self.assertEqual(a.timer(10.0), [])
        hb = a.data_to_send()
        self.assertEqual(hb, b"\xa1\x00\x00\x00\x00\x00\x00\x08\x00\x00\x00\x00" + struct.pack("!Q", 1))
        self.assertEqual(b.receive(hb, 10.1), [])
        ack = b.data_to_send()
        self.assertEqual(ack[:1], b"\xa2")
        self.assertEqual(ack[12:], hb[12:])
        self.assertEqual(a.receive(ack, 10.25), [mux.HeartbeatAcknowledged(0.25)])
        self.assertAlmostEqual(a.rtt(), 0.25)
        self.assertEqual(a.next_deadline, 20.0)
        self.assertIsNone(b.next_deadline)

    def test_dead_peer(self):
        a = mux.MuxConnection(0.0, interval=1.0, max_missed=3)
        for t in (1.0, 2.0):
            self.assertEqual(a.timer(t), [])
        self.assertEqual(a.next_deadline, 3.0)
        self.assertEqual(a.timer(3.0), [mux.ConnectionDead(3.0)])
        self.assertTrue(a.dead)
        self.assertIsNone(a.next_deadline)
        self.assertEqual(a.timer(4.0), [])

    def test_any_frame_shows_life(self):
        a = mux.MuxConnection(0.0, interval=1.0, max_missed=3)
        b = mux.MuxConnection(0.0, interval=None)
        b.send(b"x")
        a.timer(1.0)
        a.timer(2.0)
        a.receive(b.data_to_send(), 2.5)
        self.assertEqual(a.timer(3.0), [])
        self.assertEqual(a.next_deadline, 4.0)

    def test_unknown_frame_type(self):
        """
        A plain ASAP message on a multiplexed connection is caught at its
        first byte.
        """
        c = mux.MuxConnection(0.0)
        self.assertRaises(
            mux.MuxFramingError, c.receive, encode(EndpointKeepAliveAck(b"pool", 1)) + b"\0" * 8, 0.0
        )
        self.assertRaises(mux.MuxFramingError, c.receive, b"", 0.0)

    def test_oversize(self):
        c = mux.MuxConnection(0.0, max_payload=10)
        self.assertRaises(
            mux.MuxFramingError, c.receive, mux.encode_frame(mux.DATA, b"x" * 11), 0.0
        )

    def test_bad_heartbeat(self):
        c = mux.MuxConnection(0.0)
        self.assertRaises(
            mux.MuxFramingError, c.receive, mux.encode_frame(mux.HEARTBEAT, b"x"), 0.0
        )

    def test_unsolicited_ack_ignored(self):
        c = mux.MuxConnection(0.0)
        self.assertEqual(c.receive(mux.encode_frame(mux.HEARTBEAT_ACK, b"\0" * 8), 0.0), [])

    def test_not_available(self):
        c = mux.MuxConnection(0.0)
        for method in (c.rto, c.path_mtu):
            self.assertRaises(NotAvailable, method)
        self.assertRaises(NotAvailable, c.set_lifetime, 1.0)
        self.assertFalse(c.streams_independent)
        self.assertFalse(c.unordered_delivery)

    def test_bad_send(self):
        c = mux.MuxConnection(0.0)
        self.assertRaises(ValueError, c.send, b"", stream=70000)


class MultiplexProtocolTests(unittest.TestCase):
    """
    L{MultiplexProtocol} in memory, time from a L{task.Clock}.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.got = {"server": [], "client": []}
        self.dead = []
        self.server = MultiplexProtocol(
            self.clock, self.got["server"].append, lambda: self.dead.append("server"), interval=5.0
        )
        self.client = MultiplexProtocol(
            self.clock, self.got["client"].append, lambda: self.dead.append("client"), interval=5.0
        )
        self.server_t = iosim.FakeTransport(self.server, isServer=True)
        self.client_t = iosim.FakeTransport(self.client, isServer=False)
        self.pump = iosim.connect(self.server, self.server_t, self.client, self.client_t)

    def test_exchange(self):
        self.client.send(b"request", ppid=0)
        self.client.send(encode(EndpointKeepAliveAck(b"p", 1)), ppid=11)
        self.pump.flush()
        self.assertEqual([e.payload for e in self.got["server"]][0], b"request")
        self.assertTrue(self.got["server"][1].is_control)

    def test_heartbeats_keep_alive(self):
        for _ in range(10):
            self.clock.advance(5.0)
            self.pump.flush()
        self.assertEqual(self.dead, [])
        self.assertGreaterEqual(self.client.connection.rtt(), 0.0)

    def test_silent_peer(self):
        self.clock.advance(5.0)
        # Nothing is pumped: the peer looks silent.
        self.clock.advance(5.0)
        self.clock.advance(5.0)
        self.assertEqual(sorted(self.dead), ["client", "server"])
        self.assertTrue(self.client_t.disconnecting)

    def test_garbage(self):
        self.server.dataReceived(b"\x01\x00\x00\x08" + b"\0" * 12)
        self.assertTrue(self.server_t.disconnecting)


class LoopbackTests(unittest.TestCase):
    """
    The multiplexed framing over real loopback TCP.
    """

    @defer.inlineCallbacks
    def test_loopback(self):
        got = []
        done = defer.Deferred()

        def on_message(event):
            got.append(event)
            if len(got) == 2:
                done.callback(None)

        server_factory = protocol.Factory.forProtocol(
            lambda: MultiplexProtocol(reactor, on_message, interval=0.05)
        )
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server_factory)
        self.addCleanup(port.stopListening)
        client = MultiplexProtocol(reactor, lambda e: None, interval=0.05)
        from twisted.internet.endpoints import connectProtocol

        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        self.addCleanup(client.transport.loseConnection)
        client.send(b"x" * 100000, ppid=0, stream=1)
        client.send(b"control", ppid=11)
        yield done
        self.assertEqual(len(got[0].payload), 100000)
        self.assertEqual(got[1].payload, b"control")
        # Wait for a heartbeat round trip on the real clock.
        while True:
            try:
                client.connection.rtt()
                break
            except NotAvailable:
                d = defer.Deferred()
                reactor.callLater(0.02, d.callback, None)
                yield d
        self.assertLess(client.connection.rtt(), 1.0)
