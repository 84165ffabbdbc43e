"""
The registrar's message counters (L{rserpool.web.monitor}) leave no
reference cycle behind a closed connection: the connection, its transport
and the answers its peer did not read are freed when it closes, not when
the garbage collector runs (issue #14: after a slow-reader flood of 512
connections the registrar stayed 40 MB larger).
"""
import collections
import gc
import weakref

from twisted.internet import task
from twisted.trial import unittest

from rserpool.actions import Send
from rserpool.transport.guard import ConnectionBudget, ConnectionLimits
from rserpool.transport.tcp import MessageStreamFactory
from rserpool.web.monitor import MeteredASAPReceiver, MeteredENRPReceiver
from rserpool.wire import HandleResolution, ProtocolError, StreamDecoder, encode

from tests.test_guard import Address, Peer


class Machine:
    """
    A registrar or ENRP server that answers every message.
    """

    def connection_made(self, connection, now, *outgoing):
        return ()

    def message_received(self, connection, message, now):
        return [Send(connection, message)]

    def protocol_error(self, connection, error, now):
        return ()

    def connection_lost(self, connection, now):
        return ()


class Monitor:
    def __init__(self):
        self.sent_asap = collections.Counter()
        self.sent_enrp = collections.Counter()
        self.resolution = self

    def observe(self, seconds):
        pass


class CycleTests(unittest.TestCase):
    def closed_connection_is_freed(self, receiver, counts):
        gc.disable()
        self.addCleanup(gc.enable)
        clock = task.Clock()
        limits = ConnectionLimits()
        factory = MessageStreamFactory(receiver, "asap", limits=limits, clock=clock,
                                       budget=ConnectionBudget(limits, total=10))
        protocol = factory.buildProtocol(Address("192.0.2.7"))
        transport = Peer()
        protocol.makeConnection(transport)
        protocol.dataReceived(encode(HandleResolution(b"pool")))
        self.assertEqual(sum(counts.values()), 1)
        gone = weakref.ref(protocol)
        transport.protocol = None  # as Twisted's own connections do
        protocol.connectionLost(None)
        del protocol, transport
        self.assertIsNone(gone())

    def test_asap(self):
        monitor = Monitor()
        self.closed_connection_is_freed(
            MeteredASAPReceiver(Machine(), task.Clock(), monitor), monitor.sent_asap)

    def test_enrp(self):
        monitor = Monitor()
        self.closed_connection_is_freed(
            MeteredENRPReceiver(Machine(), task.Clock(), monitor), monitor.sent_enrp)


class BadInputCycleTests(unittest.TestCase):
    """
    A peer's bad messages leave no cycle either: the errors handed over
    carry no traceback (whose frames hold the error and the input) and no
    exception they were raised while handling (issue #14: a flood of
    malformed messages kept thousands of errors, frames and their
    connections alive between collections, and each collection took 30 to
    60 ms).
    """

    def test_errors_detached(self):
        bad = b"\x01\x00\x00\x08\xff\xff\x00\x00"  # a parameter longer than its message
        good = encode(HandleResolution(b"pool"))
        items = StreamDecoder("asap").feed(bad + good)
        error = items[0]
        self.assertIsInstance(error, ProtocolError)
        self.assertIsNone(error.__traceback__)
        self.assertIsNone(error.__context__)
        self.assertIsNone(error.__cause__)

    def test_lost_framing_frees_the_connection(self):
        gc.disable()
        self.addCleanup(gc.enable)
        clock = task.Clock()
        limits = ConnectionLimits()
        errors = []

        class Keeping(Machine):
            def protocol_error(self, connection, error, now):
                errors.append(error)
                return ()

        monitor = Monitor()
        factory = MessageStreamFactory(MeteredASAPReceiver(Keeping(), clock, monitor), "asap",
                                       limits=limits, clock=clock,
                                       budget=ConnectionBudget(limits, total=10))
        protocol = factory.buildProtocol(Address("192.0.2.7"))
        transport = Peer()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"\x01\x00\x00\x02" + b"\x00" * 60)  # length 2: framing lost
        self.assertEqual(len(errors), 1)
        self.assertIsNone(errors[0].__traceback__)
        gone = weakref.ref(protocol)
        transport.protocol = None
        protocol.connectionLost(None)
        del protocol, transport
        self.assertIsNone(gone())
