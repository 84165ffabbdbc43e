"""
Tests for L{rserpool.handlespace}: registration rules and their error
causes, the indexes (owner, timer, connection), takeover, and the ENRP PE
checksum, plus a hypothesis state machine that checks every index and
checksum against a model after random operation sequences.
"""
import random
import struct
import sys

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from twisted.trial import unittest

from rserpool.codes import POLICY_FIELDS, ErrorCause
from rserpool.codes import PolicyType as P
from rserpool.handlespace import (
    MAX_POOL_HANDLE_SIZE,
    Handlespace,
    HandlespaceError,
    InconsistentDataControlConfiguration,
    InconsistentPoolingPolicy,
    InconsistentTransportType,
    InvalidValues,
    PolicySettings,
    TimerCode,
    UnknownPoolHandle,
    compute_checksum,
    finish_checksum,
    pe_contribution,
)
from rserpool.handlespace.store import CELLS, _time_key

SCTP = 0x0004
TCP = 0x0005
UDP = 0x0006


class Transport:
    """
    A user transport stub: only the two attributes the rules read.
    """

    def __init__(self, transport_protocol=SCTP, control_channel=False):
        self.transport_protocol = transport_protocol
        self.control_channel = control_channel


RR = PolicySettings(P.ROUND_ROBIN)


def register(hs, handle=b"pool", pe_id=1, owner=1, policy=RR, transport=None,
             now=0.0, life=30000, connection=None, timer=None):
    return hs.register(
        handle,
        pe_id,
        home_registrar=owner,
        policy=policy,
        user_transport=transport if transport is not None else Transport(),
        now=now,
        registration_life=life,
        connection=connection,
        timer=timer,
    )


def rfc1071(elements):
    """
    The RFC 1071 Internet checksum over, for every (handle, pe_id), the
    handle padded with a zero byte to even length followed by the PE id in
    network byte order: the RFC 5353 definition, independent of the code
    under test.
    """
    total = 0
    for handle, pe_id in elements:
        data = handle + (b"\x00" if len(handle) % 2 else b"") + struct.pack("!I", pe_id)
        for (word,) in struct.iter_unpack("!H", data):
            total += word
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def rsplib_x86(elements):
    """
    What RSPLIB computes on a little-endian host, re-derived from its C
    code's behaviour: uint16 words read little-endian from memory (handle,
    zero-padded; then the network-order id, separately), a uint32
    accumulator that wraps, fold, complement, and the uint16 written to the
    wire unswapped.  Returns the wire bytes as a big-endian integer.
    """
    accumulator = 0
    for handle, pe_id in elements:
        padded = handle + (b"\x00" if len(handle) % 2 else b"")
        for chunk in (padded, struct.pack("!I", pe_id)):
            for (word,) in struct.iter_unpack("<H", chunk):
                accumulator = (accumulator + word) & 0xFFFFFFFF
    while accumulator >> 16:
        accumulator = (accumulator & 0xFFFF) + (accumulator >> 16)
    wire = struct.pack("<H", ~accumulator & 0xFFFF)
    return struct.unpack("!H", wire)[0]


class ChecksumTests(unittest.TestCase):
    """
    The ENRP PE checksum.
    """

    def test_empty(self):
        self.assertEqual(compute_checksum([]), 0xFFFF)

    def test_handVector(self):
        # Handle "abc" (odd length) and PE id 0x01020304: RSPLIB pads the
        # handle to a word before adding the id, so the words are
        # 0x6162 0x6300 0x0102 0x0304; sum 0xc868, complement 0x3797.
        self.assertEqual(compute_checksum([(b"abc", 0x01020304)]), 0x3797)
        # Summing "abc" and the id as one byte string would have given
        # 0x6162 0x6301 0x0203 0x0400 -> 0xca66 -> 0x3599: not what RSPLIB
        # does.
        self.assertNotEqual(compute_checksum([(b"abc", 0x01020304)]), 0x3599)

    def test_carry(self):
        # 0xffff + 0xffff + 0x0001 + 0x0000: 0x1fffe + 1 = 0x1ffff, folded
        # 0xffff + 1 = 0x10000 -> 0x0001, complement 0xfffe.
        self.assertEqual(compute_checksum([(b"\xff\xff\xff\xff", 0x00010000)]), 0xFFFE)

    def test_matchesRFC1071(self):
        rng = random.Random(3)
        for _ in range(200):
            elements = [
                (bytes(rng.randrange(256) for _ in range(rng.randrange(1, 33))),
                 rng.randrange(1, 2 ** 32))
                for _ in range(rng.randrange(0, 20))
            ]
            self.assertEqual(compute_checksum(elements), rfc1071(elements))
            self.assertEqual(compute_checksum(elements), rsplib_x86(elements))

    def test_wrapLikeRSPLIB(self):
        """
        Beyond 2**32 the accumulator wraps as RSPLIB's uint32 does (and the
        result then differs from a pure RFC 1071 sum).
        """
        handle = b"\xff" * 32
        elements = [(handle, 0xFFFF0000 + i) for i in range(1, 4200)]
        self.assertGreater(sum(pe_contribution(h, i) for h, i in elements), 2 ** 32)
        self.assertEqual(compute_checksum(elements), rsplib_x86(elements))
        self.assertNotEqual(compute_checksum(elements), rfc1071(elements))

    def test_incremental(self):
        elements = [(b"p1", 5), (b"pool-two", 0xDEADBEEF), (b"odd", 7)]
        total = sum(pe_contribution(h, i) for h, i in elements)
        self.assertEqual(finish_checksum(total), compute_checksum(elements))
        total -= pe_contribution(b"odd", 7)
        self.assertEqual(finish_checksum(total), compute_checksum(elements[:2]))


class RegistrationRuleTests(unittest.TestCase):
    """
    RFC 5352 section 3.1 registration rules, each with its RFC 5354 cause.
    """

    def setUp(self):
        self.hs = Handlespace(random.Random(0))
        register(self.hs, pe_id=1, transport=Transport(SCTP, False))

    def assertRejected(self, error_type, cause, **kwargs):
        before = [(pe.pe_id, pe.policy, pe.home_registrar) for pe in self.hs.elements()]
        error = self.assertRaises(error_type, register, self.hs, **kwargs)
        self.assertIsInstance(error, HandlespaceError)
        self.assertEqual(error.cause, cause)
        self.assertEqual(
            [(pe.pe_id, pe.policy, pe.home_registrar) for pe in self.hs.elements()], before
        )
        self.hs.verify()
        return error

    def test_policyMismatch(self):
        error = self.assertRejected(
            InconsistentPoolingPolicy,
            ErrorCause.INCONSISTENT_POOLING_POLICY,
            pe_id=2,
            policy=PolicySettings(P.WEIGHTED_RANDOM, weight=1),
        )
        self.assertIn("ROUND_ROBIN", str(error))

    def test_transportMismatch(self):
        self.assertRejected(
            InconsistentTransportType,
            ErrorCause.INCONSISTENT_TRANSPORT_TYPE,
            pe_id=2,
            transport=Transport(TCP, False),
        )

    def test_controlChannelMismatch(self):
        self.assertRejected(
            InconsistentDataControlConfiguration,
            ErrorCause.INCONSISTENT_DATA_CONTROL_CONFIGURATION,
            pe_id=2,
            transport=Transport(SCTP, True),
        )

    def test_ruleOrder(self):
        """
        Checked in RSPLIB's order: transport type, then data/control, then
        policy.
        """
        self.assertRejected(
            InconsistentTransportType,
            ErrorCause.INCONSISTENT_TRANSPORT_TYPE,
            pe_id=2,
            transport=Transport(UDP, True),
            policy=PolicySettings(P.RANDOM),
        )
        self.assertRejected(
            InconsistentDataControlConfiguration,
            ErrorCause.INCONSISTENT_DATA_CONTROL_CONFIGURATION,
            pe_id=2,
            transport=Transport(SCTP, True),
            policy=PolicySettings(P.RANDOM),
        )

    def test_reregistrationChecked(self):
        """
        A re-registration of an existing PE obeys the same rules, even when
        it is the pool's only PE (the pool's policy is fixed while the pool
        exists, as in RSPLIB).
        """
        self.assertRejected(
            InconsistentPoolingPolicy,
            ErrorCause.INCONSISTENT_POOLING_POLICY,
            pe_id=1,
            policy=PolicySettings(P.RANDOM),
        )
        self.assertRejected(
            InconsistentTransportType,
            ErrorCause.INCONSISTENT_TRANSPORT_TYPE,
            pe_id=1,
            transport=Transport(TCP),
        )

    def test_invalidIdentifier(self):
        self.assertRejected(InvalidValues, ErrorCause.INVALID_VALUES, pe_id=0)
        self.assertRejected(InvalidValues, ErrorCause.INVALID_VALUES, pe_id=2 ** 32)

    def test_invalidHandle(self):
        self.assertRejected(InvalidValues, ErrorCause.INVALID_VALUES, handle=b"")
        self.assertRejected(
            InvalidValues, ErrorCause.INVALID_VALUES, handle=b"x" * (MAX_POOL_HANDLE_SIZE + 1)
        )
        self.assertRejected(InvalidValues, ErrorCause.INVALID_VALUES, handle="text")
        register(self.hs, handle=b"x" * MAX_POOL_HANDLE_SIZE)

    def test_invalidPolicy(self):
        self.assertRejected(InvalidValues, ErrorCause.INVALID_VALUES, pe_id=2, policy=(1, ()))

    def test_otherPoolsIndependent(self):
        register(self.hs, handle=b"other", pe_id=1, transport=Transport(TCP, True),
                 policy=PolicySettings(P.LEAST_USED, load=3))
        self.assertEqual(len(self.hs.pools()), 2)

    def test_emptyPoolForgetsConfiguration(self):
        """
        A pool vanishes with its last PE; the next registration under that
        handle starts a new pool with its own policy and transport.
        """
        self.hs.deregister(b"pool", 1)
        self.assertIsNone(self.hs.pool(b"pool"))
        register(self.hs, pe_id=2, transport=Transport(TCP, True),
                 policy=PolicySettings(P.RANDOM))
        pool = self.hs.pool(b"pool")
        self.assertEqual(
            (pool.policy_type, pool.transport_protocol, pool.control_channel),
            (P.RANDOM, TCP, True),
        )


class ReregistrationTests(unittest.TestCase):
    """
    A registration of an existing PE identifier updates the entry in place.
    """

    def test_updateInPlace(self):
        hs = Handlespace(random.Random(0))
        first = register(hs, pe_id=7, now=1.0, life=10000,
                         policy=PolicySettings(P.LEAST_USED, load=5))
        self.assertTrue(first.created)
        transport = Transport()
        second = register(hs, pe_id=7, now=4.0, life=20000, transport=transport,
                          policy=PolicySettings(P.LEAST_USED, load=9))
        self.assertFalse(second.created)
        self.assertIs(second.pe, first.pe)
        self.assertTrue(second.policy_changed)
        self.assertEqual(second.previous_home, 1)
        pe = second.pe
        self.assertEqual(len(hs), 1)
        self.assertEqual(len(hs.pool(b"pool")), 1)
        self.assertEqual((pe.registration_time, pe.last_update), (1.0, 4.0))
        self.assertEqual(pe.registration_life, 20000)
        self.assertIs(pe.user_transport, transport)
        self.assertEqual(pe.policy.load, 9)
        # The expiry timer restarts from the re-registration.
        self.assertEqual((pe.timer_code, pe.timer_time), (TimerCode.EXPIRY, 24.0))
        self.assertEqual(hs.select(b"pool", 5), [pe])
        hs.verify()

    def test_unchangedPolicy(self):
        hs = Handlespace(random.Random(0))
        register(hs, pe_id=7)
        self.assertFalse(register(hs, pe_id=7).policy_changed)

    def test_collisionFromAnotherOwner(self):
        """
        RSPLIB's behaviour when another registrar registers an existing PE
        identifier: the entry is updated in place and moves to the new owner
        (no Non-unique PE Identifier error).
        """
        hs = Handlespace(random.Random(0))
        register(hs, pe_id=7, owner=0xA, connection="assoc-1")
        register(hs, pe_id=8, owner=0xA)
        outcome = register(hs, pe_id=7, owner=0xB, connection=None)
        self.assertFalse(outcome.created)
        self.assertEqual((outcome.previous_home, outcome.pe.home_registrar), (0xA, 0xB))
        self.assertEqual([pe.pe_id for pe in hs.owned_by(0xA)], [8])
        self.assertEqual([pe.pe_id for pe in hs.owned_by(0xB)], [7])
        self.assertEqual(hs.owner_checksum(0xA), compute_checksum([(b"pool", 8)]))
        self.assertEqual(hs.owner_checksum(0xB), compute_checksum([(b"pool", 7)]))
        # Learned from a peer: no connection any more.
        self.assertEqual(hs.by_connection("assoc-1"), [])
        hs.verify()

    def test_unreachableReports(self):
        hs = Handlespace(random.Random(0))
        register(hs, pe_id=7)
        self.assertEqual(hs.report_unreachable(b"pool", 7), 1)
        self.assertEqual(hs.report_unreachable(b"pool", 7), 2)
        register(hs, pe_id=7)
        self.assertEqual(hs.get(b"pool", 7).unreachable_reports, 2)
        error = self.assertRaises(UnknownPoolHandle, hs.report_unreachable, b"pool", 8)
        self.assertEqual(error.cause, ErrorCause.UNKNOWN_POOL_HANDLE)


class IndexTests(unittest.TestCase):
    """
    Deregistration, owners, takeover, connections, timers.
    """

    def setUp(self):
        self.hs = Handlespace(random.Random(0))
        register(self.hs, b"a", 1, owner=1, connection="c1", now=0.0, life=5000)
        register(self.hs, b"a", 2, owner=2, connection="c1", now=0.0, life=1000)
        register(self.hs, b"b", 3, owner=1, connection="c2", now=1.0, life=1000)
        register(self.hs, b"b", 4, owner=2, connection=None, now=1.0, life=9000)

    def ids(self, pes):
        return sorted(pe.pe_id for pe in pes)

    def test_deregister(self):
        pe = self.hs.deregister(b"a", 1)
        self.assertEqual(pe.pe_id, 1)
        self.assertIsNone(self.hs.get(b"a", 1))
        self.assertEqual(self.ids(self.hs.owned_by(1)), [3])
        self.assertEqual(self.ids(self.hs.by_connection("c1")), [2])
        self.assertEqual(len(self.hs), 3)
        self.hs.verify()

    def test_deregisterUnknown(self):
        error = self.assertRaises(UnknownPoolHandle, self.hs.deregister, b"a", 9)
        self.assertEqual(error.cause, ErrorCause.UNKNOWN_POOL_HANDLE)
        self.assertRaises(UnknownPoolHandle, self.hs.deregister, b"zz", 1)

    def test_selectUnknown(self):
        error = self.assertRaises(UnknownPoolHandle, self.hs.select, b"zz", 1)
        self.assertEqual(error.cause, ErrorCause.UNKNOWN_POOL_HANDLE)

    def test_owners(self):
        self.assertEqual(sorted(self.hs.owners()), [1, 2])
        self.assertEqual(self.ids(self.hs.owned_by(1)), [1, 3])
        self.assertEqual(self.hs.owned_count(2), 2)
        self.assertEqual(self.hs.owner_checksum(1), compute_checksum([(b"a", 1), (b"b", 3)]))
        self.assertEqual(self.hs.owner_checksum(3), 0xFFFF)

    def test_takeover(self):
        moved = self.hs.takeover(2, 1)
        self.assertEqual(self.ids(moved), [2, 4])
        self.assertEqual(self.ids(self.hs.owned_by(1)), [1, 2, 3, 4])
        self.assertEqual(self.hs.owned_by(2), [])
        self.assertEqual(self.hs.owner_checksum(2), 0xFFFF)
        self.assertEqual(
            self.hs.owner_checksum(1),
            compute_checksum([(b"a", 1), (b"a", 2), (b"b", 3), (b"b", 4)]),
        )
        self.assertEqual(self.hs.get(b"b", 4).home_registrar, 1)
        self.hs.verify()

    def test_takeoverToNewOwner(self):
        self.assertEqual(self.ids(self.hs.takeover(1, 9)), [1, 3])
        self.assertEqual(self.hs.owner_checksum(9), compute_checksum([(b"a", 1), (b"b", 3)]))
        self.assertEqual(self.hs.takeover(1, 9), [])
        self.hs.verify()

    def test_setOwner(self):
        self.hs.set_owner(self.hs.get(b"a", 1), 2)
        self.assertEqual(self.ids(self.hs.owned_by(2)), [1, 2, 4])
        self.hs.verify()

    def test_removeConnection(self):
        removed = self.hs.remove_connection("c1")
        self.assertEqual(self.ids(removed), [1, 2])
        self.assertIsNone(self.hs.pool(b"a"))
        self.assertEqual(self.hs.remove_connection("c1"), [])
        self.assertEqual(len(self.hs), 2)
        self.hs.verify()

    def test_timers(self):
        # Expiry at registration time + life: 1 -> 5.0, 2 -> 1.0, 3 -> 2.0,
        # 4 -> 10.0.
        self.assertEqual(self.hs.next_timer_time(), 1.0)
        self.assertEqual([pe.pe_id for pe in self.hs.due(2.0)], [2, 3])
        self.assertEqual(self.hs.due(0.5), [])
        # A keep-alive transmission timer is due but does not remove.
        self.hs.set_timer(self.hs.get(b"b", 3), TimerCode.KEEP_ALIVE_TRANSMISSION, 1.5)
        self.assertEqual([pe.pe_id for pe in self.hs.expire(3.0)], [2])
        self.assertEqual([pe.pe_id for pe in self.hs.due(3.0)], [3])
        self.hs.set_timer(self.hs.get(b"b", 3), TimerCode.KEEP_ALIVE_TIMEOUT, 4.0)
        self.hs.clear_timer(self.hs.get(b"a", 1))
        self.assertEqual(self.hs.next_timer_time(), 4.0)
        self.assertEqual([pe.pe_id for pe in self.hs.expire(100.0)], [3, 4])
        self.assertEqual(self.hs.next_timer_time(), None)
        self.assertEqual([pe.pe_id for pe in self.hs.elements()], [1])
        self.hs.verify()

    def test_explicitTimer(self):
        outcome = register(self.hs, b"a", 5, timer=(TimerCode.KEEP_ALIVE_TRANSMISSION, 0.25))
        self.assertEqual(outcome.pe.timer_code, TimerCode.KEEP_ALIVE_TRANSMISSION)
        self.assertEqual(self.hs.next_timer_time(), 0.25)

    def test_timersSameTime(self):
        # PEs sharing a timer time are due in the order their timers were
        # set; re-setting a timer to the same time moves the PE last.
        hs = Handlespace(random.Random(1))
        for pe_id in (1, 2, 3):
            register(hs, b"t", pe_id, timer=(TimerCode.EXPIRY, 7.0))
        hs.set_timer(hs.get(b"t", 1), TimerCode.EXPIRY, 7.0)
        self.assertEqual([pe.pe_id for pe in hs.due(7.0)], [2, 3, 1])
        # due() leaves the timers set, and asking again gives the same.
        self.assertEqual([pe.pe_id for pe in hs.due(8.0)], [2, 3, 1])
        self.assertEqual(hs.next_timer_time(), 7.0)
        hs.clear_timer(hs.get(b"t", 2))
        hs.set_timer(hs.get(b"t", 3), TimerCode.EXPIRY, 9.0)
        self.assertEqual([pe.pe_id for pe in hs.due(8.0)], [1])
        hs.set_timer(hs.get(b"t", 1), TimerCode.EXPIRY, 9.0)
        self.assertEqual(hs.next_timer_time(), 9.0)
        self.assertEqual([pe.pe_id for pe in hs.due(9.0)], [3, 1])
        hs.verify()

    def test_timersManyUpdates(self):
        # Timers set and reset many times, earlier and later, with PEs
        # removed in between: the stale entries the timer index drops
        # lazily never show, and their number stays bounded.
        hs = Handlespace(random.Random(1))
        rng = random.Random(5)
        model = {}
        for step in range(3000):
            pe_id = rng.randrange(1, 40)
            action = rng.random()
            pe = hs.get(b"m", pe_id)
            if pe is None or action < 0.5:
                when = float(rng.randrange(200))
                register(hs, b"m", pe_id, timer=(TimerCode.EXPIRY, when))
                model[pe_id] = when
            elif action < 0.7:
                hs.remove(pe)
                del model[pe_id]
            elif action < 0.8:
                hs.clear_timer(pe)
                model[pe_id] = None
            else:
                now = float(rng.randrange(200))
                due = [pe.pe_id for pe in hs.due(now)]
                expected = sorted(
                    (when, i) for i, when in model.items()
                    if when is not None and when <= now
                )
                self.assertEqual(sorted(due), sorted(i for _, i in expected))
                times = [hs.get(b"m", i).timer_time for i in due]
                self.assertEqual(times, sorted(times))
            live = [when for when in model.values() if when is not None]
            self.assertEqual(hs.next_timer_time(), min(live) if live else None)
            # At most 39 PEs: at most 2 * 39 + 64 entries, stale ones included.
            self.assertLessEqual(len(hs._timer_heap), 2 * 39 + 65)
        hs.verify()


class LazyIndexTests(unittest.TestCase):
    """
    The timer heap, which deletes lazily, and the other indexes, which do
    not: stale keys never show and stay bounded, timers moved later come
    out in order, and no index keeps a removed PE alive.
    """

    def test_timeKeyOrder(self):
        # The integer a timer time sorts by has the order of the floats,
        # negative ones and infinities included.
        times = [float("-inf"), -1e300, -1.0, -5e-324, -0.0, 0.0, 5e-324,
                 1e-300, 1.0, 1.0000000000000002, 1e300, float("inf")]
        keys = [_time_key(when) for when in times]
        self.assertEqual(keys, sorted(keys))
        self.assertEqual(len(set(keys)), len(keys))
        self.assertTrue(all(0 <= key < 2 ** 64 for key in keys))

    def test_timerNotANumber(self):
        hs = Handlespace(random.Random(0))
        pe = register(hs, b"a", 1).pe
        self.assertRaises(ValueError, hs.set_timer, pe, TimerCode.EXPIRY, float("nan"))
        self.assertEqual(hs.next_timer_time(), 30.0)

    def test_timerOfRemovedElement(self):
        hs = Handlespace(random.Random(0))
        pe = register(hs, b"a", 1).pe
        hs.remove(pe)
        self.assertRaises(KeyError, hs.set_timer, pe, TimerCode.EXPIRY, 1.0)
        self.assertIsNone(hs.next_timer_time())

    def test_timerMovedLaterKeepsOrder(self):
        # A timer moved later keeps its old key in the heap until it comes
        # out; PEs due at the same time still come out in the order their
        # timers were set: here b (moved to 40 first), a, then c (set to 40
        # last, as its first timer).
        hs = Handlespace(random.Random(0))
        a = register(hs, b"t", 1, timer=(TimerCode.EXPIRY, 30.0)).pe
        b = register(hs, b"t", 2, timer=(TimerCode.EXPIRY, 35.0)).pe
        heap_size = len(hs._timer_heap)
        hs.set_timer(b, TimerCode.KEEP_ALIVE_TRANSMISSION, 40.0)
        hs.set_timer(a, TimerCode.EXPIRY, 40.0)
        # Moving later pushes nothing.
        self.assertEqual(len(hs._timer_heap), heap_size)
        c = register(hs, b"t", 3, timer=(TimerCode.EXPIRY, 40.0)).pe
        self.assertEqual(hs.next_timer_time(), 40.0)
        self.assertEqual(hs.due(39.9), [])
        self.assertEqual(hs.due(40.0), [b, a, c])
        self.assertEqual(b.timer_code, TimerCode.KEEP_ALIVE_TRANSMISSION)
        # Then earlier again: a new key.
        hs.set_timer(c, TimerCode.EXPIRY, 10.0)
        self.assertEqual(hs.due(40.0), [c, b, a])
        hs.verify()

    def test_connectionCount(self):
        hs = Handlespace(random.Random(0))
        register(hs, b"a", 1, connection="c")
        register(hs, b"a", 2, connection="c")
        register(hs, b"a", 3, connection="d")
        self.assertEqual(hs.connection_count("c"), 2)
        hs.deregister(b"a", 1)
        self.assertEqual(hs.connection_count("c"), 1)
        self.assertEqual(hs.connection_count("e"), 0)
        # Moving a PE to another connection moves its count.
        register(hs, b"a", 2, connection="d")
        self.assertEqual(hs.connection_count("c"), 0)
        self.assertEqual(hs.connection_count("d"), 2)
        hs.verify()

    def test_leastUsedSkipsRemoved(self):
        # Least Used over loads 0..99 (PE id = load + 1); the 50 least loaded
        # PEs leave, so a selection of 5 returns loads 50..54.  Using the
        # first moves it behind the PEs of its own load only (there are
        # none), so the next selection returns it again.
        hs = Handlespace(random.Random(0))
        for load in range(100):
            register(hs, b"lu", load + 1, policy=PolicySettings(P.LEAST_USED, load=load))
        for load in range(50):
            hs.deregister(b"lu", load + 1)
        self.assertEqual([pe.pe_id - 1 for pe in hs.select(b"lu", 5)], [50, 51, 52, 53, 54])
        self.assertEqual([pe.pe_id - 1 for pe in hs.select(b"lu", 1)], [50])
        hs.verify()

    def test_removedElementFreed(self):
        # Once removed, a PE is referenced by nothing in the handlespace,
        # whatever its policy: the timer heap's stale keys are integers.
        if not hasattr(sys, "getrefcount"):
            raise unittest.SkipTest("needs reference counts")
        for policy_type in P:
            hs = Handlespace(random.Random(1))
            rng = random.Random(2)
            for pe_id in range(1, 101):
                register(hs, b"p", pe_id, owner=pe_id % 3, connection=pe_id % 4,
                         policy=_policy(policy_type, rng), now=float(pe_id))
            hs.select(b"p", 3)
            hs.takeover(1, 2)
            for pe_id in range(1, 101, 2):
                pe = hs.deregister(b"p", pe_id)
                # This name and getrefcount's argument.
                self.assertEqual(sys.getrefcount(pe), 2, policy_type)
            del pe
            hs.verify()

    def test_churnBounded(self):
        # Random churn over a small pool: every index stays consistent and
        # bounded (verify() checks at most twice the live entries plus 64
        # in each), and the slab does not grow beyond the most PEs ever
        # present.
        for policy_type in (P.ROUND_ROBIN, P.WEIGHTED_RANDOM, P.LEAST_USED,
                            P.PRIORITY, P.WEIGHTED_ROUND_ROBIN,
                            P.RANDOMIZED_LEAST_USED_DEGRADATION):
            hs = Handlespace(random.Random(3))
            rng = random.Random(4)
            most = 0
            now = 0.0
            for step in range(4000):
                now += 0.01
                pe_id = rng.randrange(1, 60)
                pe = hs.get(b"c", pe_id)
                action = rng.random()
                if pe is None or action < 0.3:
                    register(hs, b"c", pe_id, owner=rng.randrange(3),
                             connection=rng.choice([None, "x", "y"]), now=now,
                             policy=_policy(policy_type, rng))
                elif action < 0.6:
                    hs.remove(pe)
                elif action < 0.7:
                    hs.set_owner(pe, rng.randrange(3))
                elif action < 0.8:
                    hs.clear_timer(pe)
                elif action < 0.9 and hs.pool(b"c") is not None:
                    hs.select(b"c", rng.randrange(1, 4))
                else:
                    hs.expire(now + rng.randrange(40))
                most = max(most, len(hs))
                if step % 200 == 0:
                    hs.verify()
            hs.verify()
            self.assertLessEqual(len(hs._slab), CELLS * most)


def _policy(policy_type, rng):
    """
    Policy settings of a type with random values (zero weights included).
    """
    values = {}
    fields = POLICY_FIELDS[policy_type]
    for name in fields:
        values[name] = rng.randrange(0, 5) if name != "load" else rng.randrange(0, 2 ** 32)
    return PolicySettings(policy_type, **values)


# ---------------------------------------------------------------------------
# State machine
# ---------------------------------------------------------------------------

HANDLES = [b"a", b"bb", b"odd", b"\x00\xff\x01", b"pool-element-handle-of-32-bytes!"]
PE_IDS = [1, 2, 3, 0x7FFFFFFF, 0xFFFFFFFF]
OWNERS = [0x10, 0x20, 0x30]
CONNECTIONS = [None, "c1", "c2", "c3"]
POLICIES = [
    PolicySettings(P.ROUND_ROBIN),
    PolicySettings(P.WEIGHTED_RANDOM, weight=0),
    PolicySettings(P.WEIGHTED_RANDOM, weight=3),
    PolicySettings(P.LEAST_USED_DEGRADATION, load=10, load_degradation=5),
    PolicySettings(P.LEAST_USED_DEGRADATION, load=20, load_degradation=0),
    PolicySettings(P.WEIGHTED_ROUND_ROBIN, weight=0),
    PolicySettings(P.WEIGHTED_ROUND_ROBIN, weight=2),
]
TRANSPORTS = [(SCTP, False), (SCTP, True), (TCP, False)]


class HandlespaceMachine(RuleBasedStateMachine):
    """
    Random operation sequences against a plain model: a dict from (handle,
    PE id) to the entry's owner, connection, timer and configuration.
    """

    def __init__(self):
        RuleBasedStateMachine.__init__(self)
        self.hs = Handlespace(random.Random(1))
        self.model = {}
        self.now = 0.0

    def pool_config(self, handle):
        for (h, _), entry in self.model.items():
            if h == handle:
                return entry["transport"], entry["policy"].policy_type
        return None

    @rule(
        handle=st.sampled_from(HANDLES),
        pe_id=st.sampled_from(PE_IDS),
        owner=st.sampled_from(OWNERS),
        connection=st.sampled_from(CONNECTIONS),
        policy=st.sampled_from(POLICIES),
        transport=st.sampled_from(TRANSPORTS),
        conform=st.booleans(),
        life=st.integers(0, 5000),
    )
    def register(self, handle, pe_id, owner, connection, policy, transport, conform, life):
        config = self.pool_config(handle)
        if config is not None and conform:
            # Mostly follow the pool's configuration so that most
            # registrations succeed.
            transport = config[0]
            if policy.policy_type != config[1]:
                policy = next(p for p in POLICIES if p.policy_type == config[1])
        expected = None
        if config is not None:
            if transport[0] != config[0][0]:
                expected = ErrorCause.INCONSISTENT_TRANSPORT_TYPE
            elif transport[1] != config[0][1]:
                expected = ErrorCause.INCONSISTENT_DATA_CONTROL_CONFIGURATION
            elif policy.policy_type != config[1]:
                expected = ErrorCause.INCONSISTENT_POOLING_POLICY
        try:
            outcome = self.hs.register(
                handle,
                pe_id,
                home_registrar=owner,
                policy=policy,
                user_transport=Transport(*transport),
                now=self.now,
                registration_life=life,
                connection=connection,
            )
        except HandlespaceError as error:
            assert error.cause == expected, (error, expected)
            return
        assert expected is None, expected
        key = (handle, pe_id)
        assert outcome.created == (key not in self.model)
        self.model[key] = {
            "owner": owner,
            "connection": connection,
            "timer": (TimerCode.EXPIRY, self.now + life / 1000.0),
            "transport": transport,
            "policy": policy,
        }

    @rule(handle=st.sampled_from(HANDLES), pe_id=st.sampled_from(PE_IDS))
    def deregister(self, handle, pe_id):
        key = (handle, pe_id)
        if key in self.model:
            assert self.hs.deregister(handle, pe_id).pe_id == pe_id
            del self.model[key]
        else:
            try:
                self.hs.deregister(handle, pe_id)
            except UnknownPoolHandle:
                pass
            else:
                raise AssertionError("deregistered an unknown PE")

    @rule(dt=st.integers(0, 3000))
    def expire(self, dt):
        self.now += dt / 1000.0
        removed = {(pe.handle, pe.pe_id) for pe in self.hs.expire(self.now)}
        expected = {
            key
            for key, entry in self.model.items()
            if entry["timer"] is not None
            and entry["timer"][0] in (TimerCode.EXPIRY, TimerCode.KEEP_ALIVE_TIMEOUT)
            and entry["timer"][1] <= self.now
        }
        assert removed == expected, (removed, expected)
        for key in removed:
            del self.model[key]

    @rule(
        handle=st.sampled_from(HANDLES),
        pe_id=st.sampled_from(PE_IDS),
        code=st.sampled_from(list(TimerCode) + [None]),
        dt=st.integers(0, 3000),
    )
    def set_timer(self, handle, pe_id, code, dt):
        pe = self.hs.get(handle, pe_id)
        if pe is None:
            return
        if code is None:
            self.hs.clear_timer(pe)
            self.model[(handle, pe_id)]["timer"] = None
        else:
            self.hs.set_timer(pe, code, self.now + dt / 1000.0)
            self.model[(handle, pe_id)]["timer"] = (code, self.now + dt / 1000.0)

    @rule(old=st.sampled_from(OWNERS), new=st.sampled_from(OWNERS))
    def takeover(self, old, new):
        moved = {(pe.handle, pe.pe_id) for pe in self.hs.takeover(old, new)}
        expected = {key for key, entry in self.model.items() if entry["owner"] == old}
        assert moved == expected
        for key in expected:
            self.model[key]["owner"] = new

    @rule(connection=st.sampled_from(CONNECTIONS[1:]))
    def connection_lost(self, connection):
        removed = {(pe.handle, pe.pe_id) for pe in self.hs.remove_connection(connection)}
        expected = {k for k, e in self.model.items() if e["connection"] == connection}
        assert removed == expected
        for key in expected:
            del self.model[key]

    @rule(handle=st.sampled_from(HANDLES), k=st.integers(0, 6))
    def select(self, handle, k):
        members = {pe_id for (h, pe_id) in self.model if h == handle}
        if not members:
            try:
                self.hs.select(handle, k)
            except UnknownPoolHandle:
                return
            raise AssertionError("selected from an unknown pool")
        chosen = [pe.pe_id for pe in self.hs.select(handle, k)]
        assert len(set(chosen)) == len(chosen)
        assert set(chosen) <= members
        selectable = {
            pe_id
            for pe_id in members
            if self.model[(handle, pe_id)]["policy"].policy_type
            not in (P.WEIGHTED_RANDOM, P.WEIGHTED_ROUND_ROBIN)
            or self.model[(handle, pe_id)]["policy"].weight
        }
        assert set(chosen) <= selectable
        assert len(chosen) == min(k, len(selectable)), (chosen, k, selectable)

    @invariant()
    def consistent(self):
        hs, model = self.hs, self.model
        assert len(hs) == len(model)
        assert {pool.handle for pool in hs.pools()} == {h for h, _ in model}
        for (handle, pe_id), entry in model.items():
            pe = hs.get(handle, pe_id)
            assert pe is not None
            assert pe.home_registrar == entry["owner"]
            assert pe.connection == entry["connection"]
            assert pe.policy == entry["policy"]
            timer = entry["timer"]
            assert (pe.timer_code, pe.timer_time) == (timer if timer else (None, None))
        for owner in OWNERS:
            keys = {k for k, e in model.items() if e["owner"] == owner}
            assert {(pe.handle, pe.pe_id) for pe in hs.owned_by(owner)} == keys
            assert hs.owner_checksum(owner) == compute_checksum(keys)
            assert hs.owner_checksum(owner) == rfc1071(keys)
        assert set(hs.owners()) == {e["owner"] for e in model.values()}
        for connection in CONNECTIONS[1:]:
            keys = {k for k, e in model.items() if e["connection"] == connection}
            assert {(pe.handle, pe.pe_id) for pe in hs.by_connection(connection)} == keys
        times = [e["timer"][1] for e in model.values() if e["timer"]]
        assert hs.next_timer_time() == (min(times) if times else None)
        due = {(pe.handle, pe.pe_id) for pe in hs.due(self.now + 1.0)}
        assert due == {
            k for k, e in model.items() if e["timer"] and e["timer"][1] <= self.now + 1.0
        }
        hs.verify()


class HandlespaceStateMachineTests(unittest.TestCase):
    """
    Run L{HandlespaceMachine} under trial.
    """

    def test_stateMachine(self):
        run_state_machine_as_test(
            HandlespaceMachine,
            settings=settings(
                max_examples=150,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
