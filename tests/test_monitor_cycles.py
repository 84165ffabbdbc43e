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
from rserpool.wire import HandleResolution, encode

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
