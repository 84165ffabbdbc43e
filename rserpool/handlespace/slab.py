"""
The slab: where the handlespace keeps, for every PE, the live keys of its
entries in the indexes that delete lazily.

The slab is one list with L{CELLS} cells per PE, at a fixed place for as
long as the PE is in the handlespace (C{PoolElement._slab}, the index of
its first cell; the places of removed PEs are reused).  The first cell
holds the PE; each other cell holds the live key of the PE's entry in one
index, or C{None}.

A key is an integer that names its cell in its low 32 bits
(L{CELL_MASK}) and is unique (it carries a serial number above them).  A
key is live while its cell holds that very int object, and stale once the
cell holds another key or C{None}.  So unlinking a PE from such an index
only clears a cell of its slab place, in the cache line its other cells
share, and touches neither the index nor another PE; a removal clears all
of them at once.  The indexes drop the stale keys a read meets, and all of
their stale keys when they outnumber the live ones (O(n) once per n
changes: O(1) amortized), so none holds more than twice its live keys plus
64.  Keys are plain integers, not containers: a stale key keeps no removed
PE alive and the garbage collector never looks at one, so a handlespace
under constant churn does not make the cyclic collector run.

Pure data layout: no behaviour beyond these constants and helpers.
"""

#: Cells per PE.
CELLS = 5
#: The cell holding the PE itself.
PE_CELL = 0
#: The cell holding the key of the PE's timer (see
#: L{rserpool.handlespace.Handlespace.set_timer}).
TIMER_CELL = 1
#: The cell holding the key of the PE's entry in its owner's list.
OWNER_CELL = 2
#: The cell holding the key of the PE's entry in its connection's list.
CONNECTION_CELL = 3
#: The cell holding the key of the PE's entry in its pool's selection index
#: (the policies whose index deletes lazily).
SELECTOR_CELL = 4
#: A free place.
NO_CELLS = (None,) * CELLS
#: The cell a key names: its low 32 bits.
CELL_MASK = 0xFFFFFFFF
#: How far the serial number of a key is shifted.
SERIAL_SHIFT = 32


def is_live(slab, key):
    """
    @param slab: the slab list.
    @param key: a key.
    @return: whether the key is live.
    """
    return slab[key & CELL_MASK] is key
