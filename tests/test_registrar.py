"""
State-machine tests of the registrar's ASAP side (RFC 5352): the sans-IO
L{ASAPRegistrar} driven through the TCP mapping's protocol over
L{StringTransport}, with time from L{task.Clock}.
"""
import ipaddress
import struct

from twisted.internet import task
from twisted.internet.address import IPv4Address as TwistedIPv4, IPv6Address as TwistedIPv6
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.trial import unittest

from rserpool.actions import Close, Runner, Schedule, Send
from rserpool.asap.flood import BUCKETS, ENTRIES, RequestRateLimit
from rserpool.asap.registrar import ASAPRegistrar, RegistrarConfig, UserTransport
from rserpool.asap.scope import Scope, address_scope, listening_scope, parse_scope
from rserpool.asap.sources import SourceSettings
from rserpool.codes import ErrorCause, PolicyType
from rserpool.handlespace import PolicySettings, TimerCode
from rserpool.interfaces import NotAvailable
from rserpool.receivers import ASAPReceiver
from rserpool.services import Wakeup
from rserpool.transport.sctp import SCTPAddress
from rserpool.transport.tcp import MessageStreamProtocol
from rserpool.wire import (
    DATA_PLUS_CONTROL,
    ASAPError,
    BusinessCard,
    Cookie,
    Deregistration,
    DeregistrationResponse,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    EndpointUnreachable,
    HandleResolution,
    HandleResolutionResponse,
    OperationError,
    Policy,
    PoolElement,
    Registration,
    RegistrationResponse,
    SCTPTransport,
    ServerAnnounce,
    StreamDecoder,
    TCPTransport,
    UDPTransport,
    decode,
    encode,
    encode_parameter,
)
from rserpool.wire.params import encode_pool_handle

SERVER_ID = 0x11223344
LOCAL = ipaddress.ip_address("127.0.0.1")
ROUND_ROBIN = Policy.make(PolicyType.ROUND_ROBIN)


def pe_param(pe_id, address="127.0.0.1", port=7, policy=ROUND_ROBIN, life=90000,
             transport=TCPTransport, use=0):
    """
    A Pool Element parameter as a PE sends it in a Registration.
    """
    if transport is UDPTransport:
        user = UDPTransport(port, (address,))
    else:
        user = transport(port, (address,), use)
    return PoolElement(pe_id, 0, life, user, policy)


class Client:
    """
    One connection to the registrar: a L{MessageStreamProtocol} over a
    L{StringTransport}, with helpers to send messages and read answers.
    """

    def __init__(self, harness, host="127.0.0.1", port=40000):
        self.harness = harness
        self.transport = StringTransport(
            hostAddress=TwistedIPv4("TCP", "127.0.0.1", 3863),
            peerAddress=(TwistedIPv6 if ":" in host else TwistedIPv4)("TCP", host, port),
        )
        self.protocol = MessageStreamProtocol(harness.receiver, "asap")
        self.protocol.makeConnection(self.transport)
        self._decoder = StreamDecoder("asap")
        self.raw = []

    def send(self, message):
        self.send_bytes(encode(message))

    def send_bytes(self, data):
        self.protocol.dataReceived(data)

    def received(self):
        """
        Decode and return what the registrar wrote since the last call.
        """
        data = self.transport.value()
        self.transport.clear()
        self.raw.append(data)
        self.harness.sent_bytes.append(data)
        out = []
        for item in self._decoder.feed(data):
            if isinstance(item, Exception):
                raise AssertionError("registrar sent an undecodable message: %r" % (item,))
            out.append(item)
        return out

    def one(self):
        messages = self.received()
        if len(messages) != 1:
            raise AssertionError("expected one message, got %r" % (messages,))
        return messages[0]

    def register(self, handle, pe, expect_ok=True):
        self.send(Registration(handle, pe))
        response = self.one()
        if expect_ok:
            assert isinstance(response, RegistrationResponse), response
            assert not response.reject, response
        return response

    @property
    def closed(self):
        return self.transport.disconnecting

    def lose(self):
        self.protocol.connectionLost(None)


class Harness:
    """
    A registrar wired to a L{task.Clock}.
    """

    def __init__(self, **settings):
        settings.setdefault("min_address_scope", Scope.LOOPBACK)
        self.clock = task.Clock()
        self.config = RegistrarConfig(server_id=SERVER_ID, **settings)
        self.wakeup = Wakeup(self.clock, self.timer_fired)
        self.registrar = ASAPRegistrar(self.config)
        self.run = Runner({self.registrar: self.wakeup})
        self.receiver = ASAPReceiver(self.registrar, self.clock, self.run)
        self.hs = self.registrar.handlespace
        self.sent_bytes = []
        self.registered = []
        self.removed = []
        self.registrar.on_registered.append(lambda pe, outcome: self.registered.append(pe))
        self.registrar.on_removed.append(lambda pe, why: self.removed.append((pe.pe_id, why)))

    def timer_fired(self, now):
        self.run(self.registrar.timer_fired(now))

    def client(self, host="127.0.0.1", port=40000):
        return Client(self, host, port)


def cause_of(message):
    (cause,) = message.error.causes
    return cause


class RegistrationTests(unittest.TestCase):
    """
    RFC 5352 section 3.1/3.2.1: registration and re-registration.
    """

    def setUp(self):
        self.h = Harness()
        self.pe = self.h.client()

    def test_register(self):
        """
        A valid registration is accepted; the registrar becomes the PE's
        home registrar and takes the PE's ASAP transport from the
        connection.
        """
        response = self.pe.register(b"EchoPool", pe_param(0x1234))
        self.assertEqual(response, RegistrationResponse(b"EchoPool", 0x1234))
        stored = self.h.hs.get(b"EchoPool", 0x1234)
        self.assertEqual(stored.home_registrar, SERVER_ID)
        self.assertEqual(stored.asap_transport, TCPTransport(40000, (LOCAL,)))
        self.assertEqual(stored.user_transport.wire, TCPTransport(7, (LOCAL,)))
        self.assertEqual(stored.timer_code, TimerCode.KEEP_ALIVE_TRANSMISSION)
        self.assertEqual(self.h.registered, [stored])
        self.h.hs.verify()

    def test_reregister(self):
        """
        A registration of an existing PE identifier updates the PE in place
        (RFC 5352: a re-registration).
        """
        lu = Policy.make(PolicyType.LEAST_USED, load=10)
        self.pe.register(b"P", pe_param(5, policy=lu))
        first = self.h.hs.get(b"P", 5)
        self.pe.register(b"P", pe_param(5, policy=Policy.make(PolicyType.LEAST_USED, load=99)))
        self.assertIs(self.h.hs.get(b"P", 5), first)
        self.assertEqual(first.policy.load, 99)
        self.assertEqual(len(self.h.hs), 1)

    def test_multihomed_user_transport_filtered(self):
        """
        Of a multi-homed user transport only the addresses of the peer are
        kept (RSPLIB filters the same way).
        """
        pe = PoolElement(9, 0, 1000, SCTPTransport(9, ("127.0.0.1", "192.0.2.7")), ROUND_ROBIN)
        self.pe.register(b"P", pe)
        self.assertEqual(self.h.hs.get(b"P", 9).user_transport.wire.addresses, (LOCAL,))

    def assertRejected(self, response, cause, info=None):
        self.assertIsInstance(response, RegistrationResponse)
        self.assertTrue(response.reject)
        got = cause_of(response)
        self.assertEqual(got.code, cause)
        if info is not None:
            self.assertEqual(got.info, info)

    def test_foreign_address(self):
        """
        A PE may only register its own addresses: another host's address is
        refused for security reasons (RFC 5355; RSPLIB compares with the
        association's peer addresses).
        """
        response = self.pe.register(b"P", pe_param(1, "127.0.0.2"), expect_ok=False)
        self.assertRejected(response, ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS)
        self.assertEqual(len(self.h.hs), 0)

    def test_below_minimum_scope(self):
        """
        An address narrower than the minimum scope is refused with Invalid
        Values, the transport as information.
        """
        h = Harness(min_address_scope=Scope.SITE_LOCAL)
        pe = h.client()
        param = pe_param(1)
        response = pe.register(b"P", param, expect_ok=False)
        self.assertRejected(
            response, ErrorCause.INVALID_VALUES, encode_parameter(param.user_transport)
        )

    def test_site_local_scope_accepts_private(self):
        h = Harness(min_address_scope=Scope.SITE_LOCAL)
        pe = h.client("10.1.2.3")
        pe.register(b"P", pe_param(1, "10.1.2.3"))

    def test_ipv6_peer(self):
        pe = self.h.client("::1")
        pe.register(b"P", pe_param(1, "::1"))
        self.assertEqual(
            self.h.hs.get(b"P", 1).asap_transport,
            TCPTransport(40000, (ipaddress.ip_address("::1"),)),
        )

    def test_ipv4_mapped_peer(self):
        """
        A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; the PE's
        IPv4 address still counts as its own.
        """
        pe = self.h.client("::ffff:127.0.0.1")
        pe.register(b"P", pe_param(1, "127.0.0.1"))

    def test_long_handle(self):
        handle = b"x" * 33
        response = self.pe.register(handle, pe_param(1), expect_ok=False)
        self.assertRejected(response, ErrorCause.INVALID_VALUES, encode_pool_handle(handle))

    def test_pe_identifier_zero(self):
        response = self.pe.register(b"P", pe_param(0), expect_ok=False)
        self.assertRejected(response, ErrorCause.INVALID_VALUES)

    def test_unknown_policy(self):
        policy = Policy(0x12345678, (), b"\0\0\0\1")
        response = self.pe.register(b"P", pe_param(1, policy=policy), expect_ok=False)
        self.assertRejected(response, ErrorCause.INVALID_VALUES, encode_parameter(policy))

    def test_inconsistent_policy(self):
        """
        RFC 5352 section 3.1: every PE of a pool uses the pool's policy type.
        """
        self.pe.register(b"P", pe_param(1))
        other = Policy.make(PolicyType.RANDOM)
        response = self.pe.register(b"P", pe_param(2, policy=other), expect_ok=False)
        self.assertRejected(
            response, ErrorCause.INCONSISTENT_POOLING_POLICY, encode_parameter(other)
        )

    def test_inconsistent_transport(self):
        self.pe.register(b"P", pe_param(1))
        param = pe_param(2, transport=UDPTransport)
        response = self.pe.register(b"P", param, expect_ok=False)
        self.assertRejected(
            response,
            ErrorCause.INCONSISTENT_TRANSPORT_TYPE,
            encode_parameter(param.user_transport),
        )

    def test_inconsistent_data_control(self):
        self.pe.register(b"P", pe_param(1))
        response = self.pe.register(b"P", pe_param(2, use=DATA_PLUS_CONTROL), expect_ok=False)
        self.assertRejected(response, ErrorCause.INCONSISTENT_DATA_CONTROL_CONFIGURATION)

    def test_non_unique_identifier(self):
        """
        A PE identifier held by a PE on another live connection from
        another host cannot be taken over.
        """
        self.pe.register(b"P", pe_param(1))
        intruder = self.h.client("127.0.0.9", 40001)
        response = intruder.register(b"P", pe_param(1, "127.0.0.9"), expect_ok=False)
        self.assertRejected(response, ErrorCause.NON_UNIQUE_PE_IDENTIFIER)
        self.assertIs(self.h.hs.get(b"P", 1).connection, self.pe.protocol)

    def test_same_host_reconnect(self):
        """
        A PE that reconnected re-registers its identifier over the new
        connection once the old one has ended: the PE moves to it.
        """
        self.pe.register(b"P", pe_param(1))
        self.pe.lose()
        again = self.h.client("127.0.0.1", 40001)
        again.register(b"P", pe_param(1))
        self.assertIs(self.h.hs.get(b"P", 1).connection, again.protocol)

    def test_rfc5355_2_3_same_host_cannot_take_a_live_identifier(self):
        """
        While the PE's connection lives, another process of the same host
        cannot re-point its identifier (issue #14: squatting, hijacking).
        """
        self.pe.register(b"P", pe_param(1, port=7))
        other = self.h.client("127.0.0.1", 40001)
        response = other.register(b"P", pe_param(1, port=9), expect_ok=False)
        self.assertRejected(response, ErrorCause.NON_UNIQUE_PE_IDENTIFIER)
        self.assertIs(self.h.hs.get(b"P", 1).connection, self.pe.protocol)
        self.assertEqual(self.h.hs.get(b"P", 1).user_transport.wire.port, 7)

    def test_rfc5355_2_3_squatting_a_peers_pe(self):
        """
        A PE this registrar knows only from ENRP (e.g. right after a
        restart, from its peers' handle tables) keeps its identifier bound
        to its host: another host registering that identifier first is
        refused (Non-unique PE Identifier), the PE itself, failing over to
        this registrar, is not (issue #14: identifier squatting).
        """
        self.h.hs.register(b"P", 1, home_registrar=SERVER_ID + 1,
                           policy=PolicySettings(PolicyType.ROUND_ROBIN),
                           user_transport=UserTransport(TCPTransport(7, ("127.0.0.5",))),
                           now=0, registration_life=90000)
        squatter = self.h.client("127.0.0.9", 40001)
        response = squatter.register(b"P", pe_param(1, "127.0.0.9"), expect_ok=False)
        self.assertRejected(response, ErrorCause.NON_UNIQUE_PE_IDENTIFIER)
        self.assertEqual(self.h.hs.get(b"P", 1).home_registrar, SERVER_ID + 1)
        owner = self.h.client("127.0.0.5", 40002)
        owner.register(b"P", pe_param(1, "127.0.0.5"))
        self.assertEqual(self.h.hs.get(b"P", 1).home_registrar, SERVER_ID)
        self.assertIs(self.h.hs.get(b"P", 1).connection, owner.protocol)

    def test_identity_binds_the_identifier(self):
        """
        Over TLS-PSK (connections that carry an identity), another identity
        cannot take the PE identifier even from the PE's host, and the same
        identity may from another host (RFC 5355 section 2.3.3).
        """
        self.pe.protocol.identity = b"pe-1"
        self.pe.register(b"P", pe_param(1))
        other = self.h.client("127.0.0.1", 40001)
        other.protocol.identity = b"pe-2"
        response = other.register(b"P", pe_param(1), expect_ok=False)
        self.assertRejected(response, ErrorCause.NON_UNIQUE_PE_IDENTIFIER)
        self.assertIs(self.h.hs.get(b"P", 1).connection, self.pe.protocol)
        moved = self.h.client("127.0.0.9", 40002)
        moved.protocol.identity = b"pe-1"
        moved.register(b"P", pe_param(1, "127.0.0.9"))
        self.assertIs(self.h.hs.get(b"P", 1).connection, moved.protocol)

    def test_lack_of_resources(self):
        h = Harness(max_pool_elements=2)
        pe = h.client()
        pe.register(b"P", pe_param(1))
        pe.register(b"P", pe_param(2))
        response = pe.register(b"P", pe_param(3), expect_ok=False)
        self.assertRejected(response, ErrorCause.LACK_OF_RESOURCES)
        # Re-registrations still work when full.
        pe.register(b"P", pe_param(2))

    def test_lack_of_resources_counts_home_pes(self):
        # The limit is on the PEs this registrar is home for (what it
        # keeps alive); its peers' PEs learned over ENRP do not fill it,
        # so a cluster that holds more PEs than one registrar may home
        # still takes registrations at each.
        h = Harness(max_pool_elements=2)
        for n in range(10, 15):
            h.hs.register(b"P", n, home_registrar=SERVER_ID + 1,
                          policy=PolicySettings(PolicyType.ROUND_ROBIN),
                          user_transport=UserTransport(TCPTransport(7, ("127.0.0.2",))),
                          now=0, registration_life=90000)
        pe = h.client()
        pe.register(b"P", pe_param(1))
        pe.register(b"P", pe_param(2))
        response = pe.register(b"P", pe_param(3), expect_ok=False)
        self.assertRejected(response, ErrorCause.LACK_OF_RESOURCES)

    def test_dpf_distance_not_available(self):
        """
        DPF policies carry the PE's distance, which RSPLIB measures from the
        SCTP RTT; the TCP mapping cannot measure it, so it is 0.
        """
        policy = Policy.make(PolicyType.LEAST_USED_DPF, load=5, load_dpf=7, distance=1234)
        self.pe.register(b"P", pe_param(1, policy=policy))
        self.assertEqual(self.h.hs.get(b"P", 1).policy.distance, 0)


class DeregistrationTests(unittest.TestCase):
    """
    RFC 5352 section 3.3/3.2.2: deregistration, and expiry of the
    registration life.
    """

    def setUp(self):
        self.h = Harness()
        self.pe = self.h.client()
        self.pe.register(b"P", pe_param(1))

    def test_deregister(self):
        self.pe.send(Deregistration(b"P", 1))
        self.assertEqual(self.pe.one(), DeregistrationResponse(b"P", 1))
        self.assertIsNone(self.h.hs.get(b"P", 1))
        self.assertEqual(self.h.removed, [(1, "deregistered")])
        self.assertIsNone(self.h.hs.pool(b"P"))

    def test_deregister_unknown(self):
        """
        Like RSPLIB, deregistering a PE that is not there succeeds.
        """
        self.pe.send(Deregistration(b"Q", 7))
        self.assertEqual(self.pe.one(), DeregistrationResponse(b"Q", 7))

    def test_deregister_from_elsewhere(self):
        """
        Only the PE's own host may deregister it (RFC 5355 section 2.2).
        """
        other = self.h.client("127.0.0.5", 40002)
        other.send(Deregistration(b"P", 1))
        response = other.one()
        self.assertIsInstance(response, DeregistrationResponse)
        self.assertEqual(
            cause_of(response).code, ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS
        )
        self.assertIsNotNone(self.h.hs.get(b"P", 1))

    def test_deregister_other_identity(self):
        """
        Over TLS-PSK, only the identity that registered the PE may
        deregister it, from whatever host (RFC 5355 section 2.3.3).
        """
        self.pe.protocol.identity = b"pe-1"
        neighbour = self.h.client("127.0.0.1", 40002)
        neighbour.protocol.identity = b"pe-2"
        neighbour.send(Deregistration(b"P", 1))
        self.assertEqual(
            cause_of(neighbour.one()).code, ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS
        )
        self.assertIsNotNone(self.h.hs.get(b"P", 1))
        elsewhere = self.h.client("127.0.0.5", 40003)
        elsewhere.protocol.identity = b"pe-1"
        elsewhere.send(Deregistration(b"P", 1))
        self.assertEqual(elsewhere.one(), DeregistrationResponse(b"P", 1))
        self.assertIsNone(self.h.hs.get(b"P", 1))

    def test_rfc5355_2_3_deregister_from_other_connection(self):
        # Another connection of the same host may not deregister a PE whose
        # own connection lives (RFC 5355 sections 2.2, 2.3).
        other = self.h.client("127.0.0.1", 40002)
        other.send(Deregistration(b"P", 1))
        response = other.one()
        self.assertEqual(response.error.causes[0].code,
                         ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS)
        self.assertIsNotNone(self.h.hs.get(b"P", 1))

    def test_registration_life_expiry(self):
        """
        A PE that does not re-register within its registration life is
        removed, even while it answers keep-alives.
        """
        h = Harness(keep_alive_interval=100.0)
        pe = h.client()
        pe.register(b"P", pe_param(1, life=2500))
        h.clock.advance(2.4)
        self.assertIsNotNone(h.hs.get(b"P", 1))
        h.clock.advance(0.2)
        self.assertIsNone(h.hs.get(b"P", 1))
        self.assertEqual(h.removed, [(1, "registration life expired")])

    def test_reregistration_extends_life(self):
        h = Harness(keep_alive_interval=100.0)
        pe = h.client()
        pe.register(b"P", pe_param(1, life=2000))
        h.clock.advance(1.5)
        pe.register(b"P", pe_param(1, life=2000))
        h.clock.advance(1.5)
        self.assertIsNotNone(h.hs.get(b"P", 1))
        h.clock.advance(0.6)
        self.assertIsNone(h.hs.get(b"P", 1))

    def test_infinite_life(self):
        """
        A negative registration life never expires (the keep-alive watches
        the PE).
        """
        h = Harness(keep_alive_interval=1000.0)
        pe = h.client()
        pe.register(b"P", pe_param(1, life=-1))
        h.clock.advance(900)
        self.assertIsNotNone(h.hs.get(b"P", 1))


class HandleResolutionTests(unittest.TestCase):
    """
    RFC 5352 section 3.8/3.2.3 and draft-dreibholz-rserpool-asap-hropt.
    """

    def setUp(self):
        self.h = Harness()
        self.pe = self.h.client()
        for i in range(1, 6):
            self.pe.register(b"P", pe_param(i, port=1000 + i))
        self.pu = self.h.client("127.0.0.1", 50000)

    def resolve(self, items=None, handle=b"P"):
        self.pu.send(HandleResolution(handle, items))
        response = self.pu.one()
        self.assertIsInstance(response, HandleResolutionResponse)
        return response

    def test_default_items(self):
        """
        Without a Handle Resolution Option the registrar returns
        MAX-HR-ITEMS PEs, in round robin order, with the pool's policy.
        """
        response = self.resolve()
        self.assertEqual(response.policy, ROUND_ROBIN)
        self.assertIsNone(response.error)
        self.assertEqual([pe.identifier for pe in response.pool_elements], [1, 2, 3])
        first = response.pool_elements[0]
        self.assertEqual(first, PoolElement(1, SERVER_ID, 90000, TCPTransport(1001, (LOCAL,)), ROUND_ROBIN))
        # Round robin advances by one PE per resolution (RSPLIB maxIncrement).
        response = self.resolve()
        self.assertEqual([pe.identifier for pe in response.pool_elements], [2, 3, 4])

    def test_items_option(self):
        self.assertEqual(len(self.resolve(1).pool_elements), 1)
        self.assertEqual(len(self.resolve(4).pool_elements), 4)
        self.assertEqual(len(self.resolve(0).pool_elements), 3)
        self.assertEqual(len(self.resolve(0xFFFFFFFF).pool_elements), 5)

    def test_items_cap(self):
        h = Harness(max_hr_items_cap=2)
        pe = h.client()
        for i in range(1, 6):
            pe.register(b"P", pe_param(i))
        pe.send(HandleResolution(b"P", 0xFFFFFFFF))
        self.assertEqual(len(pe.one().pool_elements), 2)

    def test_default_items_configurable(self):
        h = Harness(max_hr_items=1)
        pe = h.client()
        pe.register(b"P", pe_param(1))
        pe.register(b"P", pe_param(2))
        pe.send(HandleResolution(b"P"))
        self.assertEqual(len(pe.one().pool_elements), 1)

    def test_unknown_pool(self):
        response = self.resolve(handle=b"nope")
        self.assertEqual(response.pool_elements, ())
        self.assertIsNone(response.policy)
        self.assertEqual(cause_of(response).code, ErrorCause.UNKNOWN_POOL_HANDLE)

    def test_selected_by_policy(self):
        """
        Least Used picks the least loaded PEs first.
        """
        h = Harness()
        pe = h.client()
        for i, load in ((1, 50), (2, 10), (3, 30)):
            pe.register(b"L", pe_param(i, policy=Policy.make(PolicyType.LEAST_USED, load=load)))
        pe.send(HandleResolution(b"L", 2))
        response = pe.one()
        self.assertEqual([p.identifier for p in response.pool_elements], [2, 3])
        self.assertEqual(response.policy, Policy.make(PolicyType.LEAST_USED, load=10))

    def test_zero_weight_pool(self):
        """
        A pool whose PEs all have weight 0 exists but yields no PE: the
        answer has the pool's policy and no Pool Element.
        """
        h = Harness()
        pe = h.client()
        pe.register(b"W", pe_param(1, policy=Policy.make(PolicyType.WEIGHTED_RANDOM, weight=0)))
        pe.send(HandleResolution(b"W"))
        response = pe.one()
        self.assertIsNone(response.error)
        self.assertEqual(response.pool_elements, ())
        self.assertEqual(response.policy.policy_type, PolicyType.WEIGHTED_RANDOM)

    def test_response_fits_length_field(self):
        """
        PEs that would overflow the 16-bit message length are left out.
        """
        h = Harness()
        many = tuple(ipaddress.ip_address("127.0.%d.%d" % (i // 250, 1 + i % 250)) for i in range(64))
        for i in range(1, 129):
            conn = h.client("127.0.0.1", 20000 + i)
            conn.protocol.peer_addresses = many
            transport = SCTPTransport(9, many)
            conn.register(b"S", PoolElement(i, 0, 1000, transport, ROUND_ROBIN))
        pu = h.client("127.0.0.1", 50001)
        pu.send(HandleResolution(b"S", 128))
        (data,) = [b for b in [pu.transport.value()]]
        response = pu.one()
        self.assertLess(len(data), 65536)
        self.assertGreater(len(response.pool_elements), 10)
        self.assertLess(len(response.pool_elements), 128)


class KeepAliveTests(unittest.TestCase):
    """
    RFC 5352 section 3.7: Endpoint Keep Alive from the home registrar.
    """

    def setUp(self):
        self.h = Harness()
        self.pe = self.h.client()
        self.pe.register(b"P", pe_param(1))

    def test_keep_alive_sent(self):
        self.h.clock.advance(4.9)
        self.assertEqual(self.pe.received(), [])
        self.h.clock.advance(0.1)
        self.assertEqual(self.pe.one(), EndpointKeepAlive(SERVER_ID, b"P", 1))

    def test_ack_keeps_pe(self):
        for _ in range(5):
            self.h.clock.advance(5.0)
            self.assertIsInstance(self.pe.one(), EndpointKeepAlive)
            self.h.clock.advance(1.0)
            self.pe.send(EndpointKeepAliveAck(b"P", 1))
            self.h.clock.advance(4.0)
            self.assertEqual(self.pe.received(), [])
        self.assertIsNotNone(self.h.hs.get(b"P", 1))

    def test_timeout_removes_pe_and_closes(self):
        """
        Without an ack within the timeout the PE is removed, and its
        connection, carrying no other PE, is closed (RSPLIB aborts the
        association).
        """
        self.h.clock.advance(5.0)
        self.pe.received()
        self.h.clock.advance(4.9)
        self.assertIsNotNone(self.h.hs.get(b"P", 1))
        self.h.clock.advance(0.1)
        self.assertIsNone(self.h.hs.get(b"P", 1))
        self.assertEqual(self.h.removed, [(1, "keep-alive timeout")])
        self.assertTrue(self.pe.closed)

    def test_timeout_keeps_shared_connection(self):
        """
        A connection that still carries another, answering PE stays open.
        """
        self.h.clock.advance(2.0)
        self.pe.register(b"P", pe_param(2))
        self.h.clock.advance(3.0)
        self.assertEqual(self.pe.one(), EndpointKeepAlive(SERVER_ID, b"P", 1))
        self.h.clock.advance(2.0)
        self.assertEqual(self.pe.one(), EndpointKeepAlive(SERVER_ID, b"P", 2))
        self.pe.send(EndpointKeepAliveAck(b"P", 2))
        self.h.clock.advance(3.0)
        self.assertIsNone(self.h.hs.get(b"P", 1))
        self.assertIsNotNone(self.h.hs.get(b"P", 2))
        self.assertFalse(self.pe.closed)

    def test_configured_intervals(self):
        h = Harness(keep_alive_interval=1.0, keep_alive_timeout=0.5)
        pe = h.client()
        pe.register(b"P", pe_param(1))
        h.clock.advance(1.0)
        self.assertIsInstance(pe.one(), EndpointKeepAlive)
        h.clock.advance(0.5)
        self.assertIsNone(h.hs.get(b"P", 1))

    def test_ack_from_elsewhere_ignored(self):
        """
        An ack from another host does not keep a silent PE (RFC 5355).
        """
        self.h.clock.advance(5.0)
        other = self.h.client("127.0.0.3", 40009)
        other.send(EndpointKeepAliveAck(b"P", 1))
        self.h.clock.advance(5.0)
        self.assertIsNone(self.h.hs.get(b"P", 1))

    def test_ack_unknown_pe(self):
        self.pe.send(EndpointKeepAliveAck(b"P", 99))
        self.assertEqual(self.pe.received(), [])

    def test_connection_lost(self):
        """
        RSPLIB removes a PE when its association goes: so do we for the
        PE's connection.
        """
        self.pe.register(b"Q", pe_param(2))
        pu = self.h.client("127.0.0.1", 50000)
        self.pe.lose()
        self.assertEqual(len(self.h.hs), 0)
        self.assertEqual(sorted(self.h.removed), [(1, "connection lost"), (2, "connection lost")])
        pu.send(HandleResolution(b"P"))
        self.assertEqual(cause_of(pu.one()).code, ErrorCause.UNKNOWN_POOL_HANDLE)
        # Nothing is left scheduled for the removed PEs.
        self.h.clock.advance(100)
        self.assertEqual(pu.received(), [])

    def test_keep_alive_interval_stretched(self):
        # With more home PEs than max_keep_alive_rate keep-alives a second
        # per interval, the interval grows: the keep-alives to all PEs stay
        # within the rate (issue #14: PEs from many sources bought most of
        # the registrar's time with their keep-alives and acks).
        h = Harness(max_keep_alive_rate=2.0)
        pe = h.client()
        for n in range(1, 21):
            pe.register(b"P", pe_param(n))
        self.assertEqual(h.registrar.keep_alive_interval(), 10.0)
        pe.received()
        h.clock.advance(10.0)
        self.assertEqual(sum(isinstance(m, EndpointKeepAlive) for m in pe.received()), 20)
        for n in range(1, 21):
            pe.send(EndpointKeepAliveAck(b"P", n))
        h.clock.advance(9.9)
        self.assertEqual(pe.received(), [])
        h.clock.advance(0.1)
        self.assertEqual(sum(isinstance(m, EndpointKeepAlive) for m in pe.received()), 20)

    def test_keep_alive_interval_bounds(self):
        # Never below the configured interval, never past a minute.
        self.assertEqual(Harness(max_keep_alive_rate=1000.0).registrar.keep_alive_interval(), 5.0)
        h = Harness(max_keep_alive_rate=0.1)
        for n in range(1, 21):
            h.hs.register(b"P", n, home_registrar=SERVER_ID,
                          policy=PolicySettings(PolicyType.ROUND_ROBIN),
                          user_transport=UserTransport(TCPTransport(7, ("127.0.0.1",))),
                          now=0, registration_life=90000)
        self.assertEqual(h.registrar.keep_alive_interval(), 60.0)

    def test_connection_lost_in_pieces(self):
        # A connection of many PEs is cleared a few hundred at a time, the
        # reactor looking at its sockets in between (issue #14: 10,000 PEs
        # took 0.4 s in one go); a request in between is answered.
        from rserpool.asap.registrar import TIMERS_PER_CALL

        count = TIMERS_PER_CALL * 2 + 10
        for n in range(2, count + 1):
            self.pe.register(b"P", pe_param(n))
        self.pe.lose()
        self.assertEqual(len(self.h.hs), count - TIMERS_PER_CALL)
        pu = self.h.client("127.0.0.1", 50000)
        pu.send(HandleResolution(b"P"))
        self.assertEqual(len(pu.one().pool_elements), 3)
        for _ in range(3):
            self.h.clock.advance(0)
        self.assertEqual(len(self.h.hs), 0)
        self.assertEqual(len(self.h.removed), count)

    def test_reregistered_while_cleared(self):
        # A PE that re-registers over a new connection before its old
        # connection's PEs are all cleared keeps its registration.
        from rserpool.asap.registrar import TIMERS_PER_CALL

        for n in range(2, TIMERS_PER_CALL + 10):
            self.pe.register(b"P", pe_param(n))
        self.pe.lose()
        again = self.h.client("127.0.0.1", 40001)
        survivors = [pe_id for pe_id in range(1, TIMERS_PER_CALL + 10) if self.h.hs.get(b"P", pe_id)]
        again.register(b"P", pe_param(survivors[0]))
        self.h.clock.advance(0)
        self.assertEqual([pe.pe_id for pe in self.h.hs.pool(b"P")], [survivors[0]])

    def test_reregistration_resets_keep_alive(self):
        self.h.clock.advance(4.0)
        self.pe.register(b"P", pe_param(1))
        self.h.clock.advance(4.0)
        self.assertEqual(self.pe.received(), [])
        self.h.clock.advance(1.0)
        self.assertIsInstance(self.pe.one(), EndpointKeepAlive)


class UnreachableTests(unittest.TestCase):
    """
    RFC 5352 section 3.5: Endpoint Unreachable, MAX-BAD-PE-REPORT; RFC
    5355 section 2.13: one source counts once per PE, and the home
    registrar asks the PE before it removes it.
    """

    def setUp(self):
        self.h = Harness()
        self.pe = self.h.client()
        self.pe.register(b"P", pe_param(1))
        self.pus = [self.h.client("127.0.0.%d" % n, 50000) for n in (2, 3, 4)]

    def test_rfc5355_2_13_distinct_sources_then_keep_alive(self):
        for pu in self.pus[:2]:
            pu.send(EndpointUnreachable(b"P", 1))
        self.assertEqual(self.h.hs.get(b"P", 1).unreachable_reports, 2)
        self.assertEqual(self.pe.received(), [])
        # The third source: the registrar asks the PE itself.
        self.pus[2].send(EndpointUnreachable(b"P", 1))
        self.assertEqual(self.pe.one(), EndpointKeepAlive(SERVER_ID, b"P", 1))
        self.assertIsNotNone(self.h.hs.get(b"P", 1))
        # No answer within the keep-alive timeout: removed.
        self.h.clock.advance(5.0)
        self.assertIsNone(self.h.hs.get(b"P", 1))
        self.assertEqual(self.h.removed, [(1, "keep-alive timeout")])
        # No answer is defined for Endpoint Unreachable.
        self.assertEqual([pu.received() for pu in self.pus], [[], [], []])

    def test_rfc5355_2_13_one_source_counts_once(self):
        # The tester removed any PE with three reports from one PU.
        for _ in range(10):
            self.pus[0].send(EndpointUnreachable(b"P", 1))
        other_port = self.h.client("127.0.0.2", 50001)  # same source
        other_port.send(EndpointUnreachable(b"P", 1))
        self.assertEqual(self.pe.received(), [])
        self.h.clock.advance(30)
        self.assertIsNotNone(self.h.hs.get(b"P", 1))

    def test_rfc5355_2_13_the_pe_answers(self):
        for pu in self.pus:
            pu.send(EndpointUnreachable(b"P", 1))
        self.assertIsInstance(self.pe.one(), EndpointKeepAlive)
        self.pe.send(EndpointKeepAliveAck(b"P", 1))
        self.h.clock.advance(4)
        self.assertIsNotNone(self.h.hs.get(b"P", 1))
        # The reports were cleared: three sources are needed again, and
        # within a keep-alive interval of the last question they ask
        # nothing more (RFC 5355 section 2.14): the periodic keep-alive,
        # 5 s after the answer, asks.
        self.assertEqual(self.pe.received(), [])
        for pu in self.pus:
            pu.send(EndpointUnreachable(b"P", 1))
        self.assertEqual(self.pe.received(), [])
        self.h.clock.advance(1)
        self.assertIsInstance(self.pe.one(), EndpointKeepAlive)
        self.pe.send(EndpointKeepAliveAck(b"P", 1))
        # Past the interval, three sources make it ask at once again.
        self.h.clock.advance(1)
        for pu in self.pus:
            pu.send(EndpointUnreachable(b"P", 1))
        self.assertIsInstance(self.pe.one(), EndpointKeepAlive)

    def test_reports_expire(self):
        h = Harness(sources=SourceSettings(report_window=60.0))
        pe = h.client()
        pe.register(b"P", pe_param(1))
        pus = [h.client("127.0.0.%d" % n, 50000) for n in (2, 3, 4)]
        pus[0].send(EndpointUnreachable(b"P", 1))
        pus[1].send(EndpointUnreachable(b"P", 1))
        h.clock.advance(61)
        pe.received()
        pe.send(EndpointKeepAliveAck(b"P", 1))  # keep the PE alive
        pus[2].send(EndpointUnreachable(b"P", 1))
        self.assertEqual([m for m in pe.received()
                          if isinstance(m, EndpointKeepAlive) and not m.home], [])
        self.assertIsNotNone(h.hs.get(b"P", 1))

    def test_rfc5355_2_13_rate_per_source(self):
        # Over the rate, a source's reports are dropped, whatever its
        # connections.
        h = Harness(sources=SourceSettings(eu_rate=1.0), max_bad_pe_reports=1)
        pe = h.client()
        pe.register(b"P", pe_param(1))
        pe.register(b"P", pe_param(2))
        for port in range(50000, 50003):
            h.client("127.0.0.2", port).send(EndpointUnreachable(b"P", 1))
        self.assertEqual(h.registrar.refusals.totals["Endpoint Unreachable"], 1)

    def test_configured_threshold(self):
        h = Harness(max_bad_pe_reports=1)
        pe = h.client()
        pe.register(b"P", pe_param(1))
        h.client("127.0.0.2").send(EndpointUnreachable(b"P", 1))
        self.assertIsInstance(pe.one(), EndpointKeepAlive)
        h.clock.advance(5.0)
        self.assertIsNone(h.hs.get(b"P", 1))

    def test_unknown_pe(self):
        self.pus[0].send(EndpointUnreachable(b"P", 77))
        self.pus[0].send(EndpointUnreachable(b"X", 1))
        self.assertEqual(self.pus[0].received(), [])
        self.assertEqual(self.h.hs.get(b"P", 1).unreachable_reports, 0)


class FloodLimitTests(unittest.TestCase):
    """
    Per pool user rate limits on handle resolutions and Endpoint
    Unreachable messages (RFC 5355 section 2.13; RSPLIB's -maxhrrate and
    -maxeurate).
    """

    def setUp(self):
        self.h = Harness(max_hr_rate=10.0, max_eu_rate=1.0, max_bad_pe_reports=100)
        self.pe = self.h.client()
        self.pe.register(b"P", pe_param(1))
        self.pe.register(b"Q", pe_param(2))
        self.pu = self.h.client("127.0.0.1", 50000)

    def resolve(self, client, handle=b"P"):
        client.send(HandleResolution(handle))
        return client.one()

    def test_resolutions_within_limit(self):
        # One resolution every 0.2 s: 16 times over 3 s, 5.3 per second.
        for _ in range(40):
            self.assertIsNone(self.resolve(self.pu).error)
            self.h.clock.advance(0.2)

    def test_resolution_flood_refused(self):
        # RSPLIB's rate: with the last n (at most 16) times kept, n divided
        # by the time from the first to the last.  Resolutions 0.05 s apart:
        # the second gives 2 / 0.05 = 40 per second, over the limit of 10.
        self.assertIsNone(self.resolve(self.pu).error)
        self.h.clock.advance(0.05)
        refused = self.resolve(self.pu)
        self.assertEqual(refused.pool_handle, b"P")
        self.assertEqual(refused.pool_elements, ())
        self.assertEqual(cause_of(refused).code, ErrorCause.UNKNOWN_POOL_HANDLE)
        # Refused resolutions count: the pool user stays refused while it
        # keeps flooding, and selections did not advance.
        for _ in range(20):
            self.h.clock.advance(0.05)
            self.assertIsNotNone(self.resolve(self.pu).error)
        self.assertEqual(self.h.hs.get(b"P", 1).selection_count, 1)
        # 22 resolutions so far, at 0, 0.05, ..., 1.05 s; the last 16 kept
        # are 0.30 .. 1.05.  Slowing down to one every 0.5 s: at 1.55 the
        # times kept are 0.35 .. 1.05 and 1.55, 16 / 1.2 s = 13.3 per second,
        # refused; at 2.05, 0.40 .. 1.05, 1.55, 2.05: 16 / 1.65 s = 9.7,
        # served; at 2.55, 16 / 2.1 s = 7.6, served.
        answers = []
        for _ in range(3):
            self.h.clock.advance(0.5)
            answers.append(self.resolve(self.pu).error is None)
        self.assertEqual(answers, [False, True, True])

    def test_per_pool_user_and_handle(self):
        # Another pool user, and another handle, have rates of their own.
        other = self.h.client("127.0.0.1", 50001)
        self.resolve(self.pu)
        self.resolve(self.pu)
        self.assertIsNotNone(self.resolve(self.pu).error)
        self.assertIsNone(self.resolve(other).error)
        self.assertIsNone(self.resolve(self.pu, b"Q").error)

    def test_unknown_pool_counts(self):
        # A flood of resolutions of a pool that does not exist is limited
        # too (the answer is the same).
        for _ in range(3):
            response = self.resolve(self.pu, b"nowhere")
            self.assertEqual(cause_of(response).code, ErrorCause.UNKNOWN_POOL_HANDLE)
        self.assertEqual(self.h.registrar._hr_limit.rate(self.pu_key(), b"nowhere"), float("inf"))

    def pu_key(self):
        (conn,) = [c for c in self.h.registrar.connections if c is not self.pe_key()]
        return conn

    def pe_key(self):
        return self.h.hs.get(b"P", 1).connection

    def test_unreachable_flood_ignored(self):
        # At most 1 report per second for a pool handle: reports 0.1 s apart
        # after the first are ignored and do not count against the PE.
        for _ in range(10):
            self.pu.send(EndpointUnreachable(b"P", 1))
            self.h.clock.advance(0.1)
        self.assertEqual(self.h.hs.get(b"P", 1).unreachable_reports, 1)
        self.assertEqual(self.pu.received(), [])
        # The limit is per pool handle, as in RSPLIB, not per PE.
        self.pu.send(EndpointUnreachable(b"Q", 2))
        self.assertEqual(self.h.hs.get(b"Q", 2).unreachable_reports, 1)

    def test_state_goes_with_connection(self):
        self.resolve(self.pu)
        self.resolve(self.pu)
        self.assertEqual(len(self.h.registrar._hr_limit), 1)
        self.pu.lose()
        self.assertEqual(len(self.h.registrar._hr_limit), 0)

    def test_off_by_default(self):
        h = Harness()
        pe = h.client()
        pe.register(b"P", pe_param(1))
        pu = h.client("127.0.0.1", 50000)
        for _ in range(50):
            self.assertIsNone(self.resolve(pu).error)
        self.assertIsNone(h.registrar._hr_limit)

    def test_bad_config(self):
        for name in ("max_hr_rate", "max_eu_rate"):
            for value in (0, -1.0):
                self.assertRaises(ValueError, RegistrarConfig, server_id=1, **{name: value})


class RequestRateLimitTests(unittest.TestCase):
    """
    L{RequestRateLimit} on its own: RSPLIB's rate, buckets, clock steps.
    """

    def test_rate(self):
        limit = RequestRateLimit(5.0)
        self.assertTrue(limit.permit("c", b"h", 10.0))
        self.assertEqual(limit.rate("c", b"h"), 0.0)
        # 2 times 1 s apart: 2 per second (RSPLIB counts n, not n - 1).
        self.assertTrue(limit.permit("c", b"h", 11.0))
        self.assertEqual(limit.rate("c", b"h"), 2.0)
        # 17 more at 11.5 .. 19.5: the last 16 span 7.5 s, 16 / 7.5.
        for i in range(17):
            limit.permit("c", b"h", 11.5 + i * 0.5)
        self.assertAlmostEqual(limit.rate("c", b"h"), 16 / 7.5)

    def test_same_time_is_infinite(self):
        limit = RequestRateLimit(1000.0)
        limit.permit("c", b"h", 1.0)
        self.assertFalse(limit.permit("c", b"h", 1.0))

    def test_clock_going_back_not_kept(self):
        limit = RequestRateLimit(5.0)
        limit.permit("c", b"h", 10.0)
        limit.permit("c", b"h", 12.0)
        limit.permit("c", b"h", 11.0)
        self.assertEqual(limit.rate("c", b"h"), 1.0)

    def test_buckets_bounded(self):
        # However many handles a pool user names, it has at most 64 buckets
        # of at most 16 times.
        limit = RequestRateLimit(5.0)
        for i in range(1000):
            limit.permit("c", b"handle-%d" % i, float(i))
        buckets = limit._users["c"]
        self.assertLessEqual(len(buckets), BUCKETS)
        self.assertTrue(all(len(times) <= ENTRIES for times in buckets.values()))

    def test_bad_threshold(self):
        self.assertRaises(ValueError, RequestRateLimit, 0)
        self.assertRaises(ValueError, RequestRateLimit, -3)


def _tlv(ptype, value):
    length = 4 + len(value)
    return struct.pack("!HH", ptype, length) + value + b"\0" * (-length % 4)


def _message(mtype, body, flags=0):
    return struct.pack("!BBH", mtype, flags, 4 + len(body)) + body


class ErrorTests(unittest.TestCase):
    """
    RFC 5352 section 2.2.14 and RFC 5354 section 3: what the registrar
    answers to what it cannot use.
    """

    def setUp(self):
        self.h = Harness()
        self.conn = self.h.client()

    def error(self):
        message = self.conn.one()
        self.assertIsInstance(message, ASAPError)
        return cause_of(message)

    def test_unknown_message_type(self):
        data = _message(0x42, b"\0\0\0\0")
        self.conn.send_bytes(data)
        cause = self.error()
        self.assertEqual(cause.code, ErrorCause.UNRECOGNIZED_MESSAGE)
        self.assertEqual(cause.info, data)
        self.assertFalse(self.conn.closed)

    def test_unexpected_message(self):
        """
        Messages a registrar never receives are answered with Unrecognized
        Message (RSPLIB only logs them).
        """
        for message in (
            RegistrationResponse(b"P", 1),
            EndpointKeepAlive(1, b"P", 1),
            ServerAnnounce(5),
            Cookie(b"c"),
            BusinessCard(b"P", ()),
            HandleResolutionResponse(b"P", ROUND_ROBIN),
        ):
            self.conn.send(message)
            cause = self.error()
            self.assertEqual(cause.code, ErrorCause.UNRECOGNIZED_MESSAGE)
            self.assertEqual(cause.info, encode(message))

    def test_error_not_answered(self):
        self.conn.send(ASAPError(OperationError.of(ErrorCause.INVALID_VALUES)))
        self.assertEqual(self.conn.received(), [])

    def test_invalid_values(self):
        """
        A message with a malformed parameter is answered with Invalid
        Values and the stream goes on.
        """
        bad_id = _tlv(0x000E, b"\0\0\1")
        self.conn.send_bytes(_message(0x02, _tlv(0x0009, b"P") + bad_id))
        self.assertEqual(self.error().code, ErrorCause.INVALID_VALUES)
        self.conn.send(HandleResolution(b"P"))
        self.assertEqual(cause_of(self.conn.one()).code, ErrorCause.UNKNOWN_POOL_HANDLE)

    def test_missing_parameter(self):
        self.conn.send_bytes(_message(0x01, _tlv(0x0009, b"P")))
        self.assertEqual(self.error().code, ErrorCause.INVALID_VALUES)

    def test_unrecognized_parameter_stop_report(self):
        """
        Action bits 01: stop, discard the message, report.
        """
        unknown = _tlv(0x4077, b"abcd")
        self.conn.send_bytes(_message(0x05, _tlv(0x0009, b"P") + unknown))
        cause = self.error()
        self.assertEqual(cause.code, ErrorCause.UNRECOGNIZED_PARAMETER)
        self.assertEqual(cause.info, unknown)

    def test_unrecognized_parameter_stop_silent(self):
        """
        Action bits 00: stop, discard the message, say nothing.
        """
        self.conn.send_bytes(_message(0x05, _tlv(0x0009, b"P") + _tlv(0x0077, b"abcd")))
        self.assertEqual(self.conn.received(), [])

    def test_unrecognized_parameter_skip(self):
        """
        Action bits 10: skip the parameter and process the message.
        """
        self.conn.send_bytes(_message(0x05, _tlv(0x0009, b"P") + _tlv(0x8077, b"abcd")))
        response = self.conn.one()
        self.assertIsInstance(response, HandleResolutionResponse)

    def test_unrecognized_parameter_skip_report(self):
        """
        Action bits 11: process the message, then report the parameter.
        """
        unknown = _tlv(0xC077, b"abcd")
        self.conn.send_bytes(_message(0x05, _tlv(0x0009, b"P") + unknown))
        response, error = self.conn.received()
        self.assertIsInstance(response, HandleResolutionResponse)
        self.assertIsInstance(error, ASAPError)
        self.assertEqual(cause_of(error).code, ErrorCause.UNRECOGNIZED_PARAMETER)
        self.assertEqual(cause_of(error).info, unknown)

    def test_framing_lost_closes_only_that_connection(self):
        """
        A length field below 4 loses the framing: the registrar reports it
        and closes that connection; the others and the handlespace go on.
        """
        pe = self.h.client("127.0.0.1", 40100)
        pe.register(b"P", pe_param(1))
        self.conn.send_bytes(b"\x05\x00\x00\x02garbage")
        self.assertEqual(self.error().code, ErrorCause.INVALID_VALUES)
        self.assertTrue(self.conn.closed)
        self.assertNotIn(self.conn.protocol, self.h.registrar.connections)
        self.conn.send_bytes(encode(HandleResolution(b"P")))
        self.assertEqual(self.conn.received(), [])
        pe.send(HandleResolution(b"P"))
        self.assertEqual(len(pe.one().pool_elements), 1)

    def test_framing_lost_removes_pes_of_connection(self):
        self.conn.register(b"P", pe_param(1))
        self.conn.send_bytes(b"\x01\x00\x00\x00")
        self.assertEqual(len(self.h.hs), 0)

    def test_split_and_batched(self):
        """
        Messages split across reads and several messages in one read are
        all answered, in order.
        """
        data = b"".join(encode(HandleResolution(b"X%d" % i)) for i in range(3))
        for i in range(len(data)):
            self.conn.send_bytes(data[i : i + 1])
        handles = [m.pool_handle for m in self.conn.received()]
        self.assertEqual(handles, [b"X0", b"X1", b"X2"])


class ResponseEncodingTests(unittest.TestCase):
    """
    The hand-built Handle Resolution Response is what the codec would build.
    """

    def test_same_as_codec(self):
        h = Harness()
        pe = h.client()
        pol = Policy.make(PolicyType.WEIGHTED_ROUND_ROBIN, weight=3)
        for i in (1, 2):
            pe.register(b"PoolHandle", pe_param(i, policy=pol, port=i))
        pe.send(HandleResolution(b"PoolHandle", 2))
        data = pe.transport.value()
        message = decode(data, "asap")
        self.assertEqual(encode(message), data)

    def test_home_change_refreshes_cache(self):
        h = Harness()
        pe = h.client()
        pe.register(b"P", pe_param(1))
        pe.send(HandleResolution(b"P"))
        pe.received()
        h.hs.set_owner(h.hs.get(b"P", 1), 0x99)
        pe.send(HandleResolution(b"P"))
        self.assertEqual(pe.one().pool_elements[0].home_registrar, 0x99)

    def test_new_policy_refreshes_cache(self):
        """
        The response's Policy parameter (the first PE's, cached) follows a
        re-registration with another load.
        """
        h = Harness()
        pe = h.client()
        pe.register(b"P", pe_param(1, policy=Policy.make(PolicyType.LEAST_USED, load=10)))
        pe.send(HandleResolution(b"P"))
        self.assertEqual(pe.one().policy, Policy.make(PolicyType.LEAST_USED, load=10))
        pe.register(b"P", pe_param(1, policy=Policy.make(PolicyType.LEAST_USED, load=99)))
        pe.send(HandleResolution(b"P"))
        response = pe.one()
        self.assertEqual(response.policy, Policy.make(PolicyType.LEAST_USED, load=99))
        self.assertEqual(response.pool_elements[0].policy, response.policy)


class UserTransportTests(unittest.TestCase):
    def test_attributes(self):
        t = UserTransport(TCPTransport(1, ("127.0.0.1",), DATA_PLUS_CONTROL))
        self.assertEqual(t.transport_protocol, 5)
        self.assertTrue(t.control_channel)
        u = UserTransport(UDPTransport(1, ("127.0.0.1",)))
        self.assertFalse(u.control_channel)
        self.assertEqual(t, UserTransport(TCPTransport(1, ("127.0.0.1",), DATA_PLUS_CONTROL)))
        self.assertNotEqual(t, u)


class ConfigTests(unittest.TestCase):
    def test_defaults_are_rsplib(self):
        c = RegistrarConfig(server_id=1)
        self.assertEqual(
            (c.keep_alive_interval, c.keep_alive_timeout, c.max_bad_pe_reports, c.max_hr_items),
            (5.0, 5.0, 3, 3),
        )

    def test_invalid(self):
        self.assertRaises(ValueError, RegistrarConfig, server_id=0)
        self.assertRaises(ValueError, RegistrarConfig, server_id=1, max_bad_pe_reports=0)
        self.assertRaises(ValueError, RegistrarConfig, server_id=1, max_hr_items_cap=129)
        self.assertRaises(ValueError, RegistrarConfig, server_id=1, keep_alive_interval=0)


class ScopeTests(unittest.TestCase):
    def test_scopes(self):
        cases = {
            "0.0.0.0": Scope.UNSPECIFIED,
            "127.0.0.1": Scope.LOOPBACK,
            "127.9.9.9": Scope.LOOPBACK,
            "10.0.0.1": Scope.SITE_LOCAL,
            "172.16.0.1": Scope.SITE_LOCAL,
            "172.32.0.1": Scope.GLOBAL,
            "192.168.1.1": Scope.SITE_LOCAL,
            "169.254.1.1": Scope.LINK_LOCAL,
            "239.0.0.50": Scope.MULTICAST_GLOBAL,
            "192.0.2.1": Scope.GLOBAL,
            "::": Scope.UNSPECIFIED,
            "::1": Scope.LOOPBACK,
            "fe80::1": Scope.LINK_LOCAL,
            "fec0::1": Scope.SITE_LOCAL,
            "fd00::1": Scope.SITE_LOCAL,
            "2001:db8::1": Scope.GLOBAL,
            "::ffff:10.0.0.1": Scope.SITE_LOCAL,
            "ff02::1": Scope.MULTICAST_LINK_LOCAL,
            "ff05::1": Scope.MULTICAST_SITE_LOCAL,
            "ff0e::1": Scope.MULTICAST_GLOBAL,
        }
        for text, scope in cases.items():
            self.assertEqual(address_scope(ipaddress.ip_address(text)), scope, text)

    def test_parse(self):
        self.assertEqual(parse_scope("loopback"), Scope.LOOPBACK)
        self.assertEqual(parse_scope("sitelocal"), Scope.SITE_LOCAL)
        self.assertEqual(parse_scope("Site-Local"), Scope.SITE_LOCAL)
        self.assertEqual(parse_scope("global"), Scope.GLOBAL)
        self.assertRaises(ValueError, parse_scope, "planet")

    def test_listening_scope(self):
        self.assertEqual(listening_scope(LOCAL), Scope.LOOPBACK)
        self.assertEqual(listening_scope(ipaddress.ip_address("0.0.0.0")), Scope.SITE_LOCAL)
        self.assertEqual(listening_scope(None), Scope.SITE_LOCAL)
        self.assertEqual(listening_scope(ipaddress.ip_address("192.0.2.1")), Scope.GLOBAL)


class ObserverTests(unittest.TestCase):
    def test_observers(self):
        h = Harness()
        pe = h.client()
        pe.register(b"P", pe_param(1))
        pe.register(b"P", pe_param(1))
        self.assertEqual(len(h.registered), 2)
        pe.send(Deregistration(b"P", 1))
        self.assertEqual(h.removed, [(1, "deregistered")])


class PlainConnection:
    """
    A connection as the machine sees it, with nothing to send over: the
    machine must not try (it returns actions).
    """

    mapping = "fake"

    def __init__(self, port=40000, address=None):
        host = LOCAL if address is None else ipaddress.ip_address(address)
        self.peer = (host, port)
        self.peer_addresses = (host,)
        self.peer_transport = TCPTransport(port, (host,))

    def rtt(self):
        raise NotAvailable("rtt", self.mapping)


class ActionTests(unittest.TestCase):
    """
    The machine's input methods return what to do (issue #15, one machine
    style), and do none of it themselves.
    """

    def setUp(self):
        self.registrar = ASAPRegistrar(
            RegistrarConfig(server_id=SERVER_ID, min_address_scope=Scope.LOOPBACK))
        self.conn = PlainConnection()
        self.assertEqual(self.registrar.connection_made(self.conn, 0.0), ())

    def test_over_its_limits_throttled(self):
        """
        A registration refused for the source's limits, or because the
        registrar is home to as many PEs as it may, also throttles the
        source: its further messages wait unread (issue #14).
        """
        from rserpool.actions import Throttle
        from rserpool.asap.registrar import THROTTLE_SECONDS

        registrar = ASAPRegistrar(RegistrarConfig(
            server_id=SERVER_ID, min_address_scope=Scope.LOOPBACK,
            sources=SourceSettings(max_pes=1), max_pool_elements=2))
        conn, other = PlainConnection(), PlainConnection(address="127.0.0.2")
        registrar.connection_made(conn, 0.0)
        registrar.connection_made(other, 0.0)
        registrar.message_received(conn, Registration(b"P", pe_param(1)), 0.0)
        actions = registrar.message_received(conn, Registration(b"P", pe_param(2)), 0.0)
        self.assertIn(Throttle(conn, THROTTLE_SECONDS), actions)
        actions = registrar.message_received(
            other, Registration(b"P", pe_param(3, "127.0.0.2")), 0.0)
        self.assertNotIn(Throttle(other, THROTTLE_SECONDS), actions)
        third = PlainConnection(address="127.0.0.3")
        registrar.connection_made(third, 0.0)
        actions = registrar.message_received(
            third, Registration(b"P", pe_param(4, "127.0.0.3")), 0.0)
        self.assertIn(Throttle(third, THROTTLE_SECONDS), actions)

    def test_registration(self):
        """
        A registration returns the response to send and the wake-up for
        the PE's keep-alive.
        """
        actions = self.registrar.message_received(
            self.conn, Registration(b"P", pe_param(1)), 0.0)
        self.assertEqual(actions, [
            Send(self.conn, RegistrationResponse(b"P", 1)),
            Schedule(self.registrar, 5.0),
        ])
        self.assertEqual(self.registrar.take_actions(), ())

    def test_handle_resolution(self):
        """
        A resolution returns one send of the encoded response (the hot
        path encodes from the PEs' cached parameters).
        """
        self.registrar.message_received(self.conn, Registration(b"P", pe_param(1)), 0.0)
        pu = PlainConnection(40001)
        (action,) = self.registrar.message_received(pu, HandleResolution(b"P"), 0.1)
        self.assertIs(action.connection, pu)
        self.assertIsInstance(action.message, bytes)
        response = decode(action.message, "asap")
        self.assertEqual([pe.identifier for pe in response.pool_elements], [1])

    def test_keep_alive_timeout_closes(self):
        """
        The keep-alive is a send; its timeout removes the PE and returns a
        close of the PE's connection.
        """
        self.registrar.message_received(self.conn, Registration(b"P", pe_param(1)), 0.0)
        actions = self.registrar.timer_fired(5.0)
        self.assertEqual(actions[0], Send(self.conn, EndpointKeepAlive(SERVER_ID, b"P", 1)))
        self.assertEqual(actions[-1], Schedule(self.registrar, 10.0))
        actions = self.registrar.timer_fired(10.0)
        self.assertIn(Close(self.conn), actions)
        self.assertEqual(len(self.registrar.handlespace), 0)

    def test_connection_lost(self):
        """
        Nothing to send when a connection goes; its PEs are removed.
        """
        self.registrar.message_received(self.conn, Registration(b"P", pe_param(1)), 0.0)
        self.assertEqual(self.registrar.connection_lost(self.conn, 1.0), ())
        self.assertEqual(len(self.registrar.handlespace), 0)


class AnnounceTests(unittest.TestCase):
    """
    RFC 5352 section 3.6: Server Announce, sent and learned.
    """

    def test_table_learns_and_forgets(self):
        from rserpool.asap.announce import RegistrarTable

        table = RegistrarTable(timeout=5.0)
        data = encode(ServerAnnounce(0x42, (TCPTransport(3863, ("0.0.0.0",)),)))
        entry = table.datagram_received(data, ("192.0.2.9", 3863), 10.0)
        self.assertEqual(entry.server_id, 0x42)
        self.assertEqual(entry.endpoints, [("tcp", ipaddress.ip_address("192.0.2.9"), 3863)])
        self.assertEqual([r.server_id for r in table.registrars(14.0)], [0x42])
        self.assertEqual(table.registrars(15.1), [])
        self.assertIsNone(table.get(0x42))

    def test_table_rsplib_announce(self):
        """
        RSPLIB announces no transport: the sender's address, SCTP, port 3863.
        """
        from rserpool.asap.announce import RegistrarTable

        table = RegistrarTable()
        entry = table.datagram_received(encode(ServerAnnounce(7)), ("::ffff:10.0.0.1", 999), 0.0)
        self.assertEqual(entry.endpoints, [("sctp", ipaddress.ip_address("10.0.0.1"), 3863)])

    def test_table_ignores_junk(self):
        from rserpool.asap.announce import RegistrarTable

        table = RegistrarTable()
        self.assertIsNone(table.datagram_received(b"junk", ("127.0.0.1", 1), 0.0))
        self.assertIsNone(table.datagram_received(encode(Cookie(b"x")), ("127.0.0.1", 1), 0.0))
        self.assertIsNone(table.datagram_received(encode(ServerAnnounce(0)), ("127.0.0.1", 1), 0.0))

    def test_sender_period(self):
        """
        Announcements every interval, varied by at most 12.5 %.
        """
        import random

        from rserpool.transport.multicast import AnnounceSender

        clock = task.Clock()
        sent = []

        class FakeUDP:
            def write(self, data, address):
                sent.append((clock.seconds(), decode(data, "asap"), address))

        sender = AnnounceSender(
            clock, 0x42, lambda: [TCPTransport(3863, ("127.0.0.1",))], ("127.0.0.1", 9),
            interval=1.0, rng=random.Random(1),
        )
        sender.transport = FakeUDP()
        sender.startProtocol()
        for _ in range(100):
            clock.advance(0.05)
        times = [t for t, _, _ in sent]
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertTrue(all(0.85 <= g <= 1.2 for g in gaps), gaps)
        self.assertEqual(sent[0][1], ServerAnnounce(0x42, (TCPTransport(3863, ("127.0.0.1",)),)))
        sender.stopProtocol()
        self.assertEqual(clock.getDelayedCalls(), [])


class SourceLimitTests(unittest.TestCase):
    """
    Limits keyed by the source (its address or TLS-PSK identity), not the
    connection, so that reconnecting does not dodge them (RFC 5355
    sections 2.1, 2.2 and 3; issue #14's registration and resolution
    floods).
    """

    def test_rfc5355_2_1_pes_per_source(self):
        h = Harness(sources=SourceSettings(max_pes=3))
        a = h.client("127.0.0.2", 40000)
        for n in (1, 2, 3):
            a.register(b"P", pe_param(n, "127.0.0.2"))
        refused = a.register(b"P", pe_param(4, "127.0.0.2"), expect_ok=False)
        self.assertEqual(cause_of(refused).code, ErrorCause.LACK_OF_RESOURCES)
        # Another connection of the same source: refused too.
        again = h.client("127.0.0.2", 40001)
        refused = again.register(b"P", pe_param(4, "127.0.0.2"), expect_ok=False)
        self.assertEqual(cause_of(refused).code, ErrorCause.LACK_OF_RESOURCES)
        # Re-registering a PE it holds is always allowed; another source
        # is not affected.
        a.register(b"P", pe_param(3, "127.0.0.2"))
        h.client("127.0.0.3").register(b"P", pe_param(5, "127.0.0.3"))
        # Room again once one of its PEs is gone.
        a.send(Deregistration(b"P", 1))
        a.received()
        again.register(b"P", pe_param(4, "127.0.0.2"))
        self.assertEqual(h.registrar.refusals.totals["registration"], 2)

    def test_rfc5355_2_2_pools_per_source(self):
        h = Harness(sources=SourceSettings(max_pools=2))
        a = h.client("127.0.0.2")
        a.register(b"A", pe_param(1, "127.0.0.2"))
        a.register(b"B", pe_param(2, "127.0.0.2"))
        refused = a.register(b"C", pe_param(3, "127.0.0.2"), expect_ok=False)
        self.assertEqual(cause_of(refused).code, ErrorCause.LACK_OF_RESOURCES)
        a.register(b"A", pe_param(4, "127.0.0.2"))   # a pool that exists
        # A pool it created that is gone again no longer counts.
        a.send(Deregistration(b"B", 2))
        a.received()
        a.register(b"C", pe_param(3, "127.0.0.2"))

    def test_resolutions_per_source(self):
        h = Harness(sources=SourceSettings(hr_rate=10.0))
        h.client().register(b"P", pe_param(1))
        flooder = [h.client("127.0.0.2", port) for port in (50000, 50001)]
        answers = []
        for n in range(30):
            client = flooder[n % 2]
            client.send(HandleResolution(b"P"))
            answers.append(client.one())
        refused = [a for a in answers if a.error is not None]
        # a burst of twice the rate, then Unknown Pool Handle (as RSPLIB
        # answers its own limit), across both its connections
        self.assertEqual(len(refused), 10)
        self.assertEqual({cause_of(a).code for a in refused}, {ErrorCause.UNKNOWN_POOL_HANDLE})
        other = h.client("127.0.0.3")
        other.send(HandleResolution(b"P"))
        self.assertIsNone(other.one().error)
        h.clock.advance(1.0)
        flooder[0].send(HandleResolution(b"P"))
        self.assertIsNone(flooder[0].one().error)

    def test_refusals_logged_at_a_bounded_rate(self):
        h = Harness(sources=SourceSettings(hr_rate=1.0))
        h.client().register(b"P", pe_param(1))
        lines = []
        h.registrar.log = Logger(observer=lines.append)
        flooder = h.client("127.0.0.2")
        for _ in range(10000):
            flooder.send(HandleResolution(b"P"))
        flooder.received()
        self.assertEqual(len(lines), 1)
        self.assertIn("further refusals are summarized", formatEvent(lines[0]))
        h.clock.advance(10)
        flooder.send(HandleResolution(b"P"))
        self.assertEqual(len(lines), 2)
        self.assertEqual(
            formatEvent(lines[1]),
            "refused 9998 handle resolution request(s) in 10 s from 1 source(s) "
            "(127.0.0.2: 9998)")


class LogVolumeTests(unittest.TestCase):
    """
    Issue #14, log amplification: whatever a peer sends, the log grows by
    a bounded number of lines a second.
    """

    def test_bad_messages(self):
        h = Harness()
        lines = []
        h.registrar.log = Logger(observer=lines.append)
        flooder = h.client("127.0.0.2")
        bad = struct.pack("!BBH", 0x7F, 0, 8) + b"\x00" * 4
        for _ in range(10000):
            flooder.send_bytes(bad)
        self.assertEqual(len(lines), 200)
        h.clock.advance(10)
        flooder.send_bytes(bad)
        self.assertEqual(len(lines), 202)
        self.assertEqual(formatEvent(lines[200]), "9800 log line(s) left out (more than 100 a second)")

    def test_registration_churn(self):
        h = Harness()
        lines = []
        h.registrar.log = Logger(observer=lines.append)
        pe = h.client()
        for n in range(2000):
            pe.register(b"P", pe_param(1 + n % 7))
            pe.send(Deregistration(b"P", 1 + n % 7))
            pe.received()
        self.assertLessEqual(len(lines), 200)


class ServerInformationTests(unittest.TestCase):
    """
    What a registrar's ENRP Presence says of where it listens.
    """

    def information(self, host):
        class Port:
            def getHost(self):
                return host

        from rserpool.services.peering import server_information

        return server_information(SERVER_ID, [Port()]).transport

    def test_sctp_wildcard_names_no_loopback(self):
        # The kernel lists every address of a wildcard SCTP socket; a
        # peer elsewhere must not be sent to 127.0.0.1 (itself).
        host = SCTPAddress("0.0.0.0", 9901, ("0.0.0.0", "127.0.0.1", "10.213.0.1"))
        self.assertEqual(self.information(host),
                         SCTPTransport(9901, ("0.0.0.0", "10.213.0.1")))

    def test_sctp_loopback_only(self):
        host = SCTPAddress("0.0.0.0", 9901, ("0.0.0.0", "127.0.0.1"))
        self.assertEqual(self.information(host),
                         SCTPTransport(9901, ("0.0.0.0", "127.0.0.1")))
        # the kernel's list of a wildcard socket need not name 0.0.0.0
        host = SCTPAddress("0.0.0.0", 9901, ("127.0.0.1", "10.213.0.1"))
        self.assertEqual(self.information(host), SCTPTransport(9901, ("10.213.0.1",)))
        bound = SCTPAddress("127.0.0.1", 9901, ("127.0.0.1",))
        self.assertEqual(self.information(bound), SCTPTransport(9901, ("127.0.0.1",)))
