#!/usr/bin/env python3
"""
Experiment: how registration plus deregistration (Round Robin, one pool)
scales from 10 to 100,000 PEs with a leaner data layout than
rserpool.handlespace's, to tell how much of the 100,000-PE cost is the
layout and how much is memory latency that any CPython layout pays.

Usage: python3 bench/churn_layouts.py

Stripped-down handlespaces (no validation, no outcome objects, Round Robin
only; "arrays" and "rows" keep a PE table, a round-robin ring, owner and
connection lists and a timer heap, as the real one does) run the churn of
bench_handlespace.py: a new PE registers and the PE at a random place of
the pool deregisters, each followed by next_timer_time():

- "handlespace": rserpool.handlespace itself, for reference;
- "arrays": struct of arrays, one array per field (a PE is a row number);
- "rows": one array('q') row of eight fields per PE (one cache line);
- "table": the floor, the PE table alone (a dict of PE objects with the
  registration's fields) and no other index.

Prints microseconds per pair at 10 and 100,000 PEs (best of 3 runs of
200,000 pairs, process CPU time) and their ratio, and writes them to
bench/results/churn_layouts.txt.
"""
import gc
import os
import random
import struct
import sys
import time
from array import array
from heapq import heapify, heappop, heappush

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from rserpool.codes import PolicyType  # noqa: E402
from rserpool.handlespace import Handlespace, PolicySettings  # noqa: E402

_pack_double = struct.Struct("<d").pack
_unpack_int64 = struct.Struct("<q").unpack
_MASK = 0xFFFFFFFF


def _time_key(when):
    bits = _unpack_int64(_pack_double(when))[0]
    return ~bits if bits < 0 else bits | (1 << 63)


class _Timers:
    """
    The timer heap of the real handlespace, over row numbers: integer
    keys, one live key per row, lazy deletion.
    """

    def __init__(self):
        self.heap = []
        self.keys = []
        self.timer = array("d")
        self.serial = 0
        self.count = 0

    def grow(self):
        self.keys.append(None)
        self.timer.append(0.0)

    def set(self, row, when):
        self.serial += 1
        key = (_time_key(when) << 96) | (self.serial << 32) | row
        if self.keys[row] is None:
            self.count += 1
        self.keys[row] = key
        self.timer[row] = when
        heappush(self.heap, key)
        if len(self.heap) > 2 * self.count + 64:
            self.heap = [k for k in self.keys if k is not None]
            heapify(self.heap)

    def clear(self, row):
        self.keys[row] = None
        self.count -= 1

    def next_time(self):
        heap = self.heap
        keys = self.keys
        while heap:
            key = heap[0]
            if keys[key & _MASK] is key:
                return self.timer[key & _MASK]
            heappop(heap)
        return None


class Arrays:
    """
    One array per field.
    """

    def __init__(self):
        self.index = {}
        self.owner = array("l")
        self.owner_slot = array("l")
        self.conn_slot = array("l")
        self.prev = array("l")
        self.next = array("l")
        self.objects = []
        self.free = []
        self.head = -1
        self.owners = {}
        self.connections = {}
        self.timers = _Timers()

    def _row(self):
        if self.free:
            return self.free.pop()
        row = len(self.objects)
        for field in (self.owner, self.owner_slot, self.conn_slot, self.prev, self.next):
            field.append(0)
        self.objects.append(None)
        self.timers.grow()
        return row

    def register(self, pe_id, owner, policy, transport, now, life, connection):
        row = self.index.get(pe_id)
        if row is not None:
            self.objects[row] = (policy, transport, connection)
            self.timers.set(row, now + life / 1000.0)
            return
        row = self._row()
        self.index[pe_id] = row
        self.owner[row] = owner
        self.objects[row] = (policy, transport, connection)
        head = self.head
        if head < 0:
            self.prev[row] = self.next[row] = row
            self.head = row
        else:
            tail = self.prev[head]
            self.prev[row] = tail
            self.next[row] = head
            self.next[tail] = row
            self.prev[head] = row
        members = self.owners.get(owner)
        if members is None:
            members = self.owners[owner] = array("l")
        self.owner_slot[row] = len(members)
        members.append(row)
        members = self.connections.get(connection)
        if members is None:
            members = self.connections[connection] = array("l")
        self.conn_slot[row] = len(members)
        members.append(row)
        self.timers.set(row, now + life / 1000.0)

    def deregister(self, pe_id):
        row = self.index.pop(pe_id)
        following = self.next[row]
        if following == row:
            self.head = -1
        else:
            preceding = self.prev[row]
            self.next[preceding] = following
            self.prev[following] = preceding
            if self.head == row:
                self.head = following
        members = self.owners[self.owner[row]]
        last = members.pop()
        if last != row:
            slot = self.owner_slot[row]
            members[slot] = last
            self.owner_slot[last] = slot
        members = self.connections[self.objects[row][2]]
        last = members.pop()
        if last != row:
            slot = self.conn_slot[row]
            members[slot] = last
            self.conn_slot[last] = slot
        self.timers.clear(row)
        self.objects[row] = None
        self.free.append(row)

    def next_timer_time(self):
        return self.timers.next_time()


_OWNER, _OWNER_SLOT, _CONN_SLOT, _PREV, _NEXT = range(5)
_WIDTH = 8


class Rows:
    """
    One array('q') row of eight fields per PE.
    """

    def __init__(self):
        self.index = {}
        self.fields = array("q")
        self.objects = []
        self.free = []
        self.head = -1
        self.owners = {}
        self.connections = {}
        self.timers = _Timers()

    def _row(self):
        if self.free:
            return self.free.pop()
        row = len(self.objects)
        self.fields.extend((0,) * _WIDTH)
        self.objects.append(None)
        self.timers.grow()
        return row

    def register(self, pe_id, owner, policy, transport, now, life, connection):
        row = self.index.get(pe_id)
        if row is not None:
            self.objects[row] = (policy, transport, connection)
            self.timers.set(row, now + life / 1000.0)
            return
        row = self._row()
        f = self.fields
        base = row * _WIDTH
        self.index[pe_id] = row
        f[base + _OWNER] = owner
        self.objects[row] = (policy, transport, connection)
        head = self.head
        if head < 0:
            f[base + _PREV] = f[base + _NEXT] = row
            self.head = row
        else:
            tail = f[head * _WIDTH + _PREV]
            f[base + _PREV] = tail
            f[base + _NEXT] = head
            f[tail * _WIDTH + _NEXT] = row
            f[head * _WIDTH + _PREV] = row
        members = self.owners.get(owner)
        if members is None:
            members = self.owners[owner] = array("l")
        f[base + _OWNER_SLOT] = len(members)
        members.append(row)
        members = self.connections.get(connection)
        if members is None:
            members = self.connections[connection] = array("l")
        f[base + _CONN_SLOT] = len(members)
        members.append(row)
        self.timers.set(row, now + life / 1000.0)

    def deregister(self, pe_id):
        row = self.index.pop(pe_id)
        f = self.fields
        base = row * _WIDTH
        following = f[base + _NEXT]
        if following == row:
            self.head = -1
        else:
            preceding = f[base + _PREV]
            f[preceding * _WIDTH + _NEXT] = following
            f[following * _WIDTH + _PREV] = preceding
            if self.head == row:
                self.head = following
        members = self.owners[f[base + _OWNER]]
        last = members.pop()
        if last != row:
            slot = f[base + _OWNER_SLOT]
            members[slot] = last
            f[last * _WIDTH + _OWNER_SLOT] = slot
        members = self.connections[self.objects[row][2]]
        last = members.pop()
        if last != row:
            slot = f[base + _CONN_SLOT]
            members[slot] = last
            f[last * _WIDTH + _CONN_SLOT] = slot
        self.timers.clear(row)
        self.objects[row] = None
        self.free.append(row)

    def next_timer_time(self):
        return self.timers.next_time()


class _TablePE:
    __slots__ = ("pe_id", "owner", "policy", "transport", "registration_time",
                 "last_update", "life", "connection")

    def __init__(self, pe_id, owner, policy, transport, now, life, connection):
        self.pe_id = pe_id
        self.owner = owner
        self.policy = policy
        self.transport = transport
        self.registration_time = now
        self.last_update = now
        self.life = life
        self.connection = connection


class Table:
    """
    The floor: the PE table alone (a dict of PE objects), without any
    other index: what every handlespace does at least.
    """

    def __init__(self):
        self.table = {}

    def register(self, pe_id, owner, policy, transport, now, life, connection):
        self.table[pe_id] = _TablePE(pe_id, owner, policy, transport, now, life, connection)

    def deregister(self, pe_id):
        del self.table[pe_id]

    def next_timer_time(self):
        return None


class _Transport:
    transport_protocol = 0x0004
    control_channel = False


class Real:
    """
    rserpool.handlespace with the same call signature.
    """

    HANDLE = b"churn"

    def __init__(self):
        self.hs = Handlespace(random.Random(1))

    def register(self, pe_id, owner, policy, transport, now, life, connection):
        self.hs.register(self.HANDLE, pe_id, home_registrar=owner, policy=policy,
                         user_transport=transport, now=now, registration_life=life,
                         connection=connection)

    def deregister(self, pe_id):
        self.hs.deregister(self.HANDLE, pe_id)

    def next_timer_time(self):
        return self.hs.next_timer_time()


def churn_cost(layout, size, operations=200000, seed=1):
    """
    Microseconds per registration plus deregistration (best of 3 runs).
    """
    rng = random.Random(seed)
    hs = layout()
    policy = PolicySettings(PolicyType.ROUND_ROBIN)
    transport = _Transport()
    connections = [("assoc", i) for i in range(64)]
    ids = rng.sample(range(1, 2 ** 32), size)
    for i, pe_id in enumerate(ids):
        hs.register(pe_id, 1 + i % 4, policy, transport, i * 1e-3, 30000, connections[i % 64])
    live = list(ids)
    taken = set(ids)
    fresh = (pe_id for pe_id in range(2 ** 32 - 1, 0, -1) if pe_id not in taken)
    places = [rng.randrange(size) for _ in range(operations)]
    clock = [1000.0]

    def churn():
        base = clock[0]
        for i, place in enumerate(places):
            new_id = next(fresh)
            hs.register(new_id, 1 + place % 4, policy, transport, base + i * 1e-4, 30000,
                        connections[place % 64])
            hs.next_timer_time()
            old = live[place]
            live[place] = new_id
            hs.deregister(old)
            hs.next_timer_time()
        clock[0] = base + operations * 1e-4

    churn()  # to the steady state
    best = None
    for _ in range(3):
        gc.collect()
        start = time.process_time()
        churn()
        cost = (time.process_time() - start) / operations * 1e6
        best = cost if best is None or cost < best else best
    return best


def main():
    lines = ["churn (register a new PE + deregister a random one), Round Robin,"
             " us per pair, best of 3 x 200,000", ""]
    lines.append("{:<12} {:>8} {:>8} {:>6}".format("layout", "10", "100000", "ratio"))
    print("\n".join(lines), flush=True)
    for name, layout in (("handlespace", Real), ("arrays", Arrays), ("rows", Rows),
                         ("table", Table)):
        small = churn_cost(layout, 10)
        large = churn_cost(layout, 100000)
        line = "{:<12} {:>8.2f} {:>8.2f} {:>6.2f}".format(name, small, large, large / small)
        print(line, flush=True)
        lines.append(line)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "churn_layouts.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
