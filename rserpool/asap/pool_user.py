"""
The pool user side of ASAP (RFC 5352 sections 3.5, 3.6 and 3.8), sans I/O.

 - L{PoolUserMachine}: handle resolution at a registrar found by a hunt
   over a static list (and announced registrars; the hunt is
   L{rserpool.asap.hunt}, which the pool element shares), with a response
   timeout, and Endpoint Unreachable reports.
 - L{ResolutionCache}: the PU-side cache of resolved PEs with a stale
   timeout (RSPLIB's C{rsp_getaddrinfo} C{staleCacheValue}), and the
   selection behind GETPRIMARYSERVER / GETNEXTSERVER
   (draft-ietf-rserpool-service section 4.3).
 - L{UnreachableLimiter}: the rate limit on Endpoint Unreachable reports
   that RFC 5355 section 2.13 asks for.

Nothing here imports a reactor; the Twisted side is L{rserpool.pu}.
"""
import collections
import ipaddress

import attrs

from rserpool.asap.hunt import Hunting, RegistrarHunt
from rserpool.asap.pool_element import Close, Send
from rserpool.codes import ErrorCause, PolicyType
from rserpool.wire import (
    EndpointUnreachable,
    HandleResolution,
    HandleResolutionResponse,
)

__all__ = [
    "PoolElementInfo",
    "ResolutionCache",
    "UnreachableLimiter",
    "PoolUserMachine",
    "ResolutionError",
    "NoSuchPool",
    "NoRegistrar",
    "NoPoolElement",
    "Resolved",
    "ResolutionFailed",
    "endpoint_description",
    "quote_endpoint",
]


class ResolutionError(Exception):
    """
    A handle resolution failed.  C{str()} is one line naming the cause.

    @ivar pool_handle: the handle (C{bytes}).
    @ivar cause: the RFC 5354 error cause code, or C{None}.
    """

    cause = None

    def __init__(self, pool_handle, detail=""):
        Exception.__init__(self, pool_handle, detail)
        self.pool_handle = pool_handle
        self.detail = detail

    def __str__(self):
        return "%s %r%s" % (
            self.what,
            self.pool_handle.decode("utf-8", "replace"),
            (": " + self.detail) if self.detail else "",
        )

    what = "cannot resolve pool handle"


class NoSuchPool(ResolutionError):
    """
    The registrar does not know the pool handle (cause 0x9, RFC 5354
    section 3.12.9).
    """

    cause = ErrorCause.UNKNOWN_POOL_HANDLE
    what = "unknown pool handle"


class NoRegistrar(ResolutionError):
    """
    No registrar answered (every one was tried).
    """

    what = "no registrar answered for pool handle"


class NoPoolElement(ResolutionError):
    """
    The pool has no PE left that was not reported as failed.
    """

    what = "no usable pool element in pool"


def quote_endpoint(text):
    """
    Escape C{:} and C{=} and C{\\} for use inside a Twisted endpoint
    description.
    """
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def endpoint_description(protocol, address, port):
    """
    A Twisted client endpoint description for a PE's transport.

    @param protocol: C{"tcp"}, C{"sctp"}, ...
    @param address: an L{ipaddress} address.
    @param port: the port number.
    @return: e.g. C{"tcp:host=127.0.0.1:port=7"} or
        C{"tcp:host=\\:\\:1:port=7"}.
    """
    return "%s:host=%s:port=%d" % (protocol, quote_endpoint(str(address)), port)


@attrs.frozen
class PoolElementInfo:
    """
    One pool element as a pool user sees it: what GETPRIMARYSERVER and
    GETNEXTSERVER return.

    @ivar pool_handle: the pool's handle.
    @ivar identifier: the PE identifier.
    @ivar transport: its user transport parameter (addresses, port,
        transport use).
    @ivar policy: its L{rserpool.wire.Policy}.
    @ivar home_registrar: its home registrar's id.
    """

    pool_handle: bytes
    identifier: int
    transport: object
    policy: object
    home_registrar: int = 0

    @classmethod
    def from_wire(cls, pool_handle, pe):
        """
        Build from a decoded L{rserpool.wire.PoolElement}.
        """
        return cls(pool_handle, pe.identifier, pe.user_transport, pe.policy, pe.home_registrar)

    @property
    def protocol(self):
        """
        C{"tcp"}, C{"udp"}, C{"sctp"}, ...
        """
        return self.transport.protocol

    @property
    def address(self):
        """
        The first address of the PE's user transport.
        """
        return self.transport.addresses[0]

    @property
    def addresses(self):
        """
        Every address of the PE's user transport.
        """
        return tuple(self.transport.addresses)

    @property
    def port(self):
        """
        The port of the PE's user transport.
        """
        return self.transport.port

    @property
    def control_channel(self):
        """
        Whether the PE speaks Enhanced Mode (transport use "data plus
        control", RFC 5354 section 3.3 and 3.4).
        """
        return getattr(self.transport, "transport_use", 0) == 1

    def endpoint_description(self, address=None):
        """
        A Twisted client endpoint description to reach this PE.

        @param address: one of L{addresses} (the first by default).
        """
        return endpoint_description(
            self.protocol, self.address if address is None else address, self.port
        )

    def __str__(self):
        # Every address of a multi-homed (SCTP) PE, primary first.
        text = ",".join("[%s]" % a if isinstance(a, ipaddress.IPv6Address) else str(a)
                        for a in self.addresses)
        return "%08x %s %s:%d %s" % (
            self.identifier,
            self.protocol,
            text,
            self.port,
            self.policy.name or ("0x%08x" % self.policy.policy_type),
        )


@attrs.define
class _Entry:
    info: PoolElementInfo
    expires: float


class ResolutionCache:
    """
    The PU-side cache of handle resolutions.

    An entry is fresh for C{stale_timeout} seconds after the registrar
    returned it (RSPLIB's C{staleCacheValue}; 0, RSPLIB's usual value,
    means "ask the registrar every time").  A PE reported as failed
    (GETNEXTSERVER, Endpoint Unreachable) is removed and kept out of the
    selections for C{failed_hold} seconds, so that a registrar which has
    not yet noticed the failure does not hand it back at once.
    """

    def __init__(self, stale_timeout=0.0, failed_hold=10.0, rng=None):
        """
        @param stale_timeout: seconds an answer of the registrar stays
            usable.
        @param failed_hold: seconds a PE reported as failed is avoided.
        @param rng: a C{random.Random} for the random policies.
        """
        self.stale_timeout = stale_timeout
        self.failed_hold = failed_hold
        self.rng = rng
        self._pools = {}
        self._failed = {}
        self._turn = collections.Counter()

    def store(self, response, now):
        """
        Take a Handle Resolution Response.

        @return: the PEs it lists, as L{PoolElementInfo}, in the order the
            registrar chose (its policy's order).
        @raise NoSuchPool: if the registrar answered with an error.
        """
        handle = response.pool_handle
        if response.error is not None:
            self._pools.pop(handle, None)
            raise NoSuchPool(handle)
        infos = [PoolElementInfo.from_wire(handle, pe) for pe in response.pool_elements]
        entries = self._pools.setdefault(handle, collections.OrderedDict())
        expires = now + self.stale_timeout
        for info in infos:
            entries.pop(info.identifier, None)
            entries[info.identifier] = _Entry(info, expires)
        return infos

    def fresh(self, handle, now):
        """
        The cached, fresh PEs of C{handle} not held as failed, in cache
        order.
        """
        entries = self._pools.get(handle)
        if not entries:
            return []
        for pe_id in [i for i, e in entries.items() if e.expires <= now]:
            del entries[pe_id]
        return [e.info for e in entries.values() if not self.is_failed(handle, e.info.identifier, now)]

    def is_failed(self, handle, pe_id, now):
        """
        Whether C{pe_id} was reported as failed less than C{failed_hold}
        seconds ago.
        """
        when = self._failed.get((handle, pe_id))
        if when is None:
            return False
        if now - when >= self.failed_hold:
            del self._failed[(handle, pe_id)]
            return False
        return True

    def mark_failed(self, handle, pe_id, now):
        """
        Forget C{pe_id} and avoid it for C{failed_hold} seconds (RSPLIB
        removes a reported PE from its cache).
        """
        entries = self._pools.get(handle)
        if entries is not None:
            entries.pop(pe_id, None)
        self._failed[(handle, pe_id)] = now

    def select(self, handle, now, candidates=None):
        """
        Choose a PE of C{handle} by the pool's policy, among C{candidates}
        (the fresh cached PEs by default), leaving out PEs held as failed.

        A list just returned by the registrar is already in its policy's
        order: its first PE is taken.  Cached answers are spread as the
        policy says: round robin turns, random draws (weighted), least load
        or highest priority.

        @return: a L{PoolElementInfo}, or C{None}.
        """
        fresh_answer = candidates is not None
        if candidates is None:
            candidates = self.fresh(handle, now)
        else:
            candidates = [c for c in candidates if not self.is_failed(handle, c.identifier, now)]
        if not candidates:
            return None
        if fresh_answer:
            return candidates[0]
        return self._pick(handle, candidates)

    def _pick(self, handle, candidates):
        policy = candidates[0].policy
        ptype = policy.policy_type
        fields = policy.fields
        if "load" in fields and ptype not in (
            PolicyType.RANDOMIZED_LEAST_USED,
            PolicyType.RANDOMIZED_PRIORITY_LEAST_USED,
            PolicyType.RANDOMIZED_LEAST_USED_DEGRADATION,
            PolicyType.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION,
        ):
            best = min(c.policy.get("load", 0) for c in candidates)
            candidates = [c for c in candidates if c.policy.get("load", 0) == best]
        elif ptype == PolicyType.PRIORITY:
            best = max(c.policy.get("priority", 0) for c in candidates)
            candidates = [c for c in candidates if c.policy.get("priority", 0) == best]
        elif self.rng is not None and (
            ptype in (PolicyType.RANDOM, PolicyType.WEIGHTED_RANDOM, PolicyType.WEIGHTED_RANDOM_DPF)
            or "load" in fields
        ):
            weights = []
            for c in candidates:
                if "weight" in c.policy.fields:
                    weights.append(max(0, c.policy.get("weight")))
                elif "load" in c.policy.fields:
                    weights.append(0xFFFFFFFF - c.policy.get("load"))
                else:
                    weights.append(1)
            if sum(weights) > 0:
                return self.rng.choices(candidates, weights)[0]
            return self.rng.choice(candidates)
        # Round robin (and ties): turns over the cached list.
        turn = self._turn[handle]
        self._turn[handle] = turn + 1
        return candidates[turn % len(candidates)]

    def forget(self, handle=None):
        """
        Drop the cache of C{handle}, or everything.
        """
        if handle is None:
            self._pools.clear()
        else:
            self._pools.pop(handle, None)


class UnreachableLimiter:
    """
    Limits Endpoint Unreachable reports (RFC 5355 section 2.13: "the number
    of endpoint unreachable messages sent to the ENRP server from the PU
    SHOULD be limited").

    Two rules: one report per PE per C{holdoff} seconds (a PU that keeps
    failing on the same PE says so once), and a token bucket of C{burst}
    reports refilled at C{rate} reports per second over all PEs.
    """

    def __init__(self, holdoff=5.0, rate=1.0, burst=5, max_tracked=4096):
        """
        @param holdoff: seconds before the same PE may be reported again.
        @param rate: reports per second, in the long run.
        @param burst: reports that may be sent at once.
        @param max_tracked: PEs remembered for C{holdoff} at most (memory
            bound).
        """
        self.holdoff = holdoff
        self.rate = rate
        self.burst = burst
        self.max_tracked = max_tracked
        self._last = collections.OrderedDict()
        self._tokens = float(burst)
        self._refilled = None
        self.suppressed = 0

    def allow(self, handle, pe_id, now):
        """
        Whether a report of C{pe_id} in C{handle} may be sent now (and count
        it if so).
        """
        key = (handle, pe_id)
        last = self._last.get(key)
        if last is not None and now - last < self.holdoff:
            self.suppressed += 1
            return False
        if self._refilled is None:
            self._refilled = now
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens < 1.0:
            self.suppressed += 1
            return False
        self._tokens -= 1.0
        self._last.pop(key, None)
        self._last[key] = now
        while len(self._last) > self.max_tracked:
            self._last.popitem(last=False)
        return True


# -- the registrar channel ------------------------------------------------


@attrs.frozen
class Resolved:
    """
    Event: request C{request} got the PEs C{pool_elements}
    (L{PoolElementInfo}s, in the registrar's order).
    """

    request: int
    pool_handle: bytes
    pool_elements: tuple


@attrs.frozen
class ResolutionFailed:
    """
    Event: request C{request} failed with C{error} (a L{ResolutionError}).
    """

    request: int
    error: object


@attrs.define
class _Request:
    number: int
    handle: bytes
    items: object
    tried: int = 0
    sent_at: float = None


class PoolUserMachine(Hunting):
    """
    A pool user's ASAP channel to a registrar (RFC 5352 sections 3.5, 3.6,
    3.8): sends Handle Resolutions and Endpoint Unreachable reports,
    matches Handle Resolution Responses (ASAP has no transaction id: one
    connection answers in order, and a response names its handle),
    and hunts for another registrar on a connection failure or a response
    timeout, re-sending what was outstanding.  A request fails with
    L{NoRegistrar} once every known registrar was tried for it.

    Actions and events come from L{actions}; call L{timer} at
    L{next_deadline}.

    @ivar hunt: the L{RegistrarHunt} (RFC 5352 section 3.6).
    """

    def __init__(self, registrars=(), response_timeout=3.0, connect_timeout=7.5,
                 cache=None, limiter=None):
        """
        @param registrars: client endpoint descriptions, in order.
        @param response_timeout: seconds to wait for an answer (RSPLIB 3 s).
        @param connect_timeout: seconds to wait for a connection.
        @param cache: a L{ResolutionCache} that stores every answer.
        @param limiter: the L{UnreachableLimiter}.
        """
        self.hunt = RegistrarHunt(registrars, connect_timeout)
        self.response_timeout = response_timeout
        self.connect_timeout = connect_timeout
        self.cache = cache if cache is not None else ResolutionCache()
        self.limiter = limiter if limiter is not None else UnreachableLimiter()
        self.connection = None
        self.endpoint = None
        self._out = []
        self._requests = collections.OrderedDict()
        self._reports = []
        self._serial = 0
        self.closed = False

    def registrar_announced(self, server_id, endpoint, now):
        """
        Learn a registrar from Server Announce.
        """
        self.hunt.announce(server_id, endpoint)

    def actions(self):
        """
        Actions (L{Connect}, L{CancelConnect}, L{Send}, L{Close}) and events
        (L{Resolved}, L{ResolutionFailed}) since the last call.
        """
        out, self._out = self._out, []
        return out

    @property
    def next_deadline(self):
        """
        When to call L{timer}, or C{None}.
        """
        times = [r.sent_at + self.response_timeout for r in self._requests.values()
                 if r.sent_at is not None]
        if self.hunt.deadline is not None:
            times.append(self.hunt.deadline)
        return min(times) if times else None

    # -- requests ---------------------------------------------------------

    def resolve(self, handle, now, items=None):
        """
        Ask a registrar for the PEs of C{handle}.

        @param items: how many PEs to ask for (the Handle Resolution Option
            of draft-dreibholz-rserpool-asap-hropt), or C{None} for the
            registrar's default.
        @return: the request number that L{Resolved} or L{ResolutionFailed}
            will quote.
        """
        self._serial += 1
        request = _Request(self._serial, bytes(handle), items)
        self._requests[request.number] = request
        if self.connection is not None:
            self._send_request(request, now)
        else:
            self._connect(now)
        return request.number

    def report_unreachable(self, handle, pe_id, now):
        """
        Report a PE the PU could not reach (RFC 5352 section 3.5), within
        the rate limit.

        @return: whether a report will be sent.
        """
        if not self.limiter.allow(handle, pe_id, now):
            return False
        message = EndpointUnreachable(bytes(handle), pe_id)
        if self.connection is not None:
            self._out.append(Send(self.connection, message))
        else:
            self._reports.append(message)
            self._connect(now)
        return True

    def _send_request(self, request, now):
        request.sent_at = now
        self._out.append(Send(self.connection, HandleResolution(request.handle, request.items)))

    # -- connection -------------------------------------------------------

    def _connect(self, now):
        if self.hunt.pending is not None or self.connection is not None or self.closed:
            return
        connect = self.hunt.dial(now)
        if connect is None:
            self._fail_all(now, "no registrar configured")
            return
        self.endpoint = connect.endpoint
        self._out.append(connect)

    def connected(self, attempt, connection, local_address, now):
        """
        The connection of attempt C{attempt} is up.

        @return: C{False} if it is not wanted any more (close it).
        """
        if not self.hunt.settle(attempt):
            return False
        self.connection = connection
        for report in self._reports:
            self._out.append(Send(connection, report))
        self._reports = []
        for request in self._requests.values():
            self._send_request(request, now)
        return True

    def connect_failed(self, attempt, now, reason=""):
        """
        The connection attempt C{attempt} failed.

        @param reason: why, in a few words (from the transport).
        """
        if not self.hunt.settle(attempt):
            return
        self._registrar_failed(
            now, "cannot connect to %s%s" % (self.endpoint, ": %s" % reason if reason else ""))

    def connection_lost(self, connection, now):
        """
        The connection to the registrar is gone.
        """
        if connection is not self.connection:
            return
        self.connection = None
        if self._requests:
            self._registrar_failed(now, "connection to %s lost" % self.endpoint)

    def _registrar_failed(self, now, reason):
        # RFC 5352 section 3.6: hunt for another registrar.
        if self.connection is not None:
            self._out.append(Close(self.connection))
            self.connection = None
        self.hunt.next()
        limit = max(1, len(self.candidates()))
        for request in list(self._requests.values()):
            request.tried += 1
            request.sent_at = None
            if request.tried >= limit:
                del self._requests[request.number]
                self._out.append(ResolutionFailed(request.number, NoRegistrar(request.handle, reason)))
        if self._requests:
            self._connect(now)
        else:
            self._reports = []

    def _fail_all(self, now, reason):
        for request in list(self._requests.values()):
            self._out.append(ResolutionFailed(request.number, NoRegistrar(request.handle, reason)))
        self._requests.clear()
        self._reports = []

    def message_received(self, connection, message, now):
        """
        A decoded ASAP message from the registrar.
        """
        if connection is not self.connection or not isinstance(message, HandleResolutionResponse):
            return
        for request in self._requests.values():
            if request.handle == message.pool_handle and request.sent_at is not None:
                break
        else:
            return
        del self._requests[request.number]
        try:
            infos = self.cache.store(message, now)
        except NoSuchPool as e:
            self._out.append(ResolutionFailed(request.number, e))
            return
        self._out.append(Resolved(request.number, request.handle, tuple(infos)))

    def timer(self, now):
        """
        Call at L{next_deadline}: a late registrar counts as failed.
        """
        if self.hunt.timed_out(now):
            cancel = self.hunt.cancel()
            if cancel is not None:
                self._out.append(cancel)
            self._registrar_failed(now, "connecting to %s timed out" % self.endpoint)
            return
        late = [r for r in self._requests.values()
                if r.sent_at is not None and now >= r.sent_at + self.response_timeout]
        if late:
            self._registrar_failed(now, "%s did not answer within %g s" % (self.endpoint, self.response_timeout))

    def close(self):
        """
        Stop: close the connection; outstanding requests fail.
        """
        self.closed = True
        cancel = self.hunt.cancel()
        if cancel is not None:
            self._out.append(cancel)
        if self.connection is not None:
            self._out.append(Close(self.connection))
            self.connection = None
        self._fail_all(None, "closed")
