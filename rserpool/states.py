"""
Transition tables for the sans-IO state machines.

A machine whose state drives its behaviour declares every move it may
make in one table, next to its states, and keeps its state in a
L{State} attribute: setting it checks the move against the table, so a
move nobody wrote down is a bug found at once (L{IllegalTransition}), not
a machine wandering into a state its code never expected.  The table is
also the machine's documentation: C{docs/architecture.rst} and the
machines' docstrings point to it.
"""

__all__ = ["IllegalTransition", "State", "describe"]


class IllegalTransition(Exception):
    """
    A machine tried a move that its transition table does not allow: a
    programming error in the machine, never caused by network input (each
    machine decides from its state what an input means, and ignores what
    does not fit it).
    """

    def __init__(self, machine, old, new):
        Exception.__init__(self, "%s: no move from %r to %r" % (machine, old, new))
        self.old = old
        self.new = new


class State:
    """
    A data descriptor holding a machine's state, checked against a
    transition table on every change.

    Use::

        class Machine:
            state = State({IDLE: {RUNNING}, RUNNING: {IDLE}}, initial=IDLE)

    @ivar moves: C{{state: frozenset(states it may move to)}}.
    @ivar initial: the state of a new machine.
    """

    def __init__(self, moves, initial):
        """
        @param moves: C{{state: iterable of the states it may move to}};
            every state named anywhere must have an entry (an empty one for
            a state without a way out).
        @param initial: the state a machine starts in.
        @raise ValueError: a move to a state without an entry, or an
            initial state without one.
        """
        self.moves = {old: frozenset(new) for old, new in moves.items()}
        for old, targets in self.moves.items():
            unknown = targets - set(self.moves)
            if unknown:
                raise ValueError("moves from %r to states without an entry: %r" % (old, unknown))
        if initial not in self.moves:
            raise ValueError("initial state %r has no entry" % (initial,))
        self.initial = initial
        self.name = None

    def __set_name__(self, owner, name):
        self.owner = owner.__name__
        self.name = "_" + name

    def __get__(self, machine, owner=None):
        if machine is None:
            return self
        return machine.__dict__.get(self.name, self.initial)

    def __set__(self, machine, new):
        old = machine.__dict__.get(self.name, self.initial)
        if new not in self.moves[old]:
            raise IllegalTransition(self.owner, old, new)
        machine.__dict__[self.name] = new


def describe(state):
    """
    The transition table of a L{State}, one line per state: C{old -> new,
    new}, in the order the table lists them (for docs and tests).
    """
    lines = []
    for old, targets in state.moves.items():
        lines.append("%s -> %s" % (old, ", ".join(sorted(targets)) or "(none)"))
    return "\n".join(lines)
