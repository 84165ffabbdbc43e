"""
Tests for the example services: each one over a L{StringTransport} with a
L{task.Clock}, and the resumable transfer failing over mid-stream in
Enhanced Mode (byte-exact after its PE is killed).
"""
from twisted.internet import defer, reactor, task
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from rserpool.examples import SERVICES, chargen, daytime, server_factory, transfer
from rserpool.pe import PoolElementService
from rserpool.pu import PoolClientEndpoint, PoolUser

from tests.helpers import eventually, loopback_registrar, running


def connect(name, clock, **options):
    protocol = server_factory(name, clock=clock, **options).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class ServiceTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()

    def test_registry(self):
        self.assertEqual(sorted(SERVICES), ["chargen", "daytime", "discard", "echo", "pingpong", "transfer"])

    def test_echo(self):
        p, t = connect("echo", self.clock)
        p.dataReceived(b"abc")
        self.assertEqual(t.value(), b"abc")

    def test_discard(self):
        p, t = connect("discard", self.clock)
        p.dataReceived(b"abc")
        self.assertEqual(t.value(), b"")
        self.assertEqual(p.received, 3)

    def test_daytime(self):
        self.clock.advance(383189863)  # RFC 867's example moment, near enough
        p, t = connect("daytime", self.clock)
        self.assertEqual(t.value(), daytime.daytime_line(383189863))
        self.assertTrue(t.value().endswith(b"-UTC\r\n"))
        self.assertTrue(t.disconnecting)

    def test_chargen(self):
        p, t = connect("chargen", self.clock, lines=2, interval=1.0)
        self.assertEqual(t.value(), chargen.line(0) + chargen.line(1))
        self.assertEqual(len(chargen.line(0)), 74)
        self.assertEqual(chargen.line(1)[0:1], b"!")
        t.clear()
        self.clock.advance(1.0)
        self.assertEqual(t.value(), chargen.line(2) + chargen.line(3))
        p.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_transfer_cookie(self):
        cookie = transfer.make_cookie(b"k", b"file")
        self.assertEqual(transfer.open_cookie(b"k", cookie), b"file")
        self.assertIsNone(transfer.open_cookie(b"other", cookie))
        self.assertIsNone(transfer.open_cookie(b"k", cookie[:-1] + b"X"))

    def test_transfer_server_basic(self):
        p, t = connect("transfer", self.clock, chunk_size=10)
        p.dataReceived(b"GET pattern-25 5")
        self.assertEqual(t.value()[:1], b"D")
        self.assertIn(transfer.pattern(25, 5, 10), t.value())

    def test_transfer_refuses_paths(self):
        p, t = connect("transfer", self.clock)
        p.dataReceived(b"GET ../etc/passwd 0")
        self.assertTrue(t.value().startswith(b"ERR"))


def crash(pe):
    """
    Kill an in-process PE as abruptly as a process kill: drop its sessions,
    its port and its registrar connection without deregistering.
    """
    for session in list(pe.session_factory.sessions):
        session.link.transport.abortConnection()
    pe.port.stopListening()
    # The dead process would not hunt for another registrar.
    pe.machine.connection_lost = lambda *args: None
    for connection in list(pe.driver.connections):
        connection.transport.abortConnection()
    pe.driver.stop()
    pe.running = False


class TransferFailoverTests(unittest.TestCase):
    """
    The services draft's file transfer (section 4.5.2), in process.
    """

    @defer.inlineCallbacks
    def test_byte_exact_after_pe_killed(self):
        registrar, endpoint = yield loopback_registrar(self)
        pes = []
        for _ in range(3):
            pe = running(self, PoolElementService(
                b"TransferPool",
                server_factory("transfer", chunk_size=1024, chunk_delay=0.01),
                registrars=[endpoint], enhanced=True))
            pes.append(pe)
            yield pe.registered
        pu = PoolUser(reactor, registrars=[endpoint])
        self.addCleanup(pu.close)
        factory = transfer.TransferClientFactory("pattern-150000")
        client = yield PoolClientEndpoint(reactor, pu, b"TransferPool").connect(factory)
        session = client.transport._session
        killed = []
        yield eventually(lambda: len(factory.client.received) > 40000,
                         "40,000 bytes of the transfer", step=0.01)
        victim = [pe for pe in pes if pe.identifier == session.pe.identifier][0]
        killed.append(len(factory.client.received))
        crash(victim)
        data = yield factory.done
        self.assertLess(killed[0], 150000)
        self.assertEqual(data, transfer.pattern(150000))
        self.assertEqual(client.failovers, 1)
        self.assertEqual(client.transport.failovers, 1)
        self.assertEqual(len(set(session.history)), 2)
        yield eventually(lambda: session.link is None, "the session to close")
