"""
Basic Mode (draft-ietf-rserpool-service section 3.2, RFC 5354 transport
parameters with transport use "data only") end to end: a pool element's
own application port registered at a real registrar on loopback, a pool
user resolving the pool and talking to the application directly.

  - UDP: an echo C{DatagramProtocol} from C{reactor.listenUDP}, registered
    with C{port=}; the pool user gets a UDP Transport parameter, sends a
    datagram and gets it back; C{rserpool resolve} prints C{udp}.  Runs
    everywhere.
  - SCTP: an echo application on an C{sctp:} server endpoint, registered
    with an SCTP Transport parameter; the pool user connects with an
    C{sctp:host=...:port=...} client endpoint (by hand and through
    L{PoolClientEndpoint}).  Needs kernel SCTP; run in the guest::

        ../shared/tools/sctp-vm python3 -m twisted.trial tests.test_basic_mode
"""
import ipaddress

from twisted.internet import defer, reactor
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.trial import unittest

from rserpool.pe import PoolElementService
from rserpool.pu import PoolClientEndpoint, PoolUser
from rserpool.services import RegistrarService, make_config
from rserpool.transport import sctp
from rserpool.conformance.client import connect
from rserpool.wire import (
    DATA_ONLY,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    Registration,
    SCTPTransport,
    UDPTransport,
)
from tests.test_cli_pool import spawn

SKIP_REASON = "kernel has no SCTP (run under ../shared/tools/sctp-vm)"
_UNAVAILABLE = sctp.sctpAvailable()

LOOPBACK = ipaddress.ip_address("127.0.0.1")
WAIT = 10  # seconds: the bound of every wait on the network


class UDPEcho(DatagramProtocol):
    def datagramReceived(self, data, addr):
        self.transport.write(data, addr)


class UDPClient(DatagramProtocol):
    """
    Sends datagrams; C{reply()} fires with the next one received.
    """

    def __init__(self):
        self.waiting = []

    def datagramReceived(self, data, addr):
        if self.waiting:
            self.waiting.pop(0).callback((data, addr))

    def reply(self):
        d = defer.Deferred()
        self.waiting.append(d)
        return d.addTimeout(WAIT, reactor)


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Client(Protocol):
    """
    Collects what it receives; C{expect(n)} fires once C{n} bytes came.
    """

    def __init__(self):
        self.received = b""
        self.waiting = None

    def dataReceived(self, data):
        self.received += data
        self._check()

    def expect(self, n):
        self.waiting = (n, defer.Deferred())
        d = self.waiting[1]
        self._check()
        return d.addTimeout(WAIT, reactor)

    def _check(self):
        if self.waiting is not None and len(self.received) >= self.waiting[0]:
            d, self.waiting = self.waiting[1], None
            d.callback(self.received)


class BasicModeMixin:
    timeout = 30

    @defer.inlineCallbacks
    def start_registrar(self):
        self.registrar = RegistrarService(
            make_config(), asap_endpoints=["tcp:0:interface=127.0.0.1"])
        self.registrar.startService()
        ports = yield self.registrar.ready
        self.addCleanup(self.registrar.stopService)
        self.asap = "tcp:127.0.0.1:%d" % ports[0].getHost().port

    @defer.inlineCallbacks
    def start_pe(self, handle, **kw):
        pe = PoolElementService(handle, registrars=[self.asap], **kw)
        pe.startService()
        self.addCleanup(lambda: pe.running and pe.stopService())
        yield pe.registered.addTimeout(WAIT, reactor)
        return pe

    def pool_user(self):
        pu = PoolUser(reactor, registrars=[self.asap])
        self.addCleanup(pu.close)
        return pu


class UDPBasicModeTests(BasicModeMixin, unittest.TestCase):
    """
    A UDP echo pool element (C{port=reactor.listenUDP(...)}) and a pool
    user over loopback.
    """

    @defer.inlineCallbacks
    def setUp(self):
        yield self.start_registrar()
        self.udp = reactor.listenUDP(0, UDPEcho(), interface="127.0.0.1")
        self.addCleanup(self.udp.stopListening)
        self.udp_port = self.udp.getHost().port

    @defer.inlineCallbacks
    def test_registered_as_udp(self):
        """
        The registrar stores a UDP Transport parameter with the echo's
        address and port, whether the protocol comes from the port's
        address or from C{protocol="udp"}.
        """
        pe = yield self.start_pe(b"UDPEchoPool", port=self.udp)
        stored = self.registrar.registrar.handlespace.get(b"UDPEchoPool", pe.identifier)
        self.assertEqual(stored.user_transport.wire,
                         UDPTransport(self.udp_port, (LOOPBACK,)))
        other = reactor.listenUDP(0, UDPEcho(), interface="127.0.0.1")
        self.addCleanup(other.stopListening)
        pe2 = yield self.start_pe(b"UDPEchoPool", port=other, protocol="udp")
        stored = self.registrar.registrar.handlespace.get(b"UDPEchoPool", pe2.identifier)
        self.assertEqual(stored.user_transport.wire,
                         UDPTransport(other.getHost().port, (LOOPBACK,)))

    @defer.inlineCallbacks
    def test_resolve_and_echo(self):
        """
        The pool user resolves the pool to C{udp 127.0.0.1:PORT}, sends a
        datagram there and gets the echo back from that address.
        """
        pe = yield self.start_pe(b"UDPEchoPool", port=self.udp)
        pu = self.pool_user()
        infos = yield pu.resolve(b"UDPEchoPool")
        self.assertEqual([i.identifier for i in infos], [pe.identifier])
        info = infos[0]
        self.assertEqual((info.protocol, info.address, info.port, info.control_channel),
                         ("udp", LOOPBACK, self.udp_port, False))
        self.assertEqual(str(info).split()[1:3], ["udp", "127.0.0.1:%d" % self.udp_port])

        primary = yield pu.get_primary_server(b"UDPEchoPool")
        self.assertEqual(primary.identifier, pe.identifier)
        client = UDPClient()
        port = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        reply = client.reply()
        port.write(b"hello, pool", (str(primary.address), primary.port))
        data, addr = yield reply
        self.assertEqual((data, addr), (b"hello, pool", ("127.0.0.1", self.udp_port)))

    @defer.inlineCallbacks
    def test_deregistered_on_stop(self):
        """
        Stopping the service deregisters the PE and leaves the caller's
        UDP port open.
        """
        pe = yield self.start_pe(b"UDPEchoPool", port=self.udp)
        confirmed = yield pe.stopService()
        self.assertTrue(confirmed)
        self.assertIsNone(self.registrar.registrar.handlespace.get(b"UDPEchoPool", pe.identifier))
        self.assertTrue(self.udp.connected)

    @defer.inlineCallbacks
    def test_cli_resolve_prints_udp(self):
        """
        C{rserpool resolve} prints the PE with protocol C{udp}.
        """
        pe = yield self.start_pe(b"UDPEchoPool", port=self.udp)
        resolve = spawn(self, "resolve", "UDPEchoPool", "--registrar", self.asap)
        code = yield resolve.ended.addTimeout(20, reactor)
        self.assertEqual(code, 0, resolve.err)
        self.assertEqual(resolve.out.decode(),
                         "%08x udp 127.0.0.1:%d RoundRobin\n" % (pe.identifier, self.udp_port))


class SCTPBasicModeTests(BasicModeMixin, unittest.TestCase):
    """
    An SCTP echo pool element (C{sctp:} server endpoint) and a pool user
    connecting with an C{sctp:} client endpoint; kernel SCTP only.
    """

    @defer.inlineCallbacks
    def setUp(self):
        if _UNAVAILABLE is not None:
            raise unittest.SkipTest(SKIP_REASON)
        yield self.start_registrar()
        self.pe = yield self.start_pe(b"SCTPEchoPool", factory=Factory.forProtocol(Echo),
                                      endpoint="sctp:0:interface=127.0.0.1")
        self.sctp_port = self.pe.port.getHost().port
        self.clients = []

    def tearDown(self):
        for p in self.clients:
            if p.transport is not None and p.transport.connected:
                p.transport.abortConnection()

    @defer.inlineCallbacks
    def test_registered_as_sctp(self):
        """
        The registrar stores an SCTP Transport parameter, "data only", with
        the application's address and port.
        """
        stored = self.registrar.registrar.handlespace.get(b"SCTPEchoPool", self.pe.identifier)
        self.assertEqual(stored.user_transport.wire,
                         SCTPTransport(self.sctp_port, (LOOPBACK,), DATA_ONLY))
        pu = self.pool_user()
        infos = yield pu.resolve(b"SCTPEchoPool")
        self.assertEqual(str(infos[0]).split()[1:3], ["sctp", "127.0.0.1:%d" % self.sctp_port])

    @defer.inlineCallbacks
    def test_resolve_connect_exchange(self):
        """
        The pool user resolves the pool, connects to the PE with an
        C{sctp:host=...:port=...} client endpoint and exchanges messages
        (boundaries kept: one C{dataReceived} per message).
        """
        pu = self.pool_user()
        info = yield pu.get_primary_server(b"SCTPEchoPool")
        self.assertEqual((info.protocol, info.address, info.port), ("sctp", LOOPBACK, self.sctp_port))
        description = info.endpoint_description()
        self.assertEqual(description, "sctp:host=127.0.0.1:port=%d" % self.sctp_port)
        client = yield clientFromString(reactor, description).connect(
            Factory.forProtocol(Client)).addTimeout(WAIT, reactor)
        self.clients.append(client)
        self.assertEqual(client.transport.getPeer().type, "SCTP")
        client.transport.write(b"one")
        yield client.expect(3)
        client.transport.write(b"two!")
        received = yield client.expect(7)
        self.assertEqual(received, b"onetwo!")

    @defer.inlineCallbacks
    def test_pool_client_endpoint(self):
        """
        L{PoolClientEndpoint} (mode auto) sees "data only" and connects in
        Basic Mode: a plain SCTP association to the PE.
        """
        pu = self.pool_user()
        endpoint = PoolClientEndpoint(reactor, pu, b"SCTPEchoPool", timeout=5)
        client = yield endpoint.connect(Factory.forProtocol(Client)).addTimeout(WAIT, reactor)
        self.clients.append(client)
        self.assertEqual(client.pool_element.identifier, self.pe.identifier)
        self.assertIsInstance(client.transport, sctp.SCTPConnection)
        client.transport.write(b"basic")
        received = yield client.expect(5)
        self.assertEqual(received, b"basic")


class SCTPRegistrarTakeoverTests(BasicModeMixin, unittest.TestCase):
    """
    A PE with an SCTP registrar reaches it from its one-to-many ASAP port,
    which accepts the association of a registrar that took the PE over
    (RFC 5353): its Keep Alive with the H flag is acknowledged there and
    the PE's next Registration goes there (RFC 5352 section 3.4).  Kernel
    SCTP only.
    """

    @defer.inlineCallbacks
    def setUp(self):
        if _UNAVAILABLE is not None:
            raise unittest.SkipTest(SKIP_REASON)
        self.registrar = RegistrarService(
            make_config(), asap_endpoints=["sctp:0:interface=127.0.0.1:mode=seqpacket"])
        self.registrar.startService()
        ports = yield self.registrar.ready
        self.addCleanup(self.registrar.stopService)
        self.asap = "sctp:host=127.0.0.1:port=%d" % ports[0].getHost().port
        self.pe = yield self.start_pe(b"AdoptedPool", factory=Factory.forProtocol(Echo),
                                      endpoint="sctp:0:interface=127.0.0.1",
                                      reregistration_interval=1.0, response_timeout=1.0)

    def test_registers_from_asap_port(self):
        """
        The registrar association leaves from the PE's ASAP port.
        """
        (port,) = self.pe.asap_ports.values()
        transport = self.pe.machine.connection.transport
        self.assertIsInstance(transport, sctp.SCTPAssociation)
        self.assertIs(transport.port, port)
        self.assertEqual(transport.getHost().host, "127.0.0.1")

    @defer.inlineCallbacks
    def test_adopted_by_new_home(self):
        """
        A registrar's association to the ASAP port, an Endpoint Keep Alive
        with the H flag over it: acknowledged there (MUST), and the next
        Registration names the new home and goes to it (SHOULD).
        """
        (port,) = self.pe.asap_ports.values()
        wire = yield connect(reactor, "sctp:host=127.0.0.1:port=%d:ppid=11" % port.getHost().port,
                             name="new home")
        self.addCleanup(wire.close)
        ack = yield wire.request(
            EndpointKeepAlive(0x7777, b"AdoptedPool", self.pe.identifier, home=True),
            EndpointKeepAliveAck, WAIT)
        self.assertEqual((ack.pool_handle, ack.identifier), (b"AdoptedPool", self.pe.identifier))
        self.assertEqual(self.pe.home_registrar, 0x7777)
        again = yield wire.expect(Registration, WAIT)
        self.assertEqual(again.pool_element.identifier, self.pe.identifier)
        self.assertEqual(again.pool_element.home_registrar, 0x7777)
        self.assertEqual(again.pool_element.user_transport.addresses, (LOOPBACK,))


class TransportOfTests(unittest.TestCase):
    """
    The transport parameter a PE registers for its port.
    """

    def test_multihomed_sctp_registers_every_address(self):
        from rserpool.pe import _transport_of
        from rserpool.transport.sctp import SCTPAddress

        address = SCTPAddress("127.0.0.1", 4000, ("127.0.0.1", "127.0.0.2", "::ffff:127.0.0.3"))
        self.assertEqual(
            _transport_of(address, None, DATA_ONLY),
            SCTPTransport(4000, ("127.0.0.1", "127.0.0.2", "127.0.0.3"), DATA_ONLY),
        )

    def test_single_address_tcp(self):
        from twisted.internet.address import IPv4Address as TwistedIPv4

        from rserpool.pe import _transport_of
        from rserpool.wire import TCPTransport

        self.assertEqual(
            _transport_of(TwistedIPv4("TCP", "127.0.0.1", 7), None, DATA_ONLY),
            TCPTransport(7, ("127.0.0.1",), DATA_ONLY),
        )
