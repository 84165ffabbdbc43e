"""
Tests for the pool element: the sans-IO machine (every procedure and
timer, with explicit times) and L{rserpool.pe.PoolElementService} against
a registrar on loopback.
"""
import ipaddress
import random

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

from rserpool.asap import pool_element as m
from rserpool.asap.scope import Scope
from rserpool.codes import ErrorCause, PolicyType, cause_name
from rserpool.pe import (
    PoolElementService,
    RegistrationRejected,
    load_value,
    parse_policy,
    rejection_advice,
)
from rserpool.services import RegistrarService, make_config
from rserpool.wire import (
    ASAPError,
    Cause,
    DeregistrationResponse,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    OperationError,
    Policy,
    PoolElement,
    Registration,
    RegistrationResponse,
    SCTPTransport,
    TCPTransport,
    encode,
)

from tests.helpers import complete_tcp, eventually, loopback_registrar, running

H = b"EchoPool"
LOCAL = ipaddress.ip_address("127.0.0.1")


def machine(**kw):
    config = m.PoolElementConfig(H, Policy.make(PolicyType.ROUND_ROBIN), identifier=0x1234, **kw)
    transport = TCPTransport(7, ("0.0.0.0",))
    return m.PoolElementMachine(config, transport, ["tcp:127.0.0.1:1", "tcp:127.0.0.1:2"])


def kinds(actions):
    return [type(a).__name__ for a in actions]


def ip(text):
    return ipaddress.ip_address(text)


class EffectiveTransportTests(unittest.TestCase):
    """
    What a PE registers: the addresses it reaches the registrar from, in
    place of the wildcard it serves on (issue: a PE on another host than
    its registrar must not register 127.0.0.1).
    """

    def test_wildcard_over_tcp(self):
        t = m.effective_transport(TCPTransport(7, ("0.0.0.0",)), (ip("10.213.0.2"),))
        self.assertEqual(t, TCPTransport(7, (ip("10.213.0.2"),)))

    def test_single_address_accepted(self):
        t = m.effective_transport(TCPTransport(7, ("0.0.0.0",)), ip("10.213.0.2"))
        self.assertEqual(t.addresses, (ip("10.213.0.2"),))

    def test_loopback_registrar(self):
        t = m.effective_transport(TCPTransport(7, ("0.0.0.0",)), (LOCAL,))
        self.assertEqual(t.addresses, (LOCAL,))

    def test_family(self):
        # 0.0.0.0 stands for IPv4 addresses only, :: for IPv6 ones; a
        # dual-stack socket lists both.
        v6 = ip("2001:db8::2")
        self.assertEqual(
            m.effective_transport(TCPTransport(7, ("::",)), (v6,)).addresses, (v6,))
        dual = TCPTransport(7, ("::", "0.0.0.0"))
        self.assertEqual(m.effective_transport(dual, (ip("10.0.0.2"),)).addresses,
                         (ip("10.0.0.2"),))
        self.assertEqual(m.effective_transport(dual, (v6,)).addresses, (v6,))

    def test_sctp_every_local_address_but_loopback(self):
        # SCTP: every local address of the association (multi-homing);
        # loopback only to a loopback registrar.
        local = (ip("10.213.0.2"), ip("127.0.0.1"), ip("192.168.7.2"), ip("2001:db8::2"))
        t = m.effective_transport(SCTPTransport(9, ("0.0.0.0",)), local)
        self.assertEqual(t.addresses, (ip("10.213.0.2"), ip("192.168.7.2")))
        t = m.effective_transport(SCTPTransport(9, ("0.0.0.0", "::")), local)
        self.assertEqual(t.addresses, (ip("10.213.0.2"), ip("192.168.7.2"), ip("2001:db8::2")))
        t = m.effective_transport(SCTPTransport(9, ("0.0.0.0",)), (LOCAL, ip("10.213.0.2")))
        self.assertEqual(t.addresses, (LOCAL, ip("10.213.0.2")))

    def test_one_address_transports(self):
        # A TCP port registered over an SCTP registrar association: TCP
        # transports carry exactly one address (RFC 5354 section 3.3), the
        # association's primary local one.
        local = (ip("10.213.0.2"), ip("192.168.7.2"))
        t = m.effective_transport(TCPTransport(7, ("0.0.0.0",)), local)
        self.assertEqual(t.addresses, (ip("10.213.0.2"),))

    def test_chosen_addresses_kept(self):
        # An address the user bound to is registered as it is, even
        # loopback to a remote registrar (which then says no, and the PE
        # says why).
        t = m.effective_transport(TCPTransport(7, ("127.0.0.1",)), (ip("10.213.0.2"),))
        self.assertEqual(t.addresses, (LOCAL,))

    def test_unknown_local(self):
        wild = TCPTransport(7, ("0.0.0.0",))
        self.assertIs(m.effective_transport(wild, None), wild)
        self.assertIs(m.effective_transport(wild, ()), wild)

    def test_registration_uses_connection_addresses(self):
        pe = machine()
        pe.start(0)
        (c,) = pe.actions()
        pe.connected(c.attempt, "c1", (ip("10.213.0.2"),), 0)
        (send,) = pe.actions()
        self.assertEqual(send.message.pool_element.user_transport.addresses, (ip("10.213.0.2"),))


class MachineTests(unittest.TestCase):
    def registered(self, pe, now=0.0):
        pe.start(now)
        (connect,) = pe.actions()
        pe.connected(connect.attempt, "c1", LOCAL, now)
        (send,) = pe.actions()
        pe.message_received("c1", RegistrationResponse(H, 0x1234), now)
        return send, pe.actions()

    def test_register(self):
        # RFC 5352 section 3.1: Registration with handle, PE, policy.
        pe = machine()
        pe.start(0)
        (connect,) = pe.actions()
        self.assertEqual(connect.endpoint, "tcp:127.0.0.1:1")
        self.assertTrue(pe.connected(connect.attempt, "c1", LOCAL, 0))
        (send,) = pe.actions()
        self.assertIsInstance(send.message, Registration)
        element = send.message.pool_element
        self.assertEqual(element.identifier, 0x1234)
        self.assertEqual(element.registration_life, 90000)
        # The wildcard address became the connection's local address.
        self.assertEqual(element.user_transport.addresses, (LOCAL,))
        pe.message_received("c1", RegistrationResponse(H, 0x1234), 0.5)
        (event,) = pe.actions()
        self.assertEqual(event, m.Registered("tcp:127.0.0.1:1", False))
        self.assertEqual(pe.state, m.REGISTERED)
        self.assertEqual(pe.next_deadline, 30.5)

    def test_reregistration_timer(self):
        pe = machine()
        self.registered(pe)
        pe.timer(29.9)
        self.assertEqual(pe.actions(), [])
        pe.timer(30.0)
        (send,) = pe.actions()
        self.assertIsInstance(send.message, Registration)
        self.assertEqual(pe.next_deadline, 33.0)  # response timeout
        pe.message_received("c1", RegistrationResponse(H, 0x1234), 30.1)
        self.assertEqual(pe.actions(), [])  # no new Registered event
        self.assertEqual(pe.next_deadline, 60.1)

    def test_load_change_reregisters(self):
        config = m.PoolElementConfig(H, Policy.make(PolicyType.LEAST_USED, load=0), identifier=1)
        pe = m.PoolElementMachine(config, TCPTransport(7, ("127.0.0.1",)), ["tcp:127.0.0.1:1"])
        pe.start(0)
        (c,) = pe.actions()
        pe.connected(c.attempt, "c", LOCAL, 0)
        pe.actions()
        pe.message_received("c", RegistrationResponse(H, 1), 0)
        pe.actions()
        pe.set_policy(Policy.make(PolicyType.LEAST_USED, load=load_value(0.5)), 1)
        (send,) = pe.actions()
        self.assertEqual(send.message.pool_element.policy.get("load"), load_value(0.5))

    def test_keep_alive_ack(self):
        # RFC 5352 section 3.7.
        pe = machine()
        self.registered(pe)
        pe.message_received("c1", EndpointKeepAlive(0xAA, H, 0x1234), 5)
        actions = pe.actions()
        self.assertEqual(actions[0], m.HomeChanged(0xAA))
        self.assertEqual(actions[1], m.Send("c1", EndpointKeepAliveAck(H, 0x1234)))
        self.assertEqual(pe.home_id, 0xAA)
        # Someone else's identifier: not for us.
        pe.message_received("c1", EndpointKeepAlive(0xAA, H, 0x9999), 6)
        self.assertEqual(pe.actions(), [])

    def test_keep_alive_home_flag_from_new_registrar(self):
        # RFC 5352 section 3.7 / RFC 5353 takeover: H flag from another
        # registrar makes it the home registrar.
        pe = machine()
        self.registered(pe)
        pe.message_received("c1", EndpointKeepAlive(0xAA, H, 0x1234), 5)
        pe.actions()
        pe.message_received("c2", EndpointKeepAlive(0xBB, H, 0x1234, home=False), 6)
        self.assertEqual(pe.actions(), [])  # no H flag: ignored
        pe.message_received("c2", EndpointKeepAlive(0xBB, H, 0x1234, home=True), 7)
        actions = pe.actions()
        self.assertIn(m.Close("c1"), actions)
        self.assertIn(m.HomeChanged(0xBB), actions)
        self.assertIn(m.Send("c2", EndpointKeepAliveAck(H, 0x1234)), actions)
        self.assertIs(pe.connection, "c2")
        self.assertEqual(pe.home_id, 0xBB)

    def test_adopted_over_incoming_connection(self):
        # RFC 5352 section 3.4 / RFC 5353 takeover: registrars that took
        # the PE over connect to its ASAP transport; the one whose Keep
        # Alive carries the H flag is answered there (MUST) and becomes the
        # home: the next Registration goes over its connection (SHOULD),
        # with the addresses of that connection, and losing it names it.
        config = m.PoolElementConfig(H, Policy.make(PolicyType.ROUND_ROBIN), identifier=0x1234,
                                     reregistration_interval=2.0)
        pe = m.PoolElementMachine(config, SCTPTransport(7, ("0.0.0.0",)),
                                  ["sctp:host=10.0.0.1:port=3863"])
        pe.start(0)
        (connect,) = pe.actions()
        pe.connected(connect.attempt, "c1", (ip("10.0.0.2"),), 0)
        pe.actions()
        pe.message_received("c1", RegistrationResponse(H, 0x1234), 0)
        pe.actions()
        new_home = "sctp:host=10.0.1.1:port=3863:ppid=11"
        pe.incoming_connection("c2", (ip("10.0.1.2"), ip("10.0.2.2")), 1, new_home)
        pe.incoming_connection("c3", (ip("10.0.3.2"),), 1, "sctp:host=10.0.3.1:port=3863:ppid=11")
        self.assertEqual(pe.actions(), [])
        pe.message_received("c2", EndpointKeepAlive(0xBB, H, 0x1234, home=True), 1)
        actions = pe.actions()
        self.assertEqual(actions, [m.Close("c1"), m.HomeChanged(0xBB),
                                   m.Send("c2", EndpointKeepAliveAck(H, 0x1234))])
        self.assertEqual((pe.state, pe.connection, pe.endpoint), (m.REGISTERED, "c2", new_home))
        self.assertEqual(pe.next_deadline, 3.0)
        pe.timer(3.0)
        (send,) = pe.actions()
        self.assertEqual(send.connection, "c2")
        self.assertEqual(send.message.pool_element.home_registrar, 0xBB)
        self.assertEqual(send.message.pool_element.user_transport.addresses,
                         (ip("10.0.1.2"), ip("10.0.2.2")))
        pe.message_received("c2", RegistrationResponse(H, 0x1234), 3.0)
        self.assertEqual(pe.actions(), [])
        # the other registrar's connection goes away unnoticed; the home's
        # does not
        pe.connection_lost("c3", 4)
        self.assertEqual(pe.actions(), [])
        pe.connection_lost("c2", 5)
        problem, connect = pe.actions()
        self.assertEqual(problem, m.RegistrarProblem(new_home, "lost"))
        self.assertEqual(connect.endpoint, "sctp:host=10.0.0.1:port=3863")

    def test_incoming_keep_alive_without_home_flag(self):
        # Only a registrar that says it is the new home may speak over a
        # connection of its own; a stopped PE follows nobody.
        pe = machine()
        self.registered(pe)
        pe.incoming_connection("c2", (LOCAL,), 1)
        pe.message_received("c2", EndpointKeepAlive(0xBB, H, 0x1234), 2)
        self.assertEqual(pe.actions(), [])
        self.assertIs(pe.connection, "c1")
        idle = machine()
        idle.incoming_connection("c2", (LOCAL,), 1)
        idle.message_received("c2", EndpointKeepAlive(0xBB, H, 0x1234, home=True), 2)
        self.assertEqual(idle.actions(), [])

    def test_hunt_on_connection_loss(self):
        # RFC 5352 section 3.6: the home registrar fails; hunt for another.
        pe = machine()
        self.registered(pe)
        pe.connection_lost("c1", 10)
        problem, connect = pe.actions()
        self.assertEqual(problem, m.RegistrarProblem("tcp:127.0.0.1:1", "lost"))
        self.assertEqual(connect.endpoint, "tcp:127.0.0.1:2")
        pe.connected(connect.attempt, "c2", LOCAL, 10)
        (send,) = pe.actions()
        self.assertEqual(send.connection, "c2")
        pe.message_received("c2", RegistrationResponse(H, 0x1234), 10)
        (event,) = pe.actions()
        self.assertEqual(event, m.Registered("tcp:127.0.0.1:2", True))

    def test_connect_failure_and_retry_delay(self):
        pe = machine(hunt_retry_delay=2.0)
        pe.start(0)
        (c1,) = pe.actions()
        pe.connect_failed(c1.attempt, 0.1, "Connection refused")
        problem, c2 = pe.actions()
        self.assertEqual(
            problem, m.RegistrarProblem("tcp:127.0.0.1:1", "unreachable", "Connection refused"))
        self.assertEqual(c2.endpoint, "tcp:127.0.0.1:2")
        pe.connect_failed(c2.attempt, 0.2)
        self.assertEqual(pe.actions(), [m.RegistrarProblem("tcp:127.0.0.1:2", "unreachable")])
        self.assertEqual(pe.next_deadline, 2.2)
        pe.timer(2.2)
        (c3,) = pe.actions()
        self.assertEqual(c3.endpoint, "tcp:127.0.0.1:1")
        # A stale attempt's success is refused.
        self.assertFalse(pe.connected(c1.attempt, "old", LOCAL, 2.3))

    def test_connect_timeout(self):
        pe = machine(connect_timeout=1.0)
        pe.start(0)
        (c1,) = pe.actions()
        pe.timer(1.0)
        actions = pe.actions()
        self.assertEqual(kinds(actions), ["CancelConnect", "RegistrarProblem", "Connect"])
        self.assertEqual(actions[1], m.RegistrarProblem(
            "tcp:127.0.0.1:1", "timeout", "no connection within 1 s"))

    def test_response_timeout(self):
        pe = machine()
        pe.start(0)
        (c,) = pe.actions()
        pe.connected(c.attempt, "c1", LOCAL, 0)
        pe.actions()
        pe.timer(3.0)
        actions = pe.actions()
        self.assertEqual(actions[0], m.RegistrarProblem(
            "tcp:127.0.0.1:1", "no answer", "no answer to the registration within 3 s"))
        self.assertEqual(actions[1], m.Close("c1"))
        self.assertEqual(actions[2].endpoint, "tcp:127.0.0.1:2")

    def test_rejection(self):
        pe = machine()
        pe.start(0)
        (c,) = pe.actions()
        pe.connected(c.attempt, "c1", LOCAL, 0)
        pe.actions()
        error = OperationError.of(ErrorCause.INCONSISTENT_POOLING_POLICY)
        pe.message_received("c1", RegistrationResponse(H, 0x1234, reject=True, error=error), 0)
        actions = pe.actions()
        self.assertEqual(actions[0], m.Close("c1"))
        self.assertEqual(actions[1].cause, ErrorCause.INCONSISTENT_POOLING_POLICY)
        self.assertEqual(actions[1].cause_name, "INCONSISTENT_POOLING_POLICY")
        self.assertEqual(actions[1].endpoint, "tcp:127.0.0.1:1")
        self.assertEqual(actions[1].local, (LOCAL,))
        self.assertEqual(actions[1].pool_element.user_transport.addresses, (LOCAL,))
        self.assertEqual(pe.state, m.FAILED)

    def test_asap_error_refuses_registration(self):
        # RSPLIB answers a registration it refuses for a bad value (here,
        # addresses below its minimum scope) with an ASAP Error carrying its
        # own cause 0x0011, not with a Registration Response.
        pe = machine()
        pe.start(0)
        (c,) = pe.actions()
        pe.connected(c.attempt, "c1", LOCAL, 0)
        pe.actions()
        pe.message_received("c1", ASAPError(OperationError((Cause(0x0011, b"x"),))), 0.5)
        close, failed = pe.actions()
        self.assertEqual(close, m.Close("c1"))
        self.assertEqual((failed.cause, failed.cause_name), (0x0011, "RSPLIB_INVALID_VALUE"))
        self.assertEqual(pe.state, m.FAILED)
        self.assertIsNone(pe.next_deadline)

    def test_asap_error_when_nothing_is_asked(self):
        # An ASAP Error while no registration awaits its answer is only
        # logged by the adapter: the registration stands.
        pe = machine()
        self.registered(pe)
        pe.message_received("c1", ASAPError(OperationError((Cause(0x0011, b""),))), 1)
        self.assertEqual(pe.actions(), [])
        self.assertEqual(pe.state, m.REGISTERED)
        # From another connection, even while registering: ignored.
        pe.set_policy(Policy.make(PolicyType.ROUND_ROBIN), 2)
        pe.actions()
        pe.message_received("c9", ASAPError(OperationError((Cause(0x0011, b""),))), 2)
        self.assertEqual(pe.actions(), [])
        self.assertEqual(pe.state, m.REGISTERED)

    def test_deregistration(self):
        # RFC 5352 section 3.3.
        pe = machine()
        self.registered(pe)
        pe.stop(1)
        (send,) = pe.actions()
        self.assertEqual(send.message.identifier, 0x1234)
        pe.message_received("c1", DeregistrationResponse(H, 0x1234), 1.1)
        self.assertEqual(pe.actions(), [m.Close("c1"), m.Deregistered(True)])
        self.assertEqual(pe.state, m.STOPPED)

    def test_deregistration_timeout(self):
        pe = machine()
        self.registered(pe)
        pe.stop(1)
        pe.actions()
        pe.timer(4)
        self.assertEqual(pe.actions(), [m.Close("c1"), m.Deregistered(False)])

    def test_stop_while_hunting(self):
        pe = machine()
        pe.start(0)
        (c,) = pe.actions()
        pe.stop(0.5)
        self.assertEqual(pe.actions(), [m.CancelConnect(c.attempt), m.Deregistered(False)])

    def test_announced_registrar(self):
        # RFC 5352 section 3.6: registrars learned from Server Announce.
        config = m.PoolElementConfig(H, Policy.make(PolicyType.ROUND_ROBIN), identifier=1)
        pe = m.PoolElementMachine(config, TCPTransport(7, ("127.0.0.1",)), [])
        pe.start(0)
        self.assertEqual(pe.actions(), [])
        pe.registrar_announced(0x55, "tcp:127.0.0.1:9", 0.5)
        (c,) = pe.actions()
        self.assertEqual(c.endpoint, "tcp:127.0.0.1:9")

    def test_random_identifier(self):
        config = m.PoolElementConfig(H, Policy.make(PolicyType.ROUND_ROBIN))
        pe = m.PoolElementMachine(config, TCPTransport(7, ("127.0.0.1",)), rng=random.Random(3))
        self.assertNotEqual(pe.identifier, 0)


class PolicyParsingTests(unittest.TestCase):
    def test_parse(self):
        self.assertEqual(parse_policy("RoundRobin"), Policy.make(PolicyType.ROUND_ROBIN))
        self.assertEqual(parse_policy("weightedrandom:5"),
                         Policy.make(PolicyType.WEIGHTED_RANDOM, weight=5))
        self.assertEqual(parse_policy("LeastUsed:0.5").get("load"), load_value(0.5))
        self.assertRaises(ValueError, parse_policy, "Bogus")
        self.assertRaises(ValueError, parse_policy, "RoundRobin:3")


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class ServiceTests(unittest.TestCase):
    """
    L{PoolElementService} against a registrar on loopback.
    """

    @defer.inlineCallbacks
    def setUp(self):
        self.registrar = RegistrarService(
            make_config(keep_alive_interval=0.2, keep_alive_timeout=0.5),
            asap_endpoints=["tcp:0:interface=127.0.0.1"])
        self.registrar.startService()
        ports = yield self.registrar.ready
        self.endpoint = "tcp:127.0.0.1:%d" % ports[0].getHost().port
        self.addCleanup(self.registrar.stopService)

    def pe(self, **kw):
        kw.setdefault("registrars", [self.endpoint])
        pe = PoolElementService(H, Factory.forProtocol(Echo), **kw)
        pe.startService()
        self.addCleanup(lambda: pe.running and pe.stopService())
        return pe

    @defer.inlineCallbacks
    def test_register_keepalive_deregister(self):
        pe = self.pe()
        yield pe.registered
        self.assertTrue(pe.is_registered)
        stored = self.registrar.registrar.handlespace.get(H, pe.identifier)
        self.assertEqual(stored.user_transport.wire.port, pe.port.getHost().port)
        # The first Keep Alive tells the PE its home; the rounds after it
        # are KeepAliveClockTests'.
        yield eventually(lambda: pe.home_registrar == self.registrar.registrar.server_id,
                         "the Keep Alive naming the PE's home", step=0.01)
        confirmed = yield pe.stopService()
        self.assertTrue(confirmed)
        self.assertIsNone(self.registrar.registrar.handlespace.get(H, pe.identifier))

    @defer.inlineCallbacks
    def test_rejection_carries_cause(self):
        # RFC 5352 section 3.1: one policy type per pool.
        yield self.pe().registered
        other = self.pe(policy="WeightedRandom:3")
        error = yield self.assertFailure(other.registered, RegistrationRejected)
        self.assertEqual(error.cause, ErrorCause.INCONSISTENT_POOLING_POLICY)
        self.assertIn("INCONSISTENT_POOLING_POLICY", str(error))

    @defer.inlineCallbacks
    def test_load_update(self):
        pe = self.pe(policy="LeastUsed:0.1")
        yield pe.registered
        pe.set_load(0.75)
        # The re-registration carrying it reaches the registrar.
        yield eventually(
            lambda: self.registrar.registrar.handlespace.get(H, pe.identifier).policy.load
            == load_value(0.75), "the new load at the registrar", step=0.01)

    @defer.inlineCallbacks
    def test_hunt_to_second_registrar(self):
        # "Killing the home registrar": the PE hunts and re-registers at
        # the other registrar of its static list.
        second, other = yield loopback_registrar(self)
        pe = self.pe(registrars=[self.endpoint, other])
        yield pe.registered
        again = pe.when_registered()
        self.assertTrue(again.called)
        yield self.registrar.stopService()
        yield eventually(lambda: second.registrar.handlespace.get(H, pe.identifier) is not None,
                         "the PE at the second registrar", step=0.05)
        self.assertEqual(pe.machine.endpoint, other)


class KeepAliveClockTests(unittest.TestCase):
    """
    L{PoolElementService} and L{RegistrarService} on one
    L{MemoryReactorClock}, connected in memory: keep-alive rounds in
    simulated time.
    """

    def test_survives_keep_alive_rounds(self):
        clock = MemoryReactorClock()
        registrar = running(self, RegistrarService(
            make_config(keep_alive_interval=0.2, keep_alive_timeout=0.5),
            asap_endpoints=["tcp:3863:interface=127.0.0.1"], reactor=clock,
            min_address_scope=Scope.LOOPBACK))
        pe = running(self, PoolElementService(H, Factory.forProtocol(Echo),
                                              registrars=["tcp:127.0.0.1:3863"], reactor=clock))
        pump = complete_tcp(clock)
        self.assertTrue(pe.is_registered)
        acks = []
        received = registrar.registrar.message_received

        def count(conn, message, now):
            if isinstance(message, EndpointKeepAliveAck):
                acks.append(now)
            return received(conn, message, now)

        registrar.registrar.message_received = count
        # 0.2 s interval, 0.5 s timeout: the PE answers every Keep Alive
        # and stays registered at its home, over several timeouts.
        for _ in range(200):
            clock.advance(0.01)
            pump.flush()
        self.assertGreaterEqual(len(acks), 8)
        self.assertEqual(pe.home_registrar, registrar.registrar.server_id)
        self.assertTrue(pe.is_registered)
        self.assertIsNotNone(registrar.registrar.handlespace.get(H, pe.identifier))
        stopped = pe.stopService()
        pump.flush()
        self.assertTrue(self.successResultOf(stopped))
        self.assertIsNone(registrar.registrar.handlespace.get(H, pe.identifier))


class RejectionAdviceTests(unittest.TestCase):
    """
    A refused PE says why and what to do, naming RSPLIB's own causes too.
    """

    def failed(self, cause, registered, local, endpoint="tcp:10.213.0.1:3863"):
        pe = PoolElement(0x1234, 0, 90000, TCPTransport(7, registered),
                         Policy.make(PolicyType.ROUND_ROBIN))
        return m.RegistrationFailed(cause, (Cause(cause, b""),), endpoint, pe,
                                    tuple(ip(a) for a in local))

    def test_cause_names(self):
        self.assertEqual(cause_name(0x3), "INVALID_VALUES")
        self.assertEqual(cause_name(0xA), "REJECTION_DUE_TO_SECURITY_CONSIDERATIONS")
        self.assertEqual(cause_name(0x10), "RSPLIB_INVALID_MESSAGE")
        self.assertEqual(cause_name(0x11), "RSPLIB_INVALID_VALUE")
        self.assertEqual(cause_name(0xF008), "RSPLIB_NO_USABLE_USER_ADDRESSES")
        self.assertEqual(cause_name(0x1234), "UNKNOWN_CAUSE_0x1234")
        self.assertEqual(Cause(0x11).name, "RSPLIB_INVALID_VALUE")

    def test_loopback_to_remote_registrar(self):
        event = self.failed(0x11, ("127.0.0.1",), ("10.213.0.2",))
        text = str(RegistrationRejected(H, event))
        self.assertTrue(text.startswith(
            "registration in pool 'EchoPool' rejected by tcp:10.213.0.1:3863: "
            "RSPLIB_INVALID_VALUE (cause 0x0011); this PE registered 127.0.0.1, a loopback "
            "address"), text)
        self.assertIn("bind to 10.213.0.2 (rserpool pe --bind)", text)

    def test_loopback_registrar_with_site_local_scope(self):
        text = rejection_advice(self.failed(ErrorCause.INVALID_VALUES, ("127.0.0.1",),
                                            ("127.0.0.1",)))
        self.assertIn("reaches the registrar over loopback", text)
        self.assertIn("--registrar tcp:ADDRESS:3863", text)
        self.assertIn("--min-address-scope loopback", text)

    def test_link_local_below_scope(self):
        text = rejection_advice(self.failed(0x11, ("169.254.4.4",), ("10.213.0.2",)))
        self.assertIn("this PE registered 169.254.4.4: bind to a site-local or global", text)

    def test_not_own_address(self):
        text = rejection_advice(self.failed(
            ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS, ("10.9.9.9",), ("10.213.0.2",)))
        self.assertIn("this PE registered 10.9.9.9 and reaches the registrar from 10.213.0.2", text)

    def test_other_causes(self):
        text = rejection_advice(self.failed(ErrorCause.INCONSISTENT_POOLING_POLICY,
                                            ("10.213.0.2",), ("10.213.0.2",)))
        self.assertIn("--policy", text)
        self.assertEqual(rejection_advice(self.failed(0x7777, ("10.213.0.2",), ())), "")


class ProblemReportTests(unittest.TestCase):
    """
    A PE that cannot reach its registrar says so once, however often the
    hunt retries (no silent failure, no log flood).
    """

    @defer.inlineCallbacks
    def test_unreachable_told_once(self):
        closed = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        endpoint = "tcp:127.0.0.1:%d" % closed.getHost().port
        yield closed.stopListening()
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        pe = PoolElementService(H, Factory.forProtocol(Echo), registrars=[endpoint],
                                hunt_retry_delay=0.02)
        pe.startService()
        self.addCleanup(pe.stopService)
        yield eventually(lambda: pe.machine is not None and pe.machine.hunt.attempts >= 5,
                         "five rounds of the hunt", step=0.01)
        warnings = [formatEvent(e) for e in events
                    if e.get("log_namespace") == "rserpool.pe.PoolElementService"
                    and e.get("log_level") == LogLevel.warn]
        self.assertEqual(warnings, [
            "cannot register at %s: connection refused; trying again every 0.02 s" % endpoint])


class HuntPacingTests(unittest.TestCase):
    def test_closed_before_answer_waits_for_next_round(self):
        # A registrar that accepts the connection and closes it before it
        # answers (e.g. a TLS-PSK handshake it refuses) must not make the
        # PE reconnect at once, for ever: after a round of the known
        # registrars the hunt waits hunt_retry_delay.
        pe = machine(hunt_retry_delay=1.0)
        pe.start(0)
        for n, endpoint in enumerate(("tcp:127.0.0.1:1", "tcp:127.0.0.1:2")):
            (c,) = [a for a in pe.actions() if isinstance(a, m.Connect)]
            self.assertEqual(c.endpoint, endpoint)
            token = object()  # connections are compared by identity
            pe.connected(c.attempt, token, LOCAL, 0.01 * n)
            pe.actions()
            pe.connection_lost(token, 0.01 * n + 0.005)
        self.assertEqual(pe.actions(), [
            m.RegistrarProblem("tcp:127.0.0.1:2", "closed",
                               "the connection closed before the registration was answered")])
        self.assertEqual(pe.next_deadline, 1.015)
        pe.timer(1.015)
        (c,) = pe.actions()
        self.assertEqual(c.endpoint, "tcp:127.0.0.1:1")


class IdentifierRenewalTests(unittest.TestCase):
    """
    RFC 5355 section 2.3 / issue #14: an attacker who registers a real PE's
    identifier first (after a registrar restart) must not knock the PE out
    for good: a PE with a random identifier takes a fresh one.
    """

    def refused(self, pe, now=0):
        pe.message_received(pe.connection, RegistrationResponse(
            H, pe.identifier, reject=True,
            error=OperationError.of(ErrorCause.NON_UNIQUE_PE_IDENTIFIER)), now)

    def machine(self, fixed=False):
        config = m.PoolElementConfig(H, Policy.make(PolicyType.ROUND_ROBIN), identifier=0x1234,
                                     identifier_fixed=fixed)
        pe = m.PoolElementMachine(config, TCPTransport(7, ("0.0.0.0",)), ["tcp:127.0.0.1:1"],
                                  rng=random.Random(7))
        pe.start(0)
        (c,) = pe.actions()
        pe.connected(c.attempt, "c1", LOCAL, 0)
        pe.actions()
        return pe

    def test_rfc5355_2_3_fresh_identifier(self):
        pe = self.machine()
        self.refused(pe)
        changed, send = pe.actions()
        self.assertEqual(changed.old, 0x1234)
        self.assertNotEqual(changed.new, 0x1234)
        self.assertEqual(pe.identifier, changed.new)
        self.assertEqual(send, m.Send("c1", Registration(H, PoolElement(
            changed.new, 0, 90000, TCPTransport(7, (LOCAL,)), Policy.make(PolicyType.ROUND_ROBIN)))))
        pe.message_received("c1", RegistrationResponse(H, changed.new), 0.1)
        self.assertEqual(pe.actions(), [m.Registered("tcp:127.0.0.1:1", False)])
        self.assertEqual(pe.state, m.REGISTERED)

    def test_bounded(self):
        pe = self.machine()
        for _ in range(m.MAX_IDENTIFIER_RENEWALS):
            self.refused(pe)
            self.assertIsInstance(pe.actions()[0], m.IdentifierChanged)
        self.refused(pe)
        close, failed = pe.actions()
        self.assertEqual(failed.cause, ErrorCause.NON_UNIQUE_PE_IDENTIFIER)
        self.assertEqual(pe.state, m.FAILED)

    def test_fixed_identifier_is_final(self):
        pe = self.machine(fixed=True)
        self.refused(pe)
        close, failed = pe.actions()
        self.assertIsInstance(failed, m.RegistrationFailed)
        self.assertEqual(pe.identifier, 0x1234)

    @defer.inlineCallbacks
    def test_rfc5355_2_3_squatter_over_loopback(self):
        # The squatter registers the identifier the PE will draw, over its
        # own connection, first; the PE still ends up registered.
        registrar = RegistrarService(make_config(), asap_endpoints=["tcp:0:interface=127.0.0.1"])
        registrar.startService()
        self.addCleanup(registrar.stopService)
        (port,) = yield registrar.ready
        endpoint = "tcp:127.0.0.1:%d" % port.getHost().port
        taken = m.new_identifier(random.Random(5))
        squatter = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(Protocol))
        self.addCleanup(squatter.transport.loseConnection)
        squatter.transport.write(encode(Registration(H, PoolElement(
            taken, 0, 90000, TCPTransport(9, (LOCAL,)), Policy.make(PolicyType.ROUND_ROBIN)))))
        yield eventually(lambda: registrar.registrar.handlespace.get(H, taken) is not None,
                         "the squatter's registration", step=0.01)
        pe = PoolElementService(H, Factory.forProtocol(Echo), registrars=[endpoint],
                                rng=random.Random(5))
        pe.startService()
        self.addCleanup(pe.stopService)
        yield pe.registered
        self.assertNotEqual(pe.identifier, taken)
        stored = registrar.registrar.handlespace.get(H, pe.identifier)
        self.assertEqual(stored.user_transport.wire.port, pe.port.getHost().port)
        self.assertEqual(registrar.registrar.handlespace.get(H, taken).user_transport.wire.port, 9)
