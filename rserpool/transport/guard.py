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
"""
import resource

import attrs
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

__all__ = ["ConnectionLimits", "ConnectionGuard", "ConnectionBudget", "descriptor_budget"]


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
    Connections open per source and in all (pure bookkeeping).

    @ivar limits: the L{ConnectionLimits}.
    @ivar total: the ceiling on all connections.
    @ivar refused: connections refused since the start, by reason.
    """

    def __init__(self, limits, total=None):
        self.limits = limits
        if total is None:
            total = limits.total if limits.total is not None else descriptor_budget()
        self.total = total
        self.open = 0
        self._sources = {}
        self.refused = {"per source": 0, "total": 0}

    def admit(self, key, reserved=False):
        """
        Count a new connection from C{key} if the budget allows it.

        @param reserved: whether the listener may use the reserve (ENRP).
        @return: C{None} if admitted, else the reason (C{"per source"} or
            C{"total"}); nothing is counted then.
        """
        limits = self.limits
        ceiling = self.total if reserved else max(1, self.total - (limits.reserve or 0))
        if self.open >= ceiling:
            self.refused["total"] += 1
            return "total"
        if limits.per_source is not None and self._sources.get(key, 0) >= limits.per_source:
            self.refused["per source"] += 1
            return "per source"
        self.open += 1
        self._sources[key] = self._sources.get(key, 0) + 1
        return None

    def release(self, key):
        """
        A connection of C{key} that L{admit} counted is gone.
        """
        self.open -= 1
        count = self._sources.get(key, 0) - 1
        if count > 0:
            self._sources[key] = count
        else:
            self._sources.pop(key, None)

    def count(self, key):
        """
        Connections open from C{key}.
        """
        return self._sources.get(key, 0)


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
