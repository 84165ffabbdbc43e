"""
Tests of the SCTP mapping of ASAP and ENRP as an L{IMessageConnection}
(L{rserpool.transport.sctp_messages}): PPIDs, one message per SCTP message,
every peer address of the association, RTT/RTO/PMTU from C{SCTP_STATUS},
and the registrar's address-ownership check with multi-homed PEs.

The first part runs everywhere, against a fake SCTP transport; the last
sets up real associations and skips where the kernel has no SCTP (run it
under ``../shared/tools/sctp-vm``; ``.ci/sctp-tests`` does).
"""
import ipaddress

from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import clientFromString
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from rserpool.asap.registrar import ASAPRegistrar, RegistrarConfig
from rserpool.asap.scope import Scope
from rserpool.codes import ASAP_PPID, ENRP_PPID, ErrorCause, PolicyType
from rserpool.transport import sctp
from rserpool.transport import _sctp_abi as abi
from rserpool.interfaces import IMessageConnection, NotAvailable
from rserpool.transport.sctp_messages import SCTPMessageProtocol, split_messages
from rserpool.transport.tcp import MessageStreamFactory, MessageStreamProtocol, message_protocol
from rserpool.wire import (
    EndpointKeepAliveAck,
    HandleTableRequest,
    Policy,
    PoolElement,
    Registration,
    RegistrationResponse,
    SCTPTransport,
    TCPTransport,
    decode,
    encode,
)

from tests.helpers import Driven, Recorder
from tests.test_sctp import SKIP_REASON, requireSCTP


def ip(text):
    return ipaddress.ip_address(text)


class FakeAssociation:
    """
    Enough of an L{sctp.ISCTPTransport} for the mapping: records the
    messages written, answers address and status queries.
    """

    def __init__(self, peer=("10.255.0.5", 4000), addresses=("10.255.0.5", "10.255.1.5"),
                 status=None):
        self.peer = sctp.SCTPAddress(peer[0], peer[1], addresses)
        self.addresses = [(a, peer[1]) for a in addresses]
        self.status = status
        self.written = []
        self.closed = False
        self.connected = True

    def getPeer(self):
        return self.peer

    def getHost(self):
        return sctp.SCTPAddress("10.255.0.1", 3863, ("10.255.0.1",))

    def getPeerAddresses(self):
        return tuple(self.addresses)

    def getStatus(self):
        if self.status is None:
            raise OSError(107, "the association is closed")
        return self.status

    def writeMessage(self, data, ppid=None, stream=None, unordered=False):
        self.written.append((data, ppid))

    def write(self, data):
        self.written.append((data, None))

    def loseConnection(self):
        self.closed = True


STATUS = sctp.SCTPStatus(4, 65536, 10, 10, 1452, ("10.255.0.5", 4000), 0.004, 0.25, 1500)


def connected(receiver=None, protocol="asap", **kw):
    receiver = receiver if receiver is not None else Recorder()
    transport = FakeAssociation(**kw)
    factory = MessageStreamFactory(receiver, protocol)
    p = factory.buildProtocol(transport.getPeer())
    p.makeConnection(transport)
    return p, transport, receiver


def registration(pe_id, addresses, handle=b"EchoPool", port=7):
    element = PoolElement(
        pe_id, 0, 30000, SCTPTransport(port, addresses, 1), Policy.make(PolicyType.ROUND_ROBIN)
    )
    return Registration(handle, element)


class SplitTests(unittest.SynchronousTestCase):
    def test_one(self):
        a = encode(EndpointKeepAliveAck(b"pool", 1))
        self.assertEqual(split_messages(a), [a])

    def test_several(self):
        a = encode(EndpointKeepAliveAck(b"pool", 1))
        b = encode(EndpointKeepAliveAck(b"another pool", 2))
        self.assertEqual(split_messages(a + b + a), [a, b, a])

    def test_unframed(self):
        """
        Bytes that do not frame cleanly go out as they are: the receiver's
        decoder reports them.
        """
        a = encode(EndpointKeepAliveAck(b"pool", 1))
        for data in (b"", b"\x01", a + b"\x01\x00", a[:-4], a + b"\x08\x00\x00\x00"):
            self.assertEqual(split_messages(data), [data])


class ConnectionTests(unittest.SynchronousTestCase):
    """
    L{SCTPMessageProtocol} against a fake association.
    """

    def test_factoryChoosesSCTP(self):
        """
        L{MessageStreamFactory} builds the SCTP mapping for an SCTP
        association and the TCP one for anything else.
        """
        factory = MessageStreamFactory(Recorder())
        self.assertIsInstance(
            factory.buildProtocol(sctp.SCTPAddress("10.255.0.5", 1, ())), SCTPMessageProtocol
        )
        tcp = factory.buildProtocol(IPv4Address("TCP", "10.255.0.5", 1))
        self.assertIs(type(tcp), MessageStreamProtocol)

    def test_interface(self):
        p, _, receiver = connected()
        verifyObject(IMessageConnection, p)
        self.assertEqual(receiver.events, [("made", p)])
        self.assertEqual(p.mapping, "sctp")
        self.assertEqual(p.peer, (ip("10.255.0.5"), 4000))
        self.assertEqual(p.local, (ip("10.255.0.1"), 3863))

    def test_allPeerAddresses(self):
        """
        C{peer_addresses} and C{peer_transport} list every address of the
        association, primary first.
        """
        p, _, _ = connected(addresses=("10.255.1.5", "10.255.0.5", "::ffff:10.255.2.5"))
        self.assertEqual(p.peer_addresses, (ip("10.255.0.5"), ip("10.255.1.5"), ip("10.255.2.5")))
        self.assertEqual(
            p.peer_transport, SCTPTransport(4000, ("10.255.0.5", "10.255.1.5", "10.255.2.5"))
        )

    def test_addressChange(self):
        """
        A change reported by the kernel makes the connection read the
        addresses again.
        """
        p, transport, _ = connected()
        transport.addresses.append(("10.255.3.5", 4000))
        p.peerAddressChanged(abi.PeerAddressChange(("10.255.3.5", 4000), abi.SCTP_ADDR_ADDED, 0, 1))
        self.assertIn(ip("10.255.3.5"), p.peer_addresses)
        self.assertIn(ip("10.255.3.5"), p.peer_transport.addresses)

    def test_factoryBuildsTheMappingOfTheTransport(self):
        """
        A client connecting with a L{MessageStreamFactory} gets the SCTP
        mapping over SCTP and the TCP one over TCP (chosen when the
        protocol is built: a protocol never changes its class).
        """
        factory = MessageStreamFactory(Recorder(), "enrp")
        p = factory.buildProtocol(sctp.SCTPAddress("10.255.0.5", 4000, ()))
        transport = FakeAssociation()
        p.makeConnection(transport)
        self.assertEqual(p.mapping, "sctp")
        self.assertEqual(len(p.peer_addresses), 2)
        p.send(HandleTableRequest(1, 0))
        self.assertEqual(transport.written[0][1], ENRP_PPID)

        address = IPv4Address("TCP", "192.0.2.5", 4000)
        t = MessageStreamFactory(Recorder()).buildProtocol(address)
        t.makeConnection(StringTransport(peerAddress=address))
        self.assertEqual(t.mapping, "tcp")
        self.assertEqual(t.peer_transport, TCPTransport(4000, ("192.0.2.5",)))

    def test_messageProtocol(self):
        """
        L{message_protocol} is the choice, for factories of their own.
        """
        p = message_protocol(Recorder(), "enrp", sctp.SCTPAddress("10.255.0.5", 1, ()))
        self.assertIs(type(p), SCTPMessageProtocol)
        self.assertEqual(p.ppid, ENRP_PPID)
        t = message_protocol(Recorder(), "asap", IPv4Address("TCP", "10.255.0.5", 1))
        self.assertIs(type(t), MessageStreamProtocol)
        self.assertEqual(t.protocol, "asap")

    def test_handMadeStaysTCP(self):
        """
        A L{MessageStreamProtocol} is the TCP mapping whatever it is
        connected over: no class is changed at run time.
        """
        p = MessageStreamProtocol(Recorder(), "enrp")
        p.makeConnection(FakeAssociation())
        self.assertIs(type(p), MessageStreamProtocol)
        self.assertEqual(p.mapping, "tcp")

    def test_sendWithPPID(self):
        p, transport, _ = connected()
        message = EndpointKeepAliveAck(b"pool", 1)
        p.send(message)
        self.assertEqual(transport.written, [(encode(message), ASAP_PPID)])

    def test_sendEncodedOnePerMessage(self):
        """
        Several encoded messages given at once go out as one SCTP message
        each.
        """
        p, transport, _ = connected()
        a = encode(EndpointKeepAliveAck(b"pool", 1))
        b = encode(EndpointKeepAliveAck(b"pool two", 2))
        p.send_encoded(a + b)
        self.assertEqual(transport.written, [(a, ASAP_PPID), (b, ASAP_PPID)])

    def test_receive(self):
        """
        Each SCTP message is one message: PPID 11 (or 0, unspecified) is
        decoded, a foreign PPID dropped, a bad message reported without
        closing anything.
        """
        p, transport, receiver = connected()
        message = EndpointKeepAliveAck(b"pool", 1)
        p.messageReceived(encode(message), ASAP_PPID, 0)
        p.messageReceived(encode(message), 0, 3)
        p.messageReceived(encode(message), ENRP_PPID, 0)
        p.messageReceived(b"\x08\x00\x00\x03", ASAP_PPID, 0)
        p.messageReceived(encode(message) + b"\0" * 8, ASAP_PPID, 0)
        p.messageReceived(encode(message), ASAP_PPID, 0)
        self.assertEqual(
            receiver.events[1:],
            [("message", message), ("message", message),
             ("error", ErrorCause.INVALID_VALUES), ("error", ErrorCause.INVALID_VALUES),
             ("message", message)],
        )
        self.assertFalse(transport.closed)

    def test_close(self):
        p, transport, receiver = connected()
        p.close()
        self.assertTrue(transport.closed)
        self.assertEqual(receiver.events[-1], ("lost", p))
        p.send(EndpointKeepAliveAck(b"pool", 1))
        self.assertEqual(transport.written, [])

    def test_status(self):
        """
        Services draft section 5.2.3: RTT, RTO and path MTU come from the
        association's status.
        """
        p, _, _ = connected(status=STATUS)
        self.assertEqual((p.rtt(), p.rto(), p.path_mtu()), (0.004, 0.25, 1500))

    def test_statusGone(self):
        p, _, _ = connected(status=None)
        for method in (p.rtt, p.rto, p.path_mtu):
            e = self.assertRaises(NotAvailable, method)
            self.assertEqual(e.mapping, "sctp")


class OwnershipTests(unittest.SynchronousTestCase):
    """
    RFC 5355 section 3: a PE registers only its own addresses.  Over SCTP
    they are all the addresses of its association, as RSPLIB checks them.
    """

    def setUp(self):
        self.registrar = Driven(ASAPRegistrar(
            RegistrarConfig(server_id=0x1234, min_address_scope=Scope.SITE_LOCAL)
        ))

    def register(self, addresses, association=("10.255.0.5", "10.255.1.5"), pe_id=0x99, status=None):
        p, transport, _ = connected(addresses=association, status=status)
        self.registrar.connection_made(p, 0.0)
        self.registrar.message_received(p, registration(pe_id, addresses), 0.0)
        return decode(transport.written[-1][0], "asap")

    def test_multiHomed(self):
        """
        A PE registering every address of its association keeps them all;
        its ASAP transport lists them too.
        """
        answer = self.register(("10.255.0.5", "10.255.1.5"))
        self.assertIsInstance(answer, RegistrationResponse)
        self.assertFalse(answer.reject)
        pe = self.registrar.handlespace.get(b"EchoPool", 0x99)
        self.assertEqual(pe.user_transport.wire.addresses, (ip("10.255.0.5"), ip("10.255.1.5")))
        self.assertEqual(pe.asap_transport.addresses, (ip("10.255.0.5"), ip("10.255.1.5")))

    def test_secondaryAddressOnly(self):
        """
        The PE's packets come from one address (the primary path), its
        service listens on another of the association's: accepted (the
        case of RSPLIB's C{rspserver -local=...}).
        """
        answer = self.register(("10.255.1.5",))
        self.assertFalse(answer.reject)

    def test_foreignAddressesDropped(self):
        """
        Addresses that are not the association's, or below the minimum
        scope, are left out; nothing left is a rejection.
        """
        self.assertFalse(self.register(("10.255.1.5", "10.255.7.7", "127.0.0.1")).reject)
        pe = self.registrar.handlespace.get(b"EchoPool", 0x99)
        self.assertEqual(pe.user_transport.wire.addresses, (ip("10.255.1.5"),))
        answer = self.register(("10.255.7.7",), pe_id=0x98)
        self.assertTrue(answer.reject)
        self.assertEqual(
            answer.error.causes[0].code, ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS
        )

    def test_distanceFromRTT(self):
        """
        RSPLIB's DPF policies carry the distance, half the SCTP round trip
        in milliseconds: over SCTP the registrar measures it.
        """
        p, transport, _ = connected(status=STATUS)
        self.registrar.connection_made(p, 0.0)
        element = PoolElement(
            7, 0, 30000, SCTPTransport(7, ("10.255.0.5",)),
            Policy.make(PolicyType.LEAST_USED_DPF),
        )
        self.registrar.message_received(p, Registration(b"DPF", element), 0.0)
        self.assertFalse(decode(transport.written[-1][0], "asap").reject)
        pe = self.registrar.handlespace.get(b"DPF", 7)
        self.assertEqual(pe.policy.values[-1], 2)


class KernelTests(unittest.TestCase):
    """
    A registrar on a real SCTP socket, a multi-homed client on 127.0.0.1
    and 127.0.0.2.
    """

    timeout = 20

    def setUp(self):
        requireSCTP()

    @defer.inlineCallbacks
    def _registrar(self, mode):
        from rserpool.services import RegistrarService

        service = RegistrarService(
            RegistrarConfig(server_id=0x4242),
            asap_endpoints=["sctp:0:interface=127.0.0.1,127.0.0.2:mode=%s" % mode],
            min_address_scope=Scope.LOOPBACK,
        )
        service.startService()
        self.addCleanup(service.stopService)
        [port] = yield service.ready
        return service, port.getHost().port

    @defer.inlineCallbacks
    def _multiHomed(self, mode):
        service, port = yield self._registrar(mode)
        receiver = Recorder()
        waiting = defer.Deferred()
        receiver.message_received = lambda c, m: waiting.called or waiting.callback(m)
        endpoint = clientFromString(
            reactor, "sctp:host=127.0.0.1:port=%d:bindAddress=127.0.0.1,127.0.0.2" % port
        )
        client = yield endpoint.connect(MessageStreamFactory(receiver))
        self.addCleanup(client.transport.abortConnection)
        self.assertEqual(client.mapping, "sctp")
        self.assertEqual(set(client.peer_addresses), {ip("127.0.0.1"), ip("127.0.0.2")})
        client.send(registration(0x77, ("127.0.0.2", "127.0.0.1")))
        answer = yield waiting
        self.assertFalse(answer.reject)
        pe = service.registrar.handlespace.get(b"EchoPool", 0x77)
        self.assertEqual(set(pe.user_transport.wire.addresses), {ip("127.0.0.1"), ip("127.0.0.2")})
        self.assertIsInstance(pe.asap_transport, SCTPTransport)
        self.assertEqual(set(pe.asap_transport.addresses), {ip("127.0.0.1"), ip("127.0.0.2")})
        self.assertEqual(pe.connection.mapping, "sctp")
        self.assertGreater(pe.connection.rto(), 0)
        self.assertGreaterEqual(pe.connection.rtt(), 0)
        self.assertGreater(pe.connection.path_mtu(), 0)

    def test_multiHomedOneToMany(self):
        return self._multiHomed("seqpacket")

    def test_multiHomedOneToOne(self):
        return self._multiHomed("stream")


