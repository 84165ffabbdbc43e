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
from rserpool.services import RegistrarService, make_config
from rserpool.interfaces import IMessageReceiver
from rserpool.transport.guard import (
    ACCEPTS_PER_READ,
    ConnectionBudget,
    ConnectionLimits,
    limit_accepts,
    with_backlog,
)
from rserpool.transport.tcp import MessageStreamFactory
from rserpool.wire import (
    HandleResolution,
    Policy,
    PoolElement,
    Registration,
    TCPTransport,
    encode,
)

from tests.helpers import eventually

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


    def test_full_closes_a_connection_of_the_biggest_source(self):
        # RFC 5355 section 3 (a flood of connections): when every
        # connection is taken, a source with fewer gets one; the source
        # that holds most loses its oldest silent connection for it.
        budget = ConnectionBudget(ConnectionLimits(per_source=None, reserve=0), total=4)
        flooder, other, newcomer = (principal(None, ipaddress.ip_address(a))
                                    for a in ("192.0.2.1", "192.0.2.2", "192.0.2.3"))
        held = []
        for key, silent in ((flooder, False), (flooder, True), (flooder, True), (other, True)):
            self.assertIsNone(budget.admit(key))
            connection = Member(silent)
            budget.attach(key, connection)
            held.append(connection)
        self.assertIsNone(budget.admit(newcomer))
        budget.attach(newcomer, Member(True))
        # The flooder's oldest silent one went, not its talking one.
        self.assertEqual([c.evicted for c in held], [False, True, False, False])
        self.assertEqual((budget.open, budget.count(flooder), budget.refused["evicted"]), (4, 2, 1))
        # Shares only come closer: the flooder (2) against a source with 1
        # gets nothing more; a source with none makes it lose its other
        # silent one; then all hold one each, and a fifth source waits.
        self.assertEqual(budget.admit(flooder), "total")
        self.assertIsNone(budget.admit(principal(None, ipaddress.ip_address("192.0.2.4"))))
        self.assertEqual([c.evicted for c in held], [False, True, True, False])
        self.assertEqual(budget.admit(principal(None, ipaddress.ip_address("192.0.2.5"))), "total")

    def test_reserve_never_evicted(self):
        # Registrar peers' connections (not attached) are never closed.
        budget = ConnectionBudget(ConnectionLimits(per_source=None, reserve=0), total=2)
        peer = principal(None, ipaddress.ip_address("192.0.2.1"))
        self.assertIsNone(budget.admit(peer, reserved=True))
        self.assertIsNone(budget.admit(peer, reserved=True))
        self.assertEqual(budget.admit(principal(None, ipaddress.ip_address("192.0.2.2"))), "total")

    def test_evicted_connection_is_closed(self):
        # Through the listener: the flooder's silent connection is
        # aborted, and its later connectionLost releases nothing twice.
        clock = task.Clock()
        limits = ConnectionLimits(reserve=0)
        budget = ConnectionBudget(limits, total=2)
        receiver = Recorder()
        factory = MessageStreamFactory(receiver, "asap", limits=limits, clock=clock, budget=budget)
        made = []
        for host in ("192.0.2.7", "192.0.2.7"):
            protocol = factory.buildProtocol(Address(host))
            transport = Peer(host)
            protocol.makeConnection(transport)
            made.append((protocol, transport))
        newcomer = factory.buildProtocol(Address("192.0.2.8"))
        self.assertIsNotNone(newcomer)
        self.assertTrue(made[0][1].aborted)
        self.assertFalse(made[1][1].aborted)
        self.assertEqual(receiver.lost, [made[0][0]])
        made[0][0].connectionLost(None)
        self.assertEqual((budget.open, budget.count(principal(None, ipaddress.ip_address("192.0.2.7")))),
                         (2, 1))


class ListenerTests(unittest.TestCase):
    """
    A flood of new connections (RFC 5355 section 3): the listen queue is
    long, and one look at the listening socket accepts a bounded number.
    """

    def test_backlog_added(self):
        self.assertEqual(with_backlog("tcp:3863:interface=127.0.0.1"),
                         "tcp:3863:interface=127.0.0.1:backlog=1024")
        self.assertEqual(with_backlog("sctp:3863"), "sctp:3863:backlog=1024")
        # One the user gave stays; endpoints without a queue are left.
        self.assertEqual(with_backlog("tcp:3863:backlog=7"), "tcp:3863:backlog=7")
        self.assertEqual(with_backlog("unix:/run/x"), "unix:/run/x")

    def test_registrar_listens_with_backlog(self):
        seen = []
        original = reactor.listenTCP

        def listen(port, factory, backlog=50, interface=""):
            seen.append(backlog)
            return original(port, factory, backlog, interface)

        self.patch(reactor, "listenTCP", listen)
        service = RegistrarService(make_config(server_id=7),
                                   asap_endpoints=["tcp:0:interface=127.0.0.1"])
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(seen, [1024])
        self.assertLessEqual(service.asap_ports[0].numberAccepts, ACCEPTS_PER_READ)

    def test_accepts_per_read(self):
        built = []

        class Factory(MessageStreamFactory):
            def buildProtocol(self, addr):
                built.append(addr)
                return None

        port = reactor.listenTCP(0, Factory(Recorder()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertTrue(limit_accepts(port, 8))
        port.numberAccepts = 500
        clients = []
        for _ in range(20):
            s = socket.socket()
            self.addCleanup(s.close)
            s.connect(("127.0.0.1", port.getHost().port))
            clients.append(s)
        port.doRead()
        self.assertEqual(len(built), 8)
        port.doRead()
        self.assertEqual(len(built), 16)


class Member:
    def __init__(self, silent):
        self.budget_silent = silent
        self.evicted = False

    def budget_evict(self):
        self.evicted = True


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
        yield eventually(lambda: len(registrar.registrar.handlespace) == 128,
                         "the 128 registrations", step=0.01)

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
        port = attacker.getsockname()[1]

        def offer():
            # 20 MB of requests (4 GB of answers), offered as fast as the
            # registrar takes them: true once it refuses the connection
            # (reset) or took them all.
            nonlocal sent
            while sent < 20 * 1024 * 1024:
                try:
                    sent += attacker.send(RESOLUTION * 4096)
                except BlockingIOError:
                    return False
                except OSError:
                    return True
            return True

        # It stops taking them ...
        yield eventually(offer, "the registrar to stop taking the requests", step=0.002)
        # ... and is aborted within the stall deadline, and meanwhile
        # handled requests only while it had room: a few MB of answers at
        # most (kernel buffers plus our 256 KiB), not 4 GB.
        yield eventually(lambda: not [c for c in registrar.registrar.connections
                                      if c.peer[1] == port], "the attacker's connection to go")
        self.assertLess(len(handled) * 5200, 16 * 1024 * 1024)
        self.assertLess(sent, 20 * 1024 * 1024)
        # The registrar still serves everyone else.
        self.assertEqual(len(registrar.registrar.handlespace), 128)
