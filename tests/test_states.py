"""
The machines' transition tables (issue #15, step 2): a move that is not
in its machine's table fails at once, and every table is whole (each state
can be reached from the initial one, and a state other than the final
ones has a way out).
"""
from twisted.trial import unittest

from rserpool.asap import pool_element
from rserpool.session import core
from rserpool.states import IllegalTransition, State, describe


class Toy:
    state = State({"idle": {"running"}, "running": {"idle", "done"}, "done": set()},
                  initial="idle")


def reachable(table, initial):
    seen, todo = {initial}, [initial]
    while todo:
        for target in table.moves[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


class StateTests(unittest.TestCase):
    def test_moves_checked(self):
        toy = Toy()
        self.assertEqual(toy.state, "idle")
        toy.state = "running"
        toy.state = "done"
        error = self.assertRaises(IllegalTransition, setattr, toy, "state", "idle")
        self.assertEqual((error.old, error.new), ("done", "idle"))
        self.assertEqual(str(error), "Toy: no move from 'done' to 'idle'")
        self.assertEqual(toy.state, "done")

    def test_not_a_move_from_the_start(self):
        self.assertRaises(IllegalTransition, setattr, Toy(), "state", "done")

    def test_table_checked(self):
        self.assertRaises(ValueError, State, {"a": {"b"}}, initial="a")
        self.assertRaises(ValueError, State, {"a": set()}, initial="b")

    def test_describe(self):
        self.assertEqual(describe(Toy.state), "idle -> running\nrunning -> done, idle\ndone -> (none)")


class MachineTablesTests(unittest.TestCase):
    def test_pool_element(self):
        table = pool_element.PoolElementMachine.state
        self.assertEqual(reachable(table, table.initial), set(pool_element.PE_MOVES))
        self.assertEqual(table.initial, pool_element.IDLE)
        # a PE that deregisters only ends; a failed one only starts again or stops
        self.assertEqual(table.moves[pool_element.DEREGISTERING], {pool_element.STOPPED})
        self.assertEqual(table.moves[pool_element.FAILED],
                         {pool_element.HUNTING, pool_element.STOPPED})

    def test_pool_element_refuses_a_move_out_of_its_table(self):
        from rserpool.asap.pool_element import PoolElementConfig, PoolElementMachine
        from rserpool.codes import PolicyType
        from rserpool.wire import Policy, TCPTransport

        config = PoolElementConfig(b"p", Policy.make(PolicyType.ROUND_ROBIN), identifier=1)
        machine = PoolElementMachine(config, TCPTransport(7, ("127.0.0.1",)), ["tcp:127.0.0.1:1"])
        self.assertRaises(IllegalTransition, setattr, machine, "state", pool_element.REGISTERED)
        machine.start(0.0)
        self.assertEqual(machine.state, pool_element.HUNTING)

    def test_session(self):
        table = core.PUSessionCore.state
        self.assertEqual(reachable(table, table.initial), set(core.SESSION_MOVES))
        self.assertEqual(table.moves[core.CLOSED], {core.CLOSED})

    def test_closed_session_stays_closed(self):
        """
        A session the application closed while a connection was being set
        up does not come up when it is.
        """
        session = core.PUSessionCore()
        self.assertEqual(session.close(), [])
        self.assertEqual(session.state, core.CLOSING)
        self.assertEqual(session.connected(), [])
        self.assertEqual(session.state, core.CLOSING)
        session.closed()
        self.assertEqual(session.close(), [])
        self.assertEqual(session.state, core.CLOSED)
