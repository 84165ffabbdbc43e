"""
Tests for the pool user: cache, selection, Endpoint Unreachable rate limit,
the registrar channel (sans I/O, explicit times) and L{rserpool.pu}
against a registrar on loopback, including the client endpoint plugin.
"""
import random

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from rserpool.asap import pool_user as u
from rserpool.asap.hunt import CancelConnect, Connect
from rserpool.codes import ErrorCause, PolicyType
from rserpool.pe import PoolElementService
from rserpool.pu import PoolClientEndpoint, PoolUser
from rserpool.wire import (
    EndpointUnreachable,
    HandleResolution,
    HandleResolutionResponse,
    OperationError,
    Policy,
    PoolElement,
    SCTPTransport,
    TCPTransport,
)

from tests.helpers import eventually, loopback_registrar, running

H = b"EchoPool"


def wire_pe(pe_id, port, policy=None):
    return PoolElement(pe_id, 1, 30000, TCPTransport(port, ("127.0.0.1",)),
                       policy or Policy.make(PolicyType.ROUND_ROBIN))


def response(*pes):
    return HandleResolutionResponse(H, Policy.make(PolicyType.ROUND_ROBIN), pes)


class CacheTests(unittest.TestCase):
    def test_stale_timeout(self):
        cache = u.ResolutionCache(stale_timeout=2.0)
        infos = cache.store(response(wire_pe(1, 7), wire_pe(2, 8)), 10.0)
        self.assertEqual([i.identifier for i in infos], [1, 2])
        self.assertEqual(len(cache.fresh(H, 11.9)), 2)
        self.assertEqual(cache.fresh(H, 12.0), [])

    def test_zero_stale_timeout_never_caches(self):
        # RSPLIB's usual staleCacheValue of 0: ask the registrar each time.
        cache = u.ResolutionCache(stale_timeout=0.0)
        cache.store(response(wire_pe(1, 7)), 10.0)
        self.assertEqual(cache.fresh(H, 10.0), [])

    def test_unknown_handle(self):
        cache = u.ResolutionCache()
        error = OperationError.of(ErrorCause.UNKNOWN_POOL_HANDLE)
        self.assertRaises(u.NoSuchPool, cache.store,
                          HandleResolutionResponse(H, error=error), 0)

    def test_failed_hold(self):
        cache = u.ResolutionCache(stale_timeout=100, failed_hold=5)
        infos = cache.store(response(wire_pe(1, 7), wire_pe(2, 8)), 0)
        cache.mark_failed(H, 1, 1)
        self.assertEqual([i.identifier for i in cache.fresh(H, 2)], [2])
        # The registrar hands back PE 1: it is still avoided.
        self.assertEqual(cache.select(H, 3, infos).identifier, 2)
        self.assertEqual(cache.select(H, 6.5, infos).identifier, 1)

    def test_round_robin_on_cache(self):
        cache = u.ResolutionCache(stale_timeout=100)
        cache.store(response(wire_pe(1, 7), wire_pe(2, 8)), 0)
        self.assertEqual([cache.select(H, 1).identifier for _ in range(4)], [1, 2, 1, 2])

    def test_least_used_on_cache(self):
        cache = u.ResolutionCache(stale_timeout=100)
        lu = lambda load: Policy.make(PolicyType.LEAST_USED, load=load)
        cache.store(response(wire_pe(1, 7, lu(50)), wire_pe(2, 8, lu(10))), 0)
        self.assertEqual(cache.select(H, 1).identifier, 2)

    def test_weighted_random_on_cache(self):
        cache = u.ResolutionCache(stale_timeout=100, rng=random.Random(1))
        wr = lambda w: Policy.make(PolicyType.WEIGHTED_RANDOM, weight=w)
        cache.store(response(wire_pe(1, 7, wr(0)), wire_pe(2, 8, wr(5))), 0)
        self.assertEqual({cache.select(H, 1).identifier for _ in range(20)}, {2})

    def test_info_text(self):
        info = u.PoolElementInfo.from_wire(H, wire_pe(0xAB, 7))
        self.assertEqual(str(info), "000000ab tcp 127.0.0.1:7 RoundRobin")
        self.assertEqual(info.endpoint_description(), "tcp:host=127.0.0.1:port=7")
        v6 = u.PoolElementInfo(H, 1, TCPTransport(7, ("::1",)), Policy.make(PolicyType.RANDOM))
        self.assertEqual(str(v6), "00000001 tcp [::1]:7 Random")
        self.assertEqual(v6.endpoint_description(), "tcp:host=\\:\\:1:port=7")


class LimiterTests(unittest.TestCase):
    def test_per_pe_holdoff(self):
        limiter = u.UnreachableLimiter(holdoff=5, rate=100, burst=100)
        self.assertTrue(limiter.allow(H, 1, 0))
        self.assertFalse(limiter.allow(H, 1, 4.9))
        self.assertTrue(limiter.allow(H, 2, 4.9))
        self.assertTrue(limiter.allow(H, 1, 5.0))

    def test_token_bucket(self):
        # RFC 5355 section 2.13: the reports SHOULD be limited.
        limiter = u.UnreachableLimiter(holdoff=0, rate=1.0, burst=3)
        self.assertEqual([limiter.allow(H, i, 0) for i in range(5)],
                         [True, True, True, False, False])
        self.assertEqual(limiter.suppressed, 2)
        self.assertTrue(limiter.allow(H, 10, 1.0))
        self.assertFalse(limiter.allow(H, 11, 1.0))


class MachineTests(unittest.TestCase):
    def setUp(self):
        self.pu = u.PoolUserMachine(["tcp:a", "tcp:b"], response_timeout=3.0, connect_timeout=2.0)

    def connect(self, now=0):
        (c,) = [a for a in self.pu.actions() if isinstance(a, Connect)]
        self.pu.connected(c.attempt, "conn", None, now)
        return c

    def test_resolve(self):
        n = self.pu.resolve(H, 0, items=4)
        c = self.connect()
        self.assertEqual(c.endpoint, "tcp:a")
        (send,) = self.pu.actions()
        self.assertEqual(send.message, HandleResolution(H, 4))
        self.pu.message_received("conn", response(wire_pe(1, 7)), 0.1)
        (event,) = self.pu.actions()
        self.assertEqual(event.request, n)
        self.assertEqual([i.identifier for i in event.pool_elements], [1])

    def test_unknown_handle(self):
        n = self.pu.resolve(H, 0)
        self.connect()
        self.pu.actions()
        self.pu.message_received("conn", HandleResolutionResponse(
            H, error=OperationError.of(ErrorCause.UNKNOWN_POOL_HANDLE)), 0.1)
        (event,) = self.pu.actions()
        self.assertEqual(event.request, n)
        self.assertIsInstance(event.error, u.NoSuchPool)

    def test_response_timeout_hunts_and_resends(self):
        # RFC 5352 section 3.6: a silent registrar is replaced.
        self.pu.resolve(H, 0)
        self.connect()
        self.pu.actions()
        self.assertEqual(self.pu.next_deadline, 3.0)
        self.pu.timer(3.0)
        actions = self.pu.actions()
        self.assertEqual(actions[0], u.Close("conn"))
        self.assertEqual(actions[1].endpoint, "tcp:b")
        self.pu.connected(actions[1].attempt, "conn2", None, 3.1)
        (send,) = self.pu.actions()
        self.assertEqual(send.connection, "conn2")

    def test_no_registrar(self):
        n = self.pu.resolve(H, 0)
        (c,) = self.pu.actions()
        self.pu.connect_failed(c.attempt, 0.1)
        (c2,) = self.pu.actions()
        self.pu.connect_failed(c2.attempt, 0.2)
        (event,) = self.pu.actions()
        self.assertEqual(event.request, n)
        self.assertIsInstance(event.error, u.NoRegistrar)
        self.assertIn("no registrar answered", str(event.error))

    def test_connect_timeout(self):
        self.pu.resolve(H, 0)
        self.pu.actions()
        self.pu.timer(2.0)
        actions = self.pu.actions()
        self.assertIsInstance(actions[0], CancelConnect)
        self.assertEqual(actions[1].endpoint, "tcp:b")

    def test_unreachable_report_rate_limited(self):
        self.pu.resolve(H, 0)
        self.connect()
        self.pu.actions()
        self.assertTrue(self.pu.report_unreachable(H, 7, 1))
        (send,) = self.pu.actions()
        self.assertEqual(send.message, EndpointUnreachable(H, 7))
        self.assertFalse(self.pu.report_unreachable(H, 7, 2))
        self.assertEqual(self.pu.actions(), [])


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Client(Protocol):
    def connectionMade(self):
        self.transport.write(b"ping")

    def dataReceived(self, data):
        self.factory.answer.callback(data)
        self.transport.loseConnection()


class LoopbackTests(unittest.TestCase):
    """
    L{PoolUser} and L{PoolClientEndpoint} with a registrar and PEs in this
    process, on loopback.
    """

    @defer.inlineCallbacks
    def setUp(self):
        self.registrar, self.endpoint = yield loopback_registrar(self)
        self.pes = []
        for _ in range(3):
            pe = running(self, PoolElementService(H, Factory.forProtocol(Echo),
                                                  registrars=[self.endpoint]))
            self.pes.append(pe)
            yield pe.registered
        self.pu = PoolUser(reactor, registrars=[self.endpoint])
        self.addCleanup(self.pu.close)

    @defer.inlineCallbacks
    def test_resolve(self):
        infos = yield self.pu.resolve(H, items=10)
        self.assertEqual(sorted(i.identifier for i in infos),
                         sorted(pe.identifier for pe in self.pes))

    @defer.inlineCallbacks
    def test_primary_and_next_server(self):
        first = yield self.pu.get_primary_server(H)
        nxt = yield self.pu.get_next_server(H, first)
        self.assertNotEqual(first.identifier, nxt.identifier)
        # GETNEXTSERVER reported the first PE to the registrar.
        handlespace = self.registrar.registrar.handlespace
        yield eventually(lambda: handlespace.get(H, first.identifier).unreachable_reports,
                         "the Endpoint Unreachable", step=0.01)
        self.assertEqual(handlespace.get(H, first.identifier).unreachable_reports, 1)

    @defer.inlineCallbacks
    def test_unknown_handle(self):
        yield self.assertFailure(self.pu.get_primary_server(b"Nope"), u.NoSuchPool)

    @defer.inlineCallbacks
    def test_endpoint_fails_over_dead_pe(self):
        # A PE whose port is closed: the endpoint reports it and tries the
        # next one.
        dead = self.pes[0]
        yield dead.port.stopListening()
        endpoint = PoolClientEndpoint(reactor, self.pu, H, attempts=4)
        for _ in range(3):
            factory = Factory.forProtocol(Client)
            factory.answer = defer.Deferred()
            protocol = yield endpoint.connect(factory)
            self.assertNotEqual(protocol.pool_element.identifier, dead.identifier)
            self.assertEqual((yield factory.answer), b"ping")

    @defer.inlineCallbacks
    def test_endpoint_string_plugin(self):
        description = "rserpool:EchoPool:registrar=%s" % self.endpoint.replace(":", "\\:")
        endpoint = clientFromString(reactor, description)
        factory = Factory.forProtocol(Client)
        factory.answer = defer.Deferred()
        yield endpoint.connect(factory)
        self.assertEqual((yield factory.answer), b"ping")
        endpoint._pool_user.close()


class _MulticastClock(task.Clock):
    """
    A clock that also records listenMulticast calls.
    """

    def __init__(self):
        task.Clock.__init__(self)
        self.multicast = []

    def listenMulticast(self, port, protocol, interface="", maxPacketSize=8192, listenMultiple=False):
        self.multicast.append((port, protocol, listenMultiple))

        class _Port:
            stopped = False

            def stopListening(self):
                _Port.stopped = True

        self.port = _Port()
        return self.port


class AnnounceTests(unittest.TestCase):
    """
    A pool user learns registrars from ASAP Server Announce (RFC 5352
    section 3.6) when asked to.
    """

    def test_learns_announced_registrar(self):
        from rserpool.wire import ServerAnnounce, TCPTransport, encode

        clock = _MulticastClock()
        pu = PoolUser(clock, registrars=(), announce=("239.0.0.50", 3863))
        self.assertEqual(len(clock.multicast), 1)
        port, listener, multiple = clock.multicast[0]
        self.assertEqual(port, 3863)
        self.assertTrue(multiple)
        listener.datagramReceived(
            encode(ServerAnnounce(0x1234, [TCPTransport(3999, ["127.0.0.5"])])), ("127.0.0.5", 3863)
        )
        self.assertEqual(pu.machine.announced, {0x1234: "tcp:host=127.0.0.5:port=3999"})
        self.assertIn("tcp:host=127.0.0.5:port=3999", pu.machine.candidates())
        pu.close()
        self.assertTrue(clock.port.stopped)

    def test_no_listener_by_default(self):
        clock = _MulticastClock()
        PoolUser(clock).close()
        self.assertEqual(clock.multicast, [])


class InfoTextTests(unittest.TestCase):
    def test_multi_homed(self):
        # rserpool resolve prints every address of a multi-homed PE.
        info = u.PoolElementInfo(b"P", 0xABCD, SCTPTransport(7, ("10.213.0.6", "10.214.0.6")),
                               Policy.make(PolicyType.ROUND_ROBIN))
        self.assertEqual(str(info), "0000abcd sctp 10.213.0.6,10.214.0.6:7 RoundRobin")
        info = u.PoolElementInfo(b"P", 1, TCPTransport(7, ("2001:db8::1",)),
                               Policy.make(PolicyType.ROUND_ROBIN))
        self.assertEqual(str(info), "00000001 tcp [2001:db8::1]:7 RoundRobin")
