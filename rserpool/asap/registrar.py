"""
The ASAP side of a registrar (ENRP server), RFC 5352 section 3, sans I/O.

L{ASAPRegistrar} takes decoded messages together with the connection they
came over (an L{rserpool.interfaces.IMessageConnection}) and the
current time, and returns what to do (L{rserpool.actions}): L{Send
<rserpool.actions.Send>} an answer over a connection, L{Close
<rserpool.actions.Close>} one, L{Schedule <rserpool.actions.Schedule>} its
next wake-up.  The adapter carries them out; the machine calls nothing
outside itself.  It imports no reactor and never learns which transport
mapping (TCP, SCTP, TLS, a test's fake) it runs on: the connection gives
it the peer's addresses and transport parameter.

Procedures, by their RFC 5352 names unless said otherwise, and where each
lives:

 - Registration and re-registration: L{ASAPRegistrar._registration}.
   It validates, checks that the PE registers only its own addresses of
   at least the minimum scope (L{rserpool.asap.scope}), applies the handlespace's rules
   (one policy type, transport type and transport use per pool,
   L{rserpool.handlespace.Handlespace.register}) and answers with a
   Registration Response, rejecting with the R flag and an Operation
   Error (L{ASAPRegistrar._reject}).  The registrar becomes the PE's home
   registrar.  What one source may register: L{rserpool.asap.sources}.
 - Deregistration and its response:
   L{ASAPRegistrar._deregistration}; expiry of the registration life:
   L{ASAPRegistrar.timer_fired}.
 - Handle Resolution: L{ASAPRegistrar._handle_resolution},
   L{ASAPRegistrar._resolution_response}; up to the requested number of
   PEs, chosen by the pool's policy (draft-dreibholz-rserpool-asap-hropt
   for the count; L{rserpool.handlespace.selection}).
 - Endpoint Keep Alive to each PE it is home for:
   L{ASAPRegistrar._send_keep_alive}, its schedule
   L{ASAPRegistrar.keep_alive_interval}; the Ack:
   L{ASAPRegistrar._keep_alive_ack}; removal on timeout
   (L{ASAPRegistrar._keep_alive_timeout}) or when the PE's connection goes
   (L{ASAPRegistrar.connection_lost}).
 - PEs adopted in an ENRP takeover (RFC 5353 section 3.5.2; the Home
   flag of Endpoint Keep Alive): L{ASAPRegistrar.adopt}.
 - Unreachable endpoints (RFC 5355 section 2.13 for the limits):
   L{ASAPRegistrar._endpoint_unreachable}; each reporter counts once per
   PE; at MAX-BAD-PE-REPORT a PE this registrar is home for gets an
   Endpoint Keep Alive first, another is removed.
 - Errors: undecodable messages and unknown types are answered with an
   ASAP Error (L{ASAPRegistrar.protocol_error},
   L{ASAPRegistrar._unexpected}); unknown parameters marked "report" with
   an ASAP Error carrying Unrecognized Parameter causes (RFC 5354 section
   3).

Where we differ from RSPLIB is written down in ``doc/registrar.rst``.
"""
import collections
import heapq
import itertools
import random

import attrs
from twisted.logger import Logger

from rserpool.actions import Close, Schedule, Send, Throttle
from rserpool.asap.flood import RequestRateLimit
from rserpool.asap.sources import SourceLimits, SourceSettings
from rserpool.limits import EventLog, RefusalLog
from rserpool.asap.scope import Scope, address_scope
from rserpool.interfaces import NotAvailable
from rserpool.codes import POLICY_FIELDS, ASAPType, ErrorCause
from rserpool.handlespace import (
    MAX_POOL_HANDLE_SIZE,
    Handlespace,
    HandlespaceError,
    PolicySettings,
    TimerCode,
    UnknownPoolHandle,
)
from rserpool.wire import (
    DATA_PLUS_CONTROL,
    ASAPError,
    Deregistration,
    DeregistrationResponse,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    EndpointUnreachable,
    HandleResolution,
    HandleResolutionResponse,
    OperationError,
    Policy,
    PoolElement,
    Registration,
    RegistrationResponse,
    brief,
    echo,
    encode_parameter,
    fit,
)
from rserpool.wire.params import encode_pool_handle

__all__ = ["RegistrarConfig", "ASAPRegistrar", "UserTransport", "REMOVAL_REASONS"]

#: Why a PE left the handlespace, as passed to C{pe_removed} observers.
REMOVAL_REASONS = (
    "deregistered",
    "keep-alive timeout",
    "connection lost",
    "unreachable",
    "registration life expired",
)

#: PE timers (keep-alives, their timeouts, expiries) handled per call of
#: L{ASAPRegistrar.timer_fired}; the rest at the next.
TIMERS_PER_CALL = 32

#: Seconds a source's connections are not read from after it was refused
#: a registration for its limits or a full handlespace (actions.Throttle).
THROTTLE_SECONDS = 1.0

#: The longest a PE waits for its next Endpoint Keep Alive however many
#: PEs a registrar is home for (RegistrarConfig.max_keep_alive_rate).
MAX_STRETCHED_INTERVAL = 60.0

#: The most Pool Element parameters a Handle Resolution Response may carry
#: (RSPLIB's MAX_MAX_HANDLE_RESOLUTION_ITEMS).
HR_ITEMS_LIMIT = 128

_MAX_MESSAGE = 0xFFFF
#: The longest pool handle a Handle Resolution Response with an Operation
#: Error of one empty cause can echo: 4 + (4 + 65,516) + 8 = 65,532 bytes.
_MAX_ECHOED_HANDLE = 65516


@attrs.frozen
class RegistrarConfig:
    """
    The registrar's ASAP settings.  Times are in seconds; the defaults are
    RSPLIB's (``rspregistrar.h``).

    @ivar server_id: this registrar's 32-bit id (non-zero).
    @ivar keep_alive_interval: time between a PE's last sign of life and the
        next Endpoint Keep Alive (RSPLIB
        ``-endpointkeepalivetransmissioninterval``, 5 s).
    @ivar keep_alive_timeout: how long to wait for the Endpoint Keep Alive
        Ack (RSPLIB ``-endpointkeepalivetimeoutinterval``, 5 s).
    @ivar max_keep_alive_rate: Endpoint Keep Alives a second to all PEs
        together; beyond it the interval grows with the PEs this registrar
        is home for (up to L{MAX_STRETCHED_INTERVAL}); 0: the interval
        stays whatever their number.
    @ivar max_bad_pe_reports: Endpoint Unreachable reports that remove a PE
        (MAX-BAD-PE-REPORT, RFC 5352 section 5.2; RSPLIB 3).
    @ivar max_hr_items: PEs in a Handle Resolution Response when the PU does
        not ask for a number (RSPLIB ``-maxhresitems``, 3).
    @ivar max_hr_items_cap: the most PEs any Handle Resolution Response
        carries, whatever the PU asks for (RSPLIB's compile-time 128).
    @ivar max_increment: how many of the selected PEs count as "used" by a
        handle resolution (RSPLIB ``-maxincrement``); C{None} for the
        handlespace's default.
    @ivar min_address_scope: the narrowest L{Scope} accepted in a PE's user
        transport (RSPLIB ``-minaddressscope``).
    @ivar max_pool_elements: the most PEs this registrar is home for (the
        PEs it keeps alive; its peers' PEs learned over ENRP do not count);
        a registration of a new PE beyond it is rejected with Lack of
        Resources.  0 means no limit.
    @ivar log_events: log every registration, deregistration and removal
        (RSPLIB's "action" log level); C{False} keeps only rejections,
        errors and warnings, for speed.
    @ivar max_hr_rate: the most handle resolutions per second a pool user
        may ask for one pool handle (RSPLIB C{-maxhrrate}; see
        L{rserpool.asap.flood}); beyond it the registrar answers Unknown
        Pool Handle, as RSPLIB does.  C{None}, the default, for no limit.
    @ivar max_eu_rate: the most Endpoint Unreachable messages per second a
        pool user may send for one pool handle (RSPLIB C{-maxeurate}; RFC
        5355 section 2.13); beyond it they are ignored.  C{None}, the
        default, for no limit.
    @ivar sources: the limits per source (L{SourceSettings}): PEs and
        pools a source may hold, its handle resolutions and Endpoint
        Unreachable reports per second, the distinct reporters that
        MAX-BAD-PE-REPORT takes (RFC 5355 sections 2.1, 2.2, 2.13).
    """

    server_id: int = attrs.field()
    keep_alive_interval: float = 5.0
    keep_alive_timeout: float = 5.0
    max_keep_alive_rate: float = 0.0
    max_bad_pe_reports: int = 3
    max_hr_items: int = 3
    max_hr_items_cap: int = HR_ITEMS_LIMIT
    max_increment: object = None
    min_address_scope: Scope = Scope.SITE_LOCAL
    max_pool_elements: int = 0
    log_events: bool = True
    max_hr_rate: object = None
    max_eu_rate: object = None
    sources: SourceSettings = attrs.field(factory=SourceSettings)

    @server_id.validator
    def _check_id(self, attribute, value):
        if not 1 <= value <= 0xFFFFFFFF:
            raise ValueError("server id must be a non-zero 32-bit integer, not %r" % (value,))

    def __attrs_post_init__(self):
        if self.keep_alive_interval <= 0 or self.keep_alive_timeout <= 0:
            raise ValueError("keep-alive interval and timeout must be positive")
        if not self.max_keep_alive_rate >= 0:
            raise ValueError("max-keep-alive-rate must be 0 or more")
        if self.max_bad_pe_reports < 1:
            raise ValueError("max-bad-pe-reports must be at least 1")
        if not 1 <= self.max_hr_items_cap <= HR_ITEMS_LIMIT:
            raise ValueError("max-hr-items-cap must be between 1 and %d" % HR_ITEMS_LIMIT)
        if not 1 <= self.max_hr_items:
            raise ValueError("max-hr-items must be at least 1")
        for name in ("max_hr_rate", "max_eu_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError("{} must be positive or None".format(name.replace("_", "-")))


class UserTransport:
    """
    What the registrar stores as a PE's user transport in the handlespace:
    the wire's transport parameter plus the two attributes the handlespace
    compares (C{transport_protocol}, C{control_channel}), and a cache of the
    PE's encoded Pool Element and Policy parameters for Handle Resolution
    Responses.

    @ivar wire: the transport parameter (L{rserpool.wire.TCPTransport}...).
    """

    __slots__ = ("wire", "transport_protocol", "control_channel", "_tlv", "_tlv_home", "_param",
                 "_policy", "_policy_tlv")

    def __init__(self, wire):
        self.wire = wire
        self.transport_protocol = int(wire.param_type)
        # Only SCTP and TCP transports have a transport use field (RFC 5354
        # sections 3.3/3.4); the others are data only.
        self.control_channel = getattr(wire, "transport_use", 0) == DATA_PLUS_CONTROL
        self._tlv = None
        self._tlv_home = None
        self._param = None
        self._policy = None
        self._policy_tlv = None

    def __eq__(self, other):
        return isinstance(other, UserTransport) and self.wire == other.wire

    def __hash__(self):
        return hash(self.wire)

    def __repr__(self):
        return "UserTransport({!r})".format(self.wire)


def wire_policy(settings):
    """
    The wire's L{Policy} for handlespace L{PolicySettings}.
    """
    return Policy(int(settings.policy_type), settings.values)


def pool_element_parameter(pe):
    """
    The Pool Element parameter describing a handlespace PE in a Handle
    Resolution Response: no ASAP transport, as RSPLIB sends it.

    @param pe: a L{rserpool.handlespace.RegisteredPE} whose user transport is
        a L{UserTransport}.
    @rtype: L{rserpool.wire.PoolElement}
    """
    user = pe.user_transport
    param = user._param
    if param is None or param.home_registrar != pe.home_registrar:
        param = PoolElement(
            pe.pe_id,
            pe.home_registrar,
            pe.registration_life,
            user.wire,
            wire_policy(pe.policy),
        )
        user._param = param
    return param


def _policy_tlv(pe):
    # The encoded Policy parameter of a PE's policy: encoding it took
    # about 2 us, half of a handle resolution.  PolicySettings are frozen:
    # the same object encodes the same.
    user = pe.user_transport
    policy = pe.policy
    if user._policy is not policy:
        user._policy_tlv = encode_parameter(wire_policy(policy))
        user._policy = policy
    return user._policy_tlv


def _pe_tlv(pe):
    user = pe.user_transport
    if user._tlv is None or user._tlv_home != pe.home_registrar:
        user._tlv = encode_parameter(pool_element_parameter(pe))
        user._tlv_home = pe.home_registrar
    return user._tlv


class ASAPRegistrar:
    """
    The registrar's ASAP state machine.

    Drive it with L{connection_made}, L{message_received},
    L{protocol_error}, L{connection_lost} and L{timer_fired}; each returns
    the actions to carry out, in order (a list, or an empty tuple when
    there is nothing to do): L{Send}, L{Close}, and L{Schedule} when it
    needs L{timer_fired} to be called at an absolute time (or earlier: a
    spurious call is harmless).  An L{rserpool.enrp.machine.ENRPServer}
    beside it shares its outbox: the actions an event causes on either
    side (an ENRP Handle Update for a registration) come back together.

    Observers (for ENRP Handle Updates, statistics) are callables in
    L{on_registered} (called with the handlespace PE and its
    L{rserpool.handlespace.RegistrationOutcome}) and L{on_removed} (called
    with the PE and one of L{REMOVAL_REASONS}).

    @ivar config: the L{RegistrarConfig}.
    @ivar handlespace: the L{Handlespace}.
    """

    log = Logger()

    def __init__(self, config, handlespace=None, rng=None):
        """
        @param config: a L{RegistrarConfig}.
        @param handlespace: a L{Handlespace} (a new one by default).
        @param rng: a C{random.Random} for the handlespace's randomized
            policies when no handlespace is given.
        """
        self.config = config
        self.server_id = config.server_id
        if handlespace is None:
            handlespace = Handlespace(rng if rng is not None else random.Random())
        self.handlespace = handlespace
        #: the actions of the event being handled (see L{take_actions})
        self._out = []
        self._lifetimes = []
        # (connection, PE) of lost connections, still to be removed
        self._orphans = collections.deque()
        self._serial = itertools.count()
        self.connections = set()
        self.on_registered = []
        self.on_removed = []
        self._hr_limit = (
            RequestRateLimit(config.max_hr_rate) if config.max_hr_rate is not None else None
        )
        self._eu_limit = (
            RequestRateLimit(config.max_eu_rate) if config.max_eu_rate is not None else None
        )
        self.sources = SourceLimits(config.sources)
        #: refusals by the limits, counted and logged at a bounded rate
        self.refusals = RefusalLog(log=lambda: self.log)
        #: lines about events a peer causes at will, at a bounded rate
        self.events = EventLog(lambda: self.log)
        #: messages received, by class; registrations rejected, by cause
        #: (for metrics: one increment each, read by rserpool.web)
        self.received = collections.Counter()
        self.rejected = collections.Counter()
        self._now = 0.0
        self._handlers = {
            Registration: self._registration,
            Deregistration: self._deregistration,
            HandleResolution: self._handle_resolution,
            EndpointKeepAliveAck: self._keep_alive_ack,
            EndpointUnreachable: self._endpoint_unreachable,
            ASAPError: self._asap_error,
        }

    # -- outputs ----------------------------------------------------------

    def take_actions(self):
        """
        The actions produced since the last call, in order, and forget
        them: a list, or an empty tuple (no allocation when there is
        nothing to do).  The input methods return this; the ENRP server
        beside this registrar returns it too.
        """
        out = self._out
        if not out:
            return ()
        self._out = []
        return out

    def emit(self, action):
        """
        Add an action to the outbox (for the ENRP server beside it).
        """
        self._out.append(action)

    # -- events -----------------------------------------------------------

    def connection_made(self, conn, now):
        """
        A PE or PU connected.

        @return: the actions: none of its own, but those waiting in the
            shared outbox when an adapter reports the connection in the
            middle of an ENRP event (its C{reach_pe} in a takeover).
        """
        self.connections.add(conn)
        return self.take_actions()

    def connection_lost(self, conn, now):
        """
        A connection is gone: remove every PE registered over it (as RSPLIB
        does when an SCTP association ends).
        """
        self._now = now
        self.connections.discard(conn)
        self.sources.connection_lost(conn)
        for limit in (self._hr_limit, self._eu_limit):
            if limit is not None:
                limit.forget(conn)
        orphans = self.handlespace.by_connection(conn)
        if not orphans:
            return self.take_actions()
        # A few hundred now, the rest in the next timer calls, after the
        # reactor has looked at its sockets: a connection of 10,000 PEs
        # took 0.4 s to clear in one go, and every request waited (issue
        # #14).  Until then its PEs stay as they were (their keep-alives go
        # nowhere); the PE itself may re-register them meanwhile.
        self._orphans.extend((conn, pe) for pe in orphans)
        self._remove_orphans(TIMERS_PER_CALL)
        self._reschedule()
        return self.take_actions()

    def _remove_orphans(self, limit):
        hs = self.handlespace
        orphans = self._orphans
        for _ in range(min(limit, len(orphans))):
            conn, pe = orphans.popleft()
            if pe.connection is conn and hs.get(pe.handle, pe.pe_id) is pe:
                hs.remove(pe)
                self._removed(pe, "connection lost")

    def message_received(self, conn, message, now):
        """
        A decoded ASAP message arrived over C{conn}.
        """
        self._now = now
        self.refusals.flush(now)
        self.received[type(message)] += 1
        handler = self._handlers.get(type(message))
        if handler is None:
            self._unexpected(conn, message)
        else:
            handler(conn, message, now)
        if message.unrecognized:
            # RFC 5354 section 3: parameters of an unknown type whose two
            # high bits are 11 are skipped, and reported (the first few).
            self._out.append(
                Send(conn, ASAPError(OperationError.unrecognized(message.unrecognized))))
        # take_actions, inlined: this is the handle resolutions' path
        out = self._out
        if not out:
            return ()
        self._out = []
        return out

    def protocol_error(self, conn, error, now):
        """
        Bytes from C{conn} did not decode (a L{rserpool.wire.ProtocolError}):
        answer with an ASAP Error carrying its cause (RFC 5352 section
        2.2.14), unless the RFC says to discard silently (unknown parameter
        with action bits 00, RFC 5354 section 3).
        """
        self._now = now
        self.events.info(
            now, "bad message from {peer}: {error}", peer=_peer(conn), error=str(error)
        )
        if error.report:
            self._out.append(Send(conn, ASAPError(OperationError.from_error(error))))
        return self.take_actions()

    def timer_fired(self, now):
        """
        Time has come: send due keep-alives, remove PEs whose keep-alive
        timed out or whose registration life ran out.
        """
        self._now = now
        self.refusals.flush(now)
        self._remove_orphans(TIMERS_PER_CALL)
        hs = self.handlespace
        # A few hundred at a time, the rest at once after the reactor has
        # looked at its sockets (_reschedule asks for now): PEs registered
        # together come due together, and 20,000 keep-alives in one call
        # held every request up for half a second (issue #14).
        for pe in hs.due(now, TIMERS_PER_CALL):
            if hs.get(pe.handle, pe.pe_id) is not pe:
                continue  # removed by an earlier step of this loop
            code = pe.timer_code
            if code == TimerCode.KEEP_ALIVE_TRANSMISSION:
                self._send_keep_alive(pe, now)
            elif code == TimerCode.KEEP_ALIVE_TIMEOUT:
                self._keep_alive_timeout(pe)
            else:
                # RFC 5353 section 3.6: a PE whose registration life ran out.
                hs.remove(pe)
                self._removed(pe, "registration life expired")
        heap = self._lifetimes
        while heap and heap[0][0] <= now:
            _, _, handle, pe_id, stamp = heapq.heappop(heap)
            pe = hs.get(handle, pe_id)
            if pe is not None and pe.last_update == stamp and pe.home_registrar == self.server_id:
                self.events.info(
                    self._now,
                    "registration life of {pe_id:08x} in {handle!r} expired",
                    pe_id=pe_id,
                    handle=handle,
                    pool=_pool(handle), pe="%08x" % pe_id, cause="registration life expired",
                )
                hs.remove(pe)
                self._removed(pe, "registration life expired")
        self._reschedule()
        return self.take_actions()

    def keep_alive_interval(self):
        """
        The time from a PE's sign of life to its next Endpoint Keep Alive:
        the configured interval, or longer when the PEs this registrar is
        home for would otherwise take more than C{max_keep_alive_rate}
        keep-alives a second (each is also an ack to handle; 100,000 PEs
        every 5 s were most of a core, and a flood of registrations from
        many sources bought that much of the registrar's time).  A PE's
        failure is then found later: within this interval plus the
        timeout.
        """
        config = self.config
        interval = config.keep_alive_interval
        rate = config.max_keep_alive_rate
        if rate:
            stretched = self.handlespace.owned_count(self.server_id) / rate
            if stretched > interval:
                return min(stretched, max(interval, MAX_STRETCHED_INTERVAL))
        return interval

    @property
    def next_deadline(self):
        """
        When L{timer_fired} must be called next, or C{None}.
        """
        if self._orphans:
            # PEs of lost connections wait to be removed: at once.
            return self._now
        when = self.handlespace.next_timer_time()
        heap = self._lifetimes
        hs = self.handlespace
        while heap:
            _, _, handle, pe_id, stamp = heap[0]
            pe = hs.get(handle, pe_id)
            if pe is not None and pe.last_update == stamp:
                break
            # Superseded by a re-registration, or the PE is gone.
            heapq.heappop(heap)
        if heap:
            life = heap[0][0]
            if when is None or life < when:
                when = life
        return when

    # -- registration -----------------------------------------------------

    def _reject(self, conn, handle, pe_id, cause, info=b"", reason=""):
        self.rejected[cause] += 1
        self.events.info(
            self._now,
            "rejected registration of {pe_id:08x} in {handle} from {peer}: "
            "{cause} ({reason})",
            pe_id=pe_id,
            handle=brief(handle),
            peer=_peer(conn),
            cause=ErrorCause(cause).name,
            reason=reason,
            pool=_pool(handle), pe="%08x" % pe_id,
        )
        # fit: the response echoes the pool handle, and an overlong one
        # again as the cause's information, which then is cut (issue #14).
        self._out.append(Send(conn, fit(RegistrationResponse(
            handle, pe_id, reject=True, error=OperationError.of(cause, info)))))

    def _registration(self, conn, message, now):
        # RFC 5352 section 3.1 (PE's view) and 3.2.1 (registrar's view).
        config = self.config
        hs = self.handlespace
        handle = message.pool_handle
        param = message.pool_element
        pe_id = param.identifier

        if not 1 <= len(handle) <= MAX_POOL_HANDLE_SIZE:
            return self._reject(
                conn, handle, pe_id, ErrorCause.INVALID_VALUES, encode_pool_handle(handle),
                "pool handle of %d bytes" % len(handle),
            )
        if pe_id == 0:
            return self._reject(
                conn, handle, pe_id, ErrorCause.INVALID_VALUES, encode_parameter(param),
                "PE identifier 0",
            )
        try:
            settings = PolicySettings.from_values(param.policy.policy_type, param.policy.values)
        except HandlespaceError as e:
            return self._reject(
                conn, handle, pe_id, ErrorCause.INVALID_VALUES,
                encode_parameter(param.policy), e.reason,
            )

        if getattr(conn, "role", None) == "pu":
            # RFC 5355 section 2.3: a pool user's key does not make a PE.
            self.rejected[ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS] += 1
            self.refusals.refused(
                "registration", self.sources.key(conn), now,
                "its TLS-PSK identity is a pool user's (role pu in the key file)")
            self._out.append(Send(conn, RegistrationResponse(
                handle, pe_id, reject=True,
                error=OperationError.of(ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS))))
            return

        # RFC 5355 section 2.1 / 3: a PE may register only addresses that
        # belong to it.  Like RSPLIB we keep the user transport's addresses
        # that are addresses of the connection's peer, and of at least the
        # minimum scope; none left means the registration is refused.
        user = param.user_transport
        peer_addresses = conn.peer_addresses
        # An address listed twice counts once: 8,000 copies of one would
        # make a Pool Element that no ENRP Handle Update can carry.
        own = list(dict.fromkeys(a for a in user.addresses if a in peer_addresses))
        if not own:
            return self._reject(
                conn, handle, pe_id, ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS, b"",
                "user transport %s is not the peer's address" % _addresses(user),
            )
        usable = [a for a in own if address_scope(a) >= config.min_address_scope]
        if not usable:
            return self._reject(
                conn, handle, pe_id, ErrorCause.INVALID_VALUES, encode_parameter(user),
                "user transport %s is below the minimum scope %s"
                % (_addresses(user), config.min_address_scope.name.lower().replace("_", "-")),
            )
        if len(usable) != len(user.addresses):
            user = attrs.evolve(user, addresses=tuple(usable))

        existing = hs.get(handle, pe_id)
        if existing is not None:
            # The PE identifier is taken by a PE on another live connection
            # (or, over TLS-PSK, of another identity), or by a PE whose
            # connection here has ended or that only the registrar's peers
            # know (after a restart, ENRP's view of it: its addresses),
            # and this registration comes from another host: a PE cannot
            # reuse it (RFC 5352 section 3.2.1, Non-unique PE Identifier;
            # RFC 5355 sections 2.2 and 2.3, a registration overwriting
            # another PE).  The PE itself, failing over or reconnecting,
            # comes from its own host.  RSPLIB updates in place.
            if (
                existing.connection is not conn
                and not _same_principal(existing, conn, self.connections)
            ):
                return self._reject(
                    conn, handle, pe_id, ErrorCause.NON_UNIQUE_PE_IDENTIFIER, b"",
                    "PE identifier in use by another host or identity",
                )
        elif (config.max_pool_elements
              and hs.owned_count(self.server_id) >= config.max_pool_elements):
            # Full: the source's further registrations wait unread for a
            # while, not decoded and refused one by one (RFC 5355 section
            # 3; issue #14: 128 sources registering kept the registrar
            # busy refusing them, and a pool user's share fell behind).
            self._out.append(Throttle(conn, THROTTLE_SECONDS))
            return self._reject(
                conn, handle, pe_id, ErrorCause.LACK_OF_RESOURCES, b"",
                "home to as many PEs as it may (%d)" % config.max_pool_elements,
            )
        else:
            # RFC 5355 sections 2.1/2.2: one source cannot fill the
            # handlespace, however many connections it opens.
            refused = self.sources.may_register(conn, handle, hs)
            if refused is not None:
                self.rejected[ErrorCause.LACK_OF_RESOURCES] += 1
                self.refusals.refused("registration", self.sources.key(conn), now, refused)
                self._out.append(Send(conn, RegistrationResponse(
                    handle, pe_id, reject=True,
                    error=OperationError.of(ErrorCause.LACK_OF_RESOURCES))))
                self._out.append(Throttle(conn, THROTTLE_SECONDS))
                return
        new_pool = existing is None and hs.pool(handle) is None

        settings = _with_distance(settings, conn)
        user_transport = UserTransport(user)
        try:
            outcome = hs.register(
                handle,
                pe_id,
                home_registrar=self.server_id,
                policy=settings,
                user_transport=user_transport,
                now=now,
                registration_life=param.registration_life,
                asap_transport=conn.peer_transport,
                connection=conn,
                timer=(TimerCode.KEEP_ALIVE_TRANSMISSION, now + self.keep_alive_interval()),
            )
        except HandlespaceError as e:
            return self._reject(conn, handle, pe_id, e.cause, _cause_info(e.cause, param), e.reason)

        if new_pool and outcome.created:
            self.sources.pool_created(conn, handle)
        if param.registration_life > 0:
            heapq.heappush(
                self._lifetimes,
                (now + param.registration_life / 1000.0, next(self._serial), handle, pe_id, now),
            )
        if config.log_events:
            self.events.info(
                self._now,
                "{what} {pe_id:08x} in {handle!r} from {peer} ({policy})",
                what="registered" if outcome.created else "re-registered",
                pe_id=pe_id,
                handle=handle,
                peer=_peer(conn),
                policy=settings.name,
                pool=_pool(handle), pe="%08x" % pe_id,
            )
        self._out.append(Send(conn, RegistrationResponse(handle, pe_id)))
        for observer in self.on_registered:
            observer(outcome.pe, outcome)
        self._reschedule()

    # -- deregistration ---------------------------------------------------

    def _deregistration(self, conn, message, now):
        # RFC 5352 section 3.3 / 3.2.2.
        hs = self.handlespace
        handle = message.pool_handle
        pe_id = message.identifier
        pe = hs.get(handle, pe_id)
        if pe is None:
            # RSPLIB reports success: the PE "seems to be already gone".
            self.events.info(
                self._now,
                "deregistration of unknown {pe_id:08x} in {handle}", pe_id=pe_id,
                handle=brief(handle),
            )
            self._out.append(Send(conn, DeregistrationResponse(handle, pe_id)))
            return
        if pe.connection is not conn and not _same_principal(pe, conn, self.connections):
            # RFC 5355 sections 2.2 and 2.3: only the PE itself may
            # deregister it.
            self.events.warn(
                self._now,
                "refused deregistration of {pe_id:08x} in {handle!r} from {peer}",
                pe_id=pe_id,
                handle=handle,
                peer=_peer(conn),
                pool=_pool(handle), pe="%08x" % pe_id, cause="not the PE's own connection",
            )
            self._out.append(Send(conn, DeregistrationResponse(
                handle,
                pe_id,
                OperationError.of(ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS),
            )))
            return
        hs.remove(pe)
        self._removed(pe, "deregistered")
        self._out.append(Send(conn, DeregistrationResponse(handle, pe_id)))
        self._reschedule()

    # -- handle resolution ------------------------------------------------

    def _handle_resolution(self, conn, message, now):
        # RFC 5352 section 3.8 / 3.2.3; the item count is the Handle
        # Resolution Option of draft-dreibholz-rserpool-asap-hropt: 0 or
        # absent means the registrar's default, 0xffffffff as many as
        # possible; both are capped.
        config = self.config
        items = message.items
        if not items:
            items = config.max_hr_items
        if items > config.max_hr_items_cap:
            items = config.max_hr_items_cap
        handle = message.pool_handle
        if len(handle) > _MAX_ECHOED_HANDLE:
            # No pool has such a handle (MAX_POOL_HANDLE_SIZE), and a Handle
            # Resolution Response echoing it would not fit in a message
            # (issue #14): Invalid Values, with the start of the parameter.
            self._out.append(Send(conn, ASAPError(
                OperationError.of(ErrorCause.INVALID_VALUES, encode_pool_handle(handle)))))
            return
        if not self.sources.permit_resolution(conn, now):
            # A source's rate (RFC 5355 section 3), whatever its
            # connections: answered as RSPLIB answers its own limit.
            self.refusals.refused(
                "handle resolution", self.sources.key(conn), now,
                "more than %g per second (--max-hr-rate-per-source)"
                % self.sources.settings.hr_rate)
            self._out.append(Send(conn, HandleResolutionResponse(
                handle, error=OperationError.of(ErrorCause.UNKNOWN_POOL_HANDLE))))
            return
        limit = self._hr_limit
        if limit is not None and not limit.permit(conn, handle, now):
            # Too many resolutions of this handle from this pool user: RSPLIB
            # answers as for an unknown pool (its RSPERR_NOT_FOUND, cause
            # 0x9), so that a flooding PU learns nothing.
            self.refusals.totals["handle resolution"] += 1
            self.events.warn(
                self._now,
                "refusing handle resolution of {handle} from {peer}: more than"
                " {limit} per second",
                handle=brief(handle),
                peer=_peer(conn),
                limit=limit.threshold,
            )
            self._out.append(Send(conn, HandleResolutionResponse(
                handle, error=OperationError.of(ErrorCause.UNKNOWN_POOL_HANDLE))))
            return
        try:
            selected = self.handlespace.select(handle, items, config.max_increment)
        except UnknownPoolHandle:
            self._out.append(Send(conn, HandleResolutionResponse(
                handle, error=OperationError.of(ErrorCause.UNKNOWN_POOL_HANDLE))))
            return
        self._out.append(Send(conn, self._resolution_response(handle, selected)))

    def _resolution_response(self, handle, selected):
        """
        The encoded Handle Resolution Response for C{selected} PEs.

        Built from each PE's cached Pool Element TLV (the hot path of a
        registrar); PEs that would overflow the 16-bit message length are
        left out.
        """
        parts = [encode_pool_handle(handle)]
        if selected:
            # RSPLIB sends the first selected PE's policy as the pool's.
            parts.append(_policy_tlv(selected[0]))
        else:
            pool = self.handlespace.pool(handle)
            parts.append(encode_parameter(Policy.make(pool.policy_type)))
        size = 4 + len(parts[0]) + len(parts[1])
        for pe in selected:
            tlv = _pe_tlv(pe)
            if size + len(tlv) > _MAX_MESSAGE:
                break
            size += len(tlv)
            parts.append(tlv)
        return b"".join(
            [bytes((ASAPType.HANDLE_RESOLUTION_RESPONSE, 0, size >> 8, size & 0xFF))] + parts
        )

    # -- keep-alive -------------------------------------------------------

    def _send_keep_alive(self, pe, now):
        # RFC 5352 section 3.7: the home registrar audits its PEs.  RSPLIB
        # adds the PE identifier, which RSPLIB PEs need to answer.
        conn = pe.connection
        if conn is not None:
            self._out.append(Send(conn, EndpointKeepAlive(self.server_id, pe.handle, pe.pe_id)))
        self.handlespace.set_timer(
            pe, TimerCode.KEEP_ALIVE_TIMEOUT, now + self.config.keep_alive_timeout
        )

    def _keep_alive_timeout(self, pe):
        self.events.info(
            self._now,
            "keep-alive timeout for {pe_id:08x} in {handle!r}: removing it",
            pe_id=pe.pe_id,
            handle=pe.handle,
            pool=_pool(pe.handle), pe="%08x" % pe.pe_id, cause="keep-alive timeout",
        )
        conn = pe.connection
        self.handlespace.remove(pe)
        self._removed(pe, "keep-alive timeout")
        # RSPLIB aborts the PE's association so that a PE which is alive but
        # deaf reconnects and registers again.  A TCP connection may carry
        # several PEs of one process: we close it once none of them is left.
        if conn is not None and not self.handlespace.connection_count(conn):
            self._out.append(Close(conn))

    # -- takeover (RFC 5353 section 3.5) ----------------------------------

    def adopt(self, pe, now, connection=None):
        """
        Become the home registrar of a PE taken over from a failed peer
        (RFC 5353 section 3.5.2, "Take Over Ownership"):
        re-home it and tell the PE with an Endpoint Keep Alive carrying the
        H flag, as RSPLIB does, then wait for the ack as for any keep-alive.

        A registrar can only send the keep-alive over a connection to the
        PE: C{connection}, or the one the PE registered over.  Over SCTP a
        registrar reaches the PE's one-to-many ASAP socket; over our TCP
        mapping it cannot open a connection to the PE's ephemeral port.  A
        PE that cannot be reached is not removed by the keep-alive timeout
        (it never had a chance to answer): it keeps its registration life
        (RFC 5352 section 2.2.1, Registration Life) from now on, within
        which it re-registers (at this or another registrar, PE-side
        hunting) or expires.

        @param pe: a handlespace PE.
        @param now: the current time (seconds).
        @param connection: an L{IMessageConnection} that reaches the PE's
            ASAP endpoint, or C{None}.
        @return: C{True} if the keep-alive with H is to be sent (a L{Send}
            in the outbox: it goes out with the actions of the ENRP event
            that adopts the PE).
        """
        hs = self.handlespace
        hs.set_owner(pe, self.server_id)
        conn = connection if connection is not None else pe.connection
        sent = False
        if conn is not None:
            self._out.append(
                Send(conn, EndpointKeepAlive(self.server_id, pe.handle, pe.pe_id, home=True)))
            hs.set_timer(pe, TimerCode.KEEP_ALIVE_TIMEOUT, now + self.config.keep_alive_timeout)
            sent = True
        elif pe.registration_life > 0:
            hs.set_timer(pe, TimerCode.EXPIRY, now + pe.registration_life / 1000.0)
        else:
            hs.clear_timer(pe)
        return sent

    def reschedule(self):
        """
        Ask for a wake-up at L{next_deadline} (a L{Schedule} in the outbox):
        for callers (ENRP) that changed the handlespace's timers directly.
        """
        self._reschedule()

    def _keep_alive_ack(self, conn, message, now):
        pe = self.handlespace.get(message.pool_handle, message.identifier)
        if pe is None:
            # A peer sends as many as it likes: at a bounded rate (twistd
            # writes debug lines too).
            self.events.info(
                now, "keep-alive ack for unknown {pe_id:08x} in {handle}",
                pe_id=message.identifier,
                handle=brief(message.pool_handle),
            )
            return
        if pe.connection is not conn and not _same_principal(pe, conn, self.connections):
            # RFC 5355 section 2.2: an ack from elsewhere must not keep a
            # dead PE in the handlespace.
            self.events.warn(
                self._now,
                "ignored keep-alive ack for {pe_id:08x} from {peer}",
                pe_id=pe.pe_id,
                peer=_peer(conn),
            )
            return
        # It answers: reports that it is unreachable no longer count.
        self.sources.forget_reports(pe.handle, pe.pe_id)
        if pe.home_registrar == self.server_id:
            if pe.connection is None:
                # An adopted PE (see adopt) answered over a connection we
                # reached it by: keep-alives go there from now on.
                self.handlespace.register(
                    pe.handle,
                    pe.pe_id,
                    home_registrar=pe.home_registrar,
                    policy=pe.policy,
                    user_transport=pe.user_transport,
                    now=pe.last_update,
                    registration_life=pe.registration_life,
                    asap_transport=pe.asap_transport,
                    connection=conn,
                    timer=(TimerCode.KEEP_ALIVE_TRANSMISSION, now + self.keep_alive_interval()),
                )
            else:
                self.handlespace.set_timer(
                    pe, TimerCode.KEEP_ALIVE_TRANSMISSION, now + self.keep_alive_interval()
                )
            self._reschedule()

    # -- endpoint unreachable ---------------------------------------------

    def _endpoint_unreachable(self, conn, message, now):
        # RFC 5352 section 3.5 / 3.2.4: count the reports; at
        # MAX-BAD-PE-REPORT the PE is removed.  No answer is defined.
        # RFC 5355 section 2.13: reports are limited per source, and each
        # source counts once per PE, so MAX-BAD-PE-REPORT takes that many
        # distinct sources; the home registrar then asks the PE itself.
        sources = self.sources
        if not sources.permit_unreachable(conn, now):
            self.refusals.refused(
                "Endpoint Unreachable", sources.key(conn), now,
                "more than %g per second (--max-eu-rate-per-source)" % sources.settings.eu_rate)
            return
        limit = self._eu_limit
        if limit is not None and not limit.permit(conn, message.pool_handle, now):
            # RSPLIB's -maxeurate: per connection and pool handle; the
            # excess is dropped.
            self.refusals.refused(
                "Endpoint Unreachable", sources.key(conn), now,
                "more than %g per second for one pool (--max-eu-rate)" % limit.threshold)
            return
        hs = self.handlespace
        try:
            hs.report_unreachable(message.pool_handle, message.identifier)
        except UnknownPoolHandle:
            return
        pe = hs.get(message.pool_handle, message.identifier)
        count = sources.report(pe.handle, pe.pe_id, conn, now)
        self.events.info(
            now, "{count} source(s) report {pe_id:08x} in {handle!r} unreachable",
            count=count, pe_id=pe.pe_id, handle=pe.handle,
            pool=_pool(pe.handle), pe="%08x" % pe.pe_id, cause="unreachable")
        if count < self.config.max_bad_pe_reports:
            return
        if pe.home_registrar == self.server_id and pe.connection is not None:
            # We can ask the PE: an Endpoint Keep Alive now; no ack within
            # the keep-alive timeout removes it, an ack clears the reports.
            # Not while one is unanswered, and at most once per keep-alive
            # interval (RFC 5355 section 2.14): otherwise the reports would
            # set the pace of keep-alives to a PE that answers at once; the
            # periodic keep-alive asks it within the interval anyway.
            if pe.timer_code != TimerCode.KEEP_ALIVE_TIMEOUT and sources.probe_due(
                    pe.handle, pe.pe_id, now, self.config.keep_alive_interval):
                self._send_keep_alive(pe, now)
                self._reschedule()
            return
        hs.remove(pe)
        self._removed(pe, "unreachable")
        self._reschedule()

    # -- errors -----------------------------------------------------------

    def _asap_error(self, conn, message, now):
        # Never answer an error with an error.  A few causes by name: one
        # message may hold 16,000 (issue #14, log amplification).
        self.events.info(
            self._now,
            "ASAP Error from {peer}: {causes}",
            peer=_peer(conn),
            causes=message.error.summary(),
        )

    def _unexpected(self, conn, message):
        # A message a registrar never receives (a response, a keep-alive,
        # session layer messages): RFC 5352 section 2.2.14, Unrecognized
        # Message with the message as information.  RSPLIB only logs.
        self.events.info(
            self._now,
            "unexpected {message} from {peer}",
            message=type(message).__name__,
            peer=_peer(conn),
        )
        self._out.append(Send(conn, ASAPError(
            OperationError.of(ErrorCause.UNRECOGNIZED_MESSAGE, echo(message)))))

    # -- helpers ----------------------------------------------------------

    def _removed(self, pe, reason):
        self.sources.forget_reports(pe.handle, pe.pe_id)
        if self.config.log_events:
            self.events.info(
                self._now,
                "removed {pe_id:08x} from {handle!r}: {reason}",
                pe_id=pe.pe_id,
                handle=pe.handle,
                reason=reason,
                pool=_pool(pe.handle), pe="%08x" % pe.pe_id, cause=reason,
            )
        for observer in self.on_removed:
            observer(pe, reason)

    def _reschedule(self):
        when = self.next_deadline
        if when is not None:
            self._out.append(Schedule(self, when))


def _pool(handle):
    # A pool handle as a log field (JSON logs, issue #16): text, cut like
    # brief() (a peer's handle may be 64 KiB).
    return bytes(handle[:64]).decode("utf-8", "backslashreplace")


def _peer(conn):
    address, port = getattr(conn, "peer", (None, 0))
    if address is None:
        return repr(conn)
    if address.version == 6:
        return "[%s]:%d" % (address, port)
    return "%s:%d" % (address, port)


def _addresses(transport, limit=4):
    # For log lines: a transport may list thousands of addresses.
    addresses = transport.addresses
    text = ",".join(str(a) for a in addresses[:limit])
    if len(addresses) > limit:
        text += " and %d more" % (len(addresses) - limit)
    return text


def _same_principal(pe, conn, live):
    """
    Whether C{conn}, which is not the connection C{pe} registered over,
    may speak for C{pe} (re-register, deregister, acknowledge a
    keep-alive).  When both carry a TLS-PSK identity, they must carry the
    same one (RFC 5355 section 2.3.3: a PE registers only for itself),
    from whatever host.  Otherwise only once the PE's own connection has
    ended (it reconnects), and from the PE's host: while that connection
    lives, another process of the same host cannot deregister or re-point
    the PE (RFC 5355 sections 2.2 and 2.3).

    @param live: the registrar's live connections.
    """
    mine = getattr(conn, "identity", None)
    theirs = getattr(pe.connection, "identity", None)
    if mine is not None and theirs is not None:
        return mine == theirs
    if pe.connection is not None and pe.connection in live:
        return False
    return _same_host(pe, conn)


def _same_host(pe, conn):
    """
    Whether C{conn} comes from the host that registered C{pe}: one of its
    peer addresses is one of the PE's ASAP transport addresses or, for a
    PE learned without one (from a peer), of its user transport's.
    """
    peer = conn.peer_addresses
    asap = pe.asap_transport
    if asap is not None:
        return any(a in peer for a in asap.addresses)
    user = getattr(getattr(pe.user_transport, "wire", None), "addresses", None) or ()
    return any(a in peer for a in user)


def _with_distance(settings, conn):
    # The DPF policies carry the PE's distance from the registrar; RSPLIB
    # measures half the SCTP round trip time in milliseconds.  A mapping
    # that cannot measure the RTT gives distance 0.
    if "distance" not in POLICY_FIELDS[settings.policy_type]:
        return settings
    try:
        rtt = conn.rtt()
    except NotAvailable:
        return settings.with_distance(0)
    return settings.with_distance(int(round(rtt * 500)))


def _cause_info(cause, param):
    if cause == ErrorCause.INCONSISTENT_POOLING_POLICY:
        return encode_parameter(param.policy)
    if cause == ErrorCause.INCONSISTENT_TRANSPORT_TYPE:
        return encode_parameter(param.user_transport)
    if cause == ErrorCause.INVALID_VALUES:
        return encode_parameter(param)
    return b""
