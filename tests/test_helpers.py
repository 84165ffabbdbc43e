"""
The shared test helpers that hold logic of their own: L{eventually}, driven
by a L{Clock}.
"""
from twisted.internet import defer, task
from twisted.trial import unittest

from tests.helpers import WaitTimeout, eventually


class EventuallyTests(unittest.TestCase):
    def test_first_true_value(self):
        clock = task.Clock()
        values = iter([0, None, "done"])
        d = eventually(lambda: next(values), "the value", step=0.5, clock=clock)
        self.assertNoResult(d)
        clock.advance(0.5)
        self.assertNoResult(d)
        clock.advance(0.5)
        self.assertEqual(self.successResultOf(d), "done")

    def test_deferred_condition(self):
        clock = task.Clock()
        asked = []

        def condition():
            asked.append(defer.Deferred())
            return asked[-1]

        d = eventually(condition, "the answer", clock=clock)
        asked[-1].callback(False)
        clock.advance(0.02)
        asked[-1].callback([1])
        self.assertEqual(self.successResultOf(d), [1])
        self.assertEqual(len(asked), 2)

    def test_timeout_names_what(self):
        clock = task.Clock()
        polls = []
        d = eventually(lambda: polls.append(clock.seconds()), lambda: "the PE (%d polls)" % len(polls),
                       timeout=1.0, step=0.25, clock=clock)
        clock.pump([0.25] * 4)
        failure = self.failureResultOf(d, WaitTimeout)
        self.assertEqual(str(failure.value),
                         "timed out after 1 s waiting for the PE (5 polls) (last: None)")
        self.assertEqual(polls, [0, 0.25, 0.5, 0.75, 1.0])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_condition_error(self):
        d = eventually(lambda: 1 / 0, "nothing", clock=task.Clock())
        self.failureResultOf(d, ZeroDivisionError)


class FakeConnectionTests(unittest.TestCase):
    def test_verified(self):
        """
        The fake connection the machine tests share is what the machines
        expect of a connection.
        """
        from zope.interface.verify import verifyObject

        from rserpool.interfaces import IMessageConnection, NotAvailable
        from rserpool.wire import Presence, ServerInformation, TCPTransport
        from tests.helpers import FakeConnection

        conn = FakeConnection()
        self.assertTrue(verifyObject(IMessageConnection, conn))
        presence = Presence(1, 0, 0, ServerInformation(1, TCPTransport(9901, ("127.0.0.1",))))
        conn.send(presence)
        self.assertEqual(conn.of(Presence), [presence])
        self.assertRaises(NotAvailable, conn.rtt)

