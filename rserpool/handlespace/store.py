"""
The handlespace: pools of pool elements with the indexes a registrar needs
(RFC 5352 sections 3.1-3.8, RFC 5353 sections 3.3-3.6).

Pure data structure: no reactor, no clock (times are float seconds passed
in by the caller), randomness from an injected C{random.Random}.
"""
import enum
import itertools
import random
import struct
from heapq import heapify, heappop, heappush, heapreplace

import attrs

from rserpool.handlespace.checksum import (
    finish_checksum,
    handle_contribution,
    identifier_contribution,
    pe_contribution,
)
from rserpool.handlespace.errors import (
    InconsistentDataControlConfiguration,
    InconsistentPoolingPolicy,
    InconsistentTransportType,
    InvalidValues,
    UnknownPoolHandle,
)
from rserpool.handlespace.policy import PolicySettings
from rserpool.handlespace.selection import make_selector

#: The longest pool handle accepted (RSPLIB's MAX_POOLHANDLESIZE; RFC 5352
#: sets no limit, but RSPLIB PRs and PEs reject longer handles).
MAX_POOL_HANDLE_SIZE = 32

_MAX_UINT32 = 0xFFFFFFFF

_pack_double = struct.Struct("<d").pack
_unpack_int64 = struct.Struct("<q").unpack
_TOP_BIT = 1 << 63


def _time_key(when):
    """
    A float time as an unsigned 64-bit integer of the same order: the IEEE
    754 bits of a non-negative float, top bit set, and the inverted bits of
    a negative one.
    """
    bits = _unpack_int64(_pack_double(when))[0]
    return ~bits if bits < 0 else bits | _TOP_BIT


# The slab (see Handlespace.__init__): two cells per PE, the PE and the
# key of its timer in the heap.
CELLS = 2
TIMER_CELL = 1
_NO_CELLS = (None,) * CELLS
#: A timer key is C{time key << 96 | serial << 32 | cell}.
_CELL_MASK = 0xFFFFFFFF
_SERIAL_SHIFT = 32
_TIME_SHIFT = 96


class TimerCode(enum.IntEnum):
    """
    What a PE's timer is for (RSPLIB keeps one timer per PE, as we do).
    """

    #: The registration life ran out (PEs learned from ENRP peers, RFC 5353
    #: section 3.6; and owned PEs the caller chose to expire so).
    EXPIRY = 1
    #: Time to send the next Endpoint Keep Alive (owned PEs, RFC 5352
    #: section 3.7).
    KEEP_ALIVE_TRANSMISSION = 2
    #: No Endpoint Keep Alive Ack in time: remove the PE (RFC 5352
    #: section 3.7).
    KEEP_ALIVE_TIMEOUT = 3


#: Timer codes whose expiry removes the PE (see L{Handlespace.expire}).
REMOVING_TIMERS = frozenset([TimerCode.EXPIRY, TimerCode.KEEP_ALIVE_TIMEOUT])


class RegisteredPE:
    """
    A pool element as the handlespace stores it.

    Treat it as read-only: change it only through L{Handlespace}'s methods,
    which keep the indexes current.

    @ivar pool: the L{Pool} it belongs to.
    @ivar pe_id: the 32-bit PE identifier.
    @ivar home_registrar: the 32-bit id of the PE's home registrar (owner).
    @ivar registration_life: the registration life in milliseconds, as in the
        Pool Element parameter.
    @ivar user_transport: the caller's user transport object (with
        C{transport_protocol} and C{control_channel} attributes).
    @ivar asap_transport: the caller's ASAP transport object, or C{None}.
    @ivar policy: the L{PolicySettings}.
    @ivar connection: the caller's key of the ASAP association or connection
        the PE registered over, or C{None}.
    @ivar registration_time: when it was first registered (seconds).
    @ivar last_update: when it last (re-)registered (seconds).
    @ivar unreachable_reports: Endpoint Unreachable reports received.
    @ivar selection_count: how often a handle resolution returned it.
    @ivar timer_code: the L{TimerCode} of its pending timer, or C{None}.
    @ivar timer_time: when its timer fires (seconds), or C{None}.
    """

    __slots__ = (
        "pool",
        "pe_id",
        "home_registrar",
        "registration_life",
        "user_transport",
        "asap_transport",
        "policy",
        "connection",
        "registration_time",
        "last_update",
        "unreachable_reports",
        "selection_count",
        "timer_code",
        "timer_time",
        "_timer_key",
        "_slab",
        "_owner_slot",
        "_connection_slot",
        "_seq",
        "_round",
        "_virtual",
        "_degradation",
        "_sel",
        "_value",
        "_slot",
        "_prev",
        "_next",
    )

    def __init__(
        self,
        pool,
        pe_id,
        home_registrar,
        registration_life,
        user_transport,
        asap_transport,
        policy,
        connection,
        now,
    ):
        self.pool = pool
        self.pe_id = pe_id
        self.home_registrar = home_registrar
        self.registration_life = registration_life
        self.user_transport = user_transport
        self.asap_transport = asap_transport
        self.policy = policy
        self.connection = connection
        self.registration_time = now
        self.last_update = now
        self.unreachable_reports = 0
        self.selection_count = 0
        self.timer_code = None
        self.timer_time = None
        self._timer_key = None
        self._slab = None
        self._owner_slot = 0
        self._connection_slot = 0
        self._seq = 0
        self._round = 0
        self._virtual = 0
        self._degradation = 0
        self._sel = None
        self._value = 0
        self._slot = 0
        self._prev = None
        self._next = None

    @property
    def handle(self):
        """
        The pool handle (bytes).
        """
        return self.pool.handle

    @property
    def degradation(self):
        """
        The degradation accumulated since the last update (degradation
        policies; 0 for the others).
        """
        return self._degradation

    def __repr__(self):
        return "<RegisteredPE {!r}/{:08x} home={:08x} {!r}>".format(
            self.pool.handle, self.pe_id, self.home_registrar, self.policy
        )


class Pool:
    """
    A pool: the PEs registered under one pool handle.

    The first PE fixes the pool's policy type, transport type and
    data/control configuration; every later registration must match them
    (RFC 5352 section 3.1).  A pool exists as long as it has PEs.

    @ivar handle: the pool handle (bytes).
    @ivar policy_type: the pool's L{PolicyType}.
    @ivar transport_protocol: the user transport type all PEs share.
    @ivar control_channel: whether the PEs use their transport for data plus
        control.
    """

    __slots__ = ("handle", "policy_type", "transport_protocol", "control_channel",
                 "_elements", "_selector", "_checksum_base")

    def __init__(self, handle, policy_type, transport_protocol, control_channel):
        self.handle = handle
        self.policy_type = policy_type
        self.transport_protocol = transport_protocol
        self.control_channel = control_channel
        self._elements = {}
        self._selector = make_selector(policy_type)
        # The handle's part of every PE's checksum contribution.
        self._checksum_base = handle_contribution(handle)

    def __len__(self):
        return len(self._elements)

    def __iter__(self):
        return iter(self._elements.values())

    def __contains__(self, pe_id):
        return pe_id in self._elements

    def get(self, pe_id):
        """
        @param pe_id: a PE identifier.
        @return: the L{RegisteredPE} with this identifier, or C{None}.
        """
        return self._elements.get(pe_id)

    def __repr__(self):
        return "<Pool {!r} {} {} PEs>".format(
            self.handle, self.policy_type.name, len(self._elements)
        )


@attrs.frozen
class RegistrationOutcome:
    """
    What a successful registration did.

    @ivar pe: the registered L{RegisteredPE}.
    @ivar created: C{True} for a new PE, C{False} for an update in place.
    @ivar previous_home: for an update, the home registrar before it (it
        differs from C{pe.home_registrar} when the PE changed owner); C{None}
        for a new PE.
    @ivar policy_changed: for an update, whether the policy values changed.
    """

    pe = attrs.field()
    created = attrs.field()
    previous_home = attrs.field(default=None)
    policy_changed = attrs.field(default=False)


class Handlespace:
    """
    All pools a registrar knows, with the indexes it needs: by pool handle
    and PE identifier, by owner (home registrar, with the owner's PE
    checksum kept incrementally), by timer time, and by connection.

    @param rng: the C{random.Random} the randomized policies draw from.
    """

    def __init__(self, rng=None):
        self._rng = rng if rng is not None else random.Random()
        self._pools = {}
        self._count = 0
        # The owner and connection indexes: owner id (connection key) ->
        # list of PEs, each PE knowing its place in the list
        # (_owner_slot, _connection_slot).  Adding appends; removing moves
        # the list's last PE into the leaving PE's place: O(1), no hashing,
        # and no stale entries to clean up later.
        self._owners = {}
        # owner id -> checksum accumulator (see checksum.py).
        self._owner_sums = {}
        self._connections = {}
        # The timers: a binary heap of integer keys, time key << 96 |
        # serial << 32 | cell (see _time_key), ordered by time, then by when
        # the timer was set, with lazy deletion.  The cell is the PE's timer
        # cell in the slab, a list of two cells per PE (the PE and the key
        # of its timer in the heap) at a place fixed while the PE is in the
        # handlespace (its _slab; the places of removed PEs are reused).  A
        # key is live while its cell holds that very int object: cancelling
        # a timer only clears the cell.  Stale keys are dropped when they
        # reach the top, and all at once when they outnumber the live ones
        # (the heap is then rebuilt from the slab's timer cells, a
        # sequential scan: O(n) once per n changes).  Keys are plain
        # integers, not containers: a stale key keeps no removed PE alive
        # and the garbage collector never looks at one.
        #
        # A timer moved later (a re-registration extends the registration
        # life) keeps its key in the heap: the PE's _timer_key holds the key
        # it wants, and the heap key, which comes out no later than needed,
        # is replaced by it when it reaches the top.  So the steady state,
        # every PE re-registering before its timer fires, costs no heap
        # operation and leaves no stale key.
        self._slab = []
        self._free_places = []
        self._serials = itertools.count()
        self._timer_heap = []
        self._timer_count = 0

    # -- queries ----------------------------------------------------------

    def __len__(self):
        """
        The number of PEs in all pools.
        """
        return self._count

    def pool(self, handle):
        """
        @param handle: a pool handle.
        @return: the L{Pool}, or C{None}.
        """
        return self._pools.get(handle)

    def pools(self):
        """
        @return: a list of every L{Pool}.
        """
        return list(self._pools.values())

    def get(self, handle, pe_id):
        """
        @param handle: a pool handle.
        @param pe_id: a PE identifier.
        @return: the L{RegisteredPE}, or C{None}.
        """
        pool = self._pools.get(handle)
        if pool is None:
            return None
        return pool._elements.get(pe_id)

    def elements(self):
        """
        @return: an iterator over every L{RegisteredPE}.
        """
        for pool in list(self._pools.values()):
            yield from list(pool._elements.values())

    def scan(self, position, places):
        """
        A cursor over every PE that needs no copy of the handlespace: the
        PEs at C{places} storage places from C{position} on.  A PE keeps
        its place while it stays in the handlespace (re-registration and a
        change of owner included), so a series of scans from 0, each from
        the position the previous one returned, meets every PE present
        throughout exactly once, however the handlespace changes between
        them (PEs added meanwhile may or may not be met).  An ENRP Handle
        Table Response series is built this way, page by page.

        @param position: where to start (0, or a position returned before).
        @param places: how many places to look at (positive).
        @return: C{(found, next)}: a list of C{(position, RegisteredPE)}
            pairs in order (resuming at a PE's position includes it), and
            where to go on, or C{None} at the end.
        """
        position = max(0, position)
        start = CELLS * position
        stop = start + CELLS * places
        found = [(place, pe) for place, pe in enumerate(self._slab[start:stop:CELLS], position)
                 if pe is not None]
        return found, (position + places if stop < len(self._slab) else None)

    def owners(self):
        """
        @return: the home registrar ids that own at least one PE.
        """
        return list(self._owners)

    def owned_by(self, owner):
        """
        The PEs a registrar owns (for takeover, audits and Handle Table
        Responses with the W flag).

        @param owner: a registrar id.
        @return: a list of L{RegisteredPE} objects.
        """
        return list(self._owners.get(owner, ()))

    def owned_count(self, owner):
        """
        @param owner: a registrar id.
        @return: how many PEs it owns.
        """
        return len(self._owners.get(owner, ()))

    def owner_checksum(self, owner):
        """
        The PE checksum over the PEs a registrar owns (RFC 5353; see
        L{rserpool.handlespace.checksum}), in O(1).

        @param owner: a registrar id.
        @return: the unsigned 16-bit checksum; 0xffff when it owns nothing.
        """
        return finish_checksum(self._owner_sums.get(owner, 0))

    def by_connection(self, connection):
        """
        @param connection: a connection key given at registration.
        @return: a list of the L{RegisteredPE} objects registered over it.
        """
        return list(self._connections.get(connection, ()))

    def connection_count(self, connection):
        """
        @param connection: a connection key given at registration.
        @return: how many PEs are registered over it (O(1)).
        """
        return len(self._connections.get(connection, ()))

    def _timer_top(self):
        # The live key at the top of the heap, after dropping stale keys and
        # replacing moved ones; or None.
        heap = self._timer_heap
        slab = self._slab
        while heap:
            key = heap[0]
            cell = key & _CELL_MASK
            if slab[cell] is key:
                wanted = slab[cell - TIMER_CELL]._timer_key
                if wanted is key:
                    return key
                # The timer moved later: its key takes this one's place.
                slab[cell] = wanted
                heapreplace(heap, wanted)
            else:
                heappop(heap)
        return None

    def next_timer_time(self):
        """
        @return: the earliest pending timer time (seconds), or C{None}.
        """
        key = self._timer_top()
        if key is None:
            return None
        return self._slab[(key & _CELL_MASK) - TIMER_CELL].timer_time

    def due(self, now, limit=None):
        """
        The PEs whose timer has fired.

        @param now: the current time (seconds).
        @param limit: the most PEs to return (the earliest), or C{None}.
        @return: a list of L{RegisteredPE} objects with C{timer_time <= now}, earliest
            first.  Their timers stay set; the caller sets or clears them.
        """
        result = []
        heap = self._timer_heap
        slab = self._slab
        # Take the due keys off the heap in order, then put them back
        # (their timers stay set).  Each is smaller than every key left in
        # the heap, so the heap stays valid.
        taken = []
        while limit is None or len(result) < limit:
            key = self._timer_top()
            if key is None:
                break
            pe = slab[(key & _CELL_MASK) - TIMER_CELL]
            if pe.timer_time > now:
                break
            taken.append(heappop(heap))
            result.append(pe)
        for key in taken:
            heappush(heap, key)
        return result

    # -- registration -----------------------------------------------------

    def register(
        self,
        handle,
        pe_id,
        *,
        home_registrar,
        policy,
        user_transport,
        now,
        registration_life,
        asap_transport=None,
        connection=None,
        timer=None,
    ):
        """
        Register a PE, or update it in place if its identifier is already in
        the pool (RFC 5352 section 3.1: a re-registration is an update).

        The rules, checked in RSPLIB's order: valid handle, identifier and
        policy; then, against an existing pool, the transport type, the
        data/control configuration and the policy type.

        An existing PE with this identifier keeps its place and policy state
        (sequence number, round-robin position); new policy values replace the
        old and reset the degradation.  If the registration names another
        home registrar, the PE changes owner: this is what RSPLIB does when
        a PE identifier collides with another owner's PE (its handlespace
        updates the entry in place and moves it to the new owner; it never
        answers Non-unique PE Identifier).

        @param handle: the pool handle (bytes, 1 to L{MAX_POOL_HANDLE_SIZE}
            long).
        @param pe_id: the PE identifier (1 to 0xffffffff).
        @param home_registrar: the PE's home registrar id.
        @param policy: the L{PolicySettings}.
        @param user_transport: the user transport, an object with
            C{transport_protocol} (int) and C{control_channel} (bool).
        @param now: the current time (seconds).
        @param registration_life: the registration life (milliseconds).
        @param asap_transport: the ASAP transport, or C{None}.
        @param connection: a hashable key of the connection the PE registered
            over, or C{None} (PEs learned from ENRP peers).
        @param timer: C{(timer_code, time)} to set, or C{None} for
            C{(TimerCode.EXPIRY, now + registration_life / 1000)}.
        @return: a L{RegistrationOutcome}.
        @raise InvalidValues: bad handle, identifier or policy.
        @raise InconsistentTransportType: transport type differs from the
            pool's.
        @raise InconsistentDataControlConfiguration: transport use differs
            from the pool's.
        @raise InconsistentPoolingPolicy: policy type differs from the
            pool's.
        """
        if type(handle) is not bytes:
            raise InvalidValues("pool handle must be bytes, not {!r}".format(handle))
        if not 1 <= len(handle) <= MAX_POOL_HANDLE_SIZE:
            raise InvalidValues(
                "pool handle of {} bytes (1 to {} allowed)".format(
                    len(handle), MAX_POOL_HANDLE_SIZE
                )
            )
        if type(pe_id) is not int or not 1 <= pe_id <= _MAX_UINT32:
            raise InvalidValues("invalid PE identifier {!r}".format(pe_id))
        if type(home_registrar) is not int or not 0 <= home_registrar <= _MAX_UINT32:
            raise InvalidValues("invalid home registrar id {!r}".format(home_registrar))
        if not isinstance(policy, PolicySettings):
            raise InvalidValues("policy must be PolicySettings, not {!r}".format(policy))
        protocol = user_transport.transport_protocol
        control = bool(user_transport.control_channel)

        pool = self._pools.get(handle)
        if pool is not None:
            # RFC 5352 section 3.1: all PEs of a pool use the same transport
            # type, the same transport use and the same policy type.
            if protocol != pool.transport_protocol:
                raise InconsistentTransportType(
                    "pool {!r} uses transport type 0x{:04x}, not 0x{:04x}".format(
                        handle, pool.transport_protocol, protocol
                    )
                )
            if control != pool.control_channel:
                raise InconsistentDataControlConfiguration(
                    "pool {!r} uses {}, not {}".format(
                        handle,
                        _control_name(pool.control_channel),
                        _control_name(control),
                    )
                )
            if policy.policy_type != pool.policy_type:
                raise InconsistentPoolingPolicy(
                    "pool {!r} uses policy {}, not {}".format(
                        handle, pool.policy_type.name, policy.policy_type.name
                    )
                )
            pe = pool._elements.get(pe_id)
        else:
            pe = None

        if timer is None:
            timer = (TimerCode.EXPIRY, now + registration_life / 1000.0)

        if pe is not None:
            # RFC 5352 section 3.1: re-registration updates the entry.
            previous_home = pe.home_registrar
            policy_changed = pe.policy != policy
            if policy_changed or pe._degradation:
                pool._selector.update(pe, policy)
            pe.registration_life = registration_life
            pe.user_transport = user_transport
            pe.asap_transport = asap_transport
            pe.last_update = now
            if connection != pe.connection:
                self._unlink_connection(pe)
                pe.connection = connection
                self._link_connection(pe)
            if home_registrar != previous_home:
                self._unlink_owner(pe)
                pe.home_registrar = home_registrar
                self._link_owner(pe)
            self.set_timer(pe, timer[0], timer[1])
            return RegistrationOutcome(pe, False, previous_home, policy_changed)

        if pool is None:
            pool = Pool(handle, policy.policy_type, protocol, control)
            self._pools[handle] = pool
        pe = RegisteredPE(
            pool,
            pe_id,
            home_registrar,
            registration_life,
            user_transport,
            asap_transport,
            policy,
            connection,
            now,
        )
        slab = self._slab
        free = self._free_places
        if free:
            place = pe._slab = free.pop()
            slab[place] = pe
        else:
            pe._slab = len(slab)
            slab.append(pe)
            slab.append(None)
        pool._elements[pe_id] = pe
        pool._selector.add(pe)
        self._count += 1
        self._link_owner(pe)
        self._link_connection(pe)
        self.set_timer(pe, timer[0], timer[1])
        return RegistrationOutcome(pe, True)

    def deregister(self, handle, pe_id):
        """
        Remove a PE (RFC 5352 section 3.4 Deregistration; RFC 5353 section
        3.3, a peer's DEL_PE Handle Update).

        @param handle: the pool handle.
        @param pe_id: the PE identifier.
        @return: the removed L{RegisteredPE}.
        @raise UnknownPoolHandle: no such pool or PE.
        """
        pe = self.get(handle, pe_id)
        if pe is None:
            raise UnknownPoolHandle(
                "no PE {:08x} in pool {!r}".format(pe_id, handle)
                if isinstance(pe_id, int)
                else "no PE {!r} in pool {!r}".format(pe_id, handle)
            )
        self.remove(pe)
        return pe

    def remove(self, pe):
        """
        Remove a PE and unlink it from every index; an emptied pool goes
        too.

        @param pe: a L{RegisteredPE} of this handlespace.
        """
        pool = pe.pool
        if pool._elements.get(pe.pe_id) is not pe:
            raise KeyError("{!r} is not in the handlespace".format(pe))
        pool._selector.remove(pe)
        del pool._elements[pe.pe_id]
        if not pool._elements:
            del self._pools[pool.handle]
        self._count -= 1
        self._unlink_owner(pe)
        self._unlink_connection(pe)
        self.clear_timer(pe)
        place = pe._slab
        self._slab[place] = None
        self._free_places.append(place)
        pe._slab = None

    def report_unreachable(self, handle, pe_id):
        """
        Count an Endpoint Unreachable report (RFC 5352 section 3.5); the
        caller removes the PE at MAX-BAD-PE-REPORT.  Re-registration does
        not reset the count (as in RSPLIB).

        @param handle: the pool handle.
        @param pe_id: the PE identifier.
        @return: the PE's new report count.
        @raise UnknownPoolHandle: no such pool or PE.
        """
        pe = self.get(handle, pe_id)
        if pe is None:
            raise UnknownPoolHandle("no PE {:08x} in pool {!r}".format(pe_id, handle))
        pe.unreachable_reports += 1
        return pe.unreachable_reports

    # -- ownership --------------------------------------------------------

    def set_owner(self, pe, home_registrar):
        """
        Re-home one PE (e.g. after a successful Endpoint Keep Alive with the
        H flag).

        @param pe: a L{RegisteredPE}.
        @param home_registrar: its new home registrar id.
        """
        if home_registrar != pe.home_registrar:
            self._unlink_owner(pe)
            pe.home_registrar = home_registrar
            self._link_owner(pe)

    def takeover(self, old_owner, new_owner):
        """
        Re-home every PE of one registrar to another (RFC 5353 section 3.5,
        takeover of a failed peer).  Owner checksums move along in O(1);
        the cost is one index update per moved PE.

        @param old_owner: the failed registrar's id.
        @param new_owner: the id of the registrar taking over.
        @return: the list of moved L{RegisteredPE} objects.
        """
        if old_owner == new_owner:
            return self.owned_by(old_owner)
        moved = self._owners.pop(old_owner, None)
        if moved is None:
            return []
        accumulator = self._owner_sums.pop(old_owner)
        target = self._owners.get(new_owner)
        if target is None:
            target = self._owners[new_owner] = []
            self._owner_sums[new_owner] = 0
        for slot, pe in enumerate(moved, len(target)):
            pe.home_registrar = new_owner
            pe._owner_slot = slot
        target.extend(moved)
        self._owner_sums[new_owner] += accumulator
        return list(moved)

    def _link_owner(self, pe):
        owner = pe.home_registrar
        members = self._owners.get(owner)
        if members is None:
            members = self._owners[owner] = []
            self._owner_sums[owner] = 0
        pe._owner_slot = len(members)
        members.append(pe)
        self._owner_sums[owner] += pe.pool._checksum_base + identifier_contribution(pe.pe_id)

    def _unlink_owner(self, pe):
        owner = pe.home_registrar
        members = self._owners[owner]
        last = members.pop()
        if last is not pe:
            slot = pe._owner_slot
            members[slot] = last
            last._owner_slot = slot
        if members:
            self._owner_sums[owner] -= (
                pe.pool._checksum_base + identifier_contribution(pe.pe_id)
            )
        else:
            del self._owners[owner]
            del self._owner_sums[owner]

    # -- connections ------------------------------------------------------

    def remove_connection(self, connection):
        """
        Remove every PE registered over a connection that went away (RSPLIB
        removes them when the PE's SCTP association ends).

        @param connection: the connection key.
        @return: the list of removed L{RegisteredPE} objects.
        """
        members = self._connections.get(connection)
        if not members:
            return []
        removed = list(members)
        for pe in removed:
            self.remove(pe)
        return removed

    def _link_connection(self, pe):
        connection = pe.connection
        if connection is not None:
            members = self._connections.get(connection)
            if members is None:
                members = self._connections[connection] = []
            pe._connection_slot = len(members)
            members.append(pe)

    def _unlink_connection(self, pe):
        connection = pe.connection
        if connection is not None:
            members = self._connections[connection]
            last = members.pop()
            if last is not pe:
                slot = pe._connection_slot
                members[slot] = last
                last._connection_slot = slot
            if not members:
                del self._connections[connection]

    # -- timers -----------------------------------------------------------

    def set_timer(self, pe, code, when):
        """
        Set (or replace) a PE's timer.

        @param pe: a L{RegisteredPE}.
        @param code: a L{TimerCode}.
        @param when: when it fires (seconds).
        """
        if when != when:
            raise ValueError("timer time is not a number")
        place = pe._slab
        if place is None:
            raise KeyError("{!r} is not in the handlespace".format(pe))
        wanted = pe._timer_key
        later = wanted is not None and when >= pe.timer_time
        if later:
            # Later than before: the PE's key in the heap comes out no later
            # than needed, and is replaced by the new one then.  (Neither the
            # slab nor the heap is touched: at 100,000 PEs each would be a
            # cache miss.)
            cell = wanted & _CELL_MASK
        else:
            slab = self._slab
            if slab[place] is not pe:
                raise KeyError("{!r} is not in the handlespace".format(pe))
            cell = place + TIMER_CELL
        key = pe._timer_key = (
            (_time_key(when) << _TIME_SHIFT)
            | (next(self._serials) << _SERIAL_SHIFT)
            | cell
        )
        pe.timer_code = code
        pe.timer_time = when
        if later:
            return
        if slab[cell] is None:
            self._timer_count += 1
        slab[cell] = key
        heap = self._timer_heap
        heappush(heap, key)
        if len(heap) > 2 * self._timer_count + 64:
            self._rebuild_timers()

    def _rebuild_timers(self):
        # More stale keys than live ones: the heap anew from the live keys,
        # read off the slab in order.
        heap = self._timer_heap
        heap[:] = [key for key in self._slab[TIMER_CELL::CELLS] if key is not None]
        heapify(heap)

    def clear_timer(self, pe):
        """
        Cancel a PE's timer, if any.

        @param pe: a L{RegisteredPE}.
        """
        place = pe._slab
        if place is not None and self._slab[place + TIMER_CELL] is not None:
            # Its heap key goes stale.
            self._slab[place + TIMER_CELL] = None
            pe._timer_key = None
            pe.timer_code = None
            pe.timer_time = None
            count = self._timer_count = self._timer_count - 1
            if len(self._timer_heap) > 2 * count + 64:
                self._rebuild_timers()

    def expire(self, now, codes=REMOVING_TIMERS):
        """
        Remove the PEs whose expiry or keep-alive timeout timer has fired
        (RFC 5353 section 3.6; RFC 5352 section 3.7).

        @param now: the current time (seconds).
        @param codes: the timer codes whose firing removes the PE.
        @return: the list of removed L{RegisteredPE} objects, earliest first.
        """
        removed = [pe for pe in self.due(now) if pe.timer_code in codes]
        for pe in removed:
            self.remove(pe)
        return removed

    # -- selection --------------------------------------------------------

    def select(self, handle, k, max_increment=None):
        """
        Handle resolution (RFC 5352 section 3.8): select up to k distinct PEs
        of a pool by its policy.

        @param handle: the pool handle.
        @param k: how many PEs to return at most (MAX-HR-ITEMS).
        @param max_increment: how many of the selected PEs count as used
            (advance round robin, take a Weighted Round Robin turn, add
            degradation); C{None} for the policy's default, 1 (RSPLIB's).
        @return: a list of at most k distinct L{RegisteredPE} objects, best first;
            shorter when the pool is smaller or (weighted policies) has
            fewer PEs of non-zero weight.
        @raise UnknownPoolHandle: no such pool.
        """
        pool = self._pools.get(handle)
        if pool is None:
            raise UnknownPoolHandle("no pool {!r}".format(handle))
        return pool._selector.select(k, max_increment, self._rng)

    # -- verification -----------------------------------------------------

    def verify(self):
        """
        Check every index against a recomputation from the pools (slow: for
        tests and debugging, like RSPLIB's VERIFY build).

        @raise AssertionError: an index is inconsistent.
        """
        from rserpool.handlespace.checksum import compute_checksum

        owners = {}
        connections = {}
        timers = {}
        count = 0
        for handle, pool in self._pools.items():
            assert pool.handle == handle
            assert pool._elements, "empty pool {!r} kept".format(handle)
            pool._selector.verify(list(pool._elements.values()))
            for pe_id, pe in pool._elements.items():
                count += 1
                assert pe.pe_id == pe_id and pe.pool is pool
                assert pool._checksum_base + identifier_contribution(pe_id) == (
                    pe_contribution(handle, pe_id)
                )
                owners.setdefault(pe.home_registrar, set()).add(pe)
                if pe.connection is not None:
                    connections.setdefault(pe.connection, set()).add(pe)
                if pe.timer_time is not None:
                    assert pe.timer_code is not None
                    timers.setdefault(pe.timer_time, set()).add(pe)
                else:
                    assert pe.timer_code is None
        assert count == self._count
        assert owners == {o: set(m) for o, m in self._owners.items()}
        for owner, members in self._owners.items():
            assert len(members) == len(set(members))
            assert all(pe._owner_slot == slot for slot, pe in enumerate(members))
            expected = compute_checksum((pe.handle, pe.pe_id) for pe in members)
            assert self.owner_checksum(owner) == expected, owner
        assert set(self._owner_sums) == set(owners)
        assert connections == {c: set(m) for c, m in self._connections.items()}
        for members in self._connections.values():
            assert len(members) == len(set(members))
            assert all(pe._connection_slot == slot for slot, pe in enumerate(members))
        slab = self._slab
        assert len(slab) == CELLS * (count + len(self._free_places))
        free = set(self._free_places)
        assert len(free) == len(self._free_places)
        for place in range(0, len(slab), CELLS):
            pe = slab[place]
            if place in free:
                assert slab[place:place + CELLS] == list(_NO_CELLS)
                continue
            assert pe._slab == place and pe.pool._elements.get(pe.pe_id) is pe
            key = slab[place + TIMER_CELL]
            assert (key is None) == (pe.timer_time is None) == (pe._timer_key is None)
            if key is not None:
                # The key in the heap, and the one the PE wants (the same,
                # or a later one when the timer moved later).
                wanted = pe._timer_key
                assert key & _CELL_MASK == wanted & _CELL_MASK == place + TIMER_CELL
                assert wanted >> _TIME_SHIFT == _time_key(pe.timer_time)
                assert key <= wanted
        heap = self._timer_heap
        live = [key for key in heap if slab[key & _CELL_MASK] is key]
        assert len(live) == len(set(live)) == self._timer_count
        stored = {}
        for key in live:
            pe = slab[(key & _CELL_MASK) - TIMER_CELL]
            stored.setdefault(pe.timer_time, set()).add(pe)
        assert stored == timers
        assert all(heap[(i - 1) // 2] <= heap[i] for i in range(1, len(heap)))
        assert len(heap) <= 2 * self._timer_count + 64

def _control_name(control):
    return "data plus control" if control else "data only"
