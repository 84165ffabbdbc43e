"""
The member selection policies of RFC 5356 and RSPLIB 3.5, each an index over
one pool's PEs that selects in O(log n) (ordered policies) or O(1) expected
(randomized policies) per selected PE, never scanning the pool.

Two families, as in RSPLIB (src/poolpolicy-template_impl.h, read for
behaviour):

 - I{Ordered} policies keep the pool's PEs sorted by a policy key and select
   the first k entries: Round Robin, Weighted Round Robin, Priority and the
   Least Used family.  The key ends with a per-pool sequence number that a
   PE receives when it joins the pool and again each time it is selected and
   "used" (see C{max_increment} below), so PEs with equal keys are taken in
   round-robin order.  The index is a circular linked list threaded
   through the PEs for Round Robin, blocks of packed 64-bit keys for
   Priority and the Least Used family (see L{_PackedKeys}), and a
   L{sortedcontainers.SortedList} of integer keys for Weighted Round Robin.
   Every index drops a leaving PE at once and keeps no reference to it.
 - I{Randomized} policies give each PE a selection value and draw a PE with
   probability proportional to it: Random, Weighted Random, Weighted Random
   DPF and the Randomized Least Used family.  The index groups PEs in
   power-of-two buckets of value and draws by bucket, then by rejection
   within the bucket (see L{_RandomizedSelector}): O(1) expected per draw
   and O(1) per update, independent of the pool size.  k distinct PEs are
   drawn one after the other without replacement.

Each selection of k PEs counts the first C{max_increment} of them as used
(RSPLIB's "maxIncrement", default 1): only those receive a new sequence
number, a Weighted Round Robin turn, or a degradation increment.  With the
default, a handle resolution advances round robin by one position, whatever
k is, and charges the degradation to the PE the pool user will most likely
contact (the first).
"""
from array import array
from bisect import bisect_left
from itertools import chain, islice

from sortedcontainers import SortedList

from rserpool.codes import PolicyType
from rserpool.handlespace.policy import MAX_VALUE

__all__ = ["Selector", "make_selector", "selection_value", "selection_key"]


class Selector:
    """
    The selection index of one pool: the interface the handlespace uses.

    Per-PE policy state lives in the PE's private slots (C{_seq}, C{_sel},
    C{_degradation}; C{_prev} and C{_next} for Round Robin, C{_round} and
    C{_virtual} for Weighted Round Robin, C{_value} and C{_slot} for the
    randomized policies).
    """

    __slots__ = ("_next_seq",)

    #: How many PEs of one selection count as used when the caller does not
    #: say (RSPLIB's DefaultMaxIncrement is 1 for every stateful policy).
    default_max_increment = 1

    def __init__(self):
        self._next_seq = 0

    def add(self, pe):
        """
        Insert a new PE: give it a sequence number, initialize its policy
        state and link it.
        """
        pe._seq = self._next_seq
        self._next_seq += 1
        pe._degradation = 0
        self._initialize(pe)
        self._link(pe)

    def remove(self, pe):
        """
        Unlink a PE that leaves the pool.
        """
        self._unlink(pe)

    def update(self, pe, policy):
        """
        Apply a re-registration's policy settings: the PE keeps its sequence
        number (its place among equals), takes the new values and has its
        degradation reset to 0 (RFC 5356 section 4.2: the degradation
        counts selections since the last update).
        """
        self._unlink(pe)
        pe.policy = policy
        pe._degradation = 0
        self._reinitialize(pe)
        self._link(pe)

    def select(self, k, max_increment, rng):
        """
        Select up to k distinct PEs.

        @param k: the number of PEs wanted.
        @param max_increment: how many of the selected PEs count as used, or
            C{None} for L{default_max_increment}.
        @param rng: the C{random.Random} to draw from.
        @return: a list of at most k distinct PEs, best first.
        """
        raise NotImplementedError()

    def __len__(self):
        raise NotImplementedError()

    def verify(self, elements):
        """
        Check the index against the pool's PEs (for tests and debugging).

        @param elements: the pool's PEs.
        @raise AssertionError: the index is inconsistent.
        """
        raise NotImplementedError()

    def _initialize(self, pe):
        pass

    def _reinitialize(self, pe):
        pass

    def _selected(self, pe):
        pass

    def _link(self, pe):
        raise NotImplementedError()

    def _unlink(self, pe):
        raise NotImplementedError()


def _degrade(pe):
    # RFC 5356 section 4.2 (Least Used with Degradation): each selection
    # adds the PE's load degradation to its degradation, until the PE's next
    # update.  RSPLIB saturates at 100 %.
    degradation = pe._degradation + pe.policy.load_degradation
    pe._degradation = degradation if degradation < MAX_VALUE else MAX_VALUE


# ---------------------------------------------------------------------------
# Ordered policies
# ---------------------------------------------------------------------------


class _SortedSelector(Selector):
    """
    An ordered policy: PEs sorted by an integer key, C{(policy value <<
    C{_seq_bits}) | sequence number}, in an index C{_entries}.  A selection
    takes the first k PEs and uses the first C{max_increment} of them.

    The selection is the same for both kinds of index; a subclass provides
    the index, reads its first PEs (L{_first}) and moves a used PE
    (L{_use}).
    """

    __slots__ = ("_entries",)

    def __len__(self):
        return len(self._entries)

    def _key(self, pe):
        # The policy value (without the sequence number); smaller is first.
        raise NotImplementedError()

    def _first(self, n):
        """
        @return: a new list of the first n PEs (0 < n <= len(self)).
        """
        raise NotImplementedError()

    def _use(self, pe):
        """
        Count a selected PE as used: it gets a new sequence number, which
        puts it behind all PEs with the same policy value (the round-robin
        tie-break), and the policy's change for a use (L{_selected}), and it
        moves to its new place in the index.
        """
        raise NotImplementedError()

    def select(self, k, max_increment, rng):
        n = len(self._entries)
        if k < n:
            n = k
        if n <= 0:
            return []
        chosen = self._first(n)
        if max_increment is None:
            max_increment = self.default_max_increment
        if n == 1:
            # The common case (a handle resolution for one PE), without
            # the loop's bookkeeping.
            pe = chosen[0]
            pe.selection_count += 1
            if max_increment > 0:
                self._use(pe)
            return chosen
        used = 0
        for pe in chosen:
            pe.selection_count += 1
            if used < max_increment:
                used += 1
                self._use(pe)
        return chosen


#: The sequence number occupies the low 64 bits of an ordered key.
_SEQ_BITS = 64
_SEQ_MASK = (1 << _SEQ_BITS) - 1


class _OrderedSelector(_SortedSelector):
    """
    PEs sorted by an integer key, C{(policy value << 64) | sequence
    number}; the sequence number is unique in the pool, so keys are unique
    and a dict maps them back to PEs.  (Plain integers compare much faster
    than tuples in a large SortedList.)
    """

    __slots__ = ("_by_seq",)

    _seq_bits = _SEQ_BITS

    def __init__(self):
        Selector.__init__(self)
        self._entries = SortedList()
        self._by_seq = {}

    def update(self, pe, policy):
        # The PE keeps its sequence number, so its key changes only if the
        # policy value does: then it moves in the sorted list (by_seq stays
        # as it is), else nothing moves at all.
        old = pe._sel
        if old is None:
            Selector.update(self, pe, policy)
            return
        pe.policy = policy
        pe._degradation = 0
        key = (self._key(pe) << _SEQ_BITS) | pe._seq
        if key != old:
            entries = self._entries
            entries.remove(old)
            entries.add(key)
            pe._sel = key

    def verify(self, elements):
        linked = [pe for pe in elements if pe._sel is not None]
        expected = sorted((self._key(pe) << _SEQ_BITS) | pe._seq for pe in linked)
        assert list(self._entries) == expected
        assert self._by_seq == {pe._seq: pe for pe in linked}
        assert all(pe._seq < self._next_seq for pe in elements)
        assert len(set(pe._seq for pe in elements)) == len(elements)

    def _link(self, pe):
        key = (self._key(pe) << _SEQ_BITS) | pe._seq
        pe._sel = key
        self._entries.add(key)
        self._by_seq[pe._seq] = pe

    def _unlink(self, pe):
        if pe._sel is not None:
            self._entries.remove(pe._sel)
            del self._by_seq[pe._seq]
            pe._sel = None

    def _first(self, n):
        by_seq = self._by_seq
        if n == 1:
            return [by_seq[self._entries[0] & _SEQ_MASK]]
        return [by_seq[key & _SEQ_MASK] for key in islice(self._entries, n)]

    def _use(self, pe):
        self._unlink(pe)
        pe._seq = self._next_seq
        self._next_seq += 1
        self._selected(pe)
        self._link(pe)


class RoundRobinSelector(Selector):
    """
    Round Robin (RFC 5356 section 4.1): PEs in a fixed cyclic order, the
    order in which they joined the pool; a selection starts at the current
    position, and using a PE moves it to the end of the cycle.

    The cycle is a circular doubly-linked list threaded through the PEs
    (their C{_prev} and C{_next} slots), starting at the current position:
    a new PE goes in before the current position (the end of the cycle), a
    leaving PE is unlinked from its two neighbours, and using the first m
    PEs of a selection moves them to the end of the cycle just by moving
    the current position past them.  Every operation is O(1) (O(k) for a
    selection of k), whatever the pool size; a removed PE is referenced by
    nothing, so it is freed at once.  A linked PE's C{_sel} is its sequence
    number, as in the other ordered policies: the sequence numbers increase
    along the cycle from the current position.
    """

    __slots__ = ("_head", "_count")

    def __init__(self):
        Selector.__init__(self)
        self._head = None
        self._count = 0

    def __len__(self):
        return self._count

    def _link(self, pe):
        pe._sel = pe._seq
        self._count += 1
        head = self._head
        if head is None:
            pe._prev = pe._next = pe
            self._head = pe
        else:
            # Before the current position: the end of the cycle.
            tail = head._prev
            pe._prev = tail
            pe._next = head
            tail._next = pe
            head._prev = pe

    def _unlink(self, pe):
        if pe._sel is None:
            return
        pe._sel = None
        self._count -= 1
        following = pe._next
        if following is pe:
            self._head = None
        else:
            preceding = pe._prev
            preceding._next = following
            following._prev = preceding
            if self._head is pe:
                self._head = following
        pe._prev = pe._next = None

    def update(self, pe, policy):
        # Round robin has no policy values: the PE keeps its place.
        pe.policy = policy
        pe._degradation = 0

    def select(self, k, max_increment, rng):
        n = self._count
        if k < n:
            n = k
        if n <= 0:
            return []
        if max_increment is None:
            max_increment = self.default_max_increment
        pe = self._head
        if n == 1:
            pe.selection_count += 1
            if max_increment > 0:
                pe._seq = pe._sel = self._next_seq
                self._next_seq += 1
                self._head = pe._next
            return [pe]
        chosen = []
        for _ in range(n):
            pe.selection_count += 1
            chosen.append(pe)
            pe = pe._next
        if max_increment > 0:
            used = chosen[:max_increment]
            for pe in used:
                # To the end of the cycle, with a new sequence number.
                pe._seq = pe._sel = self._next_seq
                self._next_seq += 1
            # The cycle is circular: moving the current position past the
            # used PEs puts them at its end, in their order.
            self._head = used[-1]._next
        return chosen

    def verify(self, elements):
        ring = []
        pe = self._head
        for _ in range(self._count):
            assert pe._next._prev is pe and pe._prev._next is pe
            ring.append(pe)
            pe = pe._next
        assert pe is self._head
        assert set(ring) == set(elements) and len(ring) == len(elements)
        assert all(pe._sel == pe._seq for pe in ring)
        seqs = [pe._seq for pe in ring]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert all(pe._seq < self._next_seq for pe in elements)


#: Blocks of the packed index hold up to twice this many keys (see
#: L{_PackedKeys}).
_BLOCK_LOAD = 256


class _PackedKeys:
    """
    A sorted set of unsigned 64-bit integer keys, each with a value (a PE),
    kept as blocks of C{array('Q')} with a parallel list of values per block
    and a list of the blocks' largest keys.

    It does what a C{SortedList} of integer keys plus a key-to-PE dict does,
    but the keys a bisection compares lie next to each other in a block
    (8 bytes each, 800 kB for 100,000 keys) instead of in as many integer
    objects scattered over the heap, and the PE at a position needs no dict:
    at 100,000 PEs an insertion or removal touches a few cache lines instead
    of some twenty.  Insertion and removal cost O(log n) comparisons plus a
    move of at most 2 x L{_BLOCK_LOAD} slots.
    """

    __slots__ = ("_keys", "_values", "_maxes", "_len")

    def __init__(self):
        self._keys = []
        self._values = []
        # A list: its few integers stay in the cache, and bisecting it
        # makes no new ones.
        self._maxes = []
        self._len = 0

    def __len__(self):
        return self._len

    def first(self):
        """
        @return: the value of the smallest key (the index is not empty).
        """
        return self._values[0][0]

    def values(self):
        """
        @return: an iterator over the values in key order.
        """
        return chain.from_iterable(self._values)

    def keys(self):
        """
        @return: an iterator over the keys in order.
        """
        return chain.from_iterable(self._keys)

    def add(self, key, value):
        """
        Insert a key (not in the index) with its value.
        """
        maxes = self._maxes
        self._len += 1
        if not maxes:
            self._keys.append(array("Q", (key,)))
            self._values.append([value])
            maxes.append(key)
            return
        i = bisect_left(maxes, key)
        if i == len(maxes):
            # After every key: the end of the last block.
            i -= 1
            keys = self._keys[i]
            keys.append(key)
            self._values[i].append(value)
            maxes[i] = key
        else:
            keys = self._keys[i]
            j = bisect_left(keys, key)
            keys.insert(j, key)
            self._values[i].insert(j, value)
        if len(keys) > 2 * _BLOCK_LOAD:
            # Split the block in two.
            values = self._values[i]
            self._keys[i + 1:i + 1] = [keys[_BLOCK_LOAD:]]
            self._values[i + 1:i + 1] = [values[_BLOCK_LOAD:]]
            del keys[_BLOCK_LOAD:]
            del values[_BLOCK_LOAD:]
            maxes.insert(i, keys[-1])

    @classmethod
    def from_sorted(cls, keys, values):
        """
        Build an index at once.

        @param keys: a list of distinct keys in increasing order.
        @param values: a list of their values.
        @return: a new L{_PackedKeys}.
        """
        index = cls()
        for start in range(0, len(keys), _BLOCK_LOAD):
            block = array("Q", keys[start:start + _BLOCK_LOAD])
            index._keys.append(block)
            index._values.append(values[start:start + _BLOCK_LOAD])
            index._maxes.append(block[-1])
        index._len = len(keys)
        return index

    def remove(self, key):
        """
        Remove a key that is in the index (and its value).
        """
        maxes = self._maxes
        i = bisect_left(maxes, key)
        keys = self._keys[i]
        j = bisect_left(keys, key)
        del keys[j]
        del self._values[i][j]
        self._len -= 1
        n = len(keys)
        if n > _BLOCK_LOAD // 2:
            if j == n:
                maxes[i] = keys[-1]
            return
        if len(maxes) == 1:
            # The only block: it may shrink to nothing.
            if not n:
                del self._keys[0], self._values[0], maxes[0]
            elif j == n:
                maxes[0] = keys[-1]
            return
        # A small block: merge it into a neighbour (split again if that
        # makes the neighbour too big).
        if i == len(maxes) - 1:
            i -= 1
        keys = self._keys[i]
        values = self._values[i]
        keys.extend(self._keys[i + 1])
        values.extend(self._values[i + 1])
        del self._keys[i + 1], self._values[i + 1], maxes[i + 1]
        if len(keys) > 2 * _BLOCK_LOAD:
            half = len(keys) >> 1
            self._keys[i + 1:i + 1] = [keys[half:]]
            self._values[i + 1:i + 1] = [values[half:]]
            del keys[half:]
            del values[half:]
            maxes[i:i + 1] = [keys[-1], self._keys[i + 1][-1]]
        else:
            maxes[i] = keys[-1]

    def verify(self):
        """
        Check the blocks (for tests).
        """
        keys = list(self.keys())
        assert keys == sorted(set(keys)) and len(keys) == self._len
        assert len(self._keys) == len(self._values) == len(self._maxes)
        for block, values, top in zip(self._keys, self._values, self._maxes):
            assert block and len(block) == len(values) <= 2 * _BLOCK_LOAD
            assert block[-1] == top


#: The sequence number occupies the low 32 bits of a packed key.
_PACKED_SEQ_BITS = 32
_PACKED_SEQ_LIMIT = 1 << _PACKED_SEQ_BITS


class _PackedOrderedSelector(_SortedSelector):
    """
    An ordered policy whose policy value fits in 32 bits (Priority and the
    Least Used family): PEs sorted by C{(policy value << 32) | sequence
    number}, a 64-bit key, in a L{_PackedKeys} index that also holds the
    PEs.  A PE's C{_sel} is its key while it is in the pool.

    The sequence number is 32 bits here: when the pool's counter reaches
    2**32 (after some 4 billion registrations and uses), the PEs are
    renumbered 0, 1, ... in the order of their sequence numbers, which
    keeps every comparison the same.
    """

    __slots__ = ()

    #: Sequence numbers are below this (a class attribute, for the tests).
    _seq_limit = _PACKED_SEQ_LIMIT
    _seq_bits = _PACKED_SEQ_BITS

    def __init__(self):
        Selector.__init__(self)
        self._entries = _PackedKeys()

    def _new_seq(self, pe):
        seq = self._next_seq
        if seq >= self._seq_limit:
            self._renumber()
            seq = self._next_seq
        self._next_seq = seq + 1
        pe._seq = seq

    def _renumber(self):
        # Renumber the PEs in the order of their sequence numbers and
        # rebuild the index.
        elements = sorted(self._entries.values(), key=_seq_of)
        for seq, pe in enumerate(elements):
            pe._seq = seq
            pe._sel = (self._key(pe) << _PACKED_SEQ_BITS) | seq
        elements.sort(key=_sel_of)
        self._entries = _PackedKeys.from_sorted([pe._sel for pe in elements], elements)
        self._next_seq = len(elements)

    def add(self, pe):
        self._new_seq(pe)
        pe._degradation = 0
        self._link(pe)

    def remove(self, pe):
        self._entries.remove(pe._sel)
        pe._sel = None

    def update(self, pe, policy):
        # The PE keeps its sequence number, so its key changes only if the
        # policy value does: then it moves, else nothing moves.
        pe.policy = policy
        pe._degradation = 0
        if (self._key(pe) << _PACKED_SEQ_BITS) | pe._seq != pe._sel:
            self._entries.remove(pe._sel)
            self._link(pe)

    def verify(self, elements):
        entries = self._entries
        entries.verify()
        assert len(entries) == len(elements)
        linked = list(entries.values())
        assert [pe._sel for pe in linked] == list(entries.keys())
        assert set(linked) == set(elements)
        for pe in elements:
            assert pe._sel == (self._key(pe) << _PACKED_SEQ_BITS) | pe._seq
        assert all(pe._seq < self._next_seq <= self._seq_limit for pe in elements)
        assert len(set(pe._seq for pe in elements)) == len(elements)

    def _link(self, pe):
        key = (self._key(pe) << _PACKED_SEQ_BITS) | pe._seq
        pe._sel = key
        self._entries.add(key, pe)

    def _first(self, n):
        if n == 1:
            return [self._entries.first()]
        return list(islice(self._entries.values(), n))

    def _use(self, pe):
        # The new sequence number before the old entry goes: a renumbering
        # rebuilds the index, and the old entry with it.
        self._new_seq(pe)
        self._entries.remove(pe._sel)
        self._selected(pe)
        self._link(pe)


def _sel_of(pe):
    return pe._sel


def _seq_of(pe):
    return pe._seq


class WeightedRoundRobinSelector(_OrderedSelector):
    """
    Weighted Round Robin (RFC 5356 section 4.2): in every round each PE is
    used as many times as its weight; PEs of weight 0 are never selected.

    Order (RSPLIB's): round number, then the turns the PE has left in the
    round (fewer first), then round-robin order.  A PE joining the pool
    starts in the current round with all its turns.  A re-registration with
    another weight keeps the round and caps the turns left at the new weight.
    """

    __slots__ = ()

    # Re-registration: unlink, re-initialize (which looks at the current
    # round without the PE), link.
    update = Selector.update

    def _key(self, pe):
        return (pe._round << 32) | pe._virtual

    def _current_round(self):
        entries = self._entries
        return entries[0] >> (_SEQ_BITS + 32) if entries else 0

    def _initialize(self, pe):
        pe._round = self._current_round()
        pe._virtual = pe.policy.weight

    def _reinitialize(self, pe):
        weight = pe.policy.weight
        if pe._virtual == 0:
            # Back from weight 0 (not linked meanwhile): start afresh in the
            # current round.
            pe._round = max(pe._round, self._current_round())
            pe._virtual = weight
        elif pe._virtual > weight:
            pe._virtual = weight

    def _link(self, pe):
        if pe.policy.weight:
            _OrderedSelector._link(self, pe)
        else:
            pe._virtual = 0
            pe._sel = None

    def _selected(self, pe):
        if pe._virtual > 1:
            pe._virtual -= 1
        else:
            pe._round += 1
            pe._virtual = pe.policy.weight


class PrioritySelector(_PackedOrderedSelector):
    """
    Priority (RFC 5356 section 4.5): highest priority first; equal
    priorities in round-robin order.
    """

    __slots__ = ()

    def _key(self, pe):
        return MAX_VALUE - pe.policy.priority


def _clamp(value):
    return value if value < MAX_VALUE else MAX_VALUE


class LeastUsedSelector(_PackedOrderedSelector):
    """
    Least Used (RFC 5356 section 5.1): lowest load first; equal loads in
    round-robin order.
    """

    __slots__ = ()

    def _key(self, pe):
        return pe.policy.load


class LeastUsedDegradationSelector(_PackedOrderedSelector):
    """
    Least Used with Degradation (RFC 5356 section 5.2): lowest load plus
    degradation first; every use adds the load degradation to the
    degradation, which a re-registration resets to 0.
    """

    __slots__ = ()

    def _key(self, pe):
        return _clamp(pe.policy.load + pe._degradation)

    _selected = staticmethod(_degrade)


class PriorityLeastUsedSelector(_PackedOrderedSelector):
    """
    Priority Least Used (RFC 5356 section 5.3): lowest load plus load
    degradation ("load increment") first, no dynamic degradation.
    """

    __slots__ = ()

    def _key(self, pe):
        policy = pe.policy
        return _clamp(policy.load + policy.load_degradation)


class PriorityLeastUsedDegradationSelector(_PackedOrderedSelector):
    """
    Priority Least Used Degradation (RSPLIB): load plus load degradation
    plus the accumulated degradation, lowest first.
    """

    __slots__ = ()

    def _key(self, pe):
        policy = pe.policy
        return _clamp(policy.load + policy.load_degradation + pe._degradation)

    _selected = staticmethod(_degrade)


class LeastUsedDPFSelector(_PackedOrderedSelector):
    """
    Least Used DPF (draft-dreibholz-rserpool-delay, RSPLIB): load plus
    distance times load DPF, lowest first.
    """

    __slots__ = ()

    def _key(self, pe):
        policy = pe.policy
        return _clamp(policy.load + policy.distance * policy.load_dpf)


class LeastUsedDegradationDPFSelector(_PackedOrderedSelector):
    """
    Least Used Degradation DPF (RSPLIB): load plus degradation plus distance
    times load DPF, lowest first.
    """

    __slots__ = ()

    def _key(self, pe):
        policy = pe.policy
        return _clamp(policy.load + pe._degradation + policy.distance * policy.load_dpf)

    _selected = staticmethod(_degrade)


class PriorityLeastUsedDPFSelector(_PackedOrderedSelector):
    """
    Priority Least Used DPF (RSPLIB): load plus load degradation plus
    distance times load DPF, lowest first.
    """

    __slots__ = ()

    def _key(self, pe):
        policy = pe.policy
        return _clamp(
            policy.load + policy.load_degradation + policy.distance * policy.load_dpf
        )


class PriorityLeastUsedDegradationDPFSelector(_PackedOrderedSelector):
    """
    Priority Least Used Degradation DPF (RSPLIB): load plus load
    degradation plus degradation plus distance times load DPF, lowest first.
    """

    __slots__ = ()

    def _key(self, pe):
        policy = pe.policy
        return _clamp(
            policy.load
            + policy.load_degradation
            + pe._degradation
            + policy.distance * policy.load_dpf
        )

    _selected = staticmethod(_degrade)


# ---------------------------------------------------------------------------
# Randomized policies
# ---------------------------------------------------------------------------


class _RandomizedSelector(Selector):
    """
    Draw a PE with probability proportional to its selection value, in
    O(1) expected time whatever the pool size.

    PEs of value v > 0 sit in bucket b = floor(log2 v), which holds the
    values 2**b to 2**(b+1) - 1 (at most 32 buckets for 32-bit values); each
    bucket keeps its total.  A draw:

     1. picks a bucket with probability proportional to its total:
        r = randrange(total), buckets walked from the highest to the lowest,
        each covering its total (skipped when only one bucket is in use);
     2. picks a member uniformly, r = randrange(members), and accepts it if
        randrange(2**(b+1) - 1) < its value, else repeats step 2 (no test
        in bucket 0, whose values are all 1, nor in a bucket with a single
        member).  Acceptance is at least 1/2, so step 2 runs less than twice
        on average.

    Given the bucket, a member is accepted with probability proportional to
    its value, so a PE is drawn with probability value / total exactly.
    Members are kept in the order they entered the bucket, with their values
    in a parallel C{array('Q')} so that the rejection test reads no PE
    (at 100,000 PEs each would be a cache miss); a leaving member's place
    is taken by the bucket's last member.  PEs of value 0 are in no
    bucket and never drawn.  k distinct PEs are drawn one after the other,
    each taken out of its bucket until the selection ends.
    """

    __slots__ = ("_buckets", "_values", "_totals", "_order", "_total", "_count")

    #: Whether a selection changes the PE's value (degradation).
    stateful = False

    def __init__(self):
        Selector.__init__(self)
        self._buckets = {}
        # bucket number -> array('Q') of the members' values
        self._values = {}
        self._totals = {}
        # Non-empty bucket numbers, highest first.
        self._order = []
        self._total = 0
        self._count = 0

    def __len__(self):
        return self._count

    def _value(self, pe):
        raise NotImplementedError()

    def verify(self, elements):
        assert self._count == len(elements)
        members = 0
        for b, bucket in self._buckets.items():
            assert bucket, b
            assert list(self._values[b]) == [pe._value for pe in bucket]
            for slot, pe in enumerate(bucket):
                assert pe._sel == b and pe._slot == slot
                assert pe._value == self._value(pe) > 0
                assert pe._value.bit_length() - 1 == b
            assert self._totals[b] == sum(pe._value for pe in bucket)
            members += len(bucket)
        assert members == sum(1 for pe in elements if pe._sel is not None)
        for pe in elements:
            if pe._sel is None:
                assert self._value(pe) == 0
        assert self._order == sorted(self._buckets, reverse=True)
        assert set(self._values) == set(self._buckets)
        assert self._total == sum(self._totals.values())

    def _link(self, pe):
        value = self._value(pe)
        pe._value = value
        if value <= 0:
            pe._sel = None
            return
        b = value.bit_length() - 1
        bucket = self._buckets.get(b)
        if bucket is None:
            bucket = self._buckets[b] = []
            self._values[b] = array("Q")
            self._totals[b] = 0
            order = self._order
            i = 0
            while i < len(order) and order[i] > b:
                i += 1
            order.insert(i, b)
        pe._sel = b
        pe._slot = len(bucket)
        bucket.append(pe)
        self._values[b].append(value)
        self._totals[b] += value
        self._total += value

    def _unlink(self, pe):
        b = pe._sel
        if b is None:
            return
        bucket = self._buckets[b]
        values = self._values[b]
        last = bucket.pop()
        last_value = values.pop()
        if last is not pe:
            slot = pe._slot
            bucket[slot] = last
            values[slot] = last_value
            last._slot = slot
        value = pe._value
        self._total -= value
        if bucket:
            self._totals[b] -= value
        else:
            del self._buckets[b]
            del self._values[b]
            del self._totals[b]
            self._order.remove(b)
        pe._sel = None

    def update(self, pe, policy):
        b = pe._sel
        pe.policy = policy
        pe._degradation = 0
        value = self._value(pe)
        if b is not None and value > 0 and value.bit_length() - 1 == b:
            # Same bucket: the PE keeps its place; only the totals change.
            delta = value - pe._value
            if delta:
                pe._value = value
                self._values[b][pe._slot] = value
                self._totals[b] += delta
                self._total += delta
            return
        self._unlink(pe)
        self._link(pe)

    def add(self, pe):
        self._count += 1
        Selector.add(self, pe)

    def remove(self, pe):
        self._unlink(pe)
        self._count -= 1

    def _draw(self, randrange):
        order = self._order
        if len(order) == 1:
            b = order[0]
        else:
            r = randrange(self._total)
            totals = self._totals
            for b in order:
                total = totals[b]
                if r < total:
                    break
                r -= total
        bucket = self._buckets[b]
        members = len(bucket)
        if members == 1:
            return bucket[0]
        if b == 0:
            return bucket[randrange(members)]
        values = self._values[b]
        bound = (2 << b) - 1
        while True:
            i = randrange(members)
            if randrange(bound) < values[i]:
                return bucket[i]

    def select(self, k, max_increment, rng):
        n = self._count
        if k < n:
            n = k
        if n <= 0 or self._total <= 0:
            return []
        if max_increment is None:
            max_increment = self.default_max_increment
        randrange = rng.randrange
        if n == 1 and not (self.stateful and max_increment > 0):
            pe = self._draw(randrange)
            pe.selection_count += 1
            return [pe]
        chosen = []
        for i in range(n):
            if self._total <= 0:
                # Only PEs of value 0 are left: they are never selected.
                break
            pe = self._draw(randrange)
            chosen.append(pe)
            # Out of the draw for the rest of this selection.
            self._unlink(pe)
            pe.selection_count += 1
            if i < max_increment:
                self._selected(pe)
        for pe in chosen:
            self._link(pe)
        return chosen


class RandomSelector(_RandomizedSelector):
    """
    Random (RFC 5356 section 4.3): uniform.
    """

    __slots__ = ()

    def _value(self, pe):
        return 1


class WeightedRandomSelector(_RandomizedSelector):
    """
    Weighted Random (RFC 5356 section 4.4): probability proportional to the
    weight; weight 0 is never selected.
    """

    __slots__ = ()

    def _value(self, pe):
        return pe.policy.weight


def _weight_dpf_value(policy):
    weight = policy.weight
    if not weight:
        return 0
    # penalty = round(weight * distance * weight_dpf / MAX_VALUE), computed
    # exactly (RSPLIB uses doubles and rint()).  MAX_VALUE is odd, so there is
    # no exact half to break.
    numerator = weight * policy.distance * policy.weight_dpf
    penalty = (2 * numerator + MAX_VALUE) // (2 * MAX_VALUE)
    value = weight - penalty
    # RSPLIB keeps a penalized PE selectable with value 1 rather than 0.
    return value if value >= 1 else 1


class WeightedRandomDPFSelector(_RandomizedSelector):
    """
    Weighted Random DPF (RSPLIB): weight reduced by weight x distance x
    weight DPF (at least 1 while the weight is not 0).
    """

    __slots__ = ()

    def _value(self, pe):
        return _weight_dpf_value(pe.policy)


def _inverse_load(value):
    # RSPLIB's value fraction: 100 % minus the loads, at least 1 so that a
    # fully loaded PE stays selectable.
    value = MAX_VALUE - value
    return value if value >= 1 else 1


class RandomizedLeastUsedSelector(_RandomizedSelector):
    """
    Randomized Least Used (RFC 5356 section 5.4): probability proportional
    to 100 % minus the load (at least 1).
    """

    __slots__ = ()

    def _value(self, pe):
        return _inverse_load(pe.policy.load)


class RandomizedPriorityLeastUsedSelector(_RandomizedSelector):
    """
    Randomized Priority Least Used (RSPLIB): probability proportional to
    100 % minus load minus load degradation (at least 1).
    """

    __slots__ = ()

    def _value(self, pe):
        policy = pe.policy
        return _inverse_load(policy.load + policy.load_degradation)


class RandomizedLeastUsedDegradationSelector(_RandomizedSelector):
    """
    Randomized Least Used Degradation (RSPLIB): probability proportional to
    100 % minus load minus the accumulated degradation (at least 1).
    """

    __slots__ = ()

    stateful = True

    def _value(self, pe):
        return _inverse_load(pe.policy.load + pe._degradation)

    _selected = staticmethod(_degrade)


class RandomizedPriorityLeastUsedDegradationSelector(_RandomizedSelector):
    """
    Randomized Priority Least Used Degradation (RSPLIB): probability
    proportional to 100 % minus load, load degradation and accumulated
    degradation (at least 1).
    """

    __slots__ = ()

    stateful = True

    def _value(self, pe):
        policy = pe.policy
        return _inverse_load(policy.load + policy.load_degradation + pe._degradation)

    _selected = staticmethod(_degrade)


_SELECTORS = {
    PolicyType.ROUND_ROBIN: RoundRobinSelector,
    PolicyType.WEIGHTED_ROUND_ROBIN: WeightedRoundRobinSelector,
    PolicyType.RANDOM: RandomSelector,
    PolicyType.WEIGHTED_RANDOM: WeightedRandomSelector,
    PolicyType.PRIORITY: PrioritySelector,
    PolicyType.LEAST_USED: LeastUsedSelector,
    PolicyType.LEAST_USED_DEGRADATION: LeastUsedDegradationSelector,
    PolicyType.PRIORITY_LEAST_USED: PriorityLeastUsedSelector,
    PolicyType.RANDOMIZED_LEAST_USED: RandomizedLeastUsedSelector,
    PolicyType.RANDOMIZED_PRIORITY_LEAST_USED: RandomizedPriorityLeastUsedSelector,
    PolicyType.RANDOMIZED_LEAST_USED_DEGRADATION: RandomizedLeastUsedDegradationSelector,
    PolicyType.PRIORITY_LEAST_USED_DEGRADATION: PriorityLeastUsedDegradationSelector,
    PolicyType.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION: (
        RandomizedPriorityLeastUsedDegradationSelector
    ),
    PolicyType.WEIGHTED_RANDOM_DPF: WeightedRandomDPFSelector,
    PolicyType.LEAST_USED_DPF: LeastUsedDPFSelector,
    PolicyType.LEAST_USED_DEGRADATION_DPF: LeastUsedDegradationDPFSelector,
    PolicyType.PRIORITY_LEAST_USED_DPF: PriorityLeastUsedDPFSelector,
    PolicyType.PRIORITY_LEAST_USED_DEGRADATION_DPF: (
        PriorityLeastUsedDegradationDPFSelector
    ),
}


def make_selector(policy_type):
    """
    A new, empty selection index for a pool.

    @param policy_type: the pool's L{PolicyType}.
    @return: a L{Selector}.
    """
    return _SELECTORS[policy_type]()


def is_randomized(policy_type):
    """
    Whether a policy draws at random (rather than selecting in order).

    @param policy_type: a L{PolicyType}.
    @return: C{True} for Random, Weighted Random and the randomized Least
        Used and DPF variants.
    """
    return issubclass(_SELECTORS[policy_type], _RandomizedSelector)


def selection_value(pe):
    """
    A PE's current selection value under a randomized policy (its share of
    the draw), for inspection and tests.

    @param pe: a L{RegisteredPE} in a pool with a randomized policy.
    @return: the non-negative integer value.
    """
    return pe.pool._selector._value(pe)


def selection_key(pe):
    """
    A PE's current sort key under an ordered policy (without the trailing
    PE), for inspection and tests.

    @param pe: a L{RegisteredPE} in a pool with an ordered policy.
    @return: the integer key without the sequence number, smaller is
        selected first (for the Least Used family, the effective load;
        for Weighted Round Robin, C{round << 32 | turns left}); C{None} when
        the PE is not selectable (Weighted Round Robin with weight 0).
    """
    if pe._sel is None:
        return None
    return pe._sel >> pe.pool._selector._seq_bits
