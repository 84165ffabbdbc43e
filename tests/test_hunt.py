"""
The registrar hunt (RFC 5352 section 3.6) that pool elements and pool
users share (L{rserpool.asap.hunt}).
"""
from twisted.trial import unittest

from rserpool.asap.hunt import CancelConnect, Connect, RegistrarHunt
from rserpool.asap.pool_element import PoolElementConfig, PoolElementMachine
from rserpool.asap.pool_user import PoolUserMachine
from rserpool.codes import PolicyType
from rserpool.wire import Policy, TCPTransport

ROUND_ROBIN = Policy.make(PolicyType.ROUND_ROBIN)


class RegistrarHuntTests(unittest.SynchronousTestCase):
    def test_candidates(self):
        """
        The static registrars in order, then the announced ones not
        already listed; a forgotten one is no longer a candidate.
        """
        hunt = RegistrarHunt(["tcp:a", "tcp:b"])
        hunt.announce(7, "tcp:c")
        hunt.announce(8, "tcp:a")
        self.assertEqual(hunt.candidates(), ["tcp:a", "tcp:b", "tcp:c"])
        hunt.forget(7)
        hunt.forget(99)
        self.assertEqual(hunt.candidates(), ["tcp:a", "tcp:b"])

    def test_dial(self):
        """
        An attempt names the current registrar, has a number of its own
        and a deadline of connect_timeout.
        """
        hunt = RegistrarHunt(["tcp:a", "tcp:b"], connect_timeout=2.0)
        self.assertEqual(hunt.dial(10.0), Connect("tcp:a", 1))
        self.assertEqual((hunt.pending, hunt.deadline, hunt.tried), (1, 12.0, 1))
        self.assertFalse(hunt.timed_out(11.9))
        self.assertTrue(hunt.timed_out(12.0))

    def test_next_and_rounds(self):
        """
        After a failure the next registrar is tried, round and round; a
        round is done once every candidate was tried since it began.
        """
        hunt = RegistrarHunt(["tcp:a", "tcp:b"])
        seen = []
        for _ in range(3):
            seen.append(hunt.dial(0).endpoint)
            self.assertTrue(hunt.settle(hunt.pending))
            hunt.next()
        self.assertEqual(seen, ["tcp:a", "tcp:b", "tcp:a"])
        self.assertTrue(hunt.round_done)
        hunt.new_round()
        self.assertFalse(hunt.round_done)

    def test_no_registrar(self):
        hunt = RegistrarHunt()
        self.assertIsNone(hunt.dial(0))
        self.assertTrue(hunt.round_done)

    def test_stale_attempts(self):
        """
        Only the attempt under way settles; an older one (or none) is
        ignored.
        """
        hunt = RegistrarHunt(["tcp:a"])
        self.assertFalse(hunt.settle(None))
        first = hunt.dial(0).attempt
        hunt.cancel()
        second = hunt.dial(0).attempt
        self.assertFalse(hunt.settle(first))
        self.assertEqual(hunt.pending, second)
        self.assertTrue(hunt.settle(second))
        self.assertIsNone(hunt.deadline)
        self.assertFalse(hunt.settle(second))

    def test_cancel(self):
        hunt = RegistrarHunt(["tcp:a"])
        self.assertIsNone(hunt.cancel())
        attempt = hunt.dial(0).attempt
        self.assertEqual(hunt.cancel(), CancelConnect(attempt))
        self.assertEqual((hunt.pending, hunt.deadline), (None, None))


class SharedTests(unittest.SynchronousTestCase):
    """
    The pool element and the pool user run the same hunt.
    """

    def test_both_machines(self):
        pe = PoolElementMachine(
            PoolElementConfig(b"pool", ROUND_ROBIN, identifier=1, connect_timeout=2.0),
            TCPTransport(7, ("127.0.0.1",)), registrars=["tcp:a", "tcp:b"])
        pu = PoolUserMachine(registrars=["tcp:a", "tcp:b"], connect_timeout=2.0)
        self.assertIsInstance(pe.hunt, RegistrarHunt)
        self.assertIsInstance(pu.hunt, RegistrarHunt)
        pe.start(0)
        pu.resolve(b"pool", 0)
        self.assertEqual([a for a in pe.actions() if isinstance(a, Connect)],
                         [Connect("tcp:a", 1)])
        self.assertEqual(pu.actions(), [Connect("tcp:a", 1)])
        self.assertEqual((pe.next_deadline, pu.next_deadline), (2.0, 2.0))
        # the first registrar is unreachable: both try the second
        pe.connect_failed(1, 0.5, "refused")
        pu.connect_failed(1, 0.5, "refused")
        self.assertIn(Connect("tcp:b", 2), pe.actions())
        self.assertIn(Connect("tcp:b", 2), pu.actions())

    def test_announced_and_forgotten(self):
        """
        A registrar learned from Server Announce is a candidate of either
        machine until it is forgotten (RFC 5352 section 3.6).
        """
        pe = PoolElementMachine(PoolElementConfig(b"pool", ROUND_ROBIN, identifier=1),
                                TCPTransport(7, ("127.0.0.1",)))
        pu = PoolUserMachine()
        for machine in (pe, pu):
            machine.registrar_announced(9, "tcp:z", 0)
            self.assertEqual(machine.candidates(), ["tcp:z"])
            self.assertEqual(machine.announced, {9: "tcp:z"})
            machine.registrar_forgotten(9)
            self.assertEqual(machine.candidates(), [])
