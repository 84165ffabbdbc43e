"""
What a registrar's listener grants one connection, and to one source:
deadlines, a bounded write buffer and a connection budget (RFC 5355
section 3: a registrar must survive a flood; issue "bounded state for
every peer").

 - L{ConnectionLimits}: the numbers, with the values C{twistd enrp} uses
   unless told otherwise (chosen in ``doc/security.rst``).
 - L{ConnectionGuard}: one per accepted connection.  The first whole
   message must come within C{first_message} seconds, a message once begun
   must be complete within C{message} seconds, and a connection that sends
   nothing for C{idle} seconds is closed (a PE's connection is never idle:
   it acknowledges the registrar's Endpoint Keep Alives every few seconds;
   a registrar peer sends Presence every few seconds).  It is the
   connection's producer: when what the registrar writes piles up because
   the peer does not read, the guard stops reading from that peer (no new
   requests, no new answers), and it aborts the connection when the pile
   passes C{output_buffer} bytes or the peer has not read for C{stalled}
   seconds.
 - L{ConnectionBudget}: connections open per source (L{principal
   <rserpool.limits.principal>}: its address, an IPv6 /64 by default) and
   in all, with a reserve that only registrar peers (the ENRP listener)
   may use, so a flood of pool-user connections cannot lock the
   registrars out of each other.
 - L{MemoryReturn}: what connections that did not read held in buffers
   goes back to the system once they are gone (glibc keeps freed memory
   in the process otherwise, and a slow-reader flood would leave the
   registrar tens of MB larger for good).
 - L{TurnScheduler}: the registrar's time, shared out by source.  A
   connection handles at most a few messages when they arrive; what else
   one read brought waits, undecoded, while the connection is not read
   from, and is handled a few messages at a time in turns, source after
   source, for at most a millisecond or so between two looks at the
   sockets.  A pool user with one request is then served at once, however
   many connections another source keeps busy, and what a flood sends
   beyond the registrar's time stays in its own socket buffers.
"""
import collections
import ctypes
import gc
import resource
import time

import attrs
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

__all__ = ["ConnectionLimits", "ConnectionGuard", "ConnectionBudget", "TurnScheduler",
           "MemoryReturn", "descriptor_budget", "with_backlog", "limit_accepts",
           "LISTEN_BACKLOG", "ACCEPTS_PER_READ"]

#: The listen queue a registrar's listeners ask for unless their endpoint
#: names one (Twisted's default is 50).  While a flood opens connections
#: faster than they are accepted, a short queue is full most of the time,
#: and a legitimate client's SYN is dropped and retried a second later.
#: Linux caps it at net.core.somaxconn (4096).
LISTEN_BACKLOG = 1024

#: Connections a listener accepts at one look at the sockets.  Twisted's
#: TCP port starts at 100 and grows by 20 each time it accepted as many as
#: it tried, without end: under a flood of connections it accepts
#: thousands in one go (tens of ms in which nothing else is handled).
ACCEPTS_PER_READ = 16

_BACKLOG_PREFIXES = ("tcp", "tcp6", "psk", "ssl", "sctp")


def with_backlog(description, backlog=LISTEN_BACKLOG):
    """
    A server endpoint description with C{backlog=} added, if it is of a
    kind that takes one (C{tcp}, C{tcp6}, C{psk}, C{ssl}, C{sctp}) and
    names none.
    """
    prefix = description.split(":", 1)[0].strip().lower()
    if prefix not in _BACKLOG_PREFIXES or ":" not in description:
        return description
    if any(part.strip().lower().startswith("backlog=") for part in description.split(":")[1:]):
        return description
    return "%s:backlog=%d" % (description, backlog)


def limit_accepts(port, most=ACCEPTS_PER_READ):
    """
    Make a listening port accept at most C{most} connections each time
    the reactor finds it readable (see L{ACCEPTS_PER_READ}); the rest wait
    in the listen queue for the next look, after everything else that was
    ready.  A port that is not Twisted's TCP port is left as it is.

    @return: whether the port was changed.
    """
    if not isinstance(getattr(port, "numberAccepts", None), int):
        return False
    read = port.doRead

    def doRead():
        # Twisted's Port grows numberAccepts by itself: hold it down
        # before each round of accepts.
        if port.numberAccepts > most:
            port.numberAccepts = most
        return read()

    port.doRead = doRead
    port.numberAccepts = min(port.numberAccepts, most)
    return True


def _positive(instance, attribute, value):
    if value is not None and not value > 0:
        raise ValueError("%s must be positive, not %r" % (attribute.name.replace("_", "-"), value))


@attrs.frozen
class ConnectionLimits:
    """
    Limits of one accepted connection and of the listeners together.  A
    value of C{None} switches that limit off.

    @ivar first_message: seconds from the connection to its first whole
        message (10).
    @ivar message: seconds a begun message may take to complete (10).
    @ivar idle: seconds without a message before the connection is closed
        (600): longer than any keep-alive or Presence interval.
    @ivar output_buffer: bytes the registrar may have queued for a peer
        that does not read before the connection is aborted (1 MiB).
    @ivar stalled: seconds a peer may go without reading what was written
        to it before the connection is aborted (60).
    @ivar per_source: connections open at once from one source (128).
    @ivar total: connections open at once on all listeners; C{None}
        derives it from the descriptor limit (L{descriptor_budget}).
    @ivar reserve: of C{total}, how many only the ENRP listener may use
        (32).
    @ivar ipv6_prefix: the prefix length that makes one IPv6 source (64).
    """

    first_message: float = attrs.field(default=10.0, validator=_positive)
    message: float = attrs.field(default=10.0, validator=_positive)
    idle: float = attrs.field(default=600.0, validator=_positive)
    output_buffer: int = attrs.field(default=1 << 20, validator=_positive)
    stalled: float = attrs.field(default=60.0, validator=_positive)
    per_source: int = attrs.field(default=128, validator=_positive)
    total: int = attrs.field(default=None, validator=_positive)
    reserve: int = 32
    ipv6_prefix: int = 64


def descriptor_budget(spare=64):
    """
    How many connections this process can hold: its open-file limit (the
    soft one, raised to the hard one where allowed) less C{spare} for
    listening sockets, files and logs.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
    except (ValueError, OSError):
        soft = 1024
    return max(16, soft - spare)


class ConnectionBudget:
    """
    Connections open per source and in all (bookkeeping, and the choice of
    a connection to close when all are taken).

    When every connection of the budget is taken, a new one from a source
    that holds fewer than the source that holds most is still admitted:
    one of that biggest source's connections is closed for it (the oldest
    that never sent a whole message, else its oldest), so a source with
    few connections always gets one while another holds many (RFC 5355
    section 3: a registrar must survive a flood of connections; many
    sources together cannot lock out one more).  Only connections handed
    to L{attach} can be closed so; those of the reserve (registrar peers)
    are never.

    @ivar limits: the L{ConnectionLimits}.
    @ivar total: the ceiling on all connections.
    @ivar refused: connections refused since the start, by reason; and
        C{"evicted"}: connections closed to make room for another source's.
    """

    #: how many of the biggest source's connections are looked at, oldest
    #: first, for one that never sent a whole message
    SCAN = 64

    def __init__(self, limits, total=None):
        self.limits = limits
        if total is None:
            total = limits.total if limits.total is not None else descriptor_budget()
        self.total = total
        self.open = 0
        self._sources = {}
        # source -> {connection: None}, oldest first (the ones attach()ed)
        self._members = {}
        # number of attached connections -> the sources that hold so many
        self._by_count = {}
        self._top = 0
        self.refused = {"per source": 0, "total": 0, "evicted": 0}

    def admit(self, key, reserved=False):
        """
        Count a new connection from C{key} if the budget allows it; when
        all are taken, close one of the source that holds most (see the
        class's description) if that is not C{key}'s own share.

        @param reserved: whether the listener may use the reserve (ENRP).
        @return: C{None} if admitted, else the reason (C{"per source"} or
            C{"total"}); nothing is counted then.
        """
        limits = self.limits
        if limits.per_source is not None and self._sources.get(key, 0) >= limits.per_source:
            self.refused["per source"] += 1
            return "per source"
        ceiling = self.total if reserved else max(1, self.total - (limits.reserve or 0))
        if self.open >= ceiling and not self._evict_for(key):
            self.refused["total"] += 1
            return "total"
        self.open += 1
        self._sources[key] = self._sources.get(key, 0) + 1
        return None

    def attach(self, key, connection):
        """
        C{connection}, admitted for C{key}, may be closed to make room
        for another source's (L{admit}): it has C{budget_silent} (whether
        it never sent a whole message) and C{budget_evict()} (close it
        now; the budget has already released it).
        """
        members = self._members.get(key)
        if members is None:
            members = self._members[key] = {}
        self._move(key, len(members), len(members) + 1)
        members[connection] = None

    def release(self, key, connection=None):
        """
        A connection of C{key} that L{admit} counted is gone (pass the
        connection if it was L{attach}ed).
        """
        self.open -= 1
        count = self._sources.get(key, 0) - 1
        if count > 0:
            self._sources[key] = count
        else:
            self._sources.pop(key, None)
        if connection is not None:
            members = self._members.get(key)
            if members is not None and connection in members:
                del members[connection]
                self._move(key, len(members) + 1, len(members))
                if not members:
                    del self._members[key]

    def count(self, key):
        """
        Connections open from C{key}.
        """
        return self._sources.get(key, 0)

    def _move(self, key, before, after):
        # Keep the sources grouped by how many attached connections they
        # hold, and the most any holds, without a scan.
        if before:
            group = self._by_count[before]
            group.discard(key)
            if not group:
                del self._by_count[before]
        if after:
            self._by_count.setdefault(after, set()).add(key)
            if after > self._top:
                self._top = after
        while self._top and self._top not in self._by_count:
            self._top -= 1

    def _evict_for(self, key):
        # Close a connection of the source that holds most, if it holds at
        # least two more than key does (so the shares only come closer).
        top = self._top
        mine = len(self._members.get(key, ()))
        if top < mine + 2:
            return False
        victim_key = next(iter(self._by_count[top]))
        members = self._members[victim_key]
        victim = None
        for index, connection in enumerate(members):
            if index >= self.SCAN:
                break
            if connection.budget_silent:
                victim = connection
                break
        if victim is None:
            victim = next(iter(members))
        self.release(victim_key, victim)
        self.refused["evicted"] += 1
        victim.budget_evict()
        return True


@implementer(IPushProducer)
class ConnectionGuard:
    """
    The deadlines and the write buffer of one connection (see the module's
    description).  The protocol calls L{received} for each whole message,
    L{partial} with the bytes that wait for the rest of a message,
    L{wrote} for what it writes and L{stop} when it is gone; it asks
    L{paused} before it handles the next message.  When a limit is passed
    the guard calls the protocol's C{guard_closed(reason, abort)}, which
    must close the connection (abort it if C{abort}).

    @ivar paused: whether the peer stopped reading (the protocol must then
        keep the messages it has not handled for L{resumed}).
    """

    def __init__(self, protocol, limits, clock, on_resume):
        """
        @param protocol: the connection's protocol (its C{transport} is
            used, and C{describe()} names the peer in log lines).
        @param limits: the L{ConnectionLimits}.
        @param clock: an C{IReactorTime}.
        @param on_resume: called when the peer reads again, to handle the
            messages kept while it did not.
        """
        self.protocol = protocol
        self.limits = limits
        self.clock = clock
        self.on_resume = on_resume
        now = clock.seconds()
        self.started = now
        self.last = None
        self.partial_since = None
        self.paused = False
        self.paused_at = None
        self.queued = 0
        self.closed = None
        self._call = None
        transport = protocol.transport
        try:
            transport.registerProducer(self, True)
            self._registered = True
        except (RuntimeError, AttributeError):
            # Someone else produces on this transport: no write guard.
            self._registered = False
        self._arm(now + limits.first_message if limits.first_message else None)

    # -- the protocol's calls ---------------------------------------------

    def received(self):
        """
        A whole message arrived.
        """
        self.last = self.clock.seconds()

    def partial(self, buffered):
        """
        C{buffered} bytes wait for the rest of their message (0: none).
        """
        if not buffered:
            self.partial_since = None
        elif self.partial_since is None and self.limits.message:
            now = self.clock.seconds()
            self.partial_since = now
            deadline = now + self.limits.message
            if self._call is None or self._call.getTime() > deadline:
                self._arm(deadline)

    def wrote(self, count):
        """
        C{count} bytes were written; while the peer does not read they pile
        up, and past the limit the connection is aborted.
        """
        if not self.paused:
            return
        self.queued += count
        limit = self.limits.output_buffer
        if limit is not None and self.queued > limit:
            self._close("%d bytes wait for it to read" % self.queued, abort=True)

    def release(self):
        """
        The connection is gone for good: let go of the protocol, so that
        it and what its transport held (a peer's unread answers) are freed
        at once, not when the garbage collector finds the cycle.
        """
        self.stop()
        self.protocol = None
        self.on_resume = None

    def stop(self):
        """
        The connection is gone.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._registered:
            self._registered = False
            try:
                self.protocol.transport.unregisterProducer()
            except (RuntimeError, AttributeError):
                pass

    # -- IPushProducer (the transport's calls) -----------------------------

    def pauseProducing(self):
        """
        The peer does not read what we write: read nothing more from it.
        """
        if self.paused or self.closed:
            return
        self.paused = True
        self.paused_at = self.clock.seconds()
        self.queued = 0
        try:
            self.protocol.transport.pauseProducing()
        except AttributeError:
            pass
        if self.limits.stalled:
            deadline = self.paused_at + self.limits.stalled
            if self._call is None or self._call.getTime() > deadline:
                self._arm(deadline)

    def resumeProducing(self):
        """
        The peer read what we wrote: read from it again.
        """
        if not self.paused or self.closed:
            return
        self.paused = False
        self.paused_at = None
        self.queued = 0
        try:
            self.protocol.transport.resumeProducing()
        except AttributeError:
            pass
        self.on_resume()

    def stopProducing(self):
        """
        The transport is going away.
        """
        self.stop()

    # -- deadlines ----------------------------------------------------------

    def _arm(self, when):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if when is not None:
            self._call = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._check)

    def _check(self):
        self._call = None
        if self.closed:
            return
        now = self.clock.seconds()
        limits = self.limits
        deadlines = []
        if self.last is None and limits.first_message:
            deadline = self.started + limits.first_message
            if now >= deadline:
                return self._close("no whole message within %g s" % limits.first_message)
            deadlines.append(deadline)
        if self.partial_since is not None and limits.message:
            deadline = self.partial_since + limits.message
            if now >= deadline:
                return self._close("a message incomplete for %g s" % limits.message)
            deadlines.append(deadline)
        if self.last is not None and limits.idle:
            deadline = self.last + limits.idle
            if now >= deadline:
                return self._close("nothing received for %g s" % limits.idle)
            deadlines.append(deadline)
        if self.paused and limits.stalled:
            deadline = self.paused_at + limits.stalled
            if now >= deadline:
                return self._close("it read nothing for %g s" % limits.stalled, abort=True)
            deadlines.append(deadline)
        self._arm(min(deadlines) if deadlines else None)

    def _close(self, reason, abort=False):
        self.closed = reason
        self.stop()
        self.protocol.guard_closed(reason, abort or self.paused)


class TurnScheduler:
    """
    Gives connections with waiting messages turns, source after source
    (see the module's description).

    A worker (a connection) that has more messages than it may handle at
    once calls L{wait} with its source; the scheduler then calls its
    C{take_turn(quantum)} from the reactor, round robin over the sources
    and over each source's workers, until a time slice is used up, and
    again after the reactor has looked at its sockets.  A worker that
    still has messages after its turn calls L{wait} again; one that is
    gone simply does not.

    What arrives is handled at once only while the arrivals since the last
    round of turns have used less than a slice (L{at_once}, L{spent}), so
    one look at the sockets that finds hundreds of connections readable
    costs about a slice, not hundreds of quanta; the rest waits for turns.
    A source that had nothing waiting goes first in the next round, for
    one turn, before the sources that are always busy (as a new flow does
    in fq_codel, RFC 8290): a pool user's request that missed the slice
    waits for the end of one look at the sockets, not for every flooding
    source's turn.

    @ivar quantum: messages a worker handles per turn (and at once, when
        they arrive).
    @ivar slice: seconds of turns between two looks at the sockets, and of
        messages handled at once as they arrive.
    """

    #: Turns per slice at most, whatever the timer says.
    max_turns = 4096

    def __init__(self, clock, quantum=16, slice=0.00025, timer=time.perf_counter):
        """
        @param clock: an C{IReactorTime} (C{callLater(0, ...)} runs after
            the reactor's next look at its sockets).
        @param quantum: messages per turn.
        @param slice: seconds of turns per reactor iteration.
        @param timer: what measures the slice (a monotonic clock).
        """
        self.clock = clock
        self.quantum = quantum
        self.slice = slice
        self.timer = timer
        # Sources with workers waiting, in their order of turns; and those
        # that had nothing waiting before (served first, once).
        self._sources = collections.OrderedDict()
        self._new = collections.OrderedDict()
        self._spent = 0.0
        self._call = None
        # Sources over their limits: key -> until (clock time); and the
        # workers of those among them that wait, out of the rotation.
        self._throttled = {}
        self._parked = {}
        self._unpark_call = None
        #: when the current turn must end (a worker stops handling its
        #: messages then, even before its quantum: some cost far more
        #: than others)
        self.deadline = 0.0

    def at_once(self, key):
        """
        Whether a worker of source C{key} may handle what just arrived at
        once: the source has nothing waiting, and what was handled at once
        since the last round of turns took less than a slice.
        """
        return (self._spent < self.slice and key not in self._sources and key not in self._new
                and not (self._throttled and self._blocked(key)))

    def throttle(self, key, seconds):
        """
        Give source C{key} no turn for C{seconds}: what its connections
        have and send waits, unread (a source over its limits; RFC 5355
        section 3, the flood's own messages refused at the door).
        """
        until = self.clock.seconds() + seconds
        if self._throttled.get(key, 0) < until:
            self._throttled[key] = until
        for sources in (self._sources, self._new):
            workers = sources.pop(key, None)
            if workers:
                self._park(key, workers)

    def _blocked(self, key):
        until = self._throttled.get(key)
        if until is None:
            return False
        if self.clock.seconds() >= until:
            del self._throttled[key]
            return False
        return True

    def _park(self, key, workers):
        parked = self._parked.get(key)
        if parked is None:
            self._parked[key] = collections.OrderedDict(workers)
        else:
            parked.update(workers)
        if self._unpark_call is None:
            self._arm_unpark(self.clock.seconds())

    def _arm_unpark(self, now):
        # At the end of the parked sources' earliest throttle.
        delay = max(0.0, min(self._throttled.get(k, 0) for k in self._parked) - now)
        self._unpark_call = self.clock.callLater(delay, self._unpark)

    def _unpark(self):
        self._unpark_call = None
        now = self.clock.seconds()
        for key in list(self._parked):
            if self._throttled.get(key, 0) <= now:
                self._throttled.pop(key, None)
                workers = self._parked.pop(key)
                if workers:
                    self._sources[key] = workers
        if self._parked:
            self._arm_unpark(now)
        if (self._sources or self._new) and self._call is None:
            self._call = self.clock.callLater(0, self._run)

    def run_at_once(self, work, *args):
        """
        Handle what just arrived now (after L{at_once} said so): call
        C{work(*args, deadline)}, C{deadline} being when what is left of
        the arrivals' slice ends, and count the time it took against the
        slice until the next round of turns.
        """
        started = self.timer()
        self.deadline = started + max(0.0, self.slice - self._spent)
        work(*args, self.deadline)
        self.spent(self.timer() - started)

    def spent(self, seconds):
        """
        Messages that arrived were handled at once, in C{seconds}.
        """
        self._spent += seconds
        if self._call is None:
            self._call = self.clock.callLater(0, self._run)

    def wait(self, key, worker):
        """
        C{worker}, of source C{key}, has messages waiting: give it a turn.
        """
        if self._throttled and self._blocked(key):
            self._park(key, collections.OrderedDict(((worker, None),)))
            return
        workers = self._sources.get(key)
        if workers is None:
            workers = self._new.get(key)
            if workers is None:
                workers = self._new[key] = collections.OrderedDict()
        workers[worker] = None
        if self._call is None:
            self._call = self.clock.callLater(0, self._run)

    def forget(self, key, worker):
        """
        C{worker} is gone: no more turns.
        """
        for sources in (self._sources, self._new, self._parked):
            workers = sources.get(key)
            if workers is not None:
                workers.pop(worker, None)
                if not workers:
                    del sources[key]

    def __len__(self):
        """
        How many workers wait for a turn.
        """
        return (sum(len(w) for w in self._sources.values())
                + sum(len(w) for w in self._new.values())
                + sum(len(w) for w in self._parked.values()))

    def _run(self):
        self._call = None
        self._spent = 0.0
        sources = self._sources
        new = self._new
        timer = self.timer
        quantum = self.quantum
        deadline = self.deadline = timer() + self.slice
        for _ in range(self.max_turns):
            if new:
                # A source that had nothing waiting: one turn, then it
                # waits with the others (its workers' wait() finds it
                # there while its turn runs).
                key, workers = new.popitem(last=False)
                sources[key] = workers
            elif sources:
                key = next(iter(sources))
                workers = sources[key]
                sources.move_to_end(key)
            else:
                break
            worker, _ = workers.popitem(last=False)
            worker.take_turn(quantum)
            if not workers and sources.get(key) is workers:
                del sources[key]
            if timer() >= deadline:
                break
        if (sources or new) and self._call is None:
            self._call = self.clock.callLater(0, self._run)


def malloc_trim():
    """
    glibc's C{malloc_trim(0)} as a callable, or C{None} elsewhere.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryReturn:
    """
    Gives memory back to the system after connections are gone, above all
    those that held buffers (answers their peer did not read, requests
    that waited for their turn) or failed a TLS handshake.

    Two things keep it in the process.  Twisted's TLS leaves a connection
    whose peer vanished mid-handshake in a reference cycle (a Failure made
    in a frame that its own traceback holds, with the connection's OpenSSL
    state, about 70 KB, hanging from it) that only the garbage collector
    frees, and the registrar's collector runs the older generations
    seldom (L{rserpool.services.collector.YOUNG_THRESHOLD}).  And the allocator keeps the
    blocks it is given back for reuse, where a few live objects keep a
    whole region: after 500 connections that did not read are gone, the
    registrar stayed about 60 MB larger; after a TLS handshake flood,
    200 MB.  Once C{threshold} bytes were let go, the young generations
    are collected (the new cycles are there; well under a millisecond)
    and glibc's C{malloc_trim} returns what is free (a millisecond or so),
    at most once every C{interval} seconds.

    @ivar trims: how many times memory was given back.
    """

    def __init__(self, clock, trim=None, threshold=4 << 20, interval=5.0, collect=None):
        """
        @param clock: an C{IReactorTime}.
        @param trim: what gives the memory back (L{malloc_trim} by
            default; nothing happens without it).
        @param threshold: bytes let go before it is worth it.
        @param interval: seconds between two trims at least.
        @param collect: what frees the cycles first (the collector's young
            generations by default).
        """
        self.clock = clock
        self.collect = collect if collect is not None else (lambda: gc.collect(1))
        self.trim = trim if trim is not None else malloc_trim()
        self.threshold = threshold
        self.interval = interval
        self.trims = 0
        self._freed = 0
        self._last = None
        self._call = None

    def released(self, count):
        """
        A connection that held C{count} bytes of buffers is gone.
        """
        if self.trim is None or count <= 0:
            return
        self._freed += count
        if self._freed < self.threshold or self._call is not None:
            return
        now = self.clock.seconds()
        delay = 0.0 if self._last is None else max(0.0, self._last + self.interval - now)
        self._call = self.clock.callLater(delay, self._give_back)

    def _give_back(self):
        self._call = None
        self._freed = 0
        self._last = self.clock.seconds()
        self.trims += 1
        self.collect()
        self.trim()
