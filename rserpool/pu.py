"""
Pool users on Twisted: handle resolution with a cache, GETPRIMARYSERVER /
GETNEXTSERVER, Endpoint Unreachable reports, and a client endpoint that
connects any Twisted protocol to a pool.

    >>> from rserpool.pu import PoolUser, PoolClientEndpoint
    >>> pu = PoolUser(reactor, registrars=["tcp:127.0.0.1:3863"])
    >>> d = pu.get_primary_server(b"EchoPool")      # a PoolElementInfo
    >>> endpoint = PoolClientEndpoint(reactor, pu, b"EchoPool")
    >>> d = endpoint.connect(EchoClientFactory())

or, through the endpoint plugin,
C{clientFromString(reactor, "rserpool:EchoPool")}.

The ASAP procedures are in L{rserpool.asap.pool_user}; this module only
connects and keeps time.
"""
import collections
import random

from twisted.internet import defer, error
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from rserpool.asap.pool_user import (
    NoPoolElement,
    NoRegistrar,
    PoolElementInfo,
    PoolUserMachine,
    ResolutionCache,
    ResolutionError,
    ResolutionFailed,
    Resolved,
    NoSuchPool,
    UnreachableLimiter,
)
from rserpool.driver import MachineDriver, listen_for_registrars
from rserpool.codes import DEFAULT_REGISTRAR
from rserpool.web.histogram import FAILOVER_BUCKETS, Histogram

__all__ = [
    "PoolUser",
    "PoolClientEndpoint",
    "PoolElementInfo",
    "ResolutionError",
    "NoSuchPool",
    "NoRegistrar",
    "NoPoolElement",
    "NoPoolElementReachable",
]


class NoPoolElementReachable(error.ConnectError):
    """
    Every PE tried for a connection failed.
    """


def _handle(pool_handle):
    return pool_handle.encode("utf-8") if isinstance(pool_handle, str) else bytes(pool_handle)


class PoolUser:
    """
    The ASAP side of a pool user (RFC 5352 sections 3.5, 3.6, 3.8).

    @ivar cache: the L{ResolutionCache}.
    @ivar machine: the L{PoolUserMachine}.
    @ivar counts: what it did, for metrics (L{rserpool.web.nodes}):
        C{resolutions}, C{resolution failures}, C{unreachable reports}
        (sent), C{failovers} (sessions moved to another PE).
    @ivar failover_time: a L{Histogram} of the seconds from losing a PE to
        the session going on with the next.
    """

    log = Logger()

    def __init__(self, reactor=None, registrars=(DEFAULT_REGISTRAR,), stale_timeout=0.0,
                 failed_hold=10.0, response_timeout=3.0, connect_timeout=7.5, items=None,
                 rng=None, limiter=None, announce=None):
        """
        @param reactor: the reactor (the global one by default).
        @param registrars: client endpoint descriptions of registrars.
        @param stale_timeout: seconds a resolution stays in the cache
            (RSPLIB's C{staleCacheValue}; 0 asks the registrar each time).
        @param failed_hold: seconds a PE reported as failed is avoided.
        @param response_timeout: seconds to wait for a registrar.
        @param connect_timeout: seconds to wait for a registrar connection.
        @param items: PEs to ask for per resolution (C{None}: the
            registrar's default).
        @param rng: a C{random.Random} for random policies on cached
            answers.
        @param limiter: an L{UnreachableLimiter} (RFC 5355 section 2.13).
        @param announce: C{(group, port)} to learn more registrars from
            their ASAP Server Announce (RFC 5352 section 3.6), e.g.
            C{("239.0.0.50", 3863)}; C{None} (the default) listens to none.
        """
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.rng = rng if rng is not None else random.Random()
        self.items = items
        self.cache = ResolutionCache(stale_timeout, failed_hold, self.rng)
        self.machine = PoolUserMachine(
            registrars, response_timeout, connect_timeout, self.cache,
            limiter if limiter is not None else UnreachableLimiter())
        self.driver = MachineDriver(reactor, self.machine, self._event)
        self.counts = collections.Counter()
        self.failover_time = Histogram(FAILOVER_BUCKETS)
        self._waiting = {}
        self._announce_port = None
        if announce is not None:
            self._announce_port = listen_for_registrars(reactor, announce, self.driver)

    def _now(self):
        return self.reactor.seconds()

    def _event(self, event):
        if isinstance(event, Resolved):
            self.counts["resolutions"] += 1
        elif isinstance(event, ResolutionFailed):
            self.counts["resolution failures"] += 1
        d = self._waiting.pop(event.request, None)
        if d is None:
            return
        if isinstance(event, Resolved):
            d.callback(list(event.pool_elements))
        elif isinstance(event, ResolutionFailed):
            d.errback(event.error)

    def resolve(self, pool_handle, items=None):
        """
        Ask a registrar for the PEs of a pool (RFC 5352 section 3.8),
        bypassing the cache (the answer is stored in it).

        @param items: how many PEs to ask for.
        @return: a L{Deferred} firing with a list of L{PoolElementInfo} in
            the registrar's policy order, or failing with
            L{NoSuchPool} or L{NoRegistrar}.
        """
        d = defer.Deferred()
        number = self.machine.resolve(_handle(pool_handle), self._now(),
                                      items if items is not None else self.items)
        self._waiting[number] = d
        self.driver.flush()
        return d

    def get_addrinfo(self, pool_handle, items=None):
        """
        Like RSPLIB's C{rsp_getaddrinfo}: the cached PEs of a pool if fresh,
        else a resolution at a registrar.

        @return: a L{Deferred} list of L{PoolElementInfo}.
        """
        handle = _handle(pool_handle)
        fresh = self.cache.fresh(handle, self._now())
        if fresh:
            return defer.succeed(fresh)
        return self.resolve(handle, items)

    def get_primary_server(self, pool_handle):
        """
        GETPRIMARYSERVER (draft-ietf-rserpool-service section 4.3): the PE
        to contact, chosen by the pool's policy.

        @return: a L{Deferred} L{PoolElementInfo}; fails with
            L{NoSuchPool}, L{NoRegistrar} or L{NoPoolElement}.
        """
        handle = _handle(pool_handle)
        chosen = self.cache.select(handle, self._now())
        if chosen is not None:
            return defer.succeed(chosen)

        def pick(infos):
            chosen = self.cache.select(handle, self._now(), infos)
            if chosen is None:
                raise NoPoolElement(handle, "every PE the registrar returned failed recently")
            return chosen

        return self.resolve(handle).addCallback(pick)

    def get_next_server(self, pool_handle, failed):
        """
        GETNEXTSERVER (draft-ietf-rserpool-service section 4.3): report
        that C{failed} (returned by an earlier call) failed, then return
        another PE.

        @param failed: a L{PoolElementInfo}, or a PE identifier.
        @return: a L{Deferred} L{PoolElementInfo}.
        """
        handle = _handle(pool_handle)
        pe_id = failed.identifier if isinstance(failed, PoolElementInfo) else failed
        self.report_unreachable(handle, pe_id)
        return self.get_primary_server(handle)

    def report_unreachable(self, pool_handle, pe_id):
        """
        Forget a PE and send Endpoint Unreachable (RFC 5352 section 3.5),
        rate limited (RFC 5355 section 2.13).

        @return: whether a report was sent.
        """
        handle = _handle(pool_handle)
        now = self._now()
        self.cache.mark_failed(handle, pe_id, now)
        sent = self.machine.report_unreachable(handle, pe_id, now)
        self.driver.flush()
        if sent:
            self.counts["unreachable reports"] += 1
            self.log.info("reported {pe_id:08x} of {handle!r} unreachable",
                          pe_id=pe_id, handle=handle)
        return sent

    def note_failover(self, seconds):
        """
        A session of this pool user went on with another PE, C{seconds}
        after losing the last (the session layer tells).
        """
        self.counts["failovers"] += 1
        self.failover_time.observe(seconds)

    def close(self):
        """
        Close the registrar connection and stop listening for Server
        Announce; outstanding requests fail.
        """
        if self._announce_port is not None:
            self._announce_port.stopListening()
            self._announce_port = None
        self.machine.close()
        self.driver.flush()
        self.driver.stop()


@implementer(IStreamClientEndpoint)
class PoolClientEndpoint:
    """
    A Twisted client endpoint that reaches a pool instead of an address.

    Basic Mode (the default): GETPRIMARYSERVER, then a plain connection to
    that PE's transport; a PE that cannot be reached is reported with
    GETNEXTSERVER and the next one is tried, C{attempts} times at most.
    Once connected the protocol talks to that PE directly; failover after
    that is the application's (draft-ietf-rserpool-service section 3.2).

    Enhanced Mode (C{enhanced=True}, or found out from the PE's
    registration by default): the protocol is connected through the
    session layer (L{rserpool.transport.enhanced.PoolSession}), which fails over by
    itself.
    """

    def __init__(self, reactor, pool_user, pool_handle, attempts=5, enhanced=None,
                 session_options=None, timeout=None, secure=None):
        """
        @param pool_user: a L{PoolUser}.
        @param pool_handle: the pool's handle.
        @param attempts: PEs to try before giving up.
        @param enhanced: C{True} for the Enhanced Mode session layer,
            C{False} for Basic Mode, C{None} (the default) to decide by the
            first PE's registration (transport use "data plus control"
            means Enhanced Mode).
        @param session_options: keyword arguments for
            L{rserpool.transport.enhanced.PoolSession} (C{failover_callback},
            C{business_card}, heartbeat settings...).
        @param timeout: seconds to wait for each PE's connection.
        @param secure: C{None}, or a function from a PE's client endpoint
            string to a secured one, e.g. the C{client} method of a
            L{rserpool.transport.psk.PSKEndpoints}: every connection to a PE,
            the first and each after a failover, then authenticates the PE
            anew (RFC 5355 section 2.9).  A PE it cannot secure (it raises
            C{ValueError}) counts as unreachable.
        """
        self.reactor = reactor
        self.pool_user = pool_user
        self.pool_handle = _handle(pool_handle)
        self.attempts = attempts
        self.enhanced = enhanced
        self.session_options = dict(session_options or {})
        self.timeout = timeout
        self.secure = secure

    def pe_endpoint(self, info):
        """
        The client endpoint for one PE.
        """
        description = info.endpoint_description()
        if self.timeout is not None:
            description += ":timeout=%d" % max(1, int(self.timeout))
        if self.secure is not None:
            try:
                description = self.secure(description)
            except ValueError as e:
                return _Unreachable(str(e))
        return clientFromString(self.reactor, description)

    def connect(self, protocolFactory):
        """
        Connect C{protocolFactory}'s protocol to a PE of the pool.

        @return: a L{Deferred} firing with the protocol, or failing with
            L{ResolutionError} or L{NoPoolElementReachable}.
        """
        if self.enhanced is None:
            # Auto: the PE's transport use tells whether it speaks Enhanced
            # Mode (RFC 5354 section 3.3: "data plus control").
            d = self.pool_user.get_primary_server(self.pool_handle)
            d.addCallback(lambda info: self._connect(protocolFactory, info.control_channel, info))
            return d
        return self._connect(protocolFactory, self.enhanced, None)

    def _connect(self, factory, enhanced, first):
        if enhanced:
            from rserpool.transport.enhanced import PoolSession

            session = PoolSession(self.reactor, self.pool_user, self.pool_handle, factory,
                                  attempts=self.attempts, endpoint_for=self.pe_endpoint,
                                  first=first, **self.session_options)
            return session.connect()
        return connect_basic(self.pool_user, self.pool_handle, factory,
                             self.pe_endpoint, self.attempts, first)


@implementer(IStreamClientEndpoint)
class _Unreachable:
    # A PE that cannot be reached the way the caller asked for.

    def __init__(self, reason):
        self.reason = reason

    def connect(self, protocolFactory):
        return defer.fail(error.ConnectError(string=self.reason))


def connect_basic(pool_user, handle, factory, endpoint_for, attempts, first=None):
    """
    Basic Mode connection: GETPRIMARYSERVER, connect, GETNEXTSERVER on
    failure, C{attempts} times at most.

    @return: a L{Deferred} protocol; the protocol gets the attribute
        C{pool_element} (the L{PoolElementInfo} it reached).
    """
    result = defer.Deferred()
    state = {"tried": 0, "last": None}

    def try_pe(info):
        state["tried"] += 1
        state["last"] = info
        d = endpoint_for(info).connect(factory)
        d.addCallbacks(connected, failed, callbackArgs=(info,))

    def connected(protocol, info):
        try:
            protocol.pool_element = info
        except AttributeError:
            pass
        result.callback(protocol)

    def failed(f):
        if state["tried"] >= attempts:
            result.errback(NoPoolElementReachable(
                "no PE of pool %r reachable after %d attempt(s): %s"
                % (handle.decode("utf-8", "replace"), state["tried"], f.getErrorMessage())))
            return
        d = pool_user.get_next_server(handle, state["last"])
        d.addCallbacks(try_pe, result.errback)

    if first is not None:
        try_pe(first)
    else:
        d = pool_user.get_primary_server(handle)
        d.addCallbacks(try_pe, result.errback)
    return result


_shared_pool_users = {}


def endpoint_from_string(reactor, handle, registrar=None, mode="auto", stale="0",
                         attempts="5", timeout=None, heartbeat=None, max_missed="3",
                         keys=None, identity=None):
    """
    The L{PoolClientEndpoint} of a C{rserpool:} endpoint description::

        rserpool:HANDLE[:registrar=ENDPOINT][:mode=auto|basic|enhanced]
                [:stale=SECONDS][:attempts=N][:timeout=SECONDS]
                [:heartbeat=SECONDS][:max_missed=N][:keys=FILE[:identity=ID]]

    @param handle: the pool handle (UTF-8).
    @param registrar: a client endpoint description of the registrar with
        its colons escaped (C{tcp\\:127.0.0.1\\:3863}); several separated
        by C{|}.  Default C{tcp:127.0.0.1:3863}.
    @param mode: C{auto} (the PE's registration decides), C{basic} or
        C{enhanced}.
    @param stale: the resolution cache's stale timeout in seconds.
    @param attempts: PEs tried before giving up.
    @param timeout: seconds to wait for each PE's connection.
    @param heartbeat: Enhanced Mode heartbeat interval in seconds.
    @param max_missed: silent heartbeat intervals before a failover.
    @param keys: a TLS-PSK key file: connections to the PEs (whose
        application endpoints are C{psk:}) use TLS-PSK with it (see
        L{rserpool.transport.psk}); the registrars are named as they are.
    @param identity: the key file's identity to present (C{None}: its only
        one).
    """
    registrars = tuple(registrar.split("|")) if registrar else (DEFAULT_REGISTRAR,)
    key = (id(reactor), registrars, float(stale))
    pool_user = _shared_pool_users.get(key)
    if pool_user is None or pool_user.machine.closed:
        pool_user = PoolUser(reactor, registrars=registrars, stale_timeout=float(stale))
        _shared_pool_users[key] = pool_user
    try:
        enhanced = {"auto": None, "basic": False, "enhanced": True}[mode]
    except KeyError:
        raise ValueError("mode must be auto, basic or enhanced, not %r" % (mode,))
    options = {"max_missed": int(max_missed)}
    if heartbeat is not None:
        options["heartbeat_interval"] = float(heartbeat)
    secure = None
    if keys is not None:
        from rserpool.transport.psk import pe_securer

        secure = pe_securer(keys, identity)
    elif identity is not None:
        raise ValueError("rserpool: endpoint: identity= needs keys=")
    endpoint = PoolClientEndpoint(reactor, pool_user, handle, attempts=int(attempts),
                                  enhanced=enhanced, session_options=options,
                                  timeout=float(timeout) if timeout else None, secure=secure)
    endpoint._pool_user = pool_user
    return endpoint


from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor  # noqa: E402
from twisted.plugin import IPlugin  # noqa: E402


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class PoolEndpointParser:
    """
    The parser of C{rserpool:} client endpoint descriptions (see
    L{endpoint_from_string}).
    """

    prefix = "rserpool"

    def parseStreamClient(self, reactor, *args, **kwargs):
        if len(args) != 1:
            raise ValueError("rserpool: endpoint needs exactly one pool handle, got %r" % (args,))
        return endpoint_from_string(reactor, args[0], **kwargs)
