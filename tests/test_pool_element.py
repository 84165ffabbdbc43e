"""
Tests for the pool element: the sans-IO machine (every procedure and
timer, with explicit times) and L{rserpool.pe.PoolElementService} against
a registrar on loopback.
"""
import ipaddress
import random

from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from rserpool.asap import pool_element as m
from rserpool.codes import ErrorCause, PolicyType
from rserpool.pe import PoolElementService, RegistrationRejected, load_value, parse_policy
from rserpool.registrar import RegistrarService, make_config
from rserpool.wire import (
    Cause,
    DeregistrationResponse,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    OperationError,
    Policy,
    Registration,
    RegistrationResponse,
    TCPTransport,
)

H = b"EchoPool"
LOCAL = ipaddress.ip_address("127.0.0.1")


def machine(**kw):
    config = m.PoolElementConfig(H, Policy.make(PolicyType.ROUND_ROBIN), identifier=0x1234, **kw)
    transport = TCPTransport(7, ("0.0.0.0",))
    return m.PoolElementMachine(config, transport, ["tcp:127.0.0.1:1", "tcp:127.0.0.1:2"])


def kinds(actions):
    return [type(a).__name__ for a in actions]


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

    def test_hunt_on_connection_loss(self):
        # RFC 5352 section 3.6: the home registrar fails; hunt for another.
        pe = machine()
        self.registered(pe)
        pe.connection_lost("c1", 10)
        (connect,) = pe.actions()
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
        pe.connect_failed(c1.attempt, 0.1)
        (c2,) = pe.actions()
        self.assertEqual(c2.endpoint, "tcp:127.0.0.1:2")
        pe.connect_failed(c2.attempt, 0.2)
        self.assertEqual(pe.actions(), [])
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
        self.assertEqual(kinds(pe.actions()), ["CancelConnect", "Connect"])

    def test_response_timeout(self):
        pe = machine()
        pe.start(0)
        (c,) = pe.actions()
        pe.connected(c.attempt, "c1", LOCAL, 0)
        pe.actions()
        pe.timer(3.0)
        actions = pe.actions()
        self.assertEqual(actions[0], m.Close("c1"))
        self.assertEqual(actions[1].endpoint, "tcp:127.0.0.1:2")

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
        self.assertEqual(pe.state, m.FAILED)

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
        # Survive several keep-alive rounds (0.2 s interval, 0.5 s timeout).
        yield task.deferLater(reactor, 1.0, lambda: None)
        self.assertEqual(pe.home_registrar, self.registrar.registrar.server_id)
        self.assertIsNotNone(self.registrar.registrar.handlespace.get(H, pe.identifier))
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
        yield task.deferLater(reactor, 0.2, lambda: None)
        stored = self.registrar.registrar.handlespace.get(H, pe.identifier)
        self.assertEqual(stored.policy.load, load_value(0.75))

    @defer.inlineCallbacks
    def test_hunt_to_second_registrar(self):
        # "Killing the home registrar": the PE hunts and re-registers at
        # the other registrar of its static list.
        second = RegistrarService(make_config(), asap_endpoints=["tcp:0:interface=127.0.0.1"])
        second.startService()
        ports = yield second.ready
        self.addCleanup(second.stopService)
        other = "tcp:127.0.0.1:%d" % ports[0].getHost().port
        pe = self.pe(registrars=[self.endpoint, other])
        yield pe.registered
        again = pe.when_registered()
        self.assertTrue(again.called)
        yield self.registrar.stopService()
        for _ in range(50):
            if second.registrar.handlespace.get(H, pe.identifier) is not None:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertIsNotNone(second.registrar.handlespace.get(H, pe.identifier))
        self.assertEqual(pe.machine.endpoint, other)
