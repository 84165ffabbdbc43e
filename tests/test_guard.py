"""
Bounded state for every peer of a registrar (L{rserpool.transport.guard}):
deadlines, a bounded write buffer and connections per source, first with
a L{Clock} and a L{StringTransport}, then against a registrar on loopback
with a client that never reads (RFC 5355 section 3: a registrar survives
a flood).
"""
import ipaddress
import socket

from twisted.internet import defer, reactor, task
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface import implementer

from rserpool.codes import PolicyType
from rserpool.limits import principal
from rserpool.registrar import RegistrarService, make_config
from rserpool.interfaces import IMessageReceiver
from rserpool.transport.guard import ConnectionBudget, ConnectionLimits
from rserpool.transport.tcp import MessageStreamFactory
from rserpool.wire import (
    HandleResolution,
    Policy,
    PoolElement,
    Registration,
    TCPTransport,
    encode,
)

H = b"EchoPool"
RESOLUTION = encode(HandleResolution(H))


@implementer(IMessageReceiver)
class Recorder:
    def __init__(self):
        self.messages = []
        self.lost = []

    def connection_made(self, connection):
        pass

    def message_received(self, connection, message):
        self.messages.append(message)

    def protocol_error(self, connection, error):
        self.messages.append(error)

    def connection_lost(self, connection):
        self.lost.append(connection)


class Address:
    def __init__(self, host, port=40000):
        self.host = host
        self.port = port
        self.type = "TCP"

    def __eq__(self, other):
        return (self.host, self.port) == (other.host, other.port)


class Peer(StringTransport):
    def __init__(self, host="192.0.2.7"):
        StringTransport.__init__(self, peerAddress=Address(host),
                                 hostAddress=Address("192.0.2.1", 3863))
        self.aborted = False

    def abortConnection(self):
        self.aborted = True
        StringTransport.abortConnection(self)


class GuardTests(unittest.TestCase):
    def connect(self, host="192.0.2.7", **limits):
        self.clock = task.Clock()
        self.receiver = Recorder()
        limits = ConnectionLimits(**limits)
        self.factory = MessageStreamFactory(
            self.receiver, "asap", limits=limits, clock=self.clock,
            budget=ConnectionBudget(limits, total=100))
        protocol = self.factory.buildProtocol(Address(host))
        transport = Peer(host)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_first_message_deadline(self):
        # A connection that never sends a whole message is closed.
        protocol, transport = self.connect(first_message=10)
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.receiver.lost, [protocol])

    def test_header_without_body(self):
        # A header announcing 0xFFFF bytes, then 100 bytes: the message
        # must be complete within the message deadline, whatever the idle
        # timeout.
        protocol, transport = self.connect(message=10, idle=600)
        protocol.dataReceived(RESOLUTION)
        self.clock.advance(5)
        protocol.dataReceived(b"\x05\x00\xff\xff" + b"x" * 100)
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_completed_message_cancels_the_partial_deadline(self):
        protocol, transport = self.connect(message=10, idle=600)
        protocol.dataReceived(RESOLUTION[:3])
        self.clock.advance(8)
        protocol.dataReceived(RESOLUTION[3:])
        self.clock.advance(100)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.receiver.messages, [HandleResolution(H)])

    def test_idle(self):
        protocol, transport = self.connect(idle=600)
        protocol.dataReceived(RESOLUTION)
        for _ in range(5):
            self.clock.advance(500)
            protocol.dataReceived(RESOLUTION)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(600)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)

    def test_stop_reading_while_the_peer_does_not(self):
        # Our answers pile up (the transport pauses its producer): read
        # nothing more, keep what was read, go on when the peer reads.
        protocol, transport = self.connect()
        self.assertIs(transport.producer, protocol.guard)
        protocol.dataReceived(RESOLUTION)
        transport.producer.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        protocol.dataReceived(RESOLUTION * 3)
        self.assertEqual(len(self.receiver.messages), 1)
        transport.producer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(self.receiver.messages), 4)

    def test_paused_midway(self):
        # A pause while a read's messages are handled keeps the rest.
        protocol, transport = self.connect()

        def pause_on_second(connection, message):
            self.receiver.messages.append(message)
            if len(self.receiver.messages) == 2:
                transport.producer.pauseProducing()

        self.receiver.message_received = pause_on_second
        protocol.dataReceived(RESOLUTION * 5)
        self.assertEqual(len(self.receiver.messages), 2)
        transport.producer.resumeProducing()
        self.assertEqual(len(self.receiver.messages), 5)

    def test_output_limit(self):
        protocol, transport = self.connect(output_buffer=1000)
        transport.producer.pauseProducing()
        big = encode(HandleResolution(b"x" * 400))
        protocol.send_encoded(big)
        protocol.send_encoded(big)
        self.assertFalse(transport.disconnecting)
        protocol.send_encoded(big)
        self.assertTrue(transport.aborted)
        self.assertEqual(self.receiver.lost, [protocol])

    def test_stalled(self):
        protocol, transport = self.connect(stalled=60, idle=600)
        protocol.dataReceived(RESOLUTION)
        transport.producer.pauseProducing()
        self.clock.advance(59)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.aborted)

    def test_resume_cancels_stall(self):
        protocol, transport = self.connect(stalled=60, idle=600)
        protocol.dataReceived(RESOLUTION)
        transport.producer.pauseProducing()
        self.clock.advance(30)
        transport.producer.resumeProducing()
        self.clock.advance(100)
        self.assertFalse(transport.disconnecting)

    def test_close_lets_go_of_the_transport(self):
        # TLS shuts down only once no producer is registered.
        protocol, transport = self.connect()
        protocol.close()
        self.assertIsNone(transport.producer)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_per_source(self):
        self.connect(per_source=2)
        self.factory.buildProtocol(Address("192.0.2.7")).makeConnection(Peer())
        self.assertIsNone(self.factory.buildProtocol(Address("192.0.2.7")))
        self.assertIsNotNone(self.factory.buildProtocol(Address("192.0.2.8")))
        self.assertEqual(self.factory.refusals.totals["ASAP connection"], 1)

    def test_released_when_gone(self):
        protocol, transport = self.connect(per_source=1)
        self.assertIsNone(self.factory.buildProtocol(Address("192.0.2.7")))
        protocol.connectionLost(None)
        self.assertIsNotNone(self.factory.buildProtocol(Address("192.0.2.7")))

    def test_ipv6_prefix(self):
        # One host owns a whole /64.
        self.connect(host="2001:db8::1", per_source=1)
        self.assertIsNone(self.factory.buildProtocol(Address("2001:db8::2")))
        self.assertIsNotNone(self.factory.buildProtocol(Address("2001:db8:0:1::2")))


class BudgetTests(unittest.TestCase):
    def test_reserve(self):
        # The last `reserve` connections are for the ENRP listener.
        budget = ConnectionBudget(ConnectionLimits(per_source=None, reserve=2), total=5)
        keys = [principal(None, ipaddress.ip_address("192.0.2.%d" % i)) for i in range(1, 8)]
        self.assertEqual([budget.admit(k) for k in keys[:4]], [None, None, None, "total"])
        self.assertIsNone(budget.admit(keys[4], reserved=True))
        self.assertIsNone(budget.admit(keys[5], reserved=True))
        self.assertEqual(budget.admit(keys[6], reserved=True), "total")
        budget.release(keys[0])
        self.assertEqual(budget.admit(keys[6]), "total")
        self.assertIsNone(budget.admit(keys[6], reserved=True))


def pe(n):
    return PoolElement(n, 0, 60000, TCPTransport(1000 + n % 50000, ("127.0.0.1",)),
                       Policy.make(PolicyType.ROUND_ROBIN))


class SlowReaderTests(unittest.TestCase):
    """
    A pool user that sends handle resolutions and never reads the answers
    (the issue's tester grew a registrar to 3 GB that way).
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_slow_reader(self):
        limits = ConnectionLimits(output_buffer=256 * 1024, stalled=2.0)
        registrar = RegistrarService(
            make_config(min_address_scope=0, max_hr_items=128),
            asap_endpoints=["tcp:0:interface=127.0.0.1"], connection_limits=limits)
        registrar.startService()
        self.addCleanup(registrar.stopService)
        (port,) = yield registrar.ready
        address = ("127.0.0.1", port.getHost().port)
        # 128 PEs: each answer is about 5 KB.
        loader = socket.create_connection(address)
        self.addCleanup(loader.close)
        loader.sendall(b"".join(encode(Registration(H, pe(n))) for n in range(1, 129)))
        for _ in range(200):
            if len(registrar.registrar.handlespace) == 128:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(len(registrar.registrar.handlespace), 128)

        handled = []
        original = registrar.registrar.message_received

        def count(conn, message, now):
            if isinstance(message, HandleResolution):
                handled.append(conn)
            return original(conn, message, now)

        registrar.registrar.message_received = count
        attacker = socket.create_connection(address)
        self.addCleanup(attacker.close)
        attacker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        attacker.setblocking(False)
        sent = 0
        # 20 MB of requests (4 GB of answers), offered as fast as the
        # registrar takes them; it stops taking them.
        for _ in range(2000):
            try:
                sent += attacker.send(RESOLUTION * 4096)
            except BlockingIOError:
                yield task.deferLater(reactor, 0.002, lambda: None)
            except OSError:
                break
            if sent >= 20 * 1024 * 1024:
                break
        # It is aborted within the stall deadline, and meanwhile handled
        # requests only while it had room: a few MB of answers at most
        # (kernel buffers plus our 256 KiB), not 4 GB.
        for _ in range(400):
            if not [c for c in registrar.registrar.connections if c.peer[1] ==
                    attacker.getsockname()[1]]:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        mine = [c for c in registrar.registrar.connections
                if c.peer[1] == attacker.getsockname()[1]]
        self.assertEqual(mine, [])
        self.assertLess(len(handled) * 5200, 16 * 1024 * 1024)
        self.assertLess(sent, 20 * 1024 * 1024)
        # The registrar still serves everyone else.
        self.assertEqual(len(registrar.registrar.handlespace), 128)
