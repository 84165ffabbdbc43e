"""
The registrar hunt (RFC 5352 section 3.6), sans I/O: one machine for the
pool element (L{rserpool.asap.pool_element}) and the pool user
(L{rserpool.asap.pool_user}) side.

A PE or PU knows registrars from a static list of client endpoint
descriptions, in order of preference, and from Server Announce
(L{rserpool.asap.announce}; an announced registrar is forgotten when it
stops announcing itself).  L{RegistrarHunt} tries them one at a time,
the static ones first: each attempt is a L{Connect} bounded by the
connect timeout; when a registrar fails (unreachable, too slow to connect
or to answer, its connection lost) the owner moves on to the next one.

What a round without success means is the owner's: a PE waits its hunt
retry delay and begins another round (it must stay registered), a PU
fails the requests every registrar failed (its application is waiting).
"""
import attrs

__all__ = ["CancelConnect", "Connect", "Hunting", "RegistrarHunt"]


@attrs.frozen
class Connect:
    """
    Open a connection to a registrar.  Report the outcome with the
    machine's C{connected} or C{connect_failed}, quoting C{attempt}.

    @ivar endpoint: a Twisted client endpoint description.
    @ivar attempt: the attempt's number.
    """

    endpoint: str
    attempt: int


@attrs.frozen
class CancelConnect:
    """
    Give up the connection attempt C{attempt} (it timed out).
    """

    attempt: int


class RegistrarHunt:
    """
    Which registrar to try next, one connection attempt at a time (RFC
    5352 section 3.6).

    @ivar static: the static registrars' endpoint descriptions, in order.
    @ivar announced: announced registrars: server id -> endpoint
        description.
    @ivar connect_timeout: seconds an attempt may take.
    @ivar pending: the number of the attempt under way, or C{None}.
    @ivar deadline: when the attempt under way times out, or C{None}.
    @ivar tried: attempts since the round began (L{new_round}).
    @ivar attempts: attempts made in all.
    """

    def __init__(self, registrars=(), connect_timeout=7.5):
        self.static = list(registrars)
        self.announced = {}
        self.connect_timeout = connect_timeout
        self.pending = None
        self.deadline = None
        self.tried = 0
        self.attempts = 0
        self._index = 0

    def candidates(self):
        """
        The registrars to hunt among: the static ones, then the announced
        ones not already listed.
        """
        out = list(self.static)
        for endpoint in self.announced.values():
            if endpoint not in out:
                out.append(endpoint)
        return out

    def announce(self, server_id, endpoint):
        """
        A registrar announced itself (Server Announce).
        """
        self.announced[server_id] = endpoint

    def forget(self, server_id):
        """
        A registrar stopped announcing itself: no longer a candidate.
        """
        self.announced.pop(server_id, None)

    # -- rounds -----------------------------------------------------------

    def new_round(self):
        """
        Count attempts from zero again (every registrar may be tried).
        """
        self.tried = 0

    @property
    def round_done(self):
        """
        Whether every candidate was tried in this round (or there is none).
        """
        candidates = self.candidates()
        return not candidates or self.tried >= len(candidates)

    # -- attempts ---------------------------------------------------------

    def dial(self, now):
        """
        Begin an attempt at the current registrar.

        @return: the L{Connect} to carry out, or C{None} when no registrar
            is known.
        """
        candidates = self.candidates()
        if not candidates:
            return None
        self._index %= len(candidates)
        self.tried += 1
        self.attempts += 1
        self.pending = self.attempts
        self.deadline = now + self.connect_timeout
        return Connect(candidates[self._index], self.pending)

    def settle(self, attempt):
        """
        Attempt C{attempt} ended (its connection is up, or it failed).

        @return: whether it was the attempt under way; if not, it is
            stale and to be ignored.
        """
        if self.pending is None or attempt != self.pending:
            return False
        self.pending = None
        self.deadline = None
        return True

    def timed_out(self, now):
        """
        Whether the attempt under way is past its deadline.
        """
        return self.deadline is not None and now >= self.deadline

    def cancel(self):
        """
        Give up the attempt under way (timed out, or not wanted any more).

        @return: the L{CancelConnect} to carry out, or C{None} when no
            attempt was under way.
        """
        attempt, self.pending, self.deadline = self.pending, None, None
        return CancelConnect(attempt) if attempt is not None else None

    def next(self):
        """
        The current registrar failed: the next one is tried next.
        """
        self._index += 1


class Hunting:
    """
    What a machine that hunts (the PE's, the PU's) shows of its
    L{RegistrarHunt}, C{self.hunt}; it defines C{registrar_announced}
    itself (a PE that waits for a registrar starts at once).
    """

    hunt = None

    @property
    def static(self):
        """
        The static registrars' endpoint descriptions, in order.
        """
        return self.hunt.static

    @property
    def announced(self):
        """
        Registrars learned from Server Announce: server id -> endpoint.
        """
        return self.hunt.announced

    def candidates(self):
        """
        The registrars to hunt among: the static ones, then the announced
        ones not already listed.
        """
        return self.hunt.candidates()

    def registrar_forgotten(self, server_id):
        """
        A registrar stopped announcing itself: no longer a candidate.
        """
        self.hunt.forget(server_id)
