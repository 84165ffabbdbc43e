"""
A registrar's time shared out by source (L{rserpool.transport.guard.TurnScheduler}
and the accepted connections of L{rserpool.transport.tcp.MessageStreamFactory}):
one read of thousands of messages is handled a few at a time, the
connection unread meanwhile, undecoded; other sources' messages come first
(issue #14: a flood of handle resolutions from two clients took legitimate
resolutions from 0.2 ms to a second; RFC 5355 section 3).
"""
import itertools

from twisted.internet import task
from twisted.trial import unittest

from rserpool.transport.guard import (
    ConnectionBudget,
    ConnectionLimits,
    MemoryReturn,
    TurnScheduler,
    malloc_trim,
)
from rserpool.transport.tcp import MessageStreamFactory
from rserpool.wire import HandleResolution, ProtocolError, encode

from tests.test_guard import Address, Peer, Recorder


def resolution(n):
    return encode(HandleResolution(b"pool-%04d" % n))


def handles(messages):
    return [m.pool_handle for m in messages if isinstance(m, HandleResolution)]


class Rounds(task.Clock):
    """
    A clock whose L{round} runs the calls due now, but not those they make
    (a reactor looks at its sockets in between); C{advance} runs both.
    """

    def round(self):
        due = [c for c in self.calls if c.getTime() <= self.seconds()]
        for call in due:
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class Ticks:
    """
    A timer for the scheduler's slice: each look is one tick later.
    """

    def __init__(self):
        self.now = itertools.count()

    def __call__(self):
        return float(next(self.now))


class Costs:
    """
    A timer for the scheduler's slice in which each message handled takes
    one unit of time.
    """

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class TurnTests(unittest.TestCase):
    def setUp(self):
        self.clock = Rounds()
        self.receiver = Recorder()
        self.order = []
        self.costs = Costs()
        original = self.receiver.message_received

        def record(connection, message):
            self.order.append(connection)
            self.costs.now += 1
            original(connection, message)

        self.receiver.message_received = record
        limits = ConnectionLimits()
        self.factory = MessageStreamFactory(
            self.receiver, "asap", limits=limits, clock=self.clock,
            budget=ConnectionBudget(limits, total=1000))
        self.quantum = self.factory.turns.quantum

    def connect(self, host="192.0.2.7"):
        protocol = self.factory.buildProtocol(Address(host))
        transport = Peer(host)
        protocol.makeConnection(transport)
        return protocol, transport

    def turns(self, limit=10000):
        # Let the reactor come round until no turn is left (bounded).
        for _ in range(limit):
            if not self.factory.turns:
                return
            self.clock.advance(0)
        self.fail("turns left after %d rounds" % limit)

    def test_a_quantum_at_once(self):
        # One read of 1,000 requests: a quantum handled at once, the rest
        # later, and the connection is not read from meanwhile.
        protocol, transport = self.connect()
        protocol.dataReceived(b"".join(resolution(n) for n in range(1000)))
        self.assertEqual(len(self.receiver.messages), self.quantum)
        self.assertEqual(transport.producerState, "paused")
        self.turns()
        self.assertEqual(handles(self.receiver.messages), [b"pool-%04d" % n for n in range(1000)])
        self.assertEqual(transport.producerState, "producing")

    def test_undecoded_while_waiting(self):
        # What waits stays bytes: at most a quantum of decoded messages,
        # also while the peer does not read our answers.
        protocol, transport = self.connect()
        transport.producer.pauseProducing()
        protocol.dataReceived(resolution(0) * 4096)
        self.assertEqual(self.receiver.messages, [])
        self.assertLessEqual(len(protocol._pending or ()), self.quantum)
        self.assertEqual(len(protocol._raw), len(resolution(0)) * 4096)
        transport.producer.resumeProducing()
        self.turns()
        self.assertEqual(len(self.receiver.messages), 4096)

    def test_others_first(self):
        # A source with a backlog does not hold up another's request.
        flood, _ = self.connect("192.0.2.7")
        flood.dataReceived(resolution(1) * 2000)
        user, _ = self.connect("192.0.2.8")
        user.dataReceived(resolution(2))
        self.assertEqual(self.order.count(user), 1)
        self.assertEqual(self.order.count(flood), self.quantum)

    def test_turns_by_source(self):
        # Ten connections of one source get, together, the turns one
        # connection of another source gets.
        self.factory.turns.timer = self.costs
        self.factory.turns.slice = 40 * self.quantum
        many = [self.connect("192.0.2.7")[0] for _ in range(10)]
        for protocol in many:
            protocol.dataReceived(resolution(1) * 1000)
        one, _ = self.connect("192.0.2.8")
        one.dataReceived(resolution(2) * 1000)
        del self.order[:]
        self.clock.round()
        # 40 turns: 20 for each source.
        self.assertEqual(self.order.count(one), 20 * self.quantum)
        self.assertEqual(sum(self.order.count(p) for p in many), 20 * self.quantum)

    def test_slice(self):
        # Between two looks at the sockets, turns for one slice only.
        self.factory.turns.timer = self.costs
        self.factory.turns.slice = 3 * self.quantum
        protocol, _ = self.connect()
        protocol.dataReceived(resolution(1) * 1000)
        self.clock.round()
        # One quantum at once, then 3 quanta of turns.
        self.assertEqual(len(self.receiver.messages), 4 * self.quantum)

    def test_expensive_messages_end_a_turn(self):
        # A turn ends at the slice's end, even before its quantum: some
        # messages (a registration) cost far more than others.
        turns = self.factory.turns
        turns.timer = self.costs
        turns.slice = 3 * self.quantum
        original = self.receiver.message_received

        def expensive(connection, message):
            self.costs.now += self.quantum - 1
            original(connection, message)

        self.receiver.message_received = expensive
        protocol, _ = self.connect()
        protocol.dataReceived(resolution(1) * 1000)
        # At once: 3 messages use the slice up.
        self.assertEqual(len(self.receiver.messages), 3)
        self.clock.round()
        self.assertEqual(len(self.receiver.messages), 6)

    def test_at_once_for_a_slice(self):
        # One look at the sockets that finds many connections readable:
        # what they brought is handled at once only for a slice; the rest
        # waits for the round of turns after it.
        turns = self.factory.turns
        first, _ = self.connect("192.0.2.7")
        first.dataReceived(resolution(1))
        self.assertEqual(len(self.receiver.messages), 1)
        turns.spent(turns.slice)
        late, transport = self.connect("192.0.2.9")
        late.dataReceived(resolution(2))
        self.assertEqual(len(self.receiver.messages), 1)
        self.assertEqual(transport.producerState, "paused")
        self.clock.round()
        self.assertEqual(handles(self.receiver.messages), [b"pool-0001", b"pool-0002"])
        # A new round, a new slice of arrivals.
        late.dataReceived(resolution(3))
        self.assertEqual(len(self.receiver.messages), 3)

    def test_quiet_source_first(self):
        # A source that had nothing waiting goes before the sources that
        # are always busy, once (a new flow, RFC 8290): a pool user's
        # request that missed the slice waits one look at the sockets, not
        # every flooding source's turn.
        turns = self.factory.turns
        turns.timer = self.costs
        turns.slice = 3 * self.quantum
        floods = [self.connect("192.0.2.%d" % n)[0] for n in range(10, 20)]
        for protocol in floods:
            protocol.dataReceived(resolution(1) * 1000)
        for _ in range(5):
            # Until every flooding source had its first turn.
            self.clock.round()
        # This look at the sockets has used its slice already.
        turns.spent(turns.slice)
        user, _ = self.connect("192.0.2.8")
        user.dataReceived(resolution(2) * (self.quantum + 1))
        self.assertNotIn(user, self.order)
        del self.order[:]
        self.clock.round()
        self.assertEqual(self.order[:self.quantum], [user] * self.quantum)
        # Then it takes its turn with the others, at the end of the round.
        del self.order[:]
        for _ in range(5):
            self.clock.round()
        self.assertNotIn(user, self.order[:self.quantum * 2])
        self.assertEqual(self.order.count(user), 1)

    def test_throttled_source_waits_unread(self):
        # A source over its limits (actions.Throttle): its connections are
        # not read and get no turn for the time given; other sources go on.
        flood, flood_transport = self.connect("192.0.2.7")
        flood.dataReceived(resolution(1) * 100)
        flood.throttle(1.0)
        user, _ = self.connect("192.0.2.8")
        user.dataReceived(resolution(2))
        del self.order[:]
        self.clock.advance(0)
        self.clock.advance(0.5)
        self.assertNotIn(flood, self.order)
        self.assertEqual(flood_transport.producerState, "paused")
        # New bytes from it wait too, unread.
        flood.dataReceived(resolution(3))
        self.clock.advance(0)
        self.assertNotIn(flood, self.order)
        self.clock.advance(0.5)
        self.turns()
        self.assertEqual(len(handles(self.receiver.messages)), 102)
        self.assertEqual(flood_transport.producerState, "producing")

    def test_throttled_before_it_waits(self):
        # A source throttled while nothing of it waits: what it sends then
        # waits unread, and gets its turns once the time is up.
        flood, flood_transport = self.connect("192.0.2.7")
        flood.throttle(1.0)
        flood.dataReceived(resolution(1) * 40)
        self.clock.advance(0)
        self.assertEqual(self.receiver.messages, [])
        self.assertEqual(flood_transport.producerState, "paused")
        self.clock.advance(1.0)
        self.turns()
        self.assertEqual(len(handles(self.receiver.messages)), 40)

    def test_framing_lost_after_the_backlog(self):
        # The messages before a broken header are handled, then the
        # connection is closed.
        protocol, transport = self.connect()
        protocol.dataReceived(resolution(3) * 100 + b"\x05\x00\x00\x02" + resolution(4))
        self.turns()
        self.assertEqual(handles(self.receiver.messages), [b"pool-0003"] * 100)
        self.assertIsInstance(self.receiver.messages[-1], ProtocolError)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.receiver.lost, [protocol])

    def test_no_partial_deadline_while_waiting(self):
        # Messages that wait for their turn are no incomplete message; the
        # rest of one that is cut is still due within the deadline.
        self.factory.limits = ConnectionLimits(message=10, idle=600)
        protocol, transport = self.connect()
        protocol.dataReceived(resolution(5) * 100 + resolution(6)[:5])
        self.assertIsNone(protocol.guard.partial_since)
        self.turns()
        self.assertEqual(len(self.receiver.messages), 100)
        self.assertIsNotNone(protocol.guard.partial_since)
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting)

    def test_gone_while_waiting(self):
        # A connection that goes loses its turns and its bytes.
        protocol, transport = self.connect()
        protocol.dataReceived(resolution(7) * 1000)
        protocol.connectionLost(None)
        self.assertEqual(len(self.factory.turns), 0)
        self.assertIsNone(protocol._raw)
        self.clock.advance(0)
        self.assertEqual(len(self.receiver.messages), self.quantum)


class SchedulerTests(unittest.TestCase):
    class Worker:
        def __init__(self, scheduler, key, messages):
            self.scheduler = scheduler
            self.key = key
            self.left = messages
            self.turns = 0

        def take_turn(self, quantum):
            self.turns += 1
            self.left -= min(quantum, self.left)
            if self.left:
                self.scheduler.wait(self.key, self)

    def test_round_robin(self):
        clock = Rounds()
        scheduler = TurnScheduler(clock, quantum=1, slice=1e9, timer=Ticks())
        a = [self.Worker(scheduler, "a", 5) for _ in range(3)]
        b = self.Worker(scheduler, "b", 5)
        for worker in a + [b]:
            scheduler.wait(worker.key, worker)
        scheduler.max_turns = 8
        clock.round()
        self.assertEqual(b.turns, 4)
        self.assertEqual(sum(w.turns for w in a), 4)
        self.assertEqual(len(scheduler), 4)
        for _ in range(100):
            clock.advance(0)
        self.assertEqual(len(scheduler), 0)
        self.assertEqual(clock.getDelayedCalls(), [])


class MemoryReturnTests(unittest.TestCase):
    """
    After a slow-reader flood the registrar's memory goes back to where it
    was (issue #14: it stayed at 3 GB after the client left; with bounded
    buffers, the allocator still kept 60 MB of 500 such connections).
    """

    def setUp(self):
        self.clock = task.Clock()
        self.trims = []
        limits = ConnectionLimits()
        self.factory = MessageStreamFactory(
            Recorder(), "asap", limits=limits, clock=self.clock,
            budget=ConnectionBudget(limits, total=1000))
        self.factory.memory = MemoryReturn(self.clock, trim=lambda: self.trims.append(
            self.clock.seconds()), threshold=1 << 20, interval=5.0)

    def slow_reader(self):
        protocol = self.factory.buildProtocol(Address("192.0.2.7"))
        transport = Peer()
        protocol.makeConnection(transport)
        transport.producer.pauseProducing()
        protocol.dataReceived(resolution(0) * 4096)
        return protocol

    def test_given_back_when_they_are_gone(self):
        readers = [self.slow_reader() for _ in range(20)]
        for protocol in readers[:5]:
            protocol.connectionLost(None)
        self.clock.advance(0)
        self.assertEqual(self.trims, [])
        for protocol in readers[5:]:
            protocol.connectionLost(None)
        self.clock.advance(0)
        self.assertEqual(self.trims, [0.0])
        # Not more often than every 5 s.
        for _ in range(20):
            self.slow_reader().connectionLost(None)
        self.clock.advance(4.9)
        self.assertEqual(self.trims, [0.0])
        self.clock.advance(0.1)
        self.assertEqual(self.trims, [0.0, 5.0])

    def test_churn(self):
        # Many short connections: given back too, at most every 5 s.
        for _ in range(50):
            for _ in range(100):
                protocol = self.factory.buildProtocol(Address("192.0.2.7"))
                protocol.makeConnection(Peer())
                protocol.dataReceived(resolution(0))
                protocol.connectionLost(None)
            self.clock.advance(1)
        self.assertEqual(self.trims, [1.0, 6.0, 11.0, 16.0, 21.0, 26.0, 31.0, 36.0, 41.0, 46.0])

    def test_few(self):
        for _ in range(10):
            protocol = self.factory.buildProtocol(Address("192.0.2.7"))
            protocol.makeConnection(Peer())
            protocol.connectionLost(None)
        self.clock.advance(10)
        self.assertEqual(self.trims, [])

    def test_cycles_first(self):
        # The young generations are collected before the memory is given
        # back: Twisted's TLS leaves cycles there.
        calls = []
        memory = MemoryReturn(self.clock, trim=lambda: calls.append("trim"),
                              collect=lambda: calls.append("collect"), threshold=10)
        memory.released(20)
        self.clock.advance(0)
        self.assertEqual(calls, ["collect", "trim"])

    def test_malloc_trim(self):
        # On glibc it is malloc_trim(0); elsewhere nothing.
        trim = malloc_trim()
        if trim is None:
            raise unittest.SkipTest("no malloc_trim in this C library")
        self.assertIn(trim(), (0, 1))

    def test_freed_at_once(self):
        # A connection that is gone, and what its transport held, are
        # freed by reference counting, not when the collector runs.
        import gc
        import weakref

        gc.disable()
        self.addCleanup(gc.enable)
        self.factory.receiver.connection_lost = lambda connection: None
        protocol = self.slow_reader()
        transport = protocol.transport
        transport.write(b"an answer its peer did not read" * 1000)
        gone = weakref.ref(protocol), weakref.ref(transport)
        transport.protocol = None  # as Twisted's own connections do
        protocol.connectionLost(None)
        del protocol, transport
        self.assertEqual([ref() for ref in gone], [None, None])
