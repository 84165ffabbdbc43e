"""
A schedule of the registrar's own for CPython's cyclic garbage collector.

A registrar holds hundreds of thousands of long-lived objects (five per
PE, and those of every open connection).  CPython's collector looks at
all of them in each full collection, and makes one whenever the objects
that survived young collections reach a quarter of those it already
holds: under a registration flood or with thousands of connections held
open, that is a pass over every object every few seconds, and each pass
stops the reactor for 100 to 400 ms at 100,000 PEs (doc/security.rst,
"What does not hold yet").

L{CollectorService} can keep those passes short (C{twistd enrp
--gc-sweep-interval}; off by default: measured under the floods of
C{bench/attack.py}, it shortened some floods' worst pauses and lengthened
others', doc/security.rst):

  - young collections run less often (a young threshold of
    L{YOUNG_THRESHOLD} objects instead of 700; always);
  - after each full collection, what survived it is frozen
    (C{gc.freeze}): later full collections look only at the objects made
    since, so their length follows the registrar's recent work, not its
    size;
  - every L{SWEEP_INTERVAL} seconds one full collection looks at
    everything again (C{gc.unfreeze}, C{gc.collect}, C{gc.freeze}), so a
    frozen object that later died in a reference cycle (a connection that
    ended, for instance) is reclaimed within that time: frozen garbage is
    bounded by what the registrar discards in one interval.

Whether or not it freezes, every collection's length is measured
(C{gc.callbacks}); L{pauses} holds their count, total and longest by
generation, which C{/metrics} shows (C{rserpool_gc_*}).
"""
import gc as _gc
import time

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["CollectorService", "CollectorPauses", "YOUNG_THRESHOLD", "SWEEP_INTERVAL"]

#: Objects allocated (net) between two young collections; CPython's
#: default is 700.
YOUNG_THRESHOLD = 50000

#: Seconds between two full collections over every object (frozen ones
#: included).
SWEEP_INTERVAL = 300.0

#: Seconds between two looks at whether a full collection ran (and its
#: survivors are to be frozen).
CHECK_INTERVAL = 1.0

#: The running services of each C{gc} module, with the thresholds it had
#: before the first: the collector is the process's, so the last one to
#: stop puts it back (several registrars may share a process, in tests).
_RUNNING = {}


class CollectorPauses:
    """
    How long the collector stopped the process, by generation.

    @ivar count: C{[young, middle, full]} collections seen.
    @ivar seconds: their total length, by generation.
    @ivar longest: the longest one, by generation.
    @ivar full_runs: full collections since the last freeze (reset by
        L{CollectorService}).
    """

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self.full_runs = 0
        self._started = None

    def __call__(self, phase, info):
        # gc.callbacks: no allocation-heavy work here, and nothing that
        # may touch the reactor (a collection may run in the middle of
        # any of its operations).
        if phase == "start":
            self._started = self.clock()
            return
        if self._started is None:
            return
        took = self.clock() - self._started
        self._started = None
        generation = info.get("generation", 0)
        if not 0 <= generation <= 2:
            return
        self.count[generation] += 1
        self.seconds[generation] += took
        if took > self.longest[generation]:
            self.longest[generation] = took
        if generation == 2:
            self.full_runs += 1


class CollectorService(service.Service):
    """
    Runs the collector schedule described in this module's docstring while
    the service runs, and puts the process's collector back as it was when
    it stops.  Meant for a process that is a registrar (C{twistd enrp}
    adds it); an application that embeds a registrar decides for itself.
    """

    log = Logger()

    def __init__(self, clock, young=YOUNG_THRESHOLD, sweep=None, gc=_gc):
        """
        @param clock: an L{IReactorTime}.
        @param young: the young generation's threshold (never lowered
            below what the process had).
        @param sweep: seconds between two full collections over every
            object, freezing what survives full collections in between
            (L{SWEEP_INTERVAL} is a fair value); C{None} or 0, the
            default, freezes nothing (the young threshold only).
        @param gc: the C{gc} module (tests give a fake).
        """
        self.clock = clock
        self.young = young
        self.sweep_interval = sweep
        self.gc = gc
        self.pauses = CollectorPauses()
        self.sweeps = 0
        self._loops = []

    def startService(self):
        service.Service.startService(self)
        gc = self.gc
        running = _RUNNING.setdefault(id(gc), [gc.get_threshold(), 0])
        running[1] += 1
        young, middle, full = gc.get_threshold()
        gc.set_threshold(max(young, self.young), max(middle, 20), full)
        gc.callbacks.append(self.pauses)
        if self.sweep_interval:
            check = LoopingCall(self.check)
            check.clock = self.clock
            check.start(CHECK_INTERVAL, now=False)
            sweep = LoopingCall(self.sweep)
            sweep.clock = self.clock
            sweep.start(self.sweep_interval, now=False)
            self._loops = [check, sweep]

    def check(self):
        """
        Freeze what survived the full collections that ran since the last
        look (called every L{CHECK_INTERVAL} seconds).
        """
        if self.pauses.full_runs:
            self.pauses.full_runs = 0
            self.gc.freeze()

    def sweep(self):
        """
        One full collection over every object, frozen ones included, then
        freeze the survivors again.

        @return: the number of unreachable objects found.
        """
        gc = self.gc
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.pauses.full_runs = 0
        self.sweeps += 1
        return found

    def stopService(self):
        service.Service.stopService(self)
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        gc = self.gc
        if self.pauses not in gc.callbacks:
            return
        gc.callbacks.remove(self.pauses)
        running = _RUNNING[id(gc)]
        running[1] -= 1
        if running[1] == 0:
            del _RUNNING[id(gc)]
            gc.unfreeze()
            gc.set_threshold(*running[0])
